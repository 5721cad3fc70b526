"""User-facing errors.

Every problem a user can fix (bad input, missing data, a typo in a config) is raised as a
`ConvbenchError` whose message is one line naming the problem and the fix. The CLI prints that line
and exits with status 2 instead of showing a traceback.
"""


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
