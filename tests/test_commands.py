"""One entry point style: `convbench` subcommands (argparse), `main(argv) -> int`, errors in one line.

Beside `convbench` (and `python -m convbench.cli`) the one module entry point is the pipeline's Ray
job, `python -m convbench.orchestrate.ray_job`; every `python -m` of a convbench module that the
repository names must be one of the two.

    .venv/bin/pytest -q tests/test_commands.py
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_data import write_dataset  # noqa: E402

from convbench.cli import commands as cli  # noqa: E402
from convbench.lock import LOCK_NAME  # noqa: E402
from convbench.orchestrate import ray_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_m_the_repository_names_is_an_argparse_entry_point():
    sources = [ROOT / "README.md", ROOT / "Makefile", ROOT / "Dockerfile", *ROOT.glob("docs/*.md"), *ROOT.glob("k8s/**/*"),
               *ROOT.glob("src/**/*.py"), *ROOT.glob("components/**/*.py"), *ROOT.glob("pipelines/**/*.py"),
               *ROOT.glob("tests/*.py")]
    named = set()
    for path in sources:
        if path.is_file():
            named |= set(re.findall(r"python -m (convbench(?:\.\w+)*)", path.read_text(encoding="utf-8", errors="replace")))
    assert named == {"convbench.cli", "convbench.orchestrate.ray_job"}, named
    for module in named:
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        if spec.submodule_search_locations:  # a package: its __main__ runs the `convbench` main
            assert "commands import main" in Path(spec.submodule_search_locations[0], "__main__.py").read_text()
    for main in (cli.main, ray_job.main):
        assert list(inspect.signature(main).parameters) == ["argv"]
        assert inspect.signature(main).parameters["argv"].default is None


def test_lock_status(tmp_path, capsys):
    assert cli.main(["lock-status", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path}: not locked"
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "then"}))
    assert cli.main(["lock-status", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path}: locked by pid {os.getpid()} on {socket.gethostname()} since then (alive)"


def test_data_decodes_caches_and_prints_the_summary(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", classes=3, train=10, test=4)
    assert cli.main(["data", str(data)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\d\d:\d\d:\d\d decoding 42 images from ", out, re.M)  # progress, time-stamped
    summary = json.loads(out[out.index("{"):])
    assert (summary["num_classes"], summary["train_images"] + summary["val_images"], summary["test_images"]) == (3, 30, 12)
    assert cli.main(["data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convbench: error: data folder") and "does not exist" in err[0]


def test_smoke_trains_the_loop_two_epochs(capsys):
    assert cli.main(["smoke"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\d\d:\d\d:\d\d \[smoke\] epoch 2/2 train: loss", out, re.M)
    history = json.loads(out[out.index("[\n"):])  # after the progress lines
    assert [r["epoch"] for r in history] == [1, 2]


def test_the_ray_job_entry_point_fails_in_one_line(tmp_path, capsys):
    """The pipeline's Ray job, before it reaches Ray: a Dataset artifact without its config."""
    assert ray_job.main(["train-model", "--dataset", str(tmp_path / "dataset"), "--model", "cnn_vgg",
                         "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (f"convbench: error: {tmp_path / 'dataset' / 'config.json'} is missing; "
                                        "the Dataset artifact was not written by prepare_data")
