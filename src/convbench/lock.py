"""Run-directory lock: one convbench run writes to a run directory at a time.

`run_dir/.convbench.lock` holds the owner's pid, host and start time (JSON) and is held with an
exclusive `flock`. The kernel drops a flock when its process dies, even under `kill -9`, so a lock
left by a dead run is stale and the next run takes it over (and says so); a live owner makes the
second run refuse with one line naming the pid. Where flock is unsupported (some network file
systems) the pid alone decides: a lock whose pid is not alive on this host is stale.

After taking the lock, temporary files that a killed writer left behind (`.NAME.XXXX.tmp*` from
`convbench.io.atomic_write`) are removed: with the lock held, nobody else can be writing them.

    convbench lock-status runs/quick             # show who holds the lock of a run directory
    .venv/bin/pytest tests/test_resume.py -k lock
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import socket
from pathlib import Path

from convbench.errors import ConvbenchError

logger = logging.getLogger(__name__)

LOCK_NAME = ".convbench.lock"

try:
    import fcntl
except ImportError:  # Windows: fall back to the pid check alone
    fcntl = None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (zombies count as dead).

    Args:
        pid: process id.

    Returns:
        True when the process exists and is not a zombie.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        # A killed child its parent has not reaped yet is a zombie: it holds nothing any more.
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def read_lock(run_dir: str | Path) -> dict | None:
    """The lock file's content ({"pid", "host", "started"}), or None when there is no readable lock.

    Args:
        run_dir: the run directory.

    Returns:
        The owner record, or None.
    """
    try:
        data = json.loads((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live_owner(run_dir: str | Path) -> dict | None:
    """The lock's owner record when a live process holds the run directory's lock, else None.

    Args:
        run_dir: the run directory.

    Returns:
        {"pid", "host", "started"} of the running owner, or None (no lock, or a stale one).
    """
    owner = read_lock(run_dir)
    return owner if owner is not None and RunLock._owner_alive(owner) else None


class RunLock:
    """An exclusive lock on a run directory; use as a context manager or acquire()/release().

    Args:
        run_dir: the run directory (must exist).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock or raise.

        Returns:
            self.

        Raises:
            ConvbenchError: another live convbench process holds the lock, or the lock file
                cannot be created.
        """
        if self._fd is not None:
            return self
        for _ in range(10):  # retries only when another process removed or replaced the file meanwhile
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConvbenchError(
                    f"cannot create the lock file {self.path} ({exc.strerror}); pass --out with a writable folder"
                ) from None
            try:
                got = self._try_flock(fd)
                previous = self._read_fd(fd)
                if not got:
                    raise self._busy(previous)
                # The holder may have released and deleted the file between our open and flock: then
                # our lock is on an orphaned inode, so start over on the current file.
                try:
                    if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                        os.close(fd)
                        continue
                except FileNotFoundError:
                    os.close(fd)
                    continue
                if fcntl is None and previous and previous.get("pid") != os.getpid() and self._owner_alive(previous):
                    raise self._busy(previous)
                if previous and previous.get("pid") != os.getpid():
                    logger.info(
                        f"taking over the stale lock of a run that died (pid {previous.get('pid')}, started "
                        f"{previous.get('started', '?')}); finished results are kept, the rest resumes"
                    )
                self._write_owner(fd)
                self._fd = fd
                self._remove_stale_temp_files()
                return self
            except BaseException:
                if self._fd != fd:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                raise
        raise ConvbenchError(f"could not take the lock {self.path}: it keeps changing; is another run starting?")

    def release(self) -> None:
        """Delete the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            # Delete while still holding the flock, so a waiting process re-checks the inode and retries.
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -----------------------------------------------------------------------------------------

    @staticmethod
    def _try_flock(fd: int) -> bool:
        if fcntl is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                return True  # no flock on this file system: the pid check decides
            raise

    @staticmethod
    def _read_fd(fd: int) -> dict | None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            raw = os.read(fd, 65536)
            data = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _owner_alive(owner: dict) -> bool:
        if owner.get("host") not in (None, socket.gethostname()):
            return True  # a pid on another machine cannot be checked: assume it is alive
        pid = owner.get("pid")
        return isinstance(pid, int) and pid_alive(pid)

    def _busy(self, owner: dict | None) -> ConvbenchError:
        who = f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}" if owner else "another process"
        return ConvbenchError(
            f"another convbench run ({who}) is using {self.run_dir}; wait for it to finish, or pass a different --out"
        )

    def _write_owner(self, fd: int) -> None:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        data = (json.dumps(record) + "\n").encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)

    def _remove_stale_temp_files(self) -> None:
        removed = 0
        for tmp in self.run_dir.rglob(".*.tmp*"):
            # atomic_write's temp names: ".<target>.<random>.tmp" (plus Keras' ".weights.h5" suffix).
            if tmp.is_file() and ".tmp" in tmp.name:
                try:
                    tmp.unlink()
                    removed += 1
                except OSError:
                    pass
        if removed:
            logger.info(f"removed {removed} temporary files left by an interrupted run")


def describe_lock(run_dir: str | Path) -> str:
    """One line on who holds a run directory's lock and whether that process is alive (`convbench lock-status`).

    Args:
        run_dir: the run directory.

    Returns:
        "RUN_DIR: not locked", or the owner's pid, host and start time, alive or dead.
    """
    owner = read_lock(run_dir)
    if owner is None:
        return f"{run_dir}: not locked"
    alive = RunLock._owner_alive(owner)
    return (f"{run_dir}: locked by pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')} "
            f"({'alive' if alive else 'dead: the next run takes it over'})")
