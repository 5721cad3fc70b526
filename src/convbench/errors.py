"""User-facing errors.

Every problem a user can fix (bad input, missing data, a typo in a config) is raised as a
`ConvbenchError` whose message is one line naming the problem and the fix. Every entry point (the
`convbench` command, the Ray jobs' `python -m convbench.orchestrate.ray_job`) runs its work through
`run_command`, which prints that line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable


class ConvbenchError(Exception):
    """A problem the user can fix; its message says what is wrong and how to fix it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, Kubernetes, a CI timeout), raised where Ctrl-C raises KeyboardInterrupt so that
    both unwind the same way: locks released, temporary files removed, one line printed."""


INTERRUPTED = "convbench: interrupted; finished models are saved; run the same command again to resume"


_TERMINATED: list[int] = []  # SIGTERMs received: a library may catch Terminated and exit its own way


def raise_terminated(signum, frame):  # noqa: ARG001 - a signal handler's signature
    """SIGTERM handler: raise `Terminated` in the main thread."""
    _TERMINATED.append(signum)
    raise Terminated


def interrupt_status(exc: KeyboardInterrupt) -> int:
    """The exit status of an interrupted command: 143 after SIGTERM, 130 after Ctrl-C (128 + signal)."""
    return 143 if isinstance(exc, Terminated) or _TERMINATED else 130


def run_command(command: Callable[[], int]) -> int:
    """Run an entry point's work the way every convbench command does; returns its exit status.

    SIGTERM unwinds as Ctrl-C does (locks released, temporary files removed); a ConvbenchError
    prints one line, `convbench: error: ...`, and gives status 2; an interrupt prints INTERRUPTED
    and gives 130 (Ctrl-C) or 143 (SIGTERM).

    Args:
        command: the work, returning the exit status.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if main_thread else None
    try:
        return command()
    except ConvbenchError as exc:
        print(f"convbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(INTERRUPTED, file=sys.stderr)
        return interrupt_status(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
