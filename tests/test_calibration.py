"""Known-answer tests for convbench.analysis.calibration (softmax, NLL, ECE, temperature scaling, diagram).

Run: .venv/bin/pytest tests/test_calibration.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from convbench.analysis.calibration import (
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    softmax,
)
from convbench.errors import ConvbenchError
from convbench.report.figures import plot_reliability

K = 10


def _probs_with_confidence(conf: float, n: int, n_correct: int) -> tuple[np.ndarray, np.ndarray]:
    """n predictions of class 0 with probability `conf`; the first n_correct are labelled 0."""
    p = np.full((n, K), (1.0 - conf) / (K - 1))
    p[:, 0] = conf
    labels = np.where(np.arange(n) < n_correct, 0, 1 + np.arange(n) % (K - 1))
    return p, labels


def _simulated_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True logits and labels drawn from them: softmax(true logits) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, K))
    p = softmax(logits)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


def test_softmax_rows_sum_to_one_and_temperature_flattens():
    z = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    p = softmax(z)
    assert np.allclose(p.sum(axis=1), 1.0) and np.all(np.isfinite(p))
    assert np.allclose(softmax(z + 5.0), p)  # shift invariance
    assert np.allclose(softmax(z[:1], 1e6), 1 / 3, atol=1e-5)
    assert softmax(z[:1], 0.5)[0, 2] > p[0, 2]
    with pytest.raises(ConvbenchError):
        softmax(z, 0.0)


def test_nll_known_values():
    assert nll(np.zeros((5, 4)), [0, 1, 2, 3, 0]) == pytest.approx(math.log(4))
    z = np.array([[2.0, 0.0]])
    assert nll(z, [0]) == pytest.approx(math.log(1 + math.exp(-2.0)))
    assert nll(z, [0], temperature=2.0) == pytest.approx(math.log(1 + math.exp(-1.0)))


def test_ece_is_zero_for_perfectly_calibrated_predictions():
    parts = [_probs_with_confidence(c, 1000, int(round(c * 1000))) for c in (0.3, 0.5, 0.7, 0.9)]
    p = np.concatenate([x[0] for x in parts])
    y = np.concatenate([x[1] for x in parts])
    assert expected_calibration_error(p, y, n_bins=15) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_half_when_always_confident_but_half_right():
    p, y = _probs_with_confidence(1.0, 1000, 500)
    assert expected_calibration_error(p, y) == pytest.approx(0.5)
    p, y = _probs_with_confidence(0.999, 1000, 500)
    assert expected_calibration_error(p, y) == pytest.approx(0.499)


def test_ece_hand_example_and_bins():
    # Two bins used: conf 0.9 with 1 of 2 right (gap 0.4), conf 0.6 with 2 of 2 right (gap 0.4).
    p1, y1 = _probs_with_confidence(0.9, 2, 1)
    p2, y2 = _probs_with_confidence(0.6, 2, 2)
    p, y = np.concatenate([p1, p2]), np.concatenate([y1, y2])
    assert expected_calibration_error(p, y) == pytest.approx(0.4)
    bins = reliability_bins(p, y, n_bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 4
    by_upper = {round(b["upper"], 1): b for b in bins if b["count"]}
    assert by_upper[0.9]["accuracy"] == pytest.approx(0.5) and by_upper[0.9]["confidence"] == pytest.approx(0.9)
    assert by_upper[0.6]["accuracy"] == pytest.approx(1.0)
    assert all(b["accuracy"] is None for b in bins if b["count"] == 0)


def test_ece_rejects_logits_and_bad_labels():
    p, y = _probs_with_confidence(0.8, 10, 8)
    with pytest.raises(ConvbenchError, match="softmax"):
        expected_calibration_error(p * 3.0, y)
    with pytest.raises(ConvbenchError):
        expected_calibration_error(p, np.full(10, K))
    with pytest.raises(ConvbenchError):
        expected_calibration_error(p, y[:5])


def test_temperature_scaling_fixes_overconfident_logits():
    logits_val, y_val = _simulated_logits(4000, seed=0)
    logits_test, y_test = _simulated_logits(4000, seed=1)
    # An overconfident model: the right ranking, but logits three times too large.
    t = fit_temperature(3.0 * logits_val, y_val)
    assert t > 1.0
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(3.0 * logits_val, y_val, t) < nll(3.0 * logits_val, y_val)
    assert nll(3.0 * logits_test, y_test, t) < nll(3.0 * logits_test, y_test)
    ece_before = expected_calibration_error(softmax(3.0 * logits_test), y_test)
    ece_after = expected_calibration_error(softmax(3.0 * logits_test, t), y_test)
    assert ece_after < ece_before / 2


def test_temperature_is_about_one_for_calibrated_logits():
    logits, y = _simulated_logits(4000, seed=2)
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.1)


def test_plot_reliability_writes_a_png(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    logits, y = _simulated_logits(2000, seed=3)
    t = fit_temperature(3.0 * logits, y)
    before = reliability_bins(softmax(3.0 * logits), y)
    after = reliability_bins(softmax(3.0 * logits, t), y)
    out = plot_reliability(before, after, tmp_path / "fig" / "rel.png", "toy: reliability", temperature=t)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    single = plot_reliability(before, None, tmp_path / "one.png", "toy")
    assert single.stat().st_size > 10_000


def test_reliability_figure_on_a_full_disk_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch):
    """savefig is patched to write half a file and fail with ENOSPC, as a full disk does (a real full
    disk cannot be made here without root mounts): one ConvbenchError, and no 0-byte or partial PNG."""
    import errno

    from matplotlib.figure import Figure

    from convbench.errors import ConvbenchError

    def full_disk(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    logits, y = _simulated_logits(500, seed=4)
    bins = reliability_bins(softmax(logits), y)
    with pytest.raises(ConvbenchError, match="disk"):
        plot_reliability(bins, None, tmp_path / "rel.png", "toy")
    assert list(tmp_path.iterdir()) == []
