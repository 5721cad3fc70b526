"""Shared fixtures. Every test writes only under pytest's tmp dirs: caches are pointed there too."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR_JPEG = SHARED / "datasets" / "cifar10-jpeg"


_OWN_CACHE: list[Path] = []  # the temporary cache this session made (removed when it ends)


def pytest_configure(config):
    # Set before TensorFlow, Keras or matplotlib are imported by any test module.
    base = Path(os.environ.get("CONVBENCH_TEST_CACHE", "")) if os.environ.get("CONVBENCH_TEST_CACHE") else None
    if base is None:
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="convbench-test-cache-"))
        _OWN_CACHE.append(base)
    for var, sub in (("KERAS_HOME", "keras"), ("MPLCONFIGDIR", "matplotlib"), ("CONVBENCH_CACHE", "convbench")):
        os.environ[var] = str(base / sub)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _float32_policy_between_tests():
    """Training sets Keras' global dtype policy (bf16 on CPUs with AMX/AVX512-BF16); reset it after each test."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_dtype_policy("float32")


@pytest.fixture(autouse=True)
def _convbench_logger_between_tests():
    """A command run in-process (`cli.main`) sets up console logging on the "convbench" logger (a
    stdout handler, no propagation); undo that after each test, so the next starts with the library's
    default and pytest's caplog sees its messages."""
    import logging

    logger = logging.getLogger("convbench")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def logged(caplog):
    """What convbench logs during the test, as `logged()` -> its messages (the log lines without the
    time stamp), in order; other libraries' records are left out."""
    import logging

    caplog.set_level(logging.INFO, logger="convbench")
    return lambda: [r.getMessage() for r in caplog.records if r.name.split(".")[0] == "convbench"]


def pytest_unconfigure(config):
    import shutil

    for base in _OWN_CACHE:
        shutil.rmtree(base, ignore_errors=True)


def write_subset(root: Path, per_class_train: int, per_class_test: int, classes: int = 10) -> Path:
    """A small class-subfolder dataset: links to the shared CIFAR-10 JPEGs, else synthetic PNGs.

    Synthetic classes differ in colour and stripe orientation, so a CNN can learn them quickly.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    if CIFAR_JPEG.is_dir():
        names = sorted(p.name for p in (CIFAR_JPEG / "train").iterdir())[:classes]
        for split, n in (("train", per_class_train), ("test", per_class_test)):
            for cls in names:
                dst = root / split / cls
                dst.mkdir(parents=True, exist_ok=True)
                for src in sorted((CIFAR_JPEG / split / cls).iterdir())[:n]:
                    (dst / src.name).symlink_to(src)
        return root
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        for c in range(classes):
            dst = root / split / f"class{c}"
            dst.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.zeros((32, 32, 3), np.uint8)
                img[..., c % 3] = 120 + 10 * c
                if c >= 3:
                    img[:: (c % 4) + 2, :, :] = 255 - 20 * c
                img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(dst / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """30 train + 10 test images per class (real CIFAR-10 JPEGs when ../shared is present)."""
    return write_subset(tmp_path_factory.mktemp("tiny-data"), 30, 10)
