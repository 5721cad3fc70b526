"""`convbench ablate`: variants, contrasts, the ledger, effects, the figure and the report section.

The end-to-end tests train the real cnn_vgg (1 epoch, batch 32) on a tiny synthetic PNG dataset;
the statistics tests build prediction files by hand so the verdicts are known in advance.

    .venv/bin/pytest tests/test_ablation.py -q
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from convbench.analysis import ablation as abn
from convbench.experiment import ablation as ab
from convbench.report import ablation as abr
from convbench.cli.commands import build_parser, main
from convbench.cli.options import resolve_config
from convbench.config import preset
from convbench.errors import ConvbenchError


def _synthetic(root: Path, classes: int = 3, train: int = 60, test: int = 20) -> Path:
    """Classes differ in their dominant colour channel, plus noise: learnable in one epoch."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, (32, 32, 3))
                img[..., c] += 150
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


ARGS = ["--models", "cnn_vgg", "--epochs", "1", "--global-batch-size", "32", "--seeds", "1"]


# ---------------------------------------------------------------------------------------------
# Variants


def test_parse_variants_adds_the_baseline_and_rejects_bad_names():
    assert abn.parse_variants(None) == abn.DEFAULT_VARIANTS
    assert abn.parse_variants("all") == abn.DEFAULT_VARIANTS
    assert abn.PRECISION_VARIANT not in abn.DEFAULT_VARIANTS  # float32 runs only when named
    assert abn.parse_variants("precision=float32") == ("aug=crop+flip", "precision=float32")
    assert abn.parse_variants("dropout=off, aug=none") == ("aug=none", "aug=crop+flip", "dropout=off")
    with pytest.raises(ConvbenchError, match="unknown ablation variant 'aug=heavy'"):
        abn.parse_variants("aug=heavy")
    with pytest.raises(ConvbenchError, match="nothing to compare"):
        abn.parse_variants("aug=crop+flip")


def test_variant_recipes_change_only_what_they_name():
    cfg = preset("quick")  # crop 4 + flip, label smoothing 0.1, weight decay 5e-4, cnn_resnet override epochs 4
    base = cfg.recipe("cnn_resnet")
    r = {v: ab.variant_config(cfg, "cnn_resnet", v).recipe("cnn_resnet") for v in abn.VARIANTS}
    # The baseline is the quick recipe itself, so a `convbench run` of it can be reused.
    assert r["aug=crop+flip"] == base
    assert (r["aug=none"].augment.crop_padding, r["aug=none"].augment.flip) == (0, False)
    assert r["aug=full"].augment == dataclasses.replace(base.augment, cutout=8, cutmix_alpha=1.0)
    assert r["dropout=off"].regularization == dataclasses.replace(base.regularization, dropout=0.0)
    assert r["weight_decay=off"].regularization == dataclasses.replace(base.regularization, weight_decay=0.0)
    assert r["label_smoothing=off"].regularization == dataclasses.replace(base.regularization, label_smoothing=0.0)
    assert r["precision=float32"] == dataclasses.replace(base, train=dataclasses.replace(base.train, mixed_precision="off"))
    for v in abn.VARIANTS:
        assert r[v].train.epochs == base.train.epochs != cfg.train.epochs, "the model override is kept"
        assert r[v].transfer == base.transfer
    assert ab.recipe_diff(base, r["weight_decay=off"]) == {"regularization": {"weight_decay": 0.0}}
    assert [c["without"] + ">" + c["with"] for c in abn.contrasts(abn.VARIANTS)] == [
        "aug=none>aug=crop+flip", "aug=crop+flip>aug=full", "dropout=off>dropout=on",
        "weight_decay=off>weight_decay=on", "label_smoothing=off>label_smoothing=on", "precision=float32>precision=auto"]


def test_full_policy_keeps_a_configured_mixup():
    cfg = preset("quick")
    cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, mixup_alpha=0.2, cutout=6))
    full = ab.variant_config(cfg, "cnn_vgg", "aug=full").recipe("cnn_vgg").augment
    assert (full.cutout, full.mixup_alpha, full.cutmix_alpha) == (6, 0.2, 0.0)
    base = ab.variant_config(cfg, "cnn_vgg", abn.BASELINE).recipe("cnn_vgg").augment
    assert (base.cutout, base.mixup_alpha) == (0, 0.0), "the baseline is crop+flip only"


def test_variants_that_would_repeat_the_baseline_are_skipped():
    cfg = preset("quick")
    no_ls = dataclasses.replace(cfg.recipe("cnn_vgg"), regularization=dataclasses.replace(cfg.regularization, label_smoothing=0.0))
    assert "already 0" in ab.skip_reason("label_smoothing=off", "cnn_vgg", no_ls, 10)
    assert ab.skip_reason("weight_decay=off", "cnn_vgg", cfg.recipe("cnn_vgg"), 10) is None
    # cnn_resnet has no dropout by default, cnn_vgg has (built to check, random init), but the
    # quick preset turns it off.
    assert "no active dropout" in ab.skip_reason("dropout=off", "cnn_resnet", cfg.recipe("cnn_resnet"), 10)
    assert "no active dropout" in ab.skip_reason("dropout=off", "cnn_vgg", cfg.recipe("cnn_vgg"), 10)
    vgg_default = dataclasses.replace(cfg.recipe("cnn_vgg"), regularization=dataclasses.replace(cfg.regularization, dropout=-1.0))
    assert ab.skip_reason("dropout=off", "cnn_vgg", vgg_default, 10) is None
    # float32 against a recipe that already trains in float32 (off here, or auto on a CPU without bf16).
    fp32 = dataclasses.replace(cfg.recipe("cnn_vgg"), train=dataclasses.replace(cfg.train, mixed_precision="off"))
    assert "already trains in float32" in ab.skip_reason("precision=float32", "cnn_vgg", fp32, 10)
    bf16 = dataclasses.replace(cfg.recipe("cnn_vgg"), train=dataclasses.replace(cfg.train, mixed_precision="mixed_bfloat16"))
    assert ab.skip_reason("precision=float32", "cnn_vgg", bf16, 10) is None


# ---------------------------------------------------------------------------------------------
# Effects from hand-made predictions (known verdicts)


def _fake_run(run_dir: Path, model: str, variant: str, seed: int, correct: np.ndarray, gap: float) -> dict:
    labels = np.arange(len(correct)) % 3
    pred = np.where(correct, labels, (labels + 1) % 3)
    logits = np.eye(3, dtype=np.float32)[pred]
    prefix = ab.variant_dir(model, variant)
    (run_dir / prefix / "predictions").mkdir(parents=True)
    (run_dir / prefix / "history").mkdir(parents=True)
    np.savez(run_dir / prefix / f"predictions/{model}_seed{seed}.npz", test_logits=logits, test_labels=labels,
             val_logits=logits[:5], val_labels=labels[:5])
    (run_dir / prefix / f"history/{model}_seed{seed}.csv").write_text(
        "epoch,phase,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,images_per_s\n"
        f"1,train,1.0,0.5,1.0,0.45,0.1,1,100\n2,train,0.8,{0.6 + gap},0.9,0.6,0.05,1,100\n")
    return {"model": model, "variant": variant, "seed": seed, "test_accuracy": float(correct.mean()), "gap": gap,
            "history_csv": f"{prefix}/history/{model}_seed{seed}.csv",
            "predictions": f"{prefix}/predictions/{model}_seed{seed}.npz",
            "recipe": dataclasses.asdict(preset("quick").recipe(model))}


def test_effects_verdicts_and_section_follow_the_predictions(tmp_path):
    n = 400
    rng = np.random.default_rng(1)
    base = rng.random(n) < 0.85
    none = base & (rng.random(n) < 0.6)  # augmentation off: many images lost, none gained
    dropout_off = base | (rng.random(n) < 0.9)  # dropout off is clearly better: dropout hurt
    runs = [_fake_run(tmp_path, "cnn_vgg", v, 0, c, g) for v, c, g in
            (("aug=crop+flip", base, 0.02), ("aug=none", none, 0.20), ("dropout=off", dropout_off, 0.04))]
    effects, used = abn.compute_effects(tmp_path, runs, alpha=0.05)
    assert used == {"cnn_vgg": [0]}
    by = {e["factor"]: e for e in effects}
    assert set(by) == {"augmentation (crop+flip)", "dropout"}
    aug = by["augmentation (crop+flip)"]
    assert aug["verdict"] == "helped" and aug["diff"] == pytest.approx(base.mean() - none.mean())
    assert (aug["gap_without"], aug["gap_with"]) == (pytest.approx(0.20), pytest.approx(0.02))
    assert by["dropout"]["verdict"] == "hurt"
    assert (by["dropout"]["without"], by["dropout"]["with"]) == ("dropout=off", "dropout=on")

    # A second model joins the same Holm family: three p-values, the smallest multiplied by 3.
    runs_two = runs + [_fake_run(tmp_path, "cnn_resnet", v, 0, c, 0.0) for v, c in (("aug=crop+flip", base), ("aug=none", base))]
    joint, _ = abn.compute_effects(tmp_path, runs_two, alpha=0.05)
    assert [(e["model"], e["without"]) for e in joint] == [
        ("cnn_vgg", "aug=none"), ("cnn_vgg", "dropout=off"), ("cnn_resnet", "aug=none")]
    smallest = min(joint, key=lambda e: e["p_value"])
    assert smallest["p_holm"] == pytest.approx(min(1.0, 3 * smallest["p_value"]))
    assert joint[2]["verdict"] == "no detectable effect" and joint[2]["diff"] == 0

    plotted = abr.plot_ablation_curves(tmp_path, runs, "cnn_vgg", tmp_path / "figures/ablation_cnn_vgg.png")
    assert plotted == 0 and (tmp_path / "figures/ablation_cnn_vgg.png").stat().st_size > 5000
    ledger = {"models": ["cnn_vgg"], "runs": runs, "effects": effects, "variants": {},
              "curves": {"curves cnn_vgg": "figures/ablation_cnn_vgg.png"}, "skipped": {}}
    (tmp_path / "ablation.json").write_text(json.dumps(ledger))
    text = abr.render_ablation_markdown(tmp_path)
    assert "**Augmentation (crop+flip) helped** on cnn_vgg (aug=none → aug=crop+flip)" in text
    assert "**Dropout hurt** on cnn_vgg (dropout=off → dropout=on)" in text
    assert "![curves cnn_vgg](figures/ablation_cnn_vgg.png)" in text
    assert "| cnn_vgg | aug=none |" in text


def test_no_ledger_no_section(tmp_path):
    assert abr.render_ablation_markdown(tmp_path) is None
    (tmp_path / "ablation.json").write_text("{broken")
    assert "could not be read" in abr.render_ablation_markdown(tmp_path)


# ---------------------------------------------------------------------------------------------
# End to end with real training


@pytest.fixture(scope="module")
def ablated(tmp_path_factory):
    data = _synthetic(tmp_path_factory.mktemp("ablation-data"))
    out = tmp_path_factory.mktemp("ablation-run")
    argv = ["ablate", "--data", str(data), *ARGS, "--variants", "aug=none", "--out", str(out)]
    assert main(argv) == 0
    return data, out, argv


def test_ablate_writes_ledger_effects_and_figure(ablated):
    _, out, _ = ablated
    doc = json.loads((out / "ablation.json").read_text())
    assert doc["models"] == ["cnn_vgg"]
    assert sorted((r["variant"], r["seed"]) for r in doc["runs"]) == [("aug=crop+flip", 0), ("aug=none", 0)]
    for r in doc["runs"]:
        assert (out / r["history_csv"]).is_file() and (out / r["predictions"]).is_file()
        assert r["history_csv"].startswith(f"ablation/cnn_vgg/{r['variant']}/")
        assert 0 <= r["test_accuracy"] <= 1 and -1 <= r["gap"] <= 1
    none = next(r for r in doc["runs"] if r["variant"] == "aug=none")
    assert (none["recipe"]["augment"]["crop_padding"], none["recipe"]["augment"]["flip"]) == (0, False)
    assert doc["variants"]["cnn_vgg"]["aug=none"]["diff"] == {"augment": {"crop_padding": 0, "flip": False}}
    (effect,) = doc["effects"]
    assert (effect["model"], effect["without"], effect["with"]) == ("cnn_vgg", "aug=none", "aug=crop+flip")
    assert effect["verdict"] in ("helped", "hurt", "no detectable effect")
    accs = {r["variant"]: r["test_accuracy"] for r in doc["runs"]}
    assert effect["diff"] == pytest.approx(accs["aug=crop+flip"] - accs["aug=none"])
    assert doc["curves"] == {"Ablation learning curves of cnn_vgg (seed 0; solid: validation, dashed: train)":
                             "figures/ablation_cnn_vgg.png"}
    assert (out / "figures/ablation_cnn_vgg.png").stat().st_size > 5000
    text = abr.render_ablation_markdown(out)
    assert text.startswith("## Ablations")
    assert "aug=none → aug=crop+flip" in text and effect["verdict"] in text


def test_rerun_skips_finished_runs(ablated, capsys):
    _, out, argv = ablated
    before = json.loads((out / "ablation.json").read_text())["runs"]
    stamp = (out / before[0]["predictions"]).stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert log.count(": already finished (") == 2 and "[ablation] training" not in log
    assert json.loads((out / "ablation.json").read_text())["runs"] == before
    assert (out / before[0]["predictions"]).stat().st_mtime_ns == stamp


def test_changed_recipe_is_refused_before_training(ablated, capsys):
    data, out, argv = ablated
    changed = list(argv)
    changed[changed.index("--epochs") + 1] = "2"
    assert main(changed) == 2
    assert "trained with another recipe (train.epochs: 1 then, 2 now)" in capsys.readouterr().err


def test_baseline_of_a_convbench_run_is_reused(ablated, tmp_path, logged):
    """A results.json run with the baseline's recipe, seed and data is reused, not retrained.

    The results.json is assembled from the first ablation's files (a real `convbench run` would need
    the report pipeline too); its baseline recipe equals the quick recipe (checked above).
    """
    data, out, argv = ablated
    doc = json.loads((out / "ablation.json").read_text())
    base = next(r for r in doc["runs"] if r["variant"] == abn.BASELINE)
    none = next(r for r in doc["runs"] if r["variant"] == "aug=none")
    new = tmp_path / "run"
    for rel, dst in ((base["history_csv"], "history/cnn_vgg_seed0.csv"), (base["predictions"], "predictions/cnn_vgg_seed0.npz"),
                     (none["history_csv"], none["history_csv"]), (none["predictions"], none["predictions"])):
        (new / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / rel, new / dst)
    run_entry = {"name": "cnn_vgg", "seed": 0, "recipe": base["recipe"], "history_csv": "history/cnn_vgg_seed0.csv",
                 "predictions": "predictions/cnn_vgg_seed0.npz",
                 **{k: base[k] for k in ("test_accuracy", "final_train_accuracy", "final_val_accuracy", "best_val_accuracy",
                                         "epochs_run", "train_seconds")}}
    (new / "results.json").write_text(json.dumps({"data": doc["data"], "runs": [run_entry]}))
    (new / "ablation.json").write_text(json.dumps({**doc, "runs": [none], "effects": [], "curves": {}}))
    cfg = resolve_config(build_parser().parse_args(argv[:argv.index("--variants")]))
    result = ab.run_ablation(cfg, new, ["aug=none"])
    logs = logged()
    assert any("reusing it" in line for line in logs) and not any("[ablation] training" in line for line in logs)
    reused = next(r for r in result["runs"] if r["variant"] == abn.BASELINE)
    assert reused["source"] == "results.json" and reused["predictions"] == "predictions/cnn_vgg_seed0.npz"
    assert [e["diff"] for e in result["effects"]] == [pytest.approx(base["test_accuracy"] - none["test_accuracy"])]


def test_a_diverged_variant_is_reported_not_a_crash(tmp_path, capsys):
    """Issue 19 case 2 in the ablation: at an absurd learning rate every variant diverges; the ablation
    finishes (exit 0), computes no effect from them and its section says why each is missing."""
    data = _synthetic(tmp_path / "data")
    (tmp_path / "lr.yaml").write_text("overrides: {cnn_vgg: {train: {lr_per_1024: 1.0e+35}}}\n")
    out = tmp_path / "run"
    assert main(["ablate", "--data", str(data), *ARGS, "--config", str(tmp_path / "lr.yaml"), "--variants", "aug=none",
                 "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert log.count("diverged (") == 2, log
    doc = json.loads((out / "ablation.json").read_text())
    assert doc["runs"] == [] and doc["effects"] == []
    assert set(doc["skipped"]["cnn_vgg"]) == {"aug=none", "aug=crop+flip"}
    text = abr.render_ablation_markdown(out)
    assert "aug=none not run: seed 0 diverged (" in text and "lower `train.lr_per_1024`" in text
