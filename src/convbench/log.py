"""Progress output: print() that also appends to the run directory's run.log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

from convbench import rundir
from convbench.errors import ConvbenchError


def make_logger(run_dir: Path | None) -> Callable[[str], None]:
    """print() that also appends to run_dir/run.log, flushed line by line."""
    handle = None
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(rundir.log_path(run_dir), "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        except OSError as exc:
            raise ConvbenchError(f"cannot write to the output folder {run_dir} ({exc.strerror}); pass --out with a writable folder") from None

    def log(message: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        print(f"{stamp} {message}", flush=True)
        if handle:
            handle.write(f"{stamp} {message}\n")

    return log
