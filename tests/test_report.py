"""Report rendering from fixed results: every conclusion follows the numbers it is given."""

import copy
import json

import pytest

from convbench.report.document import conclusions, render_markdown, write_report


def _run(name, kind, acc, val, train_at_best, flops, params, seed=0):
    return {
        "name": name, "kind": kind, "seed": seed, "test_accuracy": acc, "best_val_accuracy": val, "train_accuracy_at_best": train_at_best,
        "final_train_accuracy": train_at_best, "final_val_accuracy": val, "params": params, "flops_per_image": flops,
        "train_seconds": 100.0, "epochs_run": 4, "best_epoch": 4, "train_images_per_s": 1000.0, "latency_ms_batch1": 2.0,
        "throughput_images_per_s_batch256": 3000.0, "mixed_precision": "float32", "notes": [],
        "recipe": {
            "train": {"epochs": 4, "global_batch_size": 256, "optimizer": "sgd", "lr_per_1024": 0.8, "schedule": "onecycle", "seed": seed},
            "augment": {"crop_padding": 4, "flip": True, "cutout": 0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0},
            "regularization": {"label_smoothing": 0.1, "weight_decay": 5e-4, "dropout": -1.0, "early_stopping_patience": 0},
            "transfer": {"resolution": 64, "head": "gap_dense128", "head_steps": 1500, "head_patience": 3, "finetune_epochs": 1,
                         "finetune_blocks": 1, "head_lr_per_1024": 4e-3},
        },
        "history_csv": f"history/{name}_seed{seed}.csv", "confusion_matrix": [[5, 1], [2, 4]],
        "per_class": {"precision": [0.7, 0.8], "recall": [0.83, 0.67], "f1": [0.76, 0.73]},
    }


def _results(runs):
    from convbench.experiment.comparison import aggregate

    return {
        "config": {"preset": "quick", "seeds": 1, "train": {"seed": 0}, "data": {"val_fraction": 0.1, "split_seed": 0}},
        "environment": {"cpu": "test cpu", "cpu_count": 2, "gpus": [], "platform": "linux", "python": "3.11",
                        "versions": {"tensorflow": "x"}},
        "data": {"source": "fixture", "num_classes": 2, "class_names": ["a", "b"], "train_images": 45000, "val_images": 5000,
                 "test_images": 12, "issues": {}},
        "runs": runs,
        "models": aggregate(runs),
    }


def _curve(final_val, rising):
    vals = [final_val - 0.06, final_val - 0.03, final_val] if rising else [final_val, final_val, final_val]
    return [{"epoch": i + 1, "phase": "train", "train_accuracy": v + 0.01, "val_accuracy": v, "train_loss": 1.0, "val_loss": 1.0, "seconds": 10.0} for i, v in enumerate(vals)]


BASE = [_run("cnn_vgg", "custom", 0.80, 0.79, 0.80, 7e7, 3e5), _run("cnn_resnet", "custom", 0.70, 0.69, 0.70, 1e8, 9e5)]


def test_best_model_follows_the_numbers():
    res = _results(copy.deepcopy(BASE))
    hist = {"cnn_vgg_seed0": _curve(0.79, False), "cnn_resnet_seed0": _curve(0.69, False)}
    text = conclusions(res, hist)
    assert "**cnn_vgg** (custom) has the highest test accuracy, 80.00 %, +10.00 points ahead of cnn_resnet" in text
    swapped = copy.deepcopy(BASE)
    swapped[0]["test_accuracy"], swapped[1]["test_accuracy"] = 0.70, 0.80
    text2 = conclusions(_results(swapped), hist)
    assert "**cnn_resnet** (custom) has the highest test accuracy" in text2
    assert text != text2


def test_a_tie_names_the_same_model_in_the_conclusions_as_in_the_statistics():
    """Equal mean accuracy: the conclusions pick the model the verdict picks (the alphabetically
    first name), whatever order results.json lists them in."""
    tied = copy.deepcopy(BASE)
    tied[1]["test_accuracy"] = tied[0]["test_accuracy"]
    hist = {"cnn_vgg_seed0": _curve(0.79, False), "cnn_resnet_seed0": _curve(0.69, False)}
    for runs in (tied, tied[::-1]):
        assert "**cnn_resnet** (custom) has the highest test accuracy" in conclusions(_results(copy.deepcopy(runs)), hist)


def test_overfitting_gap_leads_to_more_regularization():
    runs = copy.deepcopy(BASE)
    runs[0]["train_accuracy_at_best"] = 0.99  # 20 points above validation
    text = conclusions(_results(runs), {"cnn_vgg_seed0": _curve(0.79, False), "cnn_resnet_seed0": _curve(0.69, False)})
    assert "a sign of overfitting" in text
    assert "Regularize more: the train-validation gap is +20.00 points" in text
    assert "`augment.cutout: 8`" in text


def test_rising_curve_leads_to_train_longer_and_flat_small_gap_to_capacity():
    rising = conclusions(_results(copy.deepcopy(BASE)), {"cnn_vgg_seed0": _curve(0.79, True), "cnn_resnet_seed0": _curve(0.69, False)})
    assert "Train longer: validation accuracy gained +6.00 points" in rising
    tight = copy.deepcopy(BASE)
    tight[0]["train_accuracy_at_best"] = 0.795  # gap of half a point
    flat = conclusions(_results(tight), {"cnn_vgg_seed0": _curve(0.79, False), "cnn_resnet_seed0": _curve(0.69, False)})
    assert "Train longer" not in flat
    assert "Add capacity" in flat


def test_close_call_is_flagged_as_unreliable():
    runs = copy.deepcopy(BASE)
    runs[1]["test_accuracy"] = 0.795
    text = conclusions(_results(runs), {})
    assert "ranking is not reliable" in text


def test_transfer_winner_is_explained_and_resolution_advice_given():
    runs = copy.deepcopy(BASE) + [_run("efficientnet_lite0", "transfer", 0.85, 0.84, 0.86, 1.4e8, 3.6e6)]
    text = conclusions(_results(runs), {})
    assert "**efficientnet_lite0** (transfer)" in text
    assert "ImageNet features carry knowledge" in text
    assert "it ran at 64 px" in text


def _transfer_curve(head_vals, tune_vals):
    rows = [("head", v) for v in head_vals] + [("finetune", v) for v in tune_vals]
    return [{"epoch": i + 1, "phase": p, "train_accuracy": v, "val_accuracy": v, "train_loss": 1.0, "val_loss": 1.0,
             "seconds": 1.0} for i, (p, v) in enumerate(rows)]


@pytest.mark.parametrize("tune_vals, expected", [
    ([0.70, 0.74], "fine-tuning raised the best validation accuracy of the head alone from 68.00 % to 74.00 % (+6.00 points)"),
    ([0.60, 0.62], "fine-tuning did not improve on the head alone (best validation 68.00 % with the head alone, 62.00 % "
                   "after fine-tuning), so the head-only weights were kept"),
])
def test_the_report_says_whether_fine_tuning_improved_on_the_head_alone(tune_vals, expected):
    runs = copy.deepcopy(BASE) + [_run("efficientnet_lite0", "transfer", 0.66, 0.68, 0.70, 1.4e8, 3.6e6)]
    runs[-1]["head_steps_run"], runs[-1]["epochs_run"] = 150, 2
    hist = {"efficientnet_lite0_seed0": _transfer_curve([0.65, 0.68, 0.66], tune_vals)}
    text = conclusions(_results(runs), hist)
    assert expected in text
    assert "100 s of training over 150 head steps on cached features and 2 fine-tuning epochs" in text
    assert "`overrides: {efficientnet_lite0: {transfer: {resolution: 128}}}`" in text  # it lost at 64 px


@pytest.mark.parametrize("transfer, shown", [
    ({"head_steps": 1500, "finetune_epochs": 1}, "64px, head gap_dense128, head up to 1500 steps on cached features + 1 fine-tune epoch"),
    ({"frozen_epochs": 3, "finetune_epochs": 1}, "64px, head gap_dense128, 3 frozen head epochs + 1 fine-tune epoch"),  # saved before head_steps
    ({"head_steps": 1500, "finetune_epochs": 0}, "64px, head gap_dense128, head up to 1500 steps on cached features, no fine-tuning"),
])
def test_the_recipe_table_shows_the_transfer_phases_of_new_and_old_recipes(transfer, shown):
    runs = copy.deepcopy(BASE) + [_run("efficientnet_lite0", "transfer", 0.66, 0.68, 0.70, 1.4e8, 3.6e6)]
    runs[-1]["recipe"]["transfer"] = {"resolution": 64, "head": "gap_dense128", "finetune_blocks": 1, "head_lr_per_1024": 4e-3,
                                      **transfer}
    md = render_markdown(_results(runs), {}, {})
    row = next(line for line in md.splitlines() if line.startswith("| efficientnet_lite0 | ") and "adamw" in line)
    assert shown in row
    assert row.split(" | ")[1] == str(transfer.get("frozen_epochs", 0) + transfer["finetune_epochs"])


def test_a_head_only_transfer_model_shows_no_training_throughput():
    """Trained head only, a transfer model has no end-to-end training speed (its head rounds run on
    cached features at tens of thousands of vectors per second): the comparison shows "-", not those."""
    for speed in (None, 95_606.0):  # results.json now saves none; results saved before carry the head's speed
        head_only = _run("efficientnet_lite0", "transfer", 0.82, 0.83, 0.89, 3.9e8, 3.6e6)
        head_only.update(epochs_run=0, head_steps_run=1575, train_images_per_s=speed)
        md = render_markdown(_results(copy.deepcopy(BASE) + [head_only]), {}, {})
        row = next(line for line in md.splitlines() if line.startswith("| efficientnet_lite0 | transfer | 82.00 %"))
        cells = row.split(" | ")
        assert cells[8:10] == ["0", "-"], cells
        assert "- when only the head trained" in md


def test_a_losing_head_only_transfer_model_is_explained_by_its_missing_fine_tuning():
    """At 160 px, where frozen features of upsampled CIFAR images stop improving, a transfer model
    trained head only is not told to raise its resolution: the likely reason is the fine-tuning it
    never had. At 64 px its resolution is the reason, as before."""
    for resolution, reason, snippet in (
            (160, "only its head was trained, on frozen ImageNet features of CIFAR images upsampled to 160 px",
             "`overrides: {efficientnet_lite0: {transfer: {finetune_epochs: 2}}}`"),
            (64, "ImageNet features computed from CIFAR images upsampled to 64 px carry less",
             "`overrides: {efficientnet_lite0: {transfer: {resolution: 128}}}`")):
        loser = _run("efficientnet_lite0", "transfer", 0.66, 0.68, 0.75, 3.9e8, 3.6e6)
        loser.update(epochs_run=0, head_steps_run=1575)
        loser["recipe"]["transfer"].update(resolution=resolution, finetune_epochs=0)
        text = conclusions(_results(copy.deepcopy(BASE) + [loser]), {})
        why = text.split("### Why?")[1].split("### What would I improve?")[0]
        assert reason in why and snippet in why, why
        assert "1575 head steps on cached features, no fine-tuning" in why


def test_markdown_has_every_section_and_relative_figures():
    res = _results(copy.deepcopy(BASE))
    md = render_markdown(res, {}, {"curves": "figures/learning_curves.png", "confusion": "figures/confusion_matrices.png",
                                   "per_class": "figures/per_class_accuracy.png", "accuracy_flops": "figures/accuracy_vs_flops.png"})
    for heading in ("## Setup", "## Comparison", "## Training recipes", "## Learning curves", "## Confusion matrices",
                    "## Per-class accuracy", "## Accuracy vs FLOPs", "## Conclusions", "### Which was best?",
                    "### Why?", "### What would I improve?", "### How would I improve it?"):
        assert heading in md
    assert "](figures/learning_curves.png)" in md
    assert "| cnn_vgg | custom | 80.00 %" in md


def test_render_report_writes_pngs(tmp_path):
    res = _results(copy.deepcopy(BASE))
    (tmp_path / "history").mkdir()
    import pandas as pd

    for name in ("cnn_vgg", "cnn_resnet"):
        pd.DataFrame(_curve(0.7, True)).to_csv(tmp_path / "history" / f"{name}_seed0.csv", index=False)
    (tmp_path / "results.json").write_text(json.dumps(res))
    path = write_report(tmp_path)
    text = path.read_text()
    for png in ("learning_curves", "confusion_matrices", "per_class_accuracy", "accuracy_vs_flops"):
        data = (tmp_path / "figures" / f"{png}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
        assert f"figures/{png}.png" in text


def test_report_of_missing_run_is_one_clear_line(tmp_path):
    from convbench.errors import ConvbenchError

    with pytest.raises(ConvbenchError, match="results.json does not exist"):
        write_report(tmp_path / "nowhere")


def test_ablation_verdicts_reach_the_advice():
    res = _results(copy.deepcopy(BASE))
    res["ablation_effects"] = [
        {"model": "cnn_vgg", "factor": "dropout", "with": "dropout=on", "without": "dropout=off", "diff": -0.05, "verdict": "hurt", "p_holm": 0.001},
        {"model": "cnn_vgg", "factor": "augmentation (crop+flip)", "with": "aug=crop+flip", "without": "aug=none", "diff": 0.03,
         "verdict": "helped", "p_holm": 0.01},
    ]
    text = conclusions(res, {})
    assert "On cnn_vgg, dropout hurt in the ablation (dropout=off → dropout=on: -5.00 points" in text
    assert "Keep augmentation (crop+flip) on cnn_vgg: it helped in the ablation (+3.00 points" in text


def test_setup_states_the_validation_split_as_it_came_out():
    """100 classes of 3 images: every class gives one image to validation, a third of train, not the 10 % configured."""
    res = _results(copy.deepcopy(BASE))
    res["data"].update(train_images=100, val_images=10)
    assert "stratified, 9% of train, seed 0" in render_markdown(res, {}, {})  # 10 of 110: rounding per class, not worth a word
    res["data"].update(train_images=200, val_images=100)
    text = render_markdown(res, {}, {})
    assert "stratified, 33% of train; the configured 10% rounds differently" in text


def test_class_names_with_pipes_and_html_stay_literal_in_the_tables():
    import re

    res = _results(copy.deepcopy(BASE))
    res["data"]["class_names"] = ["cat|dog", "<b>bold</b> & co"]
    md = render_markdown(res, {}, {})
    table = md.split("| class |")[1].split("\n\n")[0].splitlines()
    rows = [line for line in table[2:] if line.startswith("|")]
    assert rows[0].startswith("| cat\\|dog |") and rows[1].startswith("| &lt;b&gt;bold&lt;/b&gt; &amp; co |")
    # Every row has as many cells as the header: an escaped pipe does not split a cell.
    cells = lambda line: len(re.split(r"(?<!\\)\|", line.strip().strip("|")))  # noqa: E731
    assert {cells(line) for line in rows} == {cells("| class |" + table[0])} == {3}
    assert "<b>" not in md
    # The pipeline's REPORT.html shows the names as they are, as text.
    from convbench.orchestrate.kfp_steps import markdown_to_html

    page = markdown_to_html(md)
    assert "<td>cat|dog</td>" in page and "<td>&lt;b&gt;bold&lt;/b&gt; &amp; co</td>" in page and "<b>bold" not in page


def test_a_report_of_an_unfinished_run_says_what_it_lacks_and_why():
    res = _results(copy.deepcopy(BASE))
    res["config"].update(models=["cnn_vgg", "cnn_resnet", "efficientnet_lite0"], seeds=1)
    from convbench.report.document import coverage_notice

    owner = {"pid": 4242, "host": "node-1", "started": "2026-12-02T10:00:00+00:00"}
    running = coverage_notice(res, owner)
    assert running.startswith("**In progress.** A convbench run (pid 4242 on node-1")
    assert "covers 2 of the 3 trainings" in running and "not finished: efficientnet_lite0 seed 0" in running
    stopped = coverage_notice(res, None)
    assert stopped.startswith("**Incomplete.** This report covers 2 of the 3") and "same `convbench run` command again" in stopped
    md = render_markdown(res, {}, {}, running)
    assert md.splitlines()[2] == running
    res["config"]["models"] = ["cnn_vgg", "cnn_resnet"]
    assert coverage_notice(res, owner) == ""


def test_the_notice_names_a_live_lock_owner_and_ignores_a_dead_one(tmp_path):
    """A lock file naming a live process (this test's own child) is a run in progress; once it dies, it is stale."""
    import subprocess
    import sys
    import time

    from convbench.lock import LOCK_NAME, live_owner
    from convbench.report.document import coverage_notice

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": child.pid, "host": __import__("socket").gethostname(),
                                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        owner = live_owner(tmp_path)
        assert owner is not None and owner["pid"] == child.pid
        res = _results(copy.deepcopy(BASE))
        res["config"].update(models=["cnn_vgg", "cnn_resnet", "efficientnet_lite0"], seeds=1)
        assert f"pid {child.pid}" in coverage_notice(res, owner)
    finally:
        child.kill()
        child.wait()
    assert live_owner(tmp_path) is None  # the process is gone: a stale lock, so no "in progress"


def test_setup_names_which_models_trained_in_which_precision():
    runs = copy.deepcopy(BASE)
    runs[0].update(mixed_precision="mixed_bfloat16", precision_reason="AVX512-BF16 present")
    runs[1].update(mixed_precision="float32", precision_reason="mixed_precision: off")
    md = render_markdown(_results(runs), {}, {})
    assert "precision: cnn_vgg: mixed_bfloat16 (AVX512-BF16 present); cnn_resnet: float32 (mixed_precision: off)." in md
    assert "precision: float32." in render_markdown(_results(copy.deepcopy(BASE)), {}, {})  # older runs: no reason saved


def test_glossary_explains_exactly_the_terms_the_report_uses():
    """Issue 16: the report ends with a glossary of the technical terms it uses, and only those."""
    import re

    from convbench.report.glossary import TERMS, glossary_markdown

    res = _results(copy.deepcopy(BASE))
    md = render_markdown(res, {}, {})
    body, glossary = md.split("## Glossary")
    listed = re.findall(r"^- \*\*(.+?)\*\*:", glossary, re.M)
    expected = [term for term, pattern, _ in TERMS if re.search(pattern, body)]
    assert listed == expected and "FLOPs, MACs" in listed and "label smoothing" in listed
    assert "saliency" not in listed  # this report has no saliency section
    assert glossary_markdown("no technical words here") == ""


@pytest.mark.parametrize("tune_vals, head_won", [([0.70, 0.74], False), ([0.60, 0.62], True)])
def test_a_transfer_winners_advice_follows_its_phases(tune_vals, head_won):
    """Issue 16's transfer-specific advice: a gap measured on cached features is not answered with
    augmentation, and fine-tuning that did not beat the head is named with both ways out."""
    runs = copy.deepcopy(BASE) + [_run("efficientnet_lite0", "transfer", 0.86, 0.74 if not head_won else 0.68, 0.95, 1.4e8, 3.6e6)]
    hist = {"efficientnet_lite0_seed0": _transfer_curve([0.65, 0.68, 0.66], tune_vals),
            "cnn_vgg_seed0": _curve(0.79, False), "cnn_resnet_seed0": _curve(0.69, False)}
    text = conclusions(_results(runs), hist)
    advice = text.split("### What would I improve?")[1]
    assert ("its train accuracy is on un-augmented cached features" in text) == head_won
    if head_won:
        assert "Regularize the head" in advice and "augment.cutout" not in advice
        assert "`overrides: {efficientnet_lite0: {transfer: {head: gap_bn_dropout}}}`" in advice
        # What (under "What would I improve?") and how (the same point under "How would I improve it?").
        what, how = advice.split("### How would I improve it?")
        assert "Fine-tuning did not pay at this budget (1 epoch of the top 1 block)." in what
        assert "Give it more, `overrides: {efficientnet_lite0: {transfer: {finetune_epochs: 3, finetune_blocks: 2}}}`" in how
    else:
        assert "Regularize more" in advice and "augment.cutout: 8" in advice
        assert "Fine-tune more of the backbone" in advice and "did not pay" not in advice


def test_a_transfer_winner_trained_head_only_is_told_to_fine_tune_its_top_block():
    """The quick preset trains a transfer model's head alone (`finetune_epochs: 0`): the advice names
    that and offers fine-tuning of the top block, not "more" of a fine-tuning that never ran."""
    winner = _run("efficientnet_lite0", "transfer", 0.86, 0.74, 0.76, 1.4e8, 3.6e6)
    winner["recipe"]["transfer"].update(finetune_epochs=0, finetune_blocks=1)
    runs = copy.deepcopy(BASE) + [winner]
    hist = {"efficientnet_lite0_seed0": _transfer_curve([0.65, 0.70, 0.74], []),
            "cnn_vgg_seed0": _curve(0.79, False), "cnn_resnet_seed0": _curve(0.69, False)}
    advice = conclusions(_results(runs), hist).split("### What would I improve?")[1]
    assert "Fine-tune the backbone: only its head was trained, on frozen features." in advice
    assert "`overrides: {efficientnet_lite0: {transfer: {finetune_epochs: 2, finetune_blocks: 1}}}`" in advice
    assert "Fine-tune more" not in advice and "0 epochs" not in advice and "fine-tuning raised" not in advice


def test_time_to_target_uses_the_train_time_of_the_comparison_table(tmp_path):
    """Issue 16, one train-time definition: the budget table's total time is each model's train time
    (the whole training call); a transfer model's feature caching counts before its first round, a
    custom model's validation time is spread over its epochs."""
    from convbench.report.analysis_sections import budget_curves

    runs = [_run("cnn_vgg", "custom", 0.80, 0.79, 0.80, 7e7, 3e5),
            _run("efficientnet_lite0", "transfer", 0.85, 0.84, 0.86, 1.4e8, 3.6e6)]
    runs[0]["train_seconds"], runs[1]["train_seconds"] = 60.0, 900.0  # epochs alone: 30 s and 4 s
    hist = {"cnn_vgg_seed0": _curve(0.79, True), "efficientnet_lite0_seed0": _transfer_curve([0.81, 0.84], [0.83, 0.82])}
    _, rows = budget_curves(_results(runs), hist, 0.8, tmp_path)
    by = {r["model"]: r for r in rows}
    assert by["cnn_vgg"]["total_minutes"] == pytest.approx(1.0) and by["efficientnet_lite0"]["total_minutes"] == pytest.approx(15.0)
    # cnn_vgg reaches 79 % only at its third epoch (never 80 %); the transfer model's first round already counts the caching.
    assert not by["cnn_vgg"]["reached"]
    assert by["efficientnet_lite0"]["minutes"] == pytest.approx((900.0 - 4.0 + 1.0) / 60)


@pytest.mark.parametrize("seconds, budget, expected", [
    ((100.0, 110.0), {"kind": "none"}, "Compute was roughly matched: train times ran from 100 s (cnn_vgg) to 110 s (cnn_resnet)"),
    ((100.0, 400.0), {"kind": "none"}, "Compute was not matched: train times ran from 100 s (cnn_vgg) to 400 s (cnn_resnet), 4.0x "
                                       "apart, so this ranking compares architectures and budgets together"),
    ((100.0, 400.0), {"kind": "minutes", "value": 3}, None),
])
def test_the_conclusions_say_whether_compute_was_matched(seconds, budget, expected):
    runs = copy.deepcopy(BASE)
    runs[0]["train_seconds"], runs[1]["train_seconds"] = seconds
    res = _results(runs)
    res["config"]["budget"] = budget
    text = conclusions(res, {}).split("### Why?")[0]
    if expected is None:
        assert "Compute was" not in text
    else:
        assert expected in text
        assert ("`budget: {kind: minutes, value: 4}`" in text) == ("not matched" in expected)  # median 250 s


@pytest.mark.parametrize("val_images, epochs, verdict", [
    (200, 2, "too few epochs to tell overfitting from a model still learning"),  # the 2-epoch run on 2,000 images
    (40, 3, "within ±13.7 points, the chance variation of 40 validation images: too few images to call it overfitting"),
    (5000, 3, "a sign of overfitting: larger than ±1.2 points, the chance variation of 5,000 validation images"),
])
def test_an_underfit_short_run_is_not_called_overfitting(val_images, epochs, verdict):
    """Issue 16: a gap is called overfitting only when it exceeds the chance variation of the
    validation set (two standard errors) and at least 3 evaluations show the curves."""
    runs = copy.deepcopy(BASE)
    runs[0].update(test_accuracy=0.26, best_val_accuracy=0.25, train_accuracy_at_best=0.326)  # +7.6 points
    runs[1].update(test_accuracy=0.20)
    res = _results(runs)
    res["data"]["val_images"] = val_images
    res["data"]["num_classes"] = 10  # the CIFAR-10 run: 25 % is above guessing (10 %)
    hist = {"cnn_vgg_seed0": _curve(0.25, False)[:epochs], "cnn_resnet_seed0": _curve(0.19, False)[:epochs]}
    text = conclusions(res, hist)
    assert f"train-validation gap +7.60 points ({verdict})" in text
    assert ("Regularize more" in text) == verdict.startswith("a sign of overfitting")


def test_why_describes_each_model_from_the_registry():
    from convbench.models import model_info

    runs = copy.deepcopy(BASE) + [_run("no_longer_registered", "custom", 0.5, 0.5, 0.5, 1e8, 1e6)]
    why = conclusions(_results(runs), {}).split("### Why?")[1].split("###")[0]
    for name in ("cnn_vgg", "cnn_resnet"):
        assert f"**{name}** ({model_info(name).description.rstrip('.')}):" in why
    assert "**no_longer_registered**:" in why


def test_a_model_at_chance_level_is_said_not_to_have_learned_and_is_left_out_of_the_cost_trade_off():
    """10 classes, 5,000 validation images: 10.5 % is guessing, whatever its train-validation gap."""
    runs = copy.deepcopy(BASE + [_run("cnn_airbench", "custom", 0.10, 0.105, 0.13, 5e7, 5e5)])
    res = _results(runs)
    res["data"]["num_classes"] = 10
    hist = {f"{r['name']}_seed0": _curve(r["best_val_accuracy"], False) for r in runs}
    text = conclusions(res, hist)
    line = next(l for l in text.splitlines() if l.startswith("- **cnn_airbench**"))
    assert "it has not learned yet: its best validation accuracy is at the level of guessing (10.00 % with 10 classes)" in line
    assert "overfitting (" not in line and "mild overfitting" not in line
    # The cheapest model that learned (cnn_vgg, the winner) is the trade-off's reference, not cnn_airbench.
    assert "cnn_vgg is also the cheapest per image" in text
    for learned in ("cnn_vgg", "cnn_resnet"):
        row = next(l for l in text.splitlines() if l.startswith(f"- **{learned}**"))
        assert "has not learned yet" not in row
