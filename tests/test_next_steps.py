"""The conclusions' suggestions run as written: each is a `convbench run` command with its own --out
whose config file is the run's config with exactly the one change the suggestion names, in the
setting that applies to the model (its override when it has one).

    .venv/bin/pytest -q tests/test_next_steps.py
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from convbench import config as cfgmod
from convbench.cli.commands import build_parser
from convbench.cli.options import resolve_config
from convbench.report.document import write_report

from test_report import _curve, _results, _run


def _flatten(data, prefix=()) -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _differences(before: dict, after: dict) -> dict:
    a, b = _flatten(before), _flatten(after)
    return {".".join(k): (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _run_dir(root: Path, runs: list[dict], config, curves: dict, monkeypatch, wall_seconds: float = 600.0) -> Path:
    """A finished run folder, runs/quick-demo under root (the working directory from now on), as `convbench run`
    leaves it: results.json with the full config, and histories."""
    monkeypatch.chdir(root)
    results = _results(runs)
    results["config"] = cfgmod.to_dict(config)
    results["wall_seconds"] = wall_seconds
    run_dir = root / "runs" / "quick-demo"
    (run_dir / "history").mkdir(parents=True)
    for key, rows in curves.items():
        pd.DataFrame(rows).to_csv(run_dir / "history" / f"{key}.csv", index=False)
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def _commands(report: str) -> list[list[str]]:
    return [shlex.split(line) for line in re.findall(r"^\s+(convbench run .+)$", report, re.M)]


def _check_commands(run_dir: Path) -> dict[str, dict]:
    """Parse every command of the report as `convbench run` would; returns slug -> {setting: (before, after)}."""
    original = cfgmod.from_dict(json.loads((run_dir / "results.json").read_text())["config"])
    commands = _commands((run_dir / "REPORT.md").read_text())
    assert commands, "no runnable suggestion in the report"
    changes = {}
    for argv in commands:
        assert argv[:2] == ["convbench", "run"]
        args = build_parser().parse_args(argv[1:])
        slug = Path(args.config).stem
        assert Path(args.config) == Path("runs/quick-demo/next") / f"{slug}.yaml" and Path(args.config).is_file()
        assert args.out == f"runs/quick-demo-{slug}"  # its own folder, beside the run
        changes[slug] = _differences(cfgmod.to_dict(original), cfgmod.to_dict(resolve_config(args)))
        assert changes[slug], f"{slug} changes nothing"
    return changes


def test_train_longer_changes_the_per_model_override_that_sets_the_epochs(tmp_path, monkeypatch):
    """The quick preset gives cnn_resnet its own epoch count: raising train.epochs would not touch it."""
    config = dataclasses.replace(cfgmod.preset("quick"), models=("cnn_vgg", "cnn_resnet"))
    epochs = config.overrides["cnn_resnet"].train["epochs"]
    assert epochs != config.train.epochs
    runs = copy.deepcopy([_run("cnn_resnet", "custom", 0.80, 0.79, 0.80, 1e8, 9e5),
                          _run("cnn_vgg", "custom", 0.70, 0.69, 0.70, 7e7, 3e5)])
    run_dir = _run_dir(tmp_path, runs, config, {"cnn_resnet_seed0": _curve(0.79, True), "cnn_vgg_seed0": _curve(0.69, False)}, monkeypatch)
    write_report(run_dir)
    changes = _check_commands(run_dir)
    assert changes["train-longer"] == {"overrides.cnn_resnet.train.epochs": (epochs, 2 * epochs)}
    assert changes["seeds-3"] == {"seeds": (1, 3)}
    report = (run_dir / "REPORT.md").read_text()
    assert f"Raise `overrides.cnn_resnet.train.epochs` from {epochs} to {2 * epochs}" in report
    # Costs come from this run's times: 600 s of wall time plus 100 s more of cnn_resnet; 3 seeds triple it.
    assert "About 12 min on this machine (this run took 10 min)" in report
    assert "About 30 min on this machine (this run took 10 min)" in report


def test_regularize_sets_every_named_setting_and_nothing_else(tmp_path, monkeypatch):
    config = dataclasses.replace(cfgmod.preset("quick"), models=("cnn_vgg", "cnn_resnet"))
    runs = copy.deepcopy([_run("cnn_vgg", "custom", 0.80, 0.79, 0.99, 7e7, 3e5),
                          _run("cnn_resnet", "custom", 0.70, 0.69, 0.70, 1e8, 9e5)])
    run_dir = _run_dir(tmp_path, runs, config, {"cnn_vgg_seed0": _curve(0.79, False), "cnn_resnet_seed0": _curve(0.69, False)}, monkeypatch)
    write_report(run_dir)
    changes = _check_commands(run_dir)
    decay = config.regularization.weight_decay
    assert changes["regularize"] == {"augment.cutmix_alpha": (0.0, 1.0), "augment.cutout": (0, 8),
                                     "regularization.weight_decay": (decay, 2 * decay)}


def test_a_transfer_winner_gets_resolution_and_fine_tuning_commands_and_the_measured_tta_gain(tmp_path, monkeypatch):
    config = dataclasses.replace(cfgmod.preset("quick"), models=("efficientnet_lite0", "cnn_vgg"),
                                 overrides={"efficientnet_lite0": cfgmod.ModelOverride(transfer={"resolution": 64})})
    best = _run("efficientnet_lite0", "transfer", 0.85, 0.84, 0.85, 3e8, 3.6e6)
    best.update(tta_accuracy=0.90, test_images=1000, latency_ms_batch1=4.0)
    runs = copy.deepcopy([best, _run("cnn_vgg", "custom", 0.70, 0.69, 0.70, 7e7, 3e5)])
    head = [{"epoch": i + 1, "phase": "head", "train_accuracy": v + 0.01, "val_accuracy": v, "train_loss": 1.0, "val_loss": 1.0,
             "seconds": 1.0} for i, v in enumerate([0.80, 0.82])]
    tune = [{"epoch": 3, "phase": "finetune", "train_accuracy": 0.85, "val_accuracy": 0.84, "train_loss": 0.9, "val_loss": 0.9,
             "seconds": 10.0}]
    run_dir = _run_dir(tmp_path, runs, config, {"efficientnet_lite0_seed0": head + tune, "cnn_vgg_seed0": _curve(0.69, False)}, monkeypatch)
    write_report(run_dir)
    changes = _check_commands(run_dir)
    assert changes["resolution-128"] == {"overrides.efficientnet_lite0.transfer.resolution": (64, 128)}
    blocks, epochs = config.transfer.finetune_blocks, config.transfer.finetune_epochs
    assert set(changes["finetune-more"]) == {"overrides.efficientnet_lite0.transfer.finetune_blocks",
                                             "overrides.efficientnet_lite0.transfer.finetune_epochs"}
    assert changes["finetune-more"]["overrides.efficientnet_lite0.transfer.finetune_blocks"][1] == blocks + 1
    assert changes["finetune-more"]["overrides.efficientnet_lite0.transfer.finetune_epochs"][1] > epochs
    report = (run_dir / "REPORT.md").read_text()
    assert ("raised efficientnet_lite0's test accuracy by +5.00 points (85.00 % → 90.00 % on 1000 test images), for twice "
            "the prediction cost (4.0 ms → 8.0 ms per image at batch 1)") in report


def test_the_spanish_report_offers_the_same_commands_and_stale_suggestions_are_removed(tmp_path, monkeypatch):
    config = dataclasses.replace(cfgmod.preset("quick"), models=("cnn_vgg", "cnn_resnet"))
    runs = copy.deepcopy([_run("cnn_resnet", "custom", 0.80, 0.79, 0.80, 1e8, 9e5),
                          _run("cnn_vgg", "custom", 0.70, 0.69, 0.70, 7e7, 3e5)])
    run_dir = _run_dir(tmp_path, runs, config, {"cnn_resnet_seed0": _curve(0.79, True), "cnn_vgg_seed0": _curve(0.69, False)}, monkeypatch)
    english = _commands(write_report(run_dir).read_text())
    spanish_report = write_report(run_dir, lang="es").read_text()
    assert _commands(spanish_report) == english
    epochs = config.overrides["cnn_resnet"].train["epochs"]
    assert f"Sube `overrides.cnn_resnet.train.epochs` de {epochs} a {2 * epochs}" in spanish_report
    # The same folder after a longer training no longer suggests training longer: its file goes.
    (run_dir / "history" / "cnn_resnet_seed0.csv").write_text(pd.DataFrame(_curve(0.79, False)).to_csv(index=False))
    write_report(run_dir)
    assert not (run_dir / "next" / "train-longer.yaml").exists() and (run_dir / "next" / "seeds-3.yaml").exists()
