"""Tests for convbench.data.corruptions: deterministic, and each corruption moves the pixel statistics
the way it should as severity rises.

Run: .venv/bin/pytest tests/test_corruptions.py -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from convbench.data.corruptions import (
    CORRUPTIONS,
    DEFAULT_CORRUPTIONS,
    SEVERITY_PARAMETERS,
    corrupt,
    list_corruptions,
    mean_corruption_accuracy,
    per_corruption_accuracy,
    relative_robustness,
)
from convbench.errors import ConvbenchError

SHARED_TEST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg" / "test"
REQUIRED = {"gaussian_noise", "shot_noise", "contrast", "brightness", "jpeg_compression", "pixelate", "fog"}
RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "fog")
SEVERITIES = range(1, 6)


def _images(n: int = 48, seed: int = 0) -> np.ndarray:
    """Natural-looking test images: smooth shapes (low frequencies) plus fine texture."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.random((n, 32, 32, 3)), sigma=(0, 3, 3, 0))
    lo = base.min(axis=(1, 2, 3), keepdims=True)
    base = (base - lo) / (base.max(axis=(1, 2, 3), keepdims=True) - lo)
    img = 40 + 170 * base + rng.normal(0, 12, size=base.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _high_freq_energy(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.mean((x - ndimage.uniform_filter(x, size=(1, 3, 3, 1))) ** 2))


def _diff_std(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.std(y.astype(np.float64) - x))


def _strictly_increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def test_registry_covers_the_cifar10c_set():
    names = list_corruptions()
    assert REQUIRED <= set(names) and {"gaussian_blur", "defocus_blur"} <= set(names)
    assert set(CORRUPTIONS) == set(names) == set(SEVERITY_PARAMETERS)
    assert set(DEFAULT_CORRUPTIONS) <= set(names) and len(DEFAULT_CORRUPTIONS) == 8
    assert all(len(SEVERITY_PARAMETERS[n]) == 5 for n in names)


@pytest.mark.parametrize("name", list_corruptions())
def test_deterministic_shape_dtype_and_input_untouched(name):
    x = _images(16)
    before = x.copy()
    y1 = corrupt(x, name, 3, seed=7)
    y2 = CORRUPTIONS[name](x, 3, 7)
    assert y1.dtype == np.uint8 and y1.shape == x.shape
    assert np.array_equal(y1, y2)
    assert np.array_equal(x, before)
    assert not np.array_equal(y1, x)
    if name in RANDOM:
        assert not np.array_equal(y1, corrupt(x, name, 3, seed=8))
        # Severities draw independent noise, not the same noise rescaled.
        d3 = (y1.astype(float) - x).ravel()
        d4 = (corrupt(x, name, 4, seed=7).astype(float) - x).ravel()
        assert abs(np.corrcoef(d3, d4)[0, 1]) < 0.9


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"])
def test_noise_grows_with_severity(name):
    x = _images()
    stds = [_diff_std(corrupt(x, name, s), x) for s in SEVERITIES]
    assert _strictly_increasing(stds)
    energies = [_high_freq_energy(corrupt(x, name, s)) for s in SEVERITIES]
    assert energies[0] > _high_freq_energy(x) and _strictly_increasing(energies)


def test_noise_levels_match_the_cifar10c_parameters():
    gray = np.full((64, 32, 32, 3), 128, np.uint8)
    for s, c in zip(SEVERITIES, SEVERITY_PARAMETERS["gaussian_noise"]):
        assert _diff_std(corrupt(gray, "gaussian_noise", s), gray) == pytest.approx(255 * c, rel=0.03)
    for s, photons in zip(SEVERITIES, SEVERITY_PARAMETERS["shot_noise"]):
        # Poisson(p * c) / c at p = 128/255 has standard deviation sqrt(p / c).
        expected = 255 * np.sqrt((128 / 255) / photons)
        assert _diff_std(corrupt(gray, "shot_noise", s), gray) == pytest.approx(expected, rel=0.03)


def test_contrast_lowers_pixel_spread_and_keeps_the_mean():
    x = _images()
    spreads = [corrupt(x, "contrast", s).astype(float).std(axis=(1, 2)).mean() for s in SEVERITIES]
    assert spreads[0] < x.astype(float).std(axis=(1, 2)).mean()
    assert all(b < a for a, b in zip(spreads, spreads[1:]))
    y = corrupt(x, "contrast", 2)
    ratio = y.astype(float).std(axis=(1, 2)) / x.astype(float).std(axis=(1, 2))
    assert np.allclose(ratio, SEVERITY_PARAMETERS["contrast"][1], atol=0.02)
    assert np.allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=0.6)


def test_brightness_raises_the_mean():
    x = _images()
    means = [corrupt(x, "brightness", s).mean() for s in SEVERITIES]
    assert means[0] > x.mean() and _strictly_increasing(means)
    # A grey pixel's HSV value rises by exactly c.
    gray = np.full((1, 4, 4, 3), 100, np.uint8)
    assert np.all(corrupt(gray, "brightness", 5) == round(100 + 0.3 * 255))


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur"])
def test_blur_removes_high_frequencies(name):
    x = _images()
    energies = [_high_freq_energy(corrupt(x, name, s)) for s in SEVERITIES]
    assert energies[0] < _high_freq_energy(x)
    assert all(b < a for a, b in zip(energies, energies[1:]))
    # Blurring mixes neighbours; it does not shift the overall brightness.
    assert corrupt(x, name, 5).mean() == pytest.approx(x.mean(), abs=0.5)


def test_jpeg_changes_bytes_not_shape_and_worsens_with_severity():
    x = _images()
    ys = [corrupt(x, "jpeg_compression", s) for s in SEVERITIES]
    assert all(y.shape == x.shape and y.dtype == np.uint8 and y.tobytes() != x.tobytes() for y in ys)
    errors = [_diff_std(y, x) for y in ys]
    assert errors[-1] > errors[0]
    assert _high_freq_energy(ys[-1]) < _high_freq_energy(ys[0])


def test_pixelate_and_fog_grow_with_severity():
    x = _images()
    for name in ("pixelate", "fog"):
        errors = [_diff_std(corrupt(x, name, s), x) for s in SEVERITIES]
        assert _strictly_increasing(errors), name
    # Fog is a smooth pattern: its change has far less high-frequency energy than noise of the same size.
    fog = corrupt(x, "fog", 3).astype(float) - x
    noise = corrupt(x, "gaussian_noise", 3).astype(float) - x
    scale = fog.std() / noise.std()
    assert _high_freq_energy(fog) < 0.5 * _high_freq_energy(noise * scale)


@pytest.mark.skipif(not SHARED_TEST.is_dir(), reason="shared CIFAR-10 JPEG test set not present")
def test_on_real_cifar_images():
    paths = sorted(SHARED_TEST.glob("*/000?.jpg"))[:100]
    x = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    for name in DEFAULT_CORRUPTIONS:
        errors = [_diff_std(corrupt(x, name, s), x) for s in SEVERITIES]
        assert errors[-1] > errors[0] > 0, name
    assert corrupt(x, "brightness", 5).mean() > x.mean()
    assert corrupt(x, "contrast", 5).astype(float).std() < x.astype(float).std()
    assert _high_freq_energy(corrupt(x, "defocus_blur", 5)) < _high_freq_energy(x)


@pytest.mark.parametrize(
    "args",
    [
        ("snow", 1),
        ("gaussian_noise", 0),
        ("gaussian_noise", 6),
        ("gaussian_noise", 2.0),
        ("gaussian_noise", True),
    ],
)
def test_bad_name_or_severity(args):
    with pytest.raises(ConvbenchError):
        corrupt(_images(2), *args)


def test_bad_images():
    with pytest.raises(ConvbenchError, match="uint8"):
        corrupt(_images(2).astype(np.float32), "contrast", 1)
    with pytest.raises(ConvbenchError):
        corrupt(np.zeros((32, 32, 3), np.uint8), "contrast", 1)
    with pytest.raises(ConvbenchError):
        corrupt(np.zeros((0, 32, 32, 3), np.uint8), "contrast", 1)


def test_mean_corruption_accuracy_and_relative_robustness():
    acc = {"gaussian_noise": {1: 0.8, 2: 0.7, 3: 0.6, 4: 0.5, 5: 0.4},
           "contrast": {"1": 0.9, "2": 0.9, "3": 0.8, "4": 0.8, "5": 0.6}}
    assert per_corruption_accuracy(acc) == pytest.approx({"gaussian_noise": 0.6, "contrast": 0.8})
    assert mean_corruption_accuracy(acc) == pytest.approx(0.7)
    assert mean_corruption_accuracy({"fog": [0.5, 0.3]}) == pytest.approx(0.4)
    assert relative_robustness(0.875, 0.7) == pytest.approx(0.8)
    with pytest.raises(ConvbenchError):
        mean_corruption_accuracy({"fog": [85.0]})
    with pytest.raises(ConvbenchError):
        relative_robustness(0.0, 0.1)
    with pytest.raises(ConvbenchError):
        mean_corruption_accuracy({})
