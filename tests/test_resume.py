"""Crash safety: kill -9 and resume for real, the run-directory lock, full or unwritable disks.

Run: .venv/bin/pytest tests/test_resume.py -q -rP --durations=0

The kill test starts `python -m convbench.cli run` with two models on a tiny synthetic dataset,
SIGKILLs it once the first model is finished and the second has written an epoch checkpoint, runs
the same command again and checks what the issue asks: the finished model is reused untouched,
the interrupted one resumes at its next epoch (history complete, each epoch once, learning-rate
schedule continuing where it stopped) and REPORT.md covers both. While the first process trains, a
second run on the same folder is refused (the lock); after the kill, its stale lock is taken over.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_data import two_classes, write_dataset  # noqa: E402
from helpers_tensorboard import read_hparams, read_scalars  # noqa: E402

from convbench.cli import commands as cli  # noqa: E402
from convbench.errors import ConvbenchError  # noqa: E402
from convbench.io import atomic_write, atomic_write_json, atomic_write_text, check_writable  # noqa: E402
from convbench.lock import LOCK_NAME, RunLock, pid_alive, read_lock  # noqa: E402
from convbench.models import list_models  # noqa: E402

EPOCHS = {"cnn_vgg": 2, "cnn_resnet": 4}


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "CONVBENCH_CACHE": str(tmp_path / "cache"), "KERAS_HOME": str(tmp_path / "keras"),
            "MPLCONFIGDIR": str(tmp_path / "mpl"), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("convbench: error: "), err
    print("USER SEES:", lines[0])
    return lines[0]


def _checkpoint_epochs(path: Path) -> int:
    from convbench.training.loop import load_checkpoint

    try:
        state, *_ = load_checkpoint(path)
    except (OSError, ValueError, KeyError):
        return 0  # being replaced right now: look again
    return len(state["history"])


# ---------------------------------------------------------------------------------------------
# kill -9, then the same command again


def test_kill_9_then_rerun_resumes(tmp_path, capsys):
    import pandas as pd

    data = write_dataset(tmp_path / "data", classes=4, train=24, test=6)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "measure_latency": False,
        "train": {"epochs": EPOCHS["cnn_vgg"], "global_batch_size": 16, "eval_batch_size": 64},
        "overrides": {"cnn_resnet": {"train": {"epochs": EPOCHS["cnn_resnet"]}}},
        "analysis": {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0},
    }))
    out = tmp_path / "run"
    argv = ["run", "--data", str(data), "--models", "cnn_vgg,cnn_resnet", "--config", str(config), "--out", str(out)]
    command = [sys.executable, "-m", "convbench.cli", *argv]
    checkpoint = out / "models" / "cnn_resnet" / "seed0" / "checkpoint.npz"
    import convbench.models  # noqa: F401 - import TensorFlow now, not while racing the first run

    with open(tmp_path / "first.log", "w") as first_log:
        proc = subprocess.Popen(command, stdout=first_log, stderr=subprocess.STDOUT, env=_env(tmp_path), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        refused = None
        while time.monotonic() < deadline and proc.poll() is None:
            if refused is None and read_lock(out) is not None:
                # A second run on the same folder while the first trains: refused, nothing touched.
                rc = cli.main(argv)
                refused = (rc, capsys.readouterr().err)
            if (out / "results.json").exists() and checkpoint.exists() and _checkpoint_epochs(checkpoint) >= 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the first run never reached cnn_resnet's first checkpoint:\n{(tmp_path / 'first.log').read_text()[-3000:]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    assert refused is not None, "the lock file never appeared while the first run trained"
    assert refused[0] == 2
    line = _one_error_line(refused[1])
    assert f"another convbench run (pid {proc.pid}" in line and "pass a different --out" in line

    done_before_kill = _checkpoint_epochs(checkpoint)
    from convbench.training.loop import load_checkpoint

    kept_history = pd.DataFrame(load_checkpoint(checkpoint)[0]["history"])
    assert 1 <= done_before_kill < EPOCHS["cnn_resnet"], "killed too late to test resuming"
    first = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in first["runs"]] == ["cnn_vgg"]
    vgg_entry = first["runs"][0]
    vgg_files = {p: _sha(out / p) for p in ("history/cnn_vgg_seed0.csv", "predictions/cnn_vgg_seed0.npz",
                                            "models/cnn_vgg/seed0/best.weights.h5")}
    assert read_lock(out)["pid"] == proc.pid and not pid_alive(proc.pid)  # the killed run's lock is left behind

    second = subprocess.run(command, capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=240)
    log = second.stdout
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    print(log)

    # The stale lock is taken over, the finished model reused, the interrupted one resumed.
    assert f"taking over the stale lock of a run that died (pid {proc.pid}" in log
    assert "reusing 1 finished runs" in log
    assert f"[cnn_resnet seed 0] resuming from checkpoint.npz: {done_before_kill} epochs already done" in log
    assert "[cnn_vgg seed 0] epoch" not in log, "the finished model was trained again"
    assert "[cnn_resnet seed 0] epoch 1/" not in log or done_before_kill == 0

    final = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in final["runs"]] == ["cnn_vgg", "cnn_resnet"]
    assert final["runs"][0] == vgg_entry
    assert {p: _sha(out / p) for p in vgg_files} == vgg_files

    history = pd.read_csv(out / "history" / "cnn_resnet_seed0.csv")
    assert history["epoch"].tolist() == list(range(1, EPOCHS["cnn_resnet"] + 1))
    assert final["runs"][1]["epochs_run"] == EPOCHS["cnn_resnet"]
    # Epochs finished before the kill are kept as they were, not re-run.
    before = history.iloc[:done_before_kill]
    for column in ("train_loss", "val_loss", "val_accuracy", "lr"):
        assert np.allclose(before[column], kept_history[column], rtol=1e-12), column
    # The optimizer's step count was restored: the learning rate after resuming continues the
    # one-cycle schedule instead of starting its warmup again.
    from convbench.config import load_yaml
    from convbench.training.loop import make_schedule

    train_cfg = load_yaml(out / "config.yaml").recipe("cnn_resnet").train
    steps = final["data"]["train_images"] // train_cfg.global_batch_size
    schedule = make_schedule(train_cfg, steps, EPOCHS["cnn_resnet"])
    expected = [float(schedule(e * steps)) for e in range(1, EPOCHS["cnn_resnet"] + 1)]
    assert np.allclose(history["lr"], expected, rtol=1e-5, atol=1e-7)

    report = (out / "REPORT.md").read_text()
    assert "cnn_vgg" in report and "cnn_resnet" in report
    assert not (out / LOCK_NAME).exists()
    assert not list(out.rglob(".*.tmp*")) and not list(out.rglob("checkpoint*.npz"))


# ---------------------------------------------------------------------------------------------
# The lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_lock_refuses_and_dead_lock_is_taken_over(tmp_path, logged):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from convbench.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
                               "print('locked', flush=True); time.sleep(120)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env=_env(tmp_path),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConvbenchError, match=rf"another convbench run \(pid {holder.pid} on .*\) is using"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path) as lock:
        assert lock.held and read_lock(tmp_path)["pid"] == os.getpid()
    lines = logged()
    assert any(f"taking over the stale lock of a run that died (pid {holder.pid}" in line for line in lines)
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("content", ["dead-pid", "garbage", "empty"])
def test_stale_lock_file_is_taken_over(tmp_path, content):
    text = {"dead-pid": json.dumps({"pid": _dead_pid(), "host": os.uname().nodename, "started": "earlier"}),
            "garbage": "\x00not json", "empty": ""}[content]
    (tmp_path / LOCK_NAME).write_text(text)
    lock = RunLock(tmp_path).acquire()
    assert read_lock(tmp_path)["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_without_flock_uses_the_pid(tmp_path, monkeypatch):
    """Network file systems without flock: the pid alone decides (fcntl is removed to simulate one)."""
    import convbench.lock as lockmod

    monkeypatch.setattr(lockmod, "fcntl", None)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))
        with pytest.raises(ConvbenchError, match=f"pid {sleeper.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunLock(tmp_path):
        assert read_lock(tmp_path)["pid"] == os.getpid()


def test_lock_is_released_when_the_run_fails(tmp_path, capsys):
    """A run that stops on bad data leaves no lock behind: the next run is not blocked."""
    data = write_dataset(tmp_path / "data", classes=1)
    out = tmp_path / "out"
    rc = cli.main(["run", "--data", str(data), "--models", "cnn_vgg", "--out", str(out)])
    assert rc == 2 and "only one class" in capsys.readouterr().err
    assert out.is_dir() and not (out / LOCK_NAME).exists()


def test_temp_files_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / "models").mkdir()
    leftovers = [tmp_path / ".results.json.ab12cd.tmp", tmp_path / "models" / ".checkpoint.npz.x1y2.tmp",
                 tmp_path / "models" / ".best.weights.h5.q9.tmp.weights.h5"]
    for p in leftovers:
        p.write_bytes(b"partial")
    keep = tmp_path / "results.json"
    keep.write_text("{}")
    with RunLock(tmp_path):
        pass
    assert not any(p.exists() for p in leftovers) and keep.exists()


# ---------------------------------------------------------------------------------------------
# Full disk, unwritable folders: clear error before training, old results untouched


def _existing_run(tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "out"
    out.mkdir()
    atomic_write_json(out / "results.json", {"runs": [{"name": "cnn_vgg", "test_accuracy": 0.5}]})
    return out, _sha(out / "results.json")


def test_simulated_full_disk_stops_before_training(tmp_path, capsys, monkeypatch):
    """shutil.disk_usage is patched to report 5 MiB free: a real full disk cannot be made without root mounts."""
    import convbench.io as iomod

    data = write_dataset(tmp_path / "data", classes=2, train=10, test=3)
    out, digest = _existing_run(tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(iomod.shutil, "disk_usage", lambda p: usage(10 * 2**30, 10 * 2**30 - 5 * 2**20, 5 * 2**20))
    rc = cli.main(["run", "--data", str(data), "--models", "cnn_vgg", "--out", str(out)])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "only 5 MiB free on the disk of" in line and "free some space" in line
    assert _sha(out / "results.json") == digest and not (out / "models").exists()


def test_disk_full_while_writing_keeps_the_old_file(tmp_path):
    """A real ENOSPC from /dev/full in the middle of a write: the target keeps its old content."""
    target = tmp_path / "results.json"
    atomic_write_text(target, "old content\n")

    def write(tmp: Path) -> None:
        tmp.write_text("half of the new")
        with open("/dev/full", "wb") as full:
            full.write(b"x" * 4096)
            full.flush()

    if not Path("/dev/full").exists():
        def write(tmp: Path) -> None:  # noqa: F811 - same failure, raised by hand where /dev/full is missing
            tmp.write_text("half of the new")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ConvbenchError, match="No space left on device; free some space") as err:
        atomic_write(target, write)
    assert "\n" not in str(err.value)
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_output_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc = cli.main(["run", "--data", str(tmp_path), "--models", "cnn_vgg", "--out", str(tmp_path / "file" / "run")])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot write to the output folder" in line and "Not a directory" in line


def test_unwritable_output_folder_keeps_results(tmp_path, capsys, monkeypatch):
    """Permission bits do not stop root, so as root the CLI runs with effective uid nobody."""
    import convbench.bench.benchmark  # noqa: F401 - the CLI's lazy imports need the stdlib, unreadable to uid nobody
    from test_bad_input import unprivileged

    data = write_dataset(tmp_path / "data", classes=2, train=10, test=3)
    out, digest = _existing_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    tmp_path.chmod(0o755)
    out.chmod(0o555)
    try:
        with unprivileged():
            rc = cli.main(["run", "--data", "data", "--models", "cnn_vgg", "--out", "out"])
    finally:
        out.chmod(0o755)
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot write to the output folder out (Permission denied)" in line
    assert _sha(out / "results.json") == digest
    assert data.is_dir()


def test_check_writable_accepts_a_normal_folder(tmp_path):
    check_writable(tmp_path / "new" / "run", min_free_bytes=1)
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())


def test_atomic_files_get_normal_permissions_and_strict_json(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"nan": float("nan"), "inf": float("inf"), "np": np.float32(0.5), "arr": np.arange(2)})
    assert json.loads(path.read_text()) == {"nan": None, "inf": None, "np": 0.5, "arr": [0, 1]}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    path.chmod(0o640)
    atomic_write_json(path, {})
    assert path.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode


# ---------------------------------------------------------------------------------------------
# Damaged files are set aside, never deleted; a narrower rerun keeps every finished run


def _tiny_run(tmp_path: Path, models: str, out: Path, capsys) -> tuple[int, str]:
    data = tmp_path / "data"
    if not data.exists():
        write_dataset(data, classes=2, train=12, test=4)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "measure_latency": False,
        "train": {"epochs": 1, "global_batch_size": 8, "eval_batch_size": 16},
        "analysis": {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0},
    }))
    rc = cli.main(["run", "--data", str(data), "--models", models, "--config", str(config), "--out", str(out)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_narrower_rerun_keeps_the_other_models_results(tmp_path, capsys):
    """Issue 19 case 4: a rerun naming fewer models keeps, and does not retrain, the others."""
    out = tmp_path / "run"
    rc, _ = _tiny_run(tmp_path, "cnn_vgg,cnn_resnet", out, capsys)
    assert rc == 0
    before = json.loads((out / "results.json").read_text())["runs"]
    rc, log = _tiny_run(tmp_path, "cnn_vgg", out, capsys)
    assert rc == 0, log
    after = json.loads((out / "results.json").read_text())
    assert after["runs"] == before  # both kept, neither retrained
    assert "keeping the finished runs of cnn_resnet (not named this time)" in log
    assert "epoch 1" not in log
    assert "cnn_resnet" in (out / "REPORT.md").read_text()


@pytest.mark.parametrize("content", ["[]", "null", '{"runs": 5}', '{"runs": [{"seed": 0}]}', '{"runs": [{"name": "x", "se'])
def test_damaged_results_file_is_set_aside_with_a_warning(tmp_path, content, logged):
    """Issue 19 case 3/4: a results.json of the wrong shape or cut short is renamed, never read as a ledger."""
    from convbench.report.document import load_results
    from convbench.experiment.comparison import read_previous_results

    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ConvbenchError, match="results.json"):
        load_results(tmp_path)  # `convbench report` only reads: one line, the file untouched
    assert path.read_text() == content
    assert read_previous_results(path) == {}
    lines = logged()
    assert not path.exists()
    (aside,) = tmp_path.glob("results.json.damaged-*")
    assert aside.read_text() == content
    assert len(lines) == 1 and "is damaged" in lines[0] and aside.name in lines[0]


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "no_state"])
def test_damaged_checkpoint_is_set_aside_and_the_model_restarts(tmp_path, damage, logged):
    """Issue 19 case 3: a checkpoint cut short, emptied, overwritten or missing its state restarts the model."""
    from convbench.training.recipes import _resume_state
    from convbench.training.loop import save_checkpoint

    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD()
    optimizer.build(model.trainable_variables)
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, optimizer, {"fingerprint": "f", "history": []}, None)
    assert _resume_state(path, "f") is not None and not logged()  # intact: resumed
    blob = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint" * 10)
    else:
        with open(path, "wb") as fh:
            np.savez(fh, other=np.zeros(2))
    damaged = path.read_bytes()
    assert _resume_state(path, "f") is None
    lines = logged()
    assert not path.exists()
    (aside,) = tmp_path.glob("checkpoint.npz.damaged-*")
    assert aside.read_bytes() == damaged
    assert len(lines) == 1 and "checkpoint.npz is damaged" in lines[0]


# ---------------------------------------------------------------------------------------------
# Divergence is a result, not a crash


@pytest.mark.parametrize("name", list_models())
def test_every_model_stops_as_diverged_when_a_loss_becomes_nan(name, logged):
    """Issue 19 case 2: at an absurd learning rate every model stops in its first epoch with a
    TrainingDiverged that names the loss, the epoch and the peak learning rate, and carries the history."""
    from convbench.config import TrainConfig, preset
    from convbench.data.datasets import Dataset
    from convbench.training.recipes import fit_model
    from convbench.training.loop import TrainingDiverged

    x, y = two_classes(64)
    data = Dataset(x, y, x[:32], y[:32], x[:32], y[:32], ["dark", "bright"], "synthetic")
    base = preset("quick").recipe(name)
    recipe = dataclasses.replace(
        base, train=TrainConfig(epochs=3, global_batch_size=32, eval_batch_size=32, lr_per_1024=1e35),
        transfer=dataclasses.replace(base.transfer, resolution=32, head_steps=4, finetune_epochs=1, head_lr_per_1024=1e35))
    with pytest.raises(TrainingDiverged) as info:
        fit_model(name, data, recipe, weights=None)
    lines = logged()
    exc = info.value
    assert exc.epoch == 1 and exc.quantity in ("training loss", "validation loss")
    assert exc.lr == pytest.approx(1e35 * 32 / 1024)
    assert len(exc.history) == 1 and not np.isfinite(getattr(exc.history[0], exc.quantity.replace("training", "train")
                                                                  .replace("validation", "val").replace(" ", "_")))
    assert exc.train_seconds > 0
    assert any("diverged:" in line and "stopping this model" in line for line in lines)


def test_a_diverged_model_is_reported_and_retrained_once_its_lr_is_lowered(tmp_path, capsys):
    """Issue 19 case 2 end to end: one model diverges, the other's report is written and names the
    diverged one with advice; the same command again trains nothing; with a lower learning rate in
    the config only the diverged model trains again."""
    out = tmp_path / "run"
    data = tmp_path / "data"
    write_dataset(data, classes=2, train=12, test=4)

    def run(lr: float) -> tuple[int, str]:
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({
            "measure_latency": False,
            "train": {"epochs": 2, "global_batch_size": 8, "eval_batch_size": 16},
            "analysis": {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0},
            "overrides": {"cnn_vgg": {"train": {"lr_per_1024": lr}}},
        }))
        rc = cli.main(["run", "--data", str(data), "--models", "cnn_vgg,cnn_resnet", "--config", str(config), "--out", str(out)])
        captured = capsys.readouterr()
        return rc, captured.out + captured.err

    rc, log = run(1e35)
    assert rc == 0, log
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["runs"]] == ["cnn_resnet"]
    (diverged,) = results["diverged"]
    assert diverged["name"] == "cnn_vgg" and diverged["diverged"]["epoch"] == 1
    assert diverged["diverged"]["lr_setting"] == "train.lr_per_1024" and diverged["diverged"]["lr_setting_value"] == 1e35
    assert (out / diverged["history_csv"]).exists() and not list((out / "models" / "cnn_vgg").rglob("checkpoint*.npz"))
    report = (out / "REPORT.md").read_text()
    assert "## Diverged models" in report and "**cnn_vgg** (seed 0)" in report
    assert "lr_per_1024: 1e+34" in report and "Retrain cnn_vgg at a lower learning rate" in report
    assert "higher learning rate" not in report.split("## Diverged models")[1].split("##")[0]
    assert "| cnn_resnet |" in report and "| cnn_vgg | custom |" not in report.split("## Training recipes")[0]
    # TensorBoard: the diverged model's session has its epoch and HParams but no test accuracy.
    scalars = read_scalars(out / "tensorboard" / "cnn_vgg_seed0")
    assert [step for step, _ in scalars["train"]["epoch_loss"]] == [1] and "test_accuracy" not in scalars[""]
    assert read_hparams(out / "tensorboard" / "cnn_vgg_seed0")["status"] == "diverged"
    assert "test_accuracy" in read_scalars(out / "tensorboard" / "cnn_resnet_seed0")[""]

    rc, log = run(1e35)
    assert rc == 0 and "epoch 1" not in log, log  # a diverged run is a finished result
    rc, log = run(2.0)
    assert rc == 0, log
    assert "retraining cnn_vgg with its changed recipe (it had diverged)" in log
    assert "[cnn_resnet seed 0] epoch" not in log and "[cnn_vgg seed 0] epoch 2" in log
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["name"] for r in results["runs"]) == ["cnn_resnet", "cnn_vgg"] and results["diverged"] == []
    # The retrained model's session replaced the diverged one's: two epochs, a test accuracy.
    scalars = read_scalars(out / "tensorboard" / "cnn_vgg_seed0")
    assert [step for step, _ in scalars["validation"]["epoch_accuracy"]] == [1, 2]
    assert read_hparams(out / "tensorboard" / "cnn_vgg_seed0")["status"] == "finished"


def test_a_report_of_only_diverged_models_says_so(tmp_path, capsys, logged):
    """Every model diverged: `convbench report` writes a report that says so, not an error."""
    from convbench.report.document import write_report

    entry = {"name": "cnn_vgg", "kind": "custom", "seed": 0, "status": "diverged", "history_csv": "history/x.csv",
             "diverged": {"epoch": 3, "phase": "train", "quantity": "training loss", "value": "inf", "lr": 9.5,
                          "lr_setting": "train.lr_per_1024", "lr_setting_value": 38.0}}
    atomic_write_json(tmp_path / "results.json", {"runs": [], "diverged": [entry], "models": []})
    text = write_report(tmp_path).read_text()
    lines = logged()
    assert "every one diverged" in text and "training loss became inf at epoch 3" in text and "lr_per_1024: 3.8" in text
    assert "every model diverged" in lines[-1]


@pytest.mark.parametrize("name", list_models())
def test_train_time_of_a_resumed_model_includes_the_earlier_process(name, tmp_path, logged):
    """Issue 19 case 6: a model whose epochs all finished before a kill (say in its robustness step)
    reports, after the resume, the training time its checkpoint recorded plus this process's own,
    not only the few seconds of the process that found nothing left to train.

    Its TensorBoard session (issue 17), written live by the first process and completed by the
    resumed one, shows every epoch once in train/ and validation/, with the HParams."""
    from convbench.config import TrainConfig, preset
    from convbench.data.datasets import Dataset
    from convbench.training.recipes import fit_model
    from convbench.training.tensorboard_events import EpochWriter, flat_hparams
    from convbench.training.loop import load_checkpoint

    x, y = two_classes(64)
    data = Dataset(x, y, x[:32], y[:32], x[:32], y[:32], ["dark", "bright"], "synthetic")
    base = preset("quick").recipe(name)
    recipe = dataclasses.replace(
        base, train=TrainConfig(epochs=1, global_batch_size=32, eval_batch_size=32),
        transfer=dataclasses.replace(base.transfer, resolution=32, head_steps=2, finetune_epochs=1))
    session = tmp_path / "tensorboard" / f"{name}_seed0"
    live = EpochWriter(session, fresh=True)
    _, first = fit_model(name, data, recipe, checkpoint_dir=tmp_path, weights=None,
                           on_epoch_end=live.write_epoch)
    live.close()
    epochs = [r.epoch for r in first.history]
    assert [step for step, _ in read_scalars(session)["validation"]["epoch_accuracy"]] == epochs
    (path,) = sorted(tmp_path.glob("checkpoint*.npz"))[-1:]
    state, *_ = load_checkpoint(path)
    assert 0 < state["call_seconds"] <= first.train_seconds
    assert state["call_seconds"] >= sum(r["seconds"] for r in state["history"])
    _, resumed = fit_model(name, data, recipe, checkpoint_dir=tmp_path, weights=None)
    lines = logged()
    assert any("epochs already done" in line for line in lines)
    assert [r.epoch for r in resumed.history] == [r.epoch for r in first.history]
    assert resumed.train_seconds > state["call_seconds"]
    EpochWriter(session, fresh=False).finish(resumed.history, {"model": name, **flat_hparams(dataclasses.asdict(recipe))}, 0.5)
    scalars = read_scalars(session)
    for split, tags in (("train", ("epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_images_per_second")),
                        ("validation", ("epoch_loss", "epoch_accuracy"))):
        assert sorted(scalars[split]) == sorted(tags)
        assert all([step for step, _ in scalars[split][tag]] == epochs for tag in tags), scalars[split]
    assert scalars["validation"]["epoch_accuracy"] == [(r.epoch, pytest.approx(r.val_accuracy)) for r in resumed.history]
    assert scalars[""]["test_accuracy"] == [(epochs[-1], 0.5)]
    hparams = read_hparams(session)
    assert hparams["model"] == name and hparams["train.global_batch_size"] == 32


# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM: one line, the lock released, and the same command resumes (plain and Ray)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm-plain", "ctrl-c-ray"])
def test_interrupted_run_says_one_line_and_the_same_command_resumes(tmp_path, how):
    """Issue 19 cases 1 and 11. `ctrl-c-ray` sends SIGINT to the whole process group, as a terminal's
    Ctrl-C does, during a two-worker Ray Train run; `sigterm-plain` sends SIGTERM (kill, Kubernetes)
    to a plain run. Both print the one line and leave no lock; the same command then resumes after
    the epochs already checkpointed (under Ray without the deprecated resume_from_checkpoint) and finishes."""
    from convbench.errors import INTERRUPTED

    ray = how.endswith("ray")
    data = write_dataset(tmp_path / "data", classes=2, train=32, test=4)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "measure_latency": False, "train": {"epochs": 4, "global_batch_size": 16, "eval_batch_size": 64},
        "analysis": {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0},
    }))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "convbench.cli", "run", "--data", str(data), "--models", "cnn_vgg", "--config", str(config),
               "--out", str(out), *(["--workers", "2"] if ray else [])]
    # Ray's socket paths must stay under 108 bytes: a short folder beside pytest's own.
    env = {**_env(tmp_path), "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir=tmp_path.parents[1])}
    checkpoint = out / "models" / "cnn_vgg" / "seed0" / "checkpoint.npz"
    with open(tmp_path / "first.log", "w") as first_log:
        proc = subprocess.Popen(command, stdout=first_log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists() and _checkpoint_epochs(checkpoint) >= 1:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the first run never checkpointed an epoch:\n{(tmp_path / 'first.log').read_text()[-3000:]}")
        if ray:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = (tmp_path / "first.log").read_text()
    assert proc.returncode == (130 if ray else 143), first[-3000:]
    assert first.rstrip().splitlines()[-1] == INTERRUPTED and "Traceback" not in first, first[-3000:]
    assert not (out / LOCK_NAME).exists()
    done = _checkpoint_epochs(checkpoint)
    assert 1 <= done < 4, "interrupted too late to test resuming"

    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "DeprecationWarning" not in log and "Traceback" not in log
    if ray:
        assert f"resuming after {done} finished epoch(s)" in log
    assert f"resuming from checkpoint.npz: {done} epochs already done" in log
    assert f"[cnn_vgg seed 0] epoch {done}/4 train" not in log
    (entry,) = json.loads((out / "results.json").read_text())["runs"]
    assert entry["epochs_run"] == 4


# ---------------------------------------------------------------------------------------------
# Damaged predictions and histories in a finished run folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished two-model run folder on tiny data, and the command that made it (copy before damaging)."""
    base = tmp_path_factory.mktemp("finished")
    data = write_dataset(base / "data", classes=2, train=12, test=4)
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "measure_latency": False, "train": {"epochs": 1, "global_batch_size": 8, "eval_batch_size": 16},
        "analysis": {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0},
    }))
    argv = ["run", "--data", str(data), "--models", "cnn_vgg,cnn_resnet", "--config", str(config), "--out", str(base / "run")]
    assert cli.main(argv) == 0
    return base / "run", argv


def _copy_run(finished_run, tmp_path: Path) -> tuple[Path, list[str]]:
    import shutil

    src, argv = finished_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    return out, argv[:-1] + [str(out)]


@pytest.mark.parametrize("damage", ["empty", "binary", "other columns"])
def test_a_damaged_history_csv_costs_only_its_learning_curve(finished_run, tmp_path, damage, logged):
    """Issue 19 case 3: `convbench report` with a garbage history CSV renders, with one warning."""
    from convbench.report.document import write_report

    out, _ = _copy_run(finished_run, tmp_path)
    path = out / "history" / "cnn_resnet_seed0.csv"
    path.write_bytes({"empty": b"", "binary": bytes(range(256)) * 4, "other columns": b"a,b\n1,2\n"}[damage])
    text = write_report(out).read_text()
    lines = logged()
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "cnn_resnet_seed0.csv is damaged" in warnings[0] and "left out of the report" in warnings[0]
    assert "| cnn_resnet |" in text and "| cnn_vgg |" in text


def _damage_predictions(path: Path, damage: str) -> None:
    blob = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other arrays":
        with open(path, "wb") as fh:
            np.savez(fh, test_logits=np.zeros((3, 2)), test_labels=np.zeros(2), val_logits=np.zeros((1, 2)), val_labels=np.zeros(1))
    elif damage == "no val logits":
        with open(path, "wb") as fh:
            np.savez(fh, test_logits=np.zeros((2, 2)), test_labels=np.zeros(2))
    else:
        path.unlink()


@pytest.mark.parametrize("damage", ["truncated", "empty", "other arrays", "no val logits", "missing"])
def test_every_kind_of_damaged_predictions_is_recognised(finished_run, tmp_path, damage):
    """Issue 19 case 3: what the report and the rerun check (`damaged_predictions`) finds in each case."""
    from convbench.report.document import damaged_predictions

    out, _ = _copy_run(finished_run, tmp_path)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert damaged_predictions(out, runs) == []
    _damage_predictions(out / "predictions" / "cnn_vgg_seed0.npz", damage)
    ((run, path, problem),) = damaged_predictions(out, runs)
    assert run["name"] == "cnn_vgg" and path.name == "cnn_vgg_seed0.npz"
    expected = {"truncated": "BadZipFile", "empty": "EOFError", "other arrays": "do not match", "no val logits": "lacks val_logits",
                "missing": "it is missing"}[damage]
    assert expected in problem, problem


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_predictions_stop_the_report_in_one_line_and_a_rerun_retrains_that_model(finished_run, tmp_path, capsys, damage):
    """Issue 19 case 3: a predictions .npz cut short or deleted (the other damages are recognised the
    same way, above): `convbench report` says in one line what to do, or warns; the same `convbench
    run` sets the file aside and retrains only that model."""
    out, argv = _copy_run(finished_run, tmp_path)
    path = out / "predictions" / "cnn_vgg_seed0.npz"
    _damage_predictions(path, damage)
    before = json.loads((out / "results.json").read_text())["runs"]
    if damage == "missing":  # the report renders without its statistics and says why
        assert cli.main(["report", str(out)]) == 0
        assert "cnn_vgg_seed0.npz is missing; the statistics leave out cnn_vgg seed 0" in capsys.readouterr().out
    else:
        assert cli.main(["report", str(out)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "cnn_vgg_seed0.npz is damaged" in line and "retrains cnn_vgg seed 0" in line
    assert cli.main(argv) == 0
    log = capsys.readouterr().out
    assert "retraining cnn_vgg seed 0: its saved predictions are unusable" in log
    assert "[cnn_vgg seed 0] epoch 1" in log and "[cnn_resnet seed 0] epoch" not in log
    assert len(list(path.parent.glob("cnn_vgg_seed0.npz.damaged-*"))) == (0 if damage == "missing" else 1)
    after = json.loads((out / "results.json").read_text())["runs"]
    assert [r for r in after if r["name"] == "cnn_resnet"] == [r for r in before if r["name"] == "cnn_resnet"]
    assert sorted(r["name"] for r in after) == ["cnn_resnet", "cnn_vgg"]


@pytest.mark.parametrize("name", ["cnn_resnet"])
def test_a_checkpoint_of_an_older_build_of_the_model_is_refused_in_one_line(name):
    """Weights of the width-24 cnn_resnet (as many variables, other shapes) are not assigned to the
    width-32 build: one ConvbenchError that says what to do, and the model is left untouched."""
    from convbench.models import create_model
    from convbench.training.loop import restore_variables

    old, new = create_model(name, num_classes=10, width=24), create_model(name, num_classes=10)
    assert len(old.variables) == len(new.variables)
    before = [v.numpy().copy() for v in new.variables]
    with pytest.raises(ConvbenchError, match="does not match this model.*delete the run folder's checkpoints"):
        restore_variables(new, [v.numpy() for v in old.variables])
    for v, b in zip(new.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
