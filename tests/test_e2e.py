"""End to end: `convbench run` on a tiny subset (real CIFAR-10 JPEGs when ../shared is present) down to REPORT.md,
then `convbench report` re-renders it and `convbench models` lists the registry."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_tensorboard import read_hparams, read_scalars  # noqa: E402

from convbench.cli.commands import main  # noqa: E402


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["run", "--data", str(tiny_data), "--models", "cnn_vgg,efficientnet_lite0", "--epochs", "2",
                 "--global-batch-size", "32", "--max-test-images", "60", "--out", str(out)])
    assert code == 0
    return out


def test_run_writes_every_artifact(finished_run):
    out = finished_run
    for rel in ("REPORT.md", "results.json", "config.yaml", "run.log", "figures/learning_curves.png",
                "figures/confusion_matrices.png", "figures/per_class_accuracy.png", "figures/accuracy_vs_flops.png",
                "history/cnn_vgg_seed0.csv", "history/efficientnet_lite0_seed0.csv",
                "models/cnn_vgg/seed0/best.weights.h5", "models/efficientnet_lite0/seed0/best.weights.h5",
                "predictions/cnn_vgg_seed0.npz"):
        assert (out / rel).is_file(), rel
    assert not list(out.glob("models/*/seed0/checkpoint*.npz")), "resume checkpoints are removed once a model is done"


def test_results_json_has_the_promised_fields(finished_run):
    res = json.loads((finished_run / "results.json").read_text())
    assert [m["name"] for m in res["models"]] == ["cnn_vgg", "efficientnet_lite0"]
    for m in res["models"]:
        for key in ("name", "test_accuracy", "params", "flops_per_image", "train_seconds", "epochs_run", "best_val_accuracy"):
            assert key in m, key
        assert 0.0 <= m["test_accuracy"] <= 1.0
        assert m["epochs_run"] == 2
    assert res["environment"]["versions"]["tensorflow"]
    assert res["config"]["models"] == ["cnn_vgg", "efficientnet_lite0"]
    assert res["data"]["test_images"] == 60
    lite = next(r for r in res["runs"] if r["name"] == "efficientnet_lite0")
    assert [h for h in lite["notes"] if "fine-tuned blocks" in h]
    # Each run records its dtype policy and why `auto` chose it; the report's setup states both.
    from convbench.config import preset
    from convbench.training.recipes import model_precision

    text = (finished_run / "REPORT.md").read_text()
    for run in res["runs"]:
        expected = model_precision(run["name"], preset("quick").recipe(run["name"]))
        assert (run["mixed_precision"], run["precision_reason"]) == expected
        assert f"{run['mixed_precision']} ({run['precision_reason']})" in text


def test_tensorboard_compares_the_models(finished_run):
    """Issue 17: `tensorboard --logdir <run>/tensorboard` finds, for every (model, seed), per-epoch
    train/validation loss and accuracy, the learning rate and images/s, the recipe as HParams, and
    the test accuracy results.json holds."""
    res = json.loads((finished_run / "results.json").read_text())
    sessions = sorted(p.name for p in (finished_run / "tensorboard").iterdir())
    assert sessions == sorted(f"{r['name']}_seed{r['seed']}" for r in res["runs"])
    for run in res["runs"]:
        session = finished_run / "tensorboard" / f"{run['name']}_seed{run['seed']}"
        scalars = read_scalars(session)
        history = [r for r in scalars["validation"]["epoch_accuracy"]]
        # One step per history row: a transfer model's head evaluations, then its fine-tuning epochs.
        rows = (finished_run / run["history_csv"]).read_text().strip().splitlines()[1:]
        assert [step for step, _ in history] == list(range(1, len(rows) + 1))
        assert len(rows) == run["epochs_run"] + sum(",head," in r for r in rows)
        assert max(v for _, v in history) == pytest.approx(run["best_val_accuracy"], abs=1e-6)
        assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_images_per_second"} <= set(scalars["train"])
        assert scalars[""]["test_accuracy"] == [(len(rows), pytest.approx(run["test_accuracy"], abs=1e-6))]
        hparams = read_hparams(session)
        assert (hparams["model"], hparams["kind"], hparams["precision"]) == (run["name"], run["kind"], run["mixed_precision"])
        assert hparams["train.lr_per_1024"] == pytest.approx(run["recipe"]["train"]["lr_per_1024"])


def test_report_names_the_measured_winner(finished_run):
    res = json.loads((finished_run / "results.json").read_text())
    best = max(res["models"], key=lambda m: m["test_accuracy"])["name"]
    text = (finished_run / "REPORT.md").read_text()
    assert f"**{best}**" in text.split("## Conclusions")[1]


def test_report_command_rerenders(finished_run, capsys):
    (finished_run / "REPORT.md").unlink()
    assert main(["report", str(finished_run)]) == 0
    assert (finished_run / "REPORT.md").is_file()


def test_models_command(capsys):
    assert main(["models", "--names"]) == 0
    names = capsys.readouterr().out.split()
    assert {"cnn_vgg", "cnn_resnet", "efficientnet_lite0", "resnet50", "mobilenet_v2", "efficientnet_b0"} <= set(names)
