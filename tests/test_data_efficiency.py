"""Data efficiency (`data_fractions:`): the config, the runs per fraction, the crossing point and the report section.

Run: .venv/bin/pytest tests/test_data_efficiency.py -q

The end-to-end test trains for real (two models on a tiny CIFAR subset, one fraction) and reads
the report; the others check the arithmetic on made-up accuracies, where the right answer is known.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from convbench import config as cfgmod
from convbench import i18n, rundir
from convbench.cli.commands import main
from convbench.errors import ConvbenchError
from convbench.experiment.comparison import config_fingerprint
from convbench.experiment.data_efficiency import epoch_factor, fraction_config
from convbench.models import list_models, model_info
from convbench.report.data_efficiency import crossing, crossing_sentence


def test_the_block_reads_as_a_list_of_numbers_and_bad_values_name_the_fix():
    cfg = cfgmod.from_dict({"data_fractions": [0.01, 0.1, 1]}).validate()
    assert cfg.data_fractions == (0.01, 0.1, 1.0)
    assert cfgmod.from_dict(cfgmod.to_dict(cfg)) == cfg  # saved and read back the same
    for bad in ([0.0, 0.5], [1.5], [0.1, 0.1]):
        with pytest.raises(ConvbenchError, match=r"data_fractions must be different numbers in \(0, 1\].*data_fractions: \[0.01"):
            cfgmod.from_dict({"data_fractions": bad}).validate()
    with pytest.raises(ConvbenchError, match="data_fractions.*a list of numbers"):
        cfgmod.from_dict({"data_fractions": ["a lot"]})


def test_fractions_do_not_change_which_results_a_run_folder_reuses():
    plain = cfgmod.preset("quick")
    with_fractions = cfgmod.from_dict({"data_fractions": [0.1, 1.0]})
    assert config_fingerprint(plain, {"n": 1}) == config_fingerprint(with_fractions, {"n": 1})


@pytest.mark.parametrize("name", list_models())
def test_a_fraction_keeps_the_recipe_and_trains_more_epochs_on_fewer_images(name):
    quick = cfgmod.preset("quick")  # its per-model overrides apply, as `convbench run --models NAME` keeps them
    base = dataclasses.replace(quick, models=(name,), data_fractions=(0.01, 0.5),
                               overrides={k: v for k, v in quick.overrides.items() if k == name}).validate()
    for fraction, factor in ((0.01, 4), (0.5, 2)):
        assert epoch_factor(fraction) == factor
        sub = fraction_config(base, fraction, 50_000)
        assert sub.data.max_train_images == round(fraction * 50_000)
        assert sub.data_fractions == () and sub.ablation.variants == () and not sub.measure_latency
        before, after = base.recipe(name), sub.recipe(name)
        if model_info(name).kind == "transfer":
            assert after.transfer.finetune_epochs == math.ceil(before.transfer.finetune_epochs * factor)
            assert after.transfer.head_steps == before.transfer.head_steps  # the head is counted in steps already
            assert after.train == before.train
        else:
            assert after.train.epochs == math.ceil(before.train.epochs * factor)
            assert after.transfer == before.transfer
        # Everything else of the recipe is the comparison's.
        assert after.augment == before.augment and after.regularization == before.regularization
        assert sub.data.val_fraction == base.data.val_fraction and sub.data.max_test_images == base.data.max_test_images


def _points(kind, accuracies, sizes=(450, 4500, 45000)):
    return [{"train_images": n, "test_accuracy": a, "kind": kind, "fraction": n / sizes[-1], "epochs": 1}
            for n, a in zip(sizes, accuracies)]


def test_the_crossing_is_interpolated_on_a_log_scale_of_images():
    # Ahead by 10 points at 450 images, behind by 10 at 4,500: the curves cross half way on a log scale.
    c = crossing(_points("transfer", [0.60, 0.70, 0.80]), _points("custom", [0.50, 0.80, 0.90]))
    assert c["first_ahead"] == "a" and c["sizes"] == [450, 4500, 45000]
    assert len(c["crossings"]) == 1
    assert c["crossings"][0] == pytest.approx(math.sqrt(450 * 4500))
    # A quarter of the way when the gap closes three times as fast after the crossing as it opened before it.
    c = crossing(_points("transfer", [0.55, 0.70, 0.80]), _points("custom", [0.50, 0.85, 0.90]))
    assert c["crossings"][0] == pytest.approx(math.exp(math.log(450) + 0.25 * math.log(10)))
    # Never crossing, and a zigzag.
    assert crossing(_points("transfer", [0.6, 0.8, 0.9]), _points("custom", [0.3, 0.6, 0.8]))["crossings"] == []
    assert len(crossing(_points("transfer", [0.6, 0.5, 0.9]), _points("custom", [0.5, 0.6, 0.8]))["crossings"]) == 2


def test_the_conclusion_names_who_leads_below_and_above_the_crossing_in_both_languages():
    points = {"efficientnet_lite0": _points("transfer", [0.60, 0.70, 0.80]),
              "cnn_vgg": _points("custom", [0.30, 0.65, 0.85]),
              "cnn_resnet": _points("custom", [0.20, 0.60, 0.88])}
    text = crossing_sentence(points)
    # The best from-scratch model at all the images (cnn_resnet) is the one compared.
    assert text.startswith("With less data the ranking changes: efficientnet_lite0 is ahead below about ")
    assert "training images and cnn_resnet above (efficientnet_lite0 minus cnn_resnet: +40.00 points with 450 images" in text
    below = crossing(points["efficientnet_lite0"], points["cnn_resnet"])["crossings"][0]
    assert 4500 < below < 45000
    # Said to two significant figures: an interpolation between measured sizes gives no more.
    assert f"ahead below about {round(below, -3):,.0f} training images" in text
    with i18n.use_language("es"):
        es = crossing_sentence(points)
    assert "efficientnet_lite0" in es and "cnn_resnet" in es and "With less data" not in es and "+40,00" in es

    ahead = {"efficientnet_lite0": _points("transfer", [0.60, 0.80, 0.90]), "cnn_vgg": _points("custom", [0.3, 0.6, 0.85])}
    assert crossing_sentence(ahead).startswith("With less data the ranking holds: efficientnet_lite0 is ahead of cnn_vgg at "
                                               "every training-set size measured, from 450 to 45,000 training images")
    assert crossing_sentence({"cnn_vgg": _points("custom", [0.3, 0.6, 0.85])}) == ""  # nothing to compare


def test_a_run_with_a_fraction_trains_it_and_reports_accuracy_against_images(tiny_data, tmp_path, capsys):
    """Real training: cnn_vgg and efficientnet_lite0 on 300 tiny images and on half of them."""
    out = tmp_path / "run"
    config = tmp_path / "fractions.yaml"
    config.write_text("data_fractions: [0.5, 1.0]\nmeasure_latency: false\n"
                      "analysis: {robustness_images: 0, saliency_images: 0, mistakes: 0}\n")
    args = ["run", "--data", str(tiny_data), "--models", "cnn_vgg,efficientnet_lite0", "--epochs", "1",
            "--global-batch-size", "32", "--max-test-images", "60", "--config", str(config), "--out", str(out)]
    assert main(args) == 0
    full = json.loads(rundir.results_path(out).read_text())
    half = json.loads(rundir.results_path(rundir.fraction_dir(out, 0.5)).read_text())
    assert half["config"]["data"]["max_train_images"] == 150
    assert "[cnn_vgg seed 0] test accuracy" in rundir.log_path(rundir.fraction_dir(out, 0.5)).read_text()
    assert half["data"]["test_images"] == full["data"]["test_images"] == 60
    assert 0 < half["data"]["train_images"] < full["data"]["train_images"]
    assert [m["name"] for m in half["models"]] == ["cnn_vgg", "efficientnet_lite0"]
    vgg = next(r for r in half["runs"] if r["name"] == "cnn_vgg")
    assert vgg["recipe"]["train"]["epochs"] == 2  # half the images, twice the epochs
    assert "data fraction 0.5: 150 of 300 training images, 2x the epochs" in capsys.readouterr().out

    report = rundir.report_path(out).read_text()
    assert "## Data efficiency" in report and "![Data efficiency](figures/data_efficiency.png)" in report
    assert (out / "figures" / "data_efficiency.png").stat().st_size > 10_000
    table = report[report.index("## Data efficiency"):].split("\n\n")[3].splitlines()
    assert table[0] == f"| model | {half['data']['train_images']} images | {full['data']['train_images']} images |"
    conclusions = report[report.index("## Conclusions"):]
    assert "With less data the ranking" in conclusions

    # The same command again trains nothing: the comparison and the fraction are both ledgers.
    assert main(args) == 0
    again = capsys.readouterr().out
    assert " epoch 1/" not in again and " round 1/" not in again
    assert again.count("reusing 2 finished runs") == 2
