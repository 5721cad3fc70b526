"""Calibration: expected calibration error, reliability bins, temperature scaling and the
reliability diagram.

Pure numpy/scipy; matplotlib is imported only inside `plot_reliability` and used through its
object API (no pyplot, no global backend switch), so it is safe in headless runs and threads.

Units: probabilities, confidences, accuracies and ECE are fractions in [0, 1]; NLL is the mean
negative log-likelihood in nats per image; the temperature T is dimensionless (T > 1 softens
overconfident predictions).

Test: .venv/bin/pytest tests/test_calibration.py -q
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convbench.errors import ConvbenchError
from convbench.io import atomic_write

__all__ = [
    "softmax",
    "nll",
    "fit_temperature",
    "reliability_bins",
    "expected_calibration_error",
]


# scipy is imported on first use (about 2 s): the CLI's start-up (`convbench runs`, `--help`) never needs it.
def _log_softmax(*args, **kwargs):
    from scipy.special import log_softmax

    return log_softmax(*args, **kwargs)


def _minimize_scalar(*args, **kwargs):
    from scipy import optimize

    return optimize.minimize_scalar(*args, **kwargs)


def _logits_labels(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ConvbenchError(f"logits must be a 2-D (images, classes) array with >= 2 classes, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ConvbenchError("logits contain NaN or infinity; check the model output before calibrating")
    y = _labels(labels, z.shape)
    return z, y


def _labels(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != shape[0]:
        raise ConvbenchError(
            f"labels must be 1-D with one integer class per image ({shape[0]}), got shape {y.shape}; "
            "pass class indices, not one-hot vectors"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ConvbenchError("labels must be integer class indices, got non-integer values")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= shape[1]:
        raise ConvbenchError(f"labels must lie in [0, {shape[1] - 1}], got [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (t > 0.0 and math.isfinite(t)):
        raise ConvbenchError(f"temperature must be a positive finite number, got {temperature}")
    return t


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities softmax(logits / T), computed stably.

    Args:
        logits: (images, classes) array of unnormalised scores.
        temperature: T > 0; T > 1 flattens the distribution, T < 1 sharpens it.

    Returns:
        (images, classes) float64 array whose rows sum to 1.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ConvbenchError(f"logits must be a 2-D (images, classes) array, got shape {z.shape}")
    t = _check_temperature(temperature)
    return np.exp(_log_softmax(z / t, axis=1))


def nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T).

    Args:
        logits: (images, classes) array.
        labels: (images,) integer class indices.
        temperature: T > 0.

    Returns:
        Mean NLL in nats per image.
    """
    z, y = _logits_labels(logits, labels)
    t = _check_temperature(temperature)
    logp = _log_softmax(z / t, axis=1)
    return float(-logp[np.arange(y.size), y].mean())


def fit_temperature(
    logits_val: Any,
    labels_val: Any,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """Temperature T that minimises the validation NLL (Guo et al., 2017).

    The search runs over log T (bounded scalar minimisation), which keeps T positive and makes the
    objective well scaled. Fit on the validation split, never on the test set.

    Args:
        logits_val: (images, classes) validation logits.
        labels_val: (images,) validation labels.
        bounds: Smallest and largest T allowed.

    Returns:
        The fitted temperature (float). It lies at a bound only when the optimum is outside it.
    """
    z, y = _logits_labels(logits_val, labels_val)
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (0.0 < lo < hi and math.isfinite(hi)):
        raise ConvbenchError(f"bounds must satisfy 0 < low < high, got {bounds}")
    rows = np.arange(y.size)

    def objective(log_t: float) -> float:
        logp = _log_softmax(z / math.exp(log_t), axis=1)
        return float(-logp[rows, y].mean())

    res = _minimize_scalar(
        objective, bounds=(math.log(lo), math.log(hi)), method="bounded", options={"xatol": 1e-5}
    )
    return float(math.exp(res.x))


def _probs_labels(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ConvbenchError(f"probs must be a 2-D (images, classes) array with >= 2 classes, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ConvbenchError("probs must be probabilities in [0, 1]; apply calibration.softmax to logits first")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ConvbenchError("probs rows must sum to 1; these look like logits, apply calibration.softmax first")
    return p, _labels(labels, p.shape)


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> list[dict[str, Any]]:
    """Per-bin statistics for a reliability diagram, binned by confidence (max probability).

    Bins are equal-width intervals (lower, upper] over [0, 1] (the first also holds 0), as in
    Guo et al. (2017).

    Args:
        probs: (images, classes) predicted probabilities (rows sum to 1).
        labels: (images,) true class indices.
        n_bins: Number of bins (15 in the report).

    Returns:
        One dict per bin with ``lower``, ``upper``, ``count`` (images), ``confidence`` (mean
        confidence) and ``accuracy`` (fraction correct); the last two are None for empty bins.
    """
    p, y = _probs_labels(probs, labels)
    if int(n_bins) < 1:
        raise ConvbenchError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    bins = []
    for i in range(n_bins):
        k = int(counts[i])
        bins.append({
            "lower": float(edges[i]), "upper": float(edges[i + 1]), "count": k,
            "confidence": float(conf_sum[i] / k) if k else None,
            "accuracy": float(acc_sum[i] / k) if k else None,
        })
    return bins


def _ece_from_bins(bins: Sequence[dict[str, Any]]) -> float:
    total = sum(b["count"] for b in bins)
    if total == 0:
        raise ConvbenchError("reliability bins are empty; there is nothing to compute an ECE from")
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / total)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error: sum over bins of |accuracy - confidence| weighted by bin size.

    Args:
        probs: (images, classes) predicted probabilities (rows sum to 1).
        labels: (images,) true class indices.
        n_bins: Number of equal-width confidence bins (15 in the report).

    Returns:
        ECE as a fraction in [0, 1] (multiply by 100 for percent).
    """
    return _ece_from_bins(reliability_bins(probs, labels, n_bins))


