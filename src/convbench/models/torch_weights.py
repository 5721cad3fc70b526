"""Read PyTorch state-dict files saved in the legacy (non-zip) format, without torch and safely.

`torch.save(..., _use_new_zipfile_serialization=False)` writes five things back to back: three small
pickles (magic number, protocol version, platform info), the main pickle (the state dict, whose
tensors point at storages through pickle "persistent ids"), a pickle listing the storage keys, and
then, for each key in that order, an int64 element count followed by the raw little-endian bytes.

A plain `pickle.load` on such a file runs whatever callables the file names, so a downloaded
weights file could run code. This reader uses a `pickle.Unpickler` whose `find_class` hands out
only stand-ins for the four or so names a state dict needs (see `_ALLOWED`); any other name stops
the load with a `ConvbenchError` before anything is called. Tensors are rebuilt with numpy.

Test: .venv/bin/pytest tests/test_torch_weights.py -q
Use:  .venv/bin/python -c "from convbench.models.torch_weights import load_state_dict; print(len(load_state_dict('f.pth')))"
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np

from convbench.errors import ConvbenchError

# Constants from torch/serialization.py: the first two pickles of every legacy file.
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# Legacy storage classes and the numpy dtype of their elements. BFloat16 has no numpy dtype, so a
# file that uses it is refused rather than misread.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# A tensor with more elements than this (8 GiB of float32) in a weights file is certainly corrupt;
# the cap stops a crafted header from making numpy allocate absurd amounts of memory.
_MAX_ELEMENTS = 1 << 31


# Stand-ins are named tuples (no __dict__, no __setstate__), so the BUILD opcode cannot modify
# them, and find_class hands out a fresh one per lookup, so nothing is shared between loads.
class _StorageType(NamedTuple):
    """Stand-in for `torch.FloatStorage` and friends: only its element dtype matters here."""

    name: str
    dtype: np.dtype


class _StorageRef(NamedTuple):
    """A storage named by a persistent id; its bytes follow the main pickle in the file."""

    key: str
    dtype: np.dtype
    numel: int
    # Very old torch could save a storage as a view into a bigger one (`view_metadata`).
    view_offset: int = 0
    view_numel: int | None = None


class _PendingTensor(NamedTuple):
    """What `_rebuild_tensor_v2` returns while the storage bytes are not read yet."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _is_int_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    """Safe replacement for `torch._utils._rebuild_tensor_v2`: checks types, defers the data."""
    del requires_grad, backward_hooks, metadata  # training state; irrelevant to the values
    if not isinstance(storage, _StorageRef):
        raise ConvbenchError(
            "corrupt or unsupported torch file: a tensor is built from something that is not a "
            "storage; re-save it with torch.save(model.state_dict(), path)"
        )
    if not (isinstance(storage_offset, int) and _is_int_tuple(size) and _is_int_tuple(stride)):
        raise ConvbenchError(
            "corrupt torch file: a tensor's offset, size or stride is not made of integers; "
            "re-download or re-save the weights file"
        )
    if len(size) != len(stride):
        raise ConvbenchError(
            f"corrupt torch file: a tensor has size {size} but stride {stride}; "
            "re-download or re-save the weights file"
        )
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


class _TensorRebuilder:
    """Callable stand-in for `torch._utils._rebuild_tensor_v2` (slots: immune to BUILD)."""

    __slots__ = ()

    def __call__(self, *args):
        return _rebuild_tensor_v2(*args)


# The only names a legacy state-dict pickle may mention, each with a factory for its stand-in.
# Everything else (os.system, builtins.eval, subprocess.Popen, torch.nn modules, numpy
# reconstructors, ...) is refused. OrderedDict is the real class: calling it runs no file code.
_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _TensorRebuilder,
    **{
        ("torch", name): (lambda name=name, dtype=dtype: _StorageType(name, dtype))
        for name, dtype in _STORAGE_DTYPES.items()
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `_ALLOWED` names and only storage persistent ids."""

    def __init__(self, file, path: Path, allow_globals: bool):
        super().__init__(file)
        self._path = path
        self._allow_globals = allow_globals
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str):
        factory = _ALLOWED.get((module, name)) if self._allow_globals else None
        if factory is None:
            raise ConvbenchError(
                f"refusing to load {self._path}: its pickle asks for {module}.{name}, which a plain "
                "PyTorch state dict never needs (the file may run code); use a trusted weights file"
            )
        return factory()

    def persistent_load(self, pid):
        if not self._allow_globals:
            raise ConvbenchError(
                f"corrupt torch file {self._path}: a header pickle refers to a storage; "
                "re-download the weights file"
            )
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] in ("storage", b"storage")):
            raise ConvbenchError(
                f"unsupported torch file {self._path}: persistent id {str(pid)[:80]!r} is not a "
                "tensor storage; save a plain state dict with torch.save(model.state_dict(), path)"
            )
        _, storage_type, key, _location, numel, view_metadata = pid
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise ConvbenchError(f"corrupt torch file {self._path}: malformed storage id {pid[:3]!r}")
        if not isinstance(numel, int) or not 0 <= numel <= _MAX_ELEMENTS:
            raise ConvbenchError(
                f"corrupt torch file {self._path}: storage {key} claims {numel!r} elements"
            )
        root = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if root.dtype != storage_type.dtype or root.numel != numel:
            raise ConvbenchError(
                f"corrupt torch file {self._path}: storage {key} is declared twice differently"
            )
        if view_metadata is None:
            return root
        if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3):
            raise ConvbenchError(f"corrupt torch file {self._path}: bad storage view {view_metadata!r}")
        _view_key, view_offset, view_numel = view_metadata
        if not (
            isinstance(view_offset, int)
            and isinstance(view_numel, int)
            and 0 <= view_offset
            and 0 <= view_numel
            and view_offset + view_numel <= numel
        ):
            raise ConvbenchError(f"corrupt torch file {self._path}: bad storage view {view_metadata!r}")
        return _StorageRef(key, root.dtype, numel, view_offset, view_numel)


def _load_pickle(f, path: Path, what: str, allow_globals: bool = False):
    """Load one pickle from `f` with the restricted unpickler; returns (object, unpickler)."""
    unpickler = _RestrictedUnpickler(f, path, allow_globals)
    try:
        return unpickler.load(), unpickler
    except ConvbenchError:
        raise
    except Exception as exc:  # truncated or garbled pickles raise many different types
        raise ConvbenchError(
            f"cannot read {path}: the {what} is truncated or corrupt ({type(exc).__name__}: "
            f"{str(exc)[:80]}); re-download the weights file"
        ) from None


def _materialise(t: _PendingTensor, data: dict[str, np.ndarray], path: Path, name: str) -> np.ndarray:
    """Turn a pending tensor into an owned, C-contiguous numpy array (bounds-checked)."""
    flat = data[t.storage.key]
    base = t.storage.view_offset
    limit = t.storage.view_numel if t.storage.view_numel is not None else flat.size - base
    if any(s < 0 for s in t.size) or any(s < 0 for s in t.stride) or t.offset < 0:
        raise ConvbenchError(f"corrupt torch file {path}: tensor {name} has a negative size or stride")
    count = math.prod(t.size)
    if count > _MAX_ELEMENTS:
        raise ConvbenchError(f"corrupt torch file {path}: tensor {name} claims size {t.size}")
    if count == 0:
        return np.zeros(t.size, dtype=flat.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if last >= limit:
        raise ConvbenchError(
            f"corrupt torch file {path}: tensor {name} (size {t.size}, stride {t.stride}, offset "
            f"{t.offset}) reaches past the end of its storage of {limit} elements"
        )
    start = flat[base + t.offset :]
    view = np.lib.stride_tricks.as_strided(
        start, shape=t.size, strides=tuple(s * flat.itemsize for s in t.stride), writeable=False
    )
    return np.array(view, copy=True, order="C")


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch state dict into numpy arrays without importing torch.

    Args:
        path: File written by `torch.save(state_dict, path, _use_new_zipfile_serialization=False)`.

    Returns:
        The entries in file order, name -> array with torch's shape and dtype (layouts unchanged:
        conv weights stay OIHW). Arrays own their memory and share nothing.

    Raises:
        ConvbenchError: the file is missing, is the zip format, is truncated or corrupt, or its
            pickle names anything outside the small allow-list of a plain state dict.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConvbenchError(f"cannot read torch weights {path}: {exc.strerror}; check the path") from None
    if raw[:4] == b"PK\x03\x04":
        raise ConvbenchError(
            f"{path} is a zip-format torch file; only the legacy format is supported: re-save it "
            "with torch.save(sd, path, _use_new_zipfile_serialization=False)"
        )
    f = io.BytesIO(raw)
    magic, _ = _load_pickle(f, path, "magic number")
    if magic != MAGIC_NUMBER:
        raise ConvbenchError(
            f"{path} is not a legacy PyTorch file (bad magic number); pass a file written by "
            "torch.save(..., _use_new_zipfile_serialization=False)"
        )
    version, _ = _load_pickle(f, path, "protocol version")
    if version != PROTOCOL_VERSION:
        raise ConvbenchError(
            f"{path} uses torch protocol version {version!r}, expected {PROTOCOL_VERSION}; re-save it"
        )
    sys_info, _ = _load_pickle(f, path, "platform header")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ConvbenchError(
            f"{path} was written on a big-endian machine or has a corrupt header; re-save it on x86/ARM"
        )
    result, unpickler = _load_pickle(f, path, "state dict", allow_globals=True)
    keys, _ = _load_pickle(f, path, "storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConvbenchError(f"corrupt torch file {path}: the storage key list is malformed")
    if set(keys) != set(unpickler.storages) or len(keys) != len(set(keys)):
        raise ConvbenchError(
            f"corrupt torch file {path}: the storage key list does not match the tensors' storages"
        )

    # The storage bytes: per key an int64 element count, then the elements.
    data: dict[str, np.ndarray] = {}
    pos = f.tell()
    for key in keys:
        ref = unpickler.storages[key]
        if pos + 8 > len(raw):
            raise ConvbenchError(f"{path} is truncated: storage {key} is missing; re-download it")
        numel = int.from_bytes(raw[pos : pos + 8], "little", signed=True)
        pos += 8
        if numel != ref.numel:
            raise ConvbenchError(
                f"corrupt torch file {path}: storage {key} holds {numel} elements, the pickle says "
                f"{ref.numel}; re-download it"
            )
        nbytes = numel * ref.dtype.itemsize
        if pos + nbytes > len(raw):
            raise ConvbenchError(f"{path} is truncated inside storage {key}; re-download it")
        data[key] = np.frombuffer(raw, dtype=ref.dtype, count=numel, offset=pos)
        pos += nbytes
    if pos != len(raw):
        raise ConvbenchError(
            f"corrupt torch file {path}: {len(raw) - pos} unexpected bytes after the last storage"
        )

    if not isinstance(result, dict):
        raise ConvbenchError(f"{path} does not hold a state dict (found {type(result).__name__})")
    out: dict[str, np.ndarray] = {}
    for name, value in result.items():
        if not isinstance(name, str) or not isinstance(value, _PendingTensor):
            raise ConvbenchError(
                f"{path} is not a flat state dict (entry {str(name)[:60]!r} is not a tensor); "
                "save model.state_dict() itself"
            )
        out[name] = _materialise(value, data, path, name)
    return out
