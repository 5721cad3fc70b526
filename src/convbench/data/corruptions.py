"""CIFAR-10-C style common corruptions, generated here, deterministically, from uint8 test images.

The corruption formulas and the five severity parameters follow Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (ICLR 2019),
CIFAR-10 settings (hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py), reimplemented in
vectorised numpy (PIL only for JPEG and pixelate) so nothing is downloaded and 10,000 images take
seconds. Differences from the original: random numbers come from numpy's seeded Generator (same
images + name + severity + seed -> identical output), results are rounded rather than truncated to
uint8, and blur filters use scipy.ndimage with the same kernels and border modes as skimage/OpenCV.

The noise drawn for an image depends on the whole batch (one generator per call): corrupt the
full test set once per (corruption, severity) and give every model the same array.

Units: images are uint8 arrays (N, H, W, 3) with values 0-255; severities are 1 (mild) to 5.

Test: .venv/bin/pytest tests/test_corruptions.py -q
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from convbench.errors import ConvbenchError

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_CORRUPTIONS",
    "SEVERITY_PARAMETERS",
    "corrupt",
    "list_corruptions",
    "mean_corruption_accuracy",
    "per_corruption_accuracy",
    "relative_robustness",
]

# Per-severity parameters from make_cifar_c.py (CIFAR-10-C), severity 1 first.
SEVERITY_PARAMETERS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),            # noise std (image in [0, 1])
    "shot_noise": (500, 250, 100, 75, 50),                       # photons at full intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),             # fraction of salt-and-pepper values
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),             # multiplicative noise std
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),                  # sigma in pixels
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias sigma
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),                     # factor on deviation from channel mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),                   # added to HSV value
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog strength, fractal decay
    "jpeg_compression": (80, 65, 58, 50, 40),                    # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),                   # downscale factor
}

# The eight the report uses by default (one blur: defocus, as in the 15 standard CIFAR-10-C ones).
DEFAULT_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "defocus_blur", "contrast", "brightness",
    "jpeg_compression", "pixelate", "fog",
)


# ----------------------------------------------------------------------------- helpers


def _to_unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0


def _to_uint8(x01: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.clip(x01, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)


def _gaussian_taps(ksize: int, sigma: float) -> np.ndarray:
    # Same taps as OpenCV's getGaussianKernel for sigma > 0.
    offsets = np.arange(ksize) - (ksize - 1) / 2.0
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Anti-aliased disk (make_cifar_c.disk), cropped to its non-zero support."""
    if radius <= 8:
        coords = np.arange(-8, 8 + 1)
        ksize = 3
    else:
        coords = np.arange(-int(radius), int(radius) + 1)
        ksize = 5
    xx, yy = np.meshgrid(coords, coords)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    taps = _gaussian_taps(ksize, alias_blur)
    # cv2.GaussianBlur's default border is reflect-101, which scipy calls "mirror".
    disk = ndimage.correlate1d(disk, taps, axis=0, mode="mirror")
    disk = ndimage.correlate1d(disk, taps, axis=1, mode="mirror")
    rows = np.flatnonzero(np.abs(disk).sum(axis=1) > 1e-12)
    cols = np.flatnonzero(np.abs(disk).sum(axis=0) > 1e-12)
    return disk[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _plasma_fractal(rng: np.random.Generator, n: int, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height maps (make_cifar_c.plasma_fractal), n at once, each scaled to [0, 1]."""
    maparray = np.zeros((n, mapsize, mapsize))
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        # Squares: each centre gets the mean of its four corners plus noise.
        corners = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, shift=-1, axis=1)
        square += np.roll(square, shift=-1, axis=2)
        maparray[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(square)
        # Diamonds: each edge midpoint gets the mean of its four neighbours plus noise.
        dr = maparray[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        maparray[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        maparray[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min(axis=(1, 2), keepdims=True)
    return maparray / maparray.max(axis=(1, 2), keepdims=True)


# ----------------------------------------------------------------------------- corruptions
# Each takes images as uint8 (N, H, W, 3), the severity's parameter and a Generator, and returns
# float images in [0, 1] (or uint8 for the PIL-based ones).


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = _to_unit(x)
    return x + rng.normal(scale=c, size=x.shape)


def _shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = _to_unit(x)
    return rng.poisson(x * c) / c


def _impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = _to_unit(x)
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(np.float64), x)


def _speckle_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = _to_unit(x)
    return x + x * rng.normal(scale=c, size=x.shape)


def _gaussian_blur(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    # skimage.filters.gaussian defaults: mode "nearest", truncate 4; no blur across channels.
    return ndimage.gaussian_filter(_to_unit(x), sigma=(0, c, c, 0), mode="nearest", truncate=4.0)


def _defocus_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    kernel = _disk_kernel(c[0], c[1])
    # cv2.filter2D correlates with a reflect-101 border ("mirror" in scipy).
    return ndimage.correlate(_to_unit(x), kernel[None, :, :, None], mode="mirror")


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = _to_unit(x)
    means = x.mean(axis=(1, 2), keepdims=True)  # per image and channel, as in the original
    return (x - means) * c + means


def _brightness(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    # Adding c to the HSV value V = max(r, g, b) at fixed hue and saturation scales the pixel by
    # V' / V; a black pixel (V = 0, saturation 0) becomes grey V'. Same result as skimage's
    # rgb2hsv -> V + c -> hsv2rgb, without the round trip.
    x = _to_unit(x)
    v = x.max(axis=3, keepdims=True)
    v_new = np.minimum(v + c, 1.0)
    scale = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
    return np.where(v > 0, x * scale, v_new)


def _fog(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    n, h, w, _ = x.shape
    mapsize = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    x = _to_unit(x)
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    fog = _plasma_fractal(rng, n, mapsize, c[1])[:, :h, :w, None]
    return (x + c[0] * fog) * max_val / (max_val + c[0])


def _jpeg_compression(x: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(x)
    for i, img in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(c))
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return out


def _pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[1:3]
    small = (max(1, int(w * c)), max(1, int(h * c)))
    out = np.empty_like(x)
    for i, img in enumerate(x):
        pil = Image.fromarray(img).resize(small, Image.Resampling.BOX)
        out[i] = np.asarray(pil.resize((w, h), Image.Resampling.BOX))
    return out


_IMPLEMENTATIONS: dict[str, Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "fog": _fog,
    "jpeg_compression": _jpeg_compression,
    "pixelate": _pixelate,
}


# ----------------------------------------------------------------------------- public API


def list_corruptions() -> list[str]:
    """Names of every available corruption, sorted.

    Returns:
        Sorted list of names accepted by `corrupt` (DEFAULT_CORRUPTIONS is the report's subset).
    """
    return sorted(_IMPLEMENTATIONS)


def corrupt(images: Any, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply one corruption at one severity to a batch of images.

    Args:
        images: uint8 array (N, H, W, 3), values 0-255 (CIFAR: H = W = 32).
        name: One of list_corruptions(), e.g. "gaussian_noise".
        severity: 1 (mild) to 5 (severe).
        seed: Random seed; the same images, name, severity and seed give identical output, and
            different corruptions or severities draw independent noise.

    Returns:
        uint8 array with the same shape as ``images``; the input is not modified.
    """
    if name not in _IMPLEMENTATIONS:
        raise ConvbenchError(f"unknown corruption {name!r}; choose from {', '.join(list_corruptions())}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ConvbenchError(f"severity must be an integer from 1 to 5, got {severity!r}")
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] == 0:
        raise ConvbenchError(
            f"images must be a non-empty uint8 array (N, H, W, 3), got dtype {x.dtype} shape {x.shape}; "
            "pass the raw 0-255 test images, before any normalisation"
        )
    # One generator per (seed, corruption, severity): reproducible and independent across calls.
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(severity)])
    y = _IMPLEMENTATIONS[name](x, SEVERITY_PARAMETERS[name][int(severity) - 1], rng)
    return y if y.dtype == np.uint8 else _to_uint8(y)


def _bind(name: str) -> Callable[..., np.ndarray]:
    def fn(images: Any, severity: int, seed: int = 0) -> np.ndarray:
        return corrupt(images, name, severity, seed)

    fn.__name__ = name
    fn.__doc__ = f"Apply {name} (severity 1-5) to uint8 images (N, H, W, 3); see corrupt()."
    return fn


# name -> fn(images_uint8, severity, seed) -> images_uint8
CORRUPTIONS: dict[str, Callable[..., np.ndarray]] = {name: _bind(name) for name in list_corruptions()}


def _accuracy(value: Any, where: str) -> float:
    try:
        acc = float(value)
    except (TypeError, ValueError):
        raise ConvbenchError(f"{where}: accuracy must be a number, got {value!r}") from None
    if not 0.0 <= acc <= 1.0:
        raise ConvbenchError(f"{where}: accuracy must be a fraction in [0, 1], got {acc}; divide percentages by 100")
    return acc


def per_corruption_accuracy(acc_by_corruption_severity: Mapping[str, Any]) -> dict[str, float]:
    """Mean accuracy over severities for each corruption.

    Args:
        acc_by_corruption_severity: corruption name -> {severity: accuracy} (severity keys may be
            ints or strings, as after a JSON round trip) or a list of accuracies by severity.

    Returns:
        corruption name -> mean accuracy (fraction).
    """
    if not isinstance(acc_by_corruption_severity, Mapping) or not acc_by_corruption_severity:
        raise ConvbenchError("accuracy by corruption must map each corruption to its accuracies by severity")
    out = {}
    for name, by_sev in acc_by_corruption_severity.items():
        values: Sequence[Any] = list(by_sev.values()) if isinstance(by_sev, Mapping) else list(by_sev)
        if not values:
            raise ConvbenchError(f"corruption {name!r} has no accuracies; evaluate at least one severity")
        out[str(name)] = float(np.mean([_accuracy(v, f"corruption {name!r}") for v in values]))
    return out


def mean_corruption_accuracy(acc_by_corruption_severity: Mapping[str, Any]) -> float:
    """Mean corruption accuracy (mCA): the mean over corruptions of the mean over severities.

    Args:
        acc_by_corruption_severity: As in per_corruption_accuracy.

    Returns:
        mCA as a fraction in [0, 1].
    """
    return float(np.mean(list(per_corruption_accuracy(acc_by_corruption_severity).values())))


def relative_robustness(clean_acc: float, mca: float) -> float:
    """Share of clean accuracy kept under corruption: mCA / clean accuracy.

    Args:
        clean_acc: Accuracy on the clean test set (fraction).
        mca: Mean corruption accuracy (fraction).

    Returns:
        mCA / clean accuracy (1.0 = no loss; lower is less robust).
    """
    clean = _accuracy(clean_acc, "clean accuracy")
    mca = _accuracy(mca, "mean corruption accuracy")
    if clean == 0.0:
        raise ConvbenchError(
            "clean accuracy is 0; relative robustness is undefined for a model that gets nothing right"
        )
    return mca / clean
