"""Progress output: the standard `logging` module, configured here and nowhere else.

Every convbench module logs to `logging.getLogger(__name__)`, a child of the "convbench" logger,
with `logger.info(...)` (warnings: `logger.warning("warning: ...")`). Nothing is shown until a
process entry (the `convbench` command, a Kubeflow step, the Ray job, a Ray Train worker) calls
`setup_console_logging()`: from then on every message goes to stdout as `HH:MM:SS message`,
flushed. Code that writes a run directory wraps its work in `run_log(run_dir)`, which appends the
same lines to the directory's run.log while the block runs.

Only the "convbench" logger is configured, and it does not pass its messages on to the root
logger: TensorFlow's, absl's and Ray's loggers stay as quiet as they were, and a root handler that
Ray installs does not print convbench's lines a second time.

    .venv/bin/pytest -q tests/test_log.py
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterable, Iterator

from convbench import rundir
from convbench.errors import ConvbenchError

ROOT = "convbench"
FORMAT = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")


class _Stdout(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stdout` is when a message is emitted (pytest's capture, a
    redirect, `convbench pipeline local`'s tee), flushed after every line."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stdout


def setup_console_logging(level: int = logging.INFO) -> logging.Logger:
    """Show convbench's messages on stdout as `HH:MM:SS message`; once per process, repeat calls add nothing.

    Args:
        level: the lowest level shown (logging.ERROR keeps a Ray worker other than rank 0 quiet).

    Returns:
        The "convbench" logger.
    """
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, _Stdout) for h in logger.handlers):
        handler = _Stdout()
        handler.setFormatter(FORMAT)
        logger.addHandler(handler)
    return logger


class _RunLog(logging.StreamHandler):
    """Appends to a run.log opened by the path as given (a relative --out stays relative: FileHandler
    would make it absolute, and a parent the user cannot traverse would then refuse it); close()
    closes the file."""

    def __init__(self, path: Path):
        super().__init__(open(path, "a", encoding="utf-8", errors="backslashreplace"))

    def close(self) -> None:
        with self.lock:
            try:
                self.stream.close()
            finally:
                super().close()


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collected() -> Iterator[list[logging.LogRecord]]:
    """The convbench messages logged inside the block, shown as usual and also kept, e.g. for a
    run.log opened afterwards (`run_log(..., earlier=records)`)."""
    handler = _Kept()
    logger = logging.getLogger(ROOT)
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def run_log(run_dir: str | Path, earlier: Iterable[logging.LogRecord] = ()) -> Iterator[Path]:
    """Append convbench's messages to run_dir/run.log while the block runs (in the console's format).

    Args:
        run_dir: the run directory (created when missing).
        earlier: messages logged before the folder was known (`collected()`), written first.

    Yields:
        The run.log path.

    Raises:
        ConvbenchError: the folder cannot be created or written.
    """
    run_dir = Path(run_dir)
    path = rundir.log_path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = _RunLog(path)
    except OSError as exc:
        raise ConvbenchError(f"cannot write to the output folder {run_dir} ({exc.strerror}); pass --out with a writable folder") from None
    handler.setFormatter(FORMAT)
    for record in earlier:
        handler.handle(record)
    logger = logging.getLogger(ROOT)
    # Without setup_console_logging (a library caller, a test) the logger would drop INFO lines.
    level, raised = logger.level, not logger.isEnabledFor(logging.INFO)
    if raised:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        if raised and logger.level == logging.INFO:
            logger.setLevel(level)
        handler.close()
