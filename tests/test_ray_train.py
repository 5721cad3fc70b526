"""Ray Train path: batch plan, naming, real training on 1 and 2 CPU workers, and resume after a killed worker.

    .venv/bin/pytest -q tests/test_ray_train.py

The Ray tests start one local Ray for the module (about 3 s) and train cnn_vgg on a small synthetic
two-class problem, so each fit is dominated by Ray's fixed start-up cost (about 15-25 s here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from convbench.config import AnalysisConfig, RunConfig, TrainConfig
from convbench.errors import ConvbenchError
from convbench.models import list_models
from convbench.training.recipes import model_precision
from convbench.orchestrate.ray_train import RayOptions, address_mode, job_name, plan_batches, wants_ray


def test_batch_plan_keeps_global_batch_and_learning_rate():
    cfg = TrainConfig(global_batch_size=256, lr_per_1024=0.8)
    one, two = plan_batches(cfg, 1), plan_batches(cfg, 2)
    assert (one.per_worker_batch_size, two.per_worker_batch_size) == (256, 128)
    assert one.global_batch_size == two.global_batch_size == 256
    assert one.peak_learning_rate == two.peak_learning_rate == pytest.approx(0.8 * 256 / 1024)
    gpus = plan_batches(cfg, 2, gpus_per_worker=4)
    assert (gpus.per_worker_batch_size, gpus.per_replica_batch_size) == (128, 32)
    with pytest.raises(ConvbenchError, match="multiple of 3"):
        plan_batches(cfg, 3)


def test_addresses_names_and_when_ray_is_used():
    assert address_mode("") == "local"
    assert address_mode("auto") == address_mode("ray://head:10001") == "attach"
    assert address_mode("http://convbench-ray-head.kubeflow.svc.cluster.local:8265") == "submit"
    with pytest.raises(ConvbenchError, match="not understood"):
        address_mode("ftp://x")
    assert not wants_ray(None, None) and not wants_ray(1, "")
    assert wants_ray(2, None) and wants_ray(1, "auto")
    with pytest.raises(ConvbenchError):
        wants_ray(0, None)
    name = job_name("Run 2026/11 quick", "cnn_vgg", 1)
    assert name == "run-2026-11-quick-cnn-vgg-seed1"
    long = job_name("x" * 80, "efficientnet_lite0", 0)
    assert len(long) <= 63 and long.endswith("-efficientnet-lite0-seed0")


def _separable(n: int, seed: int):
    """Dark vs bright images: a CNN separates them within an epoch or two."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int32)
    x = np.where(y[:, None, None, None] == 1, 170, 70) + rng.integers(-50, 50, (n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def _data():
    from convbench.data.datasets import Dataset

    x, y = _separable(512, 0)
    xv, yv = _separable(128, 1)
    xt, yt = _separable(128, 2)
    return Dataset(x, y, xv, yv, xt, yt, ["dark", "bright"], "synthetic")


def _config(epochs: int) -> RunConfig:
    # Analysis extras off: they are the plain path's code and cost more than the training here.
    return dataclasses.replace(
        RunConfig(models=("cnn_vgg",)),
        train=TrainConfig(epochs=epochs, global_batch_size=64, lr_per_1024=0.4, warmup_epochs=0.5),
        analysis=AnalysisConfig(robustness_images=0, tta_flip=False, saliency_images=0, mistakes=0),
        measure_latency=False,
    )


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the module; its session files live under pytest's tmp dir."""
    ray = pytest.importorskip("ray")
    from convbench.orchestrate.ray_train import ray_session

    # A short folder: Ray's socket paths must stay under 107 characters, so under pytest-xdist it
    # skips the worker's own level (popen-gwN/).
    base = tmp_path_factory.getbasetemp()
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir=base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)
    with ray_session(RayOptions()):
        yield ray


def _epoch_log(out: Path) -> list[dict]:
    [path] = (out / "ray").glob("*.epochs.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _image_folder(root: Path) -> Path:
    """The separable problem as a class-subfolder image folder, for `convbench run`."""
    from PIL import Image

    for split, (n, seed) in {"train": (288, 0), "test": (64, 2)}.items():
        x, y = _separable(n, seed)
        for i, (img, label) in enumerate(zip(x, y)):
            folder = root / split / ("bright" if label else "dark")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


FAST_CONFIG = """
measure_latency: false
analysis: {robustness_images: 0, tta_flip: false, saliency_images: 0, mistakes: 0}
train: {global_batch_size: 64, lr_per_1024: 0.4, warmup_epochs: 0.5, lookahead_every: 2, lookahead_from_epoch: 1}
augment: {alternate_flip: true}
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_convbench_run_under_ray_learns_and_checkpoints(local_ray, tmp_path, workers):
    """`convbench run --workers N` (N=1 needs an address to use Ray: the module's Ray, attached as `auto`),
    with lookahead and the alternating flip on, so both run under MultiWorkerMirroredStrategy."""
    from convbench.cli.commands import main

    (tmp_path / "fast.yaml").write_text(FAST_CONFIG)
    out = tmp_path / "run"
    ray_args = ["--workers", str(workers)] + (["--ray-address", "auto"] if workers == 1 else [])
    code = main(["run", "--data", str(_image_folder(tmp_path / "data")), "--models", "cnn_vgg", "--epochs", "2",
                 "--config", str(tmp_path / "fast.yaml"), "--out", str(out), *ray_args])
    assert code == 0
    rows = [r for r in _epoch_log(out) if r["event"] == "epoch"]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["workers"] == workers for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    results = json.loads((out / "results.json").read_text())
    [entry] = results["runs"]
    assert entry["epochs_run"] == 2 and entry["best_val_accuracy"] > 0.8
    assert entry["distributed"]["workers"] == workers
    assert entry["distributed"]["global_batch_size"] == 64
    assert entry["distributed"]["per_worker_batch_size"] == 64 // workers
    # Ray holds the last epoch's checkpoint; the run directory has the same files as a plain run.
    [ckpt] = (out / "ray").glob("*/checkpoint_*/checkpoint.npz")
    from convbench.training.loop import load_checkpoint

    assert len(load_checkpoint(ckpt)[0]["history"]) == 2
    for rel in ("REPORT.md", "models/cnn_vgg/seed0/best.weights.h5", "history/cnn_vgg_seed0.csv",
                "predictions/cnn_vgg_seed0.npz"):
        assert (out / rel).is_file(), rel
    run_log = (out / "run.log").read_text()
    assert "Ray Train run run-cnn-vgg-seed0" in run_log
    # The rank-0 worker's lines join the driver's in run.log, in the same format.
    assert re.search(r"^\d\d:\d\d:\d\d \[cnn_vgg seed 0\] Ray worker group of " + str(workers) + " up", run_log, re.M)
    assert re.search(r"^\d\d:\d\d:\d\d \[cnn_vgg seed 0\] epoch 2/2 train: loss", run_log, re.M)


@pytest.mark.slow
def test_killed_worker_resumes_without_redoing_finished_epochs(local_ray, tmp_path):
    """SIGKILL the rank-0 worker once two epochs are reported; Ray restarts the group from the checkpoint."""
    from convbench.orchestrate.ray_train import train_and_evaluate_ray

    out = tmp_path / "run"
    killed: list[int] = []

    def kill_after_second_epoch():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            try:
                rows = _epoch_log(out)
            except (ValueError, OSError, json.JSONDecodeError):
                rows = []
            epochs = [r for r in rows if r["event"] == "epoch"]
            if len(epochs) >= 2:
                killed.append(epochs[-1]["pid"])
                os.kill(epochs[-1]["pid"], signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_second_epoch, daemon=True)
    killer.start()
    entry = train_and_evaluate_ray("cnn_vgg", 0, _config(4), _data(), out, RayOptions(workers=2, max_failures=2))
    killer.join(timeout=5)
    assert killed, "the worker was never killed (training finished before epoch 2 was logged?)"
    log = _epoch_log(out)
    starts = [i for i, r in enumerate(log) if r["event"] == "start"]
    assert len(starts) == 2, log  # the first attempt and one restart
    first = [r["epoch"] for r in log[starts[0]:starts[1]] if r["event"] == "epoch"]
    second = [r["epoch"] for r in log[starts[1]:] if r["event"] == "epoch"]
    assert log[starts[1]]["pid"] != killed[0]
    # Every epoch finished before the kill is kept; the restart continues after them.
    assert first[:2] == [1, 2]
    assert log[starts[1]]["restored_epochs"] == len(first)
    assert second == list(range(len(first) + 1, 5))
    assert entry["epochs_run"] == 4 and entry["distributed"]["attempts"] == 2
    history = (out / "history" / "cnn_vgg_seed0.csv").read_text().splitlines()
    assert len(history) == 1 + 4


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models("custom"))
def test_every_custom_model_trains_under_two_ray_workers(local_ray, tmp_path, name):
    """One short epoch of each custom CNN on 2 Ray workers (MultiWorkerMirroredStrategy, the per-worker
    loop and ray.train.report), in the precision `auto` picks here; cnn_airbench's whitening is set from
    the first batch outside the replica context, so it trains there too (it once failed in merge_call)."""
    from convbench.orchestrate.ray_train import train_and_evaluate_ray

    config = dataclasses.replace(_config(1), models=(name,))
    out = tmp_path / "run"
    entry = train_and_evaluate_ray(name, 0, config, _data(), out, RayOptions(workers=2))
    assert entry["distributed"]["workers"] == 2 and entry["distributed"]["per_worker_batch_size"] == 32
    rows = [r for r in _epoch_log(out) if r["event"] == "epoch"]
    assert [r["epoch"] for r in rows] == [1] and rows[0]["workers"] == 2
    assert np.isfinite(rows[0]["train_loss"]) and np.isfinite(entry["test_accuracy"])
    assert entry["mixed_precision"] == model_precision(name, config.recipe(name))[0]
