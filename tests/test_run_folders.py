"""Run folders without --out (issue 17): runs/<timestamp>-<config hash>, runs/latest, `convbench runs`.

    .venv/bin/pytest tests/test_run_folders.py -q

Real `convbench run` calls (in-process, a 2-class PNG dataset, cnn_vgg for 1-2 epochs) in a
temporary working folder, since the default root is ./runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_data import write_dataset  # noqa: E402

from convbench.cli import commands as cli  # noqa: E402


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    data = write_dataset(tmp_path / "data", classes=2, train=12, test=4)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "measure_latency": False, "train": {"global_batch_size": 8, "eval_batch_size": 16},
        "analysis": {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0},
    }))
    monkeypatch.chdir(tmp_path)
    return data


def _run(capsys, data: Path, *flags: str) -> str:
    code = cli.main(["run", "--data", str(data), "--config", "c.yaml", *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    return captured.out + captured.err


def _folders() -> list[str]:
    return sorted(p.name for p in Path("runs").iterdir() if not p.is_symlink())


def test_changing_an_option_runs_into_a_new_folder_and_the_same_command_continues_its_own(workdir, capsys):
    """The everyday loop: run, change --epochs, run again (a new folder, no ledger error); the
    first command again continues its own folder and trains nothing; runs/latest follows each."""
    _run(capsys, workdir, "--models", "cnn_vgg", "--epochs", "1")
    [first] = _folders()
    assert os.readlink("runs/latest") == first and Path("runs/latest/REPORT.md").is_file()

    _run(capsys, workdir, "--models", "cnn_vgg", "--epochs", "2")
    second = next(name for name in _folders() if name != first)
    assert len(_folders()) == 2 and os.readlink("runs/latest") == second
    assert first.rsplit("-", 1)[1] != second.rsplit("-", 1)[1]  # another config hash
    assert json.loads(Path("runs", second, "results.json").read_text())["models"][0]["epochs_run"] == 2

    log = _run(capsys, workdir, "--models", "cnn_vgg", "--epochs", "1")
    assert f"continuing runs/{first}" in log and "[cnn_vgg seed 0] epoch" not in log, log
    assert len(_folders()) == 2 and os.readlink("runs/latest") == first

    # `convbench runs` lists both, newest activity first, with their status, epochs and best model.
    assert cli.main(["runs"]) == 0
    table = capsys.readouterr().out
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in table.splitlines()[1:3]}
    assert set(lines) == {first, second}
    assert lines[first].startswith("* ") and not lines[second].startswith("*")
    for name, epochs in ((first, 1), (second, 2)):
        results = json.loads(Path("runs", name, "results.json").read_text())
        assert "complete" in lines[name] and f"cnn_vgg:{epochs}" in lines[name]
        assert f"cnn_vgg {results['models'][0]['test_accuracy']:.1%}" in lines[name]


def test_a_changed_model_recipe_gets_its_own_folder(workdir, capsys, tmp_path):
    """A per-model override is not in the config hash (it depends on the models named), so the
    folder choice also compares the saved recipes: a changed override starts a new folder instead
    of stopping with "trained with another recipe"."""
    _run(capsys, workdir, "--models", "cnn_vgg", "--epochs", "1")
    config = yaml.safe_load(Path("c.yaml").read_text())
    config["overrides"] = {"cnn_vgg": {"train": {"lr_per_1024": 0.5}}}
    Path("c.yaml").write_text(yaml.safe_dump(config))
    _run(capsys, workdir, "--models", "cnn_vgg", "--epochs", "1")
    assert len(_folders()) == 2


def test_a_legacy_latest_folder_is_left_alone_with_a_warning(workdir, capsys):
    """Before run folders, `make run` wrote into a real runs/latest folder: it is kept as it is."""
    Path("runs/latest").mkdir(parents=True)
    (Path("runs/latest") / "REPORT.md").write_text("an earlier report")
    log = _run(capsys, workdir, "--models", "cnn_vgg", "--epochs", "1")
    assert "runs/latest is a folder from an earlier convbench" in log
    assert (Path("runs/latest") / "REPORT.md").read_text() == "an earlier report"
    assert len([p for p in _folders() if p != "latest"]) == 1


def test_runs_without_any_run_says_how_to_start(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["runs"]) == 0
    assert "no runs under runs/ yet" in capsys.readouterr().out


def test_of_folders_started_in_the_same_second_the_newest_suffix_is_continued(tmp_path):
    """Two runs in one second make <name> and <name>.1 (then .2 ... .10): the same command again
    continues the newest, counting .10 after .9."""
    from convbench.config import preset
    from convbench.experiment.run_folders import choose_run_dir, config_hash

    cfg = preset("quick")
    name = f"20261204-101500-{config_hash(cfg)}"
    for suffix in ("", ".1", ".9", ".10"):
        (tmp_path / f"{name}{suffix}").mkdir()
    (tmp_path / f"20261204-101459-{config_hash(cfg)}.11").mkdir()  # an older second
    assert choose_run_dir(cfg, root=tmp_path) == tmp_path / f"{name}.10"
