"""The environment a result was measured in: saved beside every metric.

    python -c "from convbench.env import describe_environment; print(describe_environment())"
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def onednn_enabled() -> bool:
    """Whether this TensorFlow runs its CPU ops through oneDNN (its bf16 kernels need it)."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip() in ("0", "false", "False"):
        return False
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def describe_environment() -> dict:
    """Versions, CPU and GPU of this process's machine.

    Returns:
        A JSON-ready dict.
    """
    import tensorflow as tf

    gpus = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(dev)
        except Exception:  # noqa: BLE001 - details are best effort; the device itself is listed
            details = {}
        gpus.append(details.get("device_name", dev.name))
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": sorted(cpu_flags() & {"amx_bf16", "amx_tile", "avx512_bf16"}),
        "gpus": gpus,
        "versions": {d: _version(d) for d in ("convbench", "tensorflow", "keras", "numpy", "kfp", "ray", "pandas", "matplotlib")},
    }


# TensorFlow's C++ start-up lines, written before its logging honours TF_CPP_MIN_LOG_LEVEL: on a
# CPU-only machine they read as failures ("failed call to cuInit: ... CUDA error") though nothing failed.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory", "Unable to register cuBLAS factory",
    "computation placer already registered",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)


def import_tensorflow_quietly():
    """Import TensorFlow and look for GPUs with its start-up lines filtered out of stderr.

    File descriptor 2 goes to a temporary file meanwhile; afterwards every line that is not known
    start-up noise (`STARTUP_NOISE`) is written to stderr, so real errors still show. A no-op once
    TensorFlow is imported.

    Returns:
        The tensorflow module.
    """
    import tempfile

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the cuInit attempt happens here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            sys.stderr.write(without_startup_noise(capture.read().decode("utf-8", "replace")))
            sys.stderr.flush()
    return tf


def without_startup_noise(text: str) -> str:
    """`text` without TensorFlow's start-up lines (`STARTUP_NOISE`) and blank lines; the rest kept in order."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if line.strip() and not any(noise in line for noise in STARTUP_NOISE))


def setup_environment() -> None:
    """Point Keras, matplotlib and TensorFlow at the user's cache instead of ~ and quiet TF's logs.

    Runs before TensorFlow is imported. Variables the user already set are kept.
    """
    cache = default_cache_dir()
    os.environ.setdefault("KERAS_HOME", str(cache / "keras"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # Ray's C++ crash handler catches SIGTERM too, prints a stack and aborts, where convbench's own
    # handler releases the lock, prints one line and exits with 143. Read when ray is imported.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def default_cache_dir() -> Path:
    """$CONVBENCH_CACHE, else ~/.cache/convbench."""
    env = os.environ.get("CONVBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "convbench"
