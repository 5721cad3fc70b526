"""Crash-safe file writes: every result, checkpoint and report file goes through here.

A file is written to a temporary name in the same folder, flushed to disk, then renamed over the
target (and the folder entry flushed), so a crash leaves either the old file or the new one, never
half of one. A full disk, a quota or a read-only folder becomes one `ConvbenchError` line, and the
old file stays as it was.

    .venv/bin/pytest tests/test_resume.py -k "atomic or disk"
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from convbench.errors import ConvbenchError

logger = logging.getLogger(__name__)

# Below this much free space a run cannot be expected to hold its checkpoints, predictions and report.
MIN_FREE_BYTES = 200 * 2**20

# Errors a user fixes by freeing space or pointing --out elsewhere, not bugs.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_ACCESS_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results must get the permissions any other new file would get.
_FILE_MODE = 0o666 & ~_current_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, then rename tmp_path over `path`.

    Args:
        path: the final file.
        write: writes the content to the temporary path it is given.

    Raises:
        ConvbenchError: the disk is full, over quota, read-only or not writable; `path` is unchanged.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = _FILE_MODE
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
        tmp_path = None
        _fsync_dir(path.parent)
    except OSError as exc:
        error = _user_error(exc, path)
        if error is None:
            raise
        raise error from None
    finally:
        if tmp_path is not None:
            try:
                tmp_path.unlink()
            except OSError:
                pass


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable across a power loss; some file systems refuse, which is harmless.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _user_error(exc: OSError, path: Path) -> ConvbenchError | None:
    if exc.errno in _DISK_ERRNOS:
        return ConvbenchError(
            f"cannot write {path}: {exc.strerror or 'disk full'}; free some space (or pass --out on another disk) "
            "and run the same command again, finished work is kept"
        )
    if exc.errno in _ACCESS_ERRNOS:
        return ConvbenchError(f"cannot write {path}: {exc.strerror}; make the folder writable or pass --out with a writable folder")
    return None


def quarantine(path: Path, why: str) -> Path:
    """Set a damaged file aside (renamed beside itself, never deleted) and say so in one line.

    Args:
        path: the damaged file.
        why: what is wrong with it, for the warning.

    Returns:
        The file's new path, `<name>.damaged-<UTC time>`.
    """
    import datetime as dt

    path = Path(path)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, target)
    logger.warning(f"warning: {path} is damaged ({why}); set aside as {target.name}, and what it held is computed again")
    return target


def check_writable(folder: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail fast, before any training, when `folder` cannot take a run's files.

    Creates the folder, writes and deletes a probe file, and checks the free space.

    Args:
        folder: the output folder.
        min_free_bytes: the least free space accepted.

    Raises:
        ConvbenchError: the folder cannot be created or written, or the disk is (nearly) full.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}.tmp"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ConvbenchError(
            f"cannot write to the output folder {folder} ({exc.strerror or exc}); pass --out with a writable folder"
        ) from None
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise ConvbenchError(
            f"only {free / 2**20:.0f} MiB free on the disk of {folder}; a run needs at least "
            f"{min_free_bytes / 2**20:.0f} MiB for checkpoints and results; free some space or pass --out on another disk"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (undecodable file-name characters are kept as escapes)."""
    atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (indented; NaN and infinities written as null, numpy values as plain ones)."""
    atomic_write_text(path, json.dumps(_nan_to_none(data), indent=2, sort_keys=False, allow_nan=False, default=_plain) + "\n")


def _plain(value):
    # numpy scalars and arrays (and anything else with .tolist/.item) become plain JSON values.
    for method in ("tolist", "item"):
        if hasattr(value, method):
            return _nan_to_none(getattr(value, method)())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value
