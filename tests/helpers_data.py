"""Tiny synthetic image folders for the reliability tests (no shared data needed).

`write_dataset` writes `train/<class>/*.png` and `test/<class>/*.png` whose classes a small CNN
separates within a few epochs (each class has its own colour and stripe pattern). The `bad_*`
helpers write the broken files the bad-input suite feeds to convbench.

    from helpers_data import write_dataset; write_dataset(Path("/tmp/d"), classes=3, train=20, test=5)
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np


def two_classes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of n 32x32 images in two classes any model separates: dark and bright."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int32)
    x = np.where(y[:, None, None, None] == 1, 180, 60) + rng.integers(-40, 40, (n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def class_image(c: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One noisy 32x32 RGB uint8 image of class `c` (colour and stripe spacing depend on c)."""
    img = np.full((size, size, 3), 40, np.uint8)
    img[..., c % 3] = 110 + 25 * (c % 6)
    img[:: 2 + c % 4, :, :] = 230 - 15 * c
    noise = rng.integers(-25, 25, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def write_dataset(root: Path, classes: int = 3, train: int = 20, test: int = 5, seed: int = 0) -> Path:
    """Write a class-subfolder dataset of PNGs under `root`.

    Args:
        root: folder to create (train/ and test/ go inside).
        classes: number of classes (folders class0, class1, ...).
        train: images per class in train/.
        test: images per class in test/.
        seed: noise seed.

    Returns:
        root.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(class_image(c, rng)).save(folder / f"{i:04d}.png")
    return root


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    """PNG file bytes of an array (PIL picks the mode from the dtype and shape unless given)."""
    from PIL import Image

    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    """JPEG file bytes of an RGB uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height RGB pixels but holds no pixel data (a decompression-bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def rgb16_png(value: int, size: int = 32) -> bytes:
    """A 16-bit-per-channel RGB PNG filled with `value` (PIL cannot write these, so it is built by hand)."""
    row = b"\x00" + np.full((size, 3), value, ">u2").tobytes()
    ihdr = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(row * size)) + _chunk(b"IEND", b"")


def bad_files(rng: np.random.Generator | None = None) -> dict[str, bytes]:
    """Broken image files by name: what the bad-input suite drops into a class folder.

    Returns:
        {file name: content} for zero-byte, truncated and corrupt JPEG/PNG files and a text file
        with an image extension.
    """
    rng = rng or np.random.default_rng(1)
    good = class_image(0, rng)
    jpg, png = jpeg_bytes(good), png_bytes(good)
    corrupt_png = bytearray(png)
    corrupt_png[40:60] = b"\xff" * 20  # inside IHDR/IDAT: CRC and zlib stream broken
    return {
        "zero.jpg": b"",
        "zero.png": b"",
        "truncated.jpg": jpg[: len(jpg) // 2],
        "truncated.png": png[: len(png) // 2],
        "corrupt.jpg": jpg[:20] + bytes(rng.integers(0, 256, 400, dtype=np.uint8)),
        "corrupt.png": bytes(corrupt_png),
        "notes.jpg": b"this is a text file with an image extension\n",
    }
