"""convbench.log: one logging path to stdout and the run directory's run.log, in one format.

    .venv/bin/pytest -q tests/test_log.py
"""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from convbench import rundir
from convbench.errors import ConvbenchError
from convbench.log import collected, run_log, setup_console_logging

LINE = re.compile(r"\d\d:\d\d:\d\d (.*)")  # HH:MM:SS message
logger = logging.getLogger("convbench.test_log")


def _file_handlers() -> list[logging.Handler]:
    """The convbench handlers writing to a run.log."""
    return [h for h in logging.getLogger("convbench").handlers
            if str(getattr(getattr(h, "stream", None), "name", "")).endswith(rundir.LOG)]


def test_a_message_reaches_stdout_and_run_log_in_the_same_format(tmp_path, capsys):
    setup_console_logging()
    with run_log(tmp_path / "run") as path:
        logger.info("data: 450 train / 50 val / 200 test images, 10 classes")
        logger.warning("warning: skipped 2 unreadable images (first: café.jpg)")
    out = capsys.readouterr().out.splitlines()
    assert path == rundir.log_path(tmp_path / "run")
    assert [LINE.fullmatch(line).group(1) for line in out] == [
        "data: 450 train / 50 val / 200 test images, 10 classes",
        "warning: skipped 2 unreadable images (first: café.jpg)"]
    assert path.read_text(encoding="utf-8").splitlines() == out  # the same lines, time stamps included


def test_the_file_handler_goes_with_the_block_and_run_log_appends(tmp_path, capsys):
    setup_console_logging()
    before = len(_file_handlers())
    with run_log(tmp_path) as path:
        assert len(_file_handlers()) == before + 1
        logger.info("first run")
    assert len(_file_handlers()) == before
    logger.info("after the block")
    with run_log(tmp_path):
        logger.info("second run")
    lines = [LINE.fullmatch(line).group(1) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == ["first run", "second run"]
    assert "after the block" in capsys.readouterr().out


def test_two_setups_print_each_line_once(capsys):
    setup_console_logging()
    setup_console_logging()
    logger.info("once")
    assert capsys.readouterr().out.count("once") == 1


def test_stdout_is_looked_up_when_a_line_is_written(monkeypatch):
    """A redirect after the set-up (pytest's capture, `pipeline local`'s tee) still gets every line."""
    setup_console_logging()
    redirected = io.StringIO()
    monkeypatch.setattr(sys, "stdout", redirected)
    logger.info("to the redirect")
    assert LINE.fullmatch(redirected.getvalue().strip()).group(1) == "to the redirect"


def test_only_the_convbench_logger_is_configured():
    """Third-party loggers stay as they were: the root logger gets no handler and no level, and
    convbench's lines do not reach a root handler (Ray installs one) to be printed twice."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    seen: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = seen.append
    root.addHandler(catch)
    try:
        setup_console_logging()
        logger.warning("warning: once")
        assert root.level == level and [h for h in root.handlers if h is not catch] == handlers
        assert seen == []
    finally:
        root.removeHandler(catch)


def test_lines_from_before_the_folder_was_chosen_open_its_run_log(tmp_path, capsys):
    """`open_run_folder`: what choosing the folder said (continuing, runs/latest) is run.log's first lines."""
    setup_console_logging()
    with collected() as notes:
        logger.info("continuing runs/x: same config, its finished models are kept")
    with run_log(tmp_path, earlier=notes) as path:
        logger.info("convbench run: models cnn_vgg")
    printed = capsys.readouterr().out.splitlines()
    assert path.read_text(encoding="utf-8").splitlines() == printed  # each shown once, the file in the same order
    assert [LINE.fullmatch(line).group(1) for line in printed] == [
        "continuing runs/x: same config, its finished models are kept", "convbench run: models cnn_vgg"]


def test_run_log_without_console_set_up_still_writes_the_file(tmp_path, monkeypatch):
    """A library caller that set up nothing still gets run.log (a file name that is not UTF-8
    escaped, not an error); the logger's level is restored after."""
    convbench = logging.getLogger("convbench")
    # Nothing set up: no console handler an earlier test added, and nothing passed on to pytest's
    # log capture, which pytest-xdist sends between processes as UTF-8 and fails on the lone surrogate.
    monkeypatch.setattr(convbench, "handlers", [])
    monkeypatch.setattr(convbench, "propagate", False)
    level = convbench.level
    with run_log(tmp_path) as path:
        logger.info("progress of bad-\udcff.png")
    assert LINE.fullmatch(path.read_text(encoding="utf-8").strip()).group(1) == "progress of bad-\\udcff.png"
    assert convbench.level == level


def test_an_unwritable_folder_is_one_line_naming_it_and_the_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConvbenchError) as info:
        with run_log(blocker / "run"):
            pass
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"cannot write to the output folder {blocker / 'run'} (")
    assert message.endswith("; pass --out with a writable folder")
    assert not _file_handlers()


def test_an_unwritable_out_is_one_error_line_from_the_cli(tmp_path, capsys):
    from convbench.cli import commands as cli

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = cli.main(["run", "--data", str(tmp_path), "--models", "cnn_vgg", "--out", str(blocker / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"convbench: error: cannot write to the output folder {blocker / 'run'}")
