"""Data: CIFAR archives or a class-subfolder folder, validated, decoded once into a uint8 cache.

Sources:
- `cifar10` / `cifar100`: the official *binary* archives (no pickle is ever loaded), downloaded once
  into the cache and checked against their published MD5.
- a folder `DIR/train/<class>/*.{jpg,jpeg,png,webp,bmp}` and `DIR/test/<class>/*` (subfolders of a
  class folder count as that class).

Every image becomes 32x32 RGB uint8. The decoded arrays are cached (keyed on the files' names,
sizes and modification times), so every architecture and every later run reuse them.

    convbench data ../shared/datasets/cifar10-jpeg   # decode, cache and summarise
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convbench.env import default_cache_dir
from convbench.errors import ConvbenchError
from convbench.io import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

IMAGE_SIZE = 32
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # what PIL decodes that image datasets ship in
CACHE_VERSION = 1  # bump when the decoded format changes so stale caches are not reused

# Published on https://www.cs.toronto.edu/~kriz/cifar.html (binary versions: fixed-size records).
CIFAR_ARCHIVES = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "md5": "c32a1d4ab5d03f1284b67883e8d87530",
        "train": [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
        "test": ["cifar-10-batches-bin/test_batch.bin"],
        "names": "cifar-10-batches-bin/batches.meta.txt",
        "label_bytes": 1,
        "label_index": 0,
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "md5": "03b5dce01913d631647c71ecec9e9cb8",
        "train": ["cifar-100-binary/train.bin"],
        "test": ["cifar-100-binary/test.bin"],
        "names": "cifar-100-binary/fine_label_names.txt",
        "label_bytes": 2,
        "label_index": 1,  # fine label; byte 0 is the coarse superclass
    },
}


@dataclass
class DataIssues:
    """What was skipped or converted while reading a folder; shown in the report."""

    skipped: list[str] = field(default_factory=list)  # "path: reason" for unreadable/corrupt images
    ignored: list[str] = field(default_factory=list)  # files without an image extension
    converted: int = 0  # grayscale, palette, RGBA or 16-bit images converted to 8-bit RGB
    resized: int = 0  # images not 32x32, resized

    def to_dict(self) -> dict:
        return {
            "skipped": len(self.skipped),
            "skipped_files": self.skipped[:50],
            "ignored": len(self.ignored),
            "ignored_files": self.ignored[:50],
            "converted": self.converted,
            "resized": self.resized,
        }


@dataclass
class Dataset:
    """Decoded images as uint8 (N, 32, 32, 3) and int32 labels, split three ways."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    source: str
    issues: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict:
        """Sizes and provenance, JSON-ready."""
        return {
            "source": self.source,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "train_images": int(len(self.y_train)),
            "val_images": int(len(self.y_val)),
            "test_images": int(len(self.y_test)),
            "image_shape": list(self.x_train.shape[1:]),
            "issues": self.issues,
        }


# ---------------------------------------------------------------------------------------------
# Public entry points


def load_dataset(
    source: str,
    cache_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_train_images: int = 0,
    max_test_images: int = 0,
    strict: bool = False,
) -> Dataset:
    """Load, validate, cache and split a data source.

    Args:
        source: "cifar10", "cifar100" or a folder in class-subfolder layout.
        cache_dir: where decoded arrays and downloads live (default: `default_cache_dir()`).
        val_fraction: stratified fraction of train held out for validation.
        split_seed: seed of the validation split and of the subsets.
        max_train_images: stratified subset of train taken before the split (0 = all).
        max_test_images: stratified subset of test (0 = all).
        strict: make unreadable images an error instead of skipping them.

    Returns:
        The Dataset.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if source in CIFAR_ARCHIVES:
        x_tr, y_tr, x_te, y_te, names = _load_cifar(source, cache)
        issues = DataIssues()
    else:
        x_tr, y_tr, x_te, y_te, names, issues = _load_folder(Path(source), cache, strict)
    for flag, value, available in (
        ("--max-train-images", max_train_images, len(y_tr)),
        ("--max-test-images", max_test_images, len(y_te)),
    ):
        if value < 0:
            raise ConvbenchError(f"{flag} must be >= 0 (0 means all), got {value}")
        if value > available:
            raise ConvbenchError(f"{flag} {value} is more than the {available} images available; use 0 for all or a smaller number")
    rng = np.random.default_rng(split_seed)
    if max_train_images:
        keep = stratified_subset(y_tr, max_train_images, rng)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if max_test_images:
        keep = stratified_subset(y_te, max_test_images, rng)
        x_te, y_te = x_te[keep], y_te[keep]
    train_idx, val_idx = stratified_split(y_tr, val_fraction, rng)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ConvbenchError(
            f"{len(y_tr)} training images are too few to carve a validation split of {val_fraction:.0%}; use more images"
        )
    return Dataset(
        x_train=x_tr[train_idx],
        y_train=y_tr[train_idx],
        x_val=x_tr[val_idx],
        y_val=y_tr[val_idx],
        x_test=x_te,
        y_test=y_te,
        class_names=list(names),
        source=str(source),
        issues=issues.to_dict(),
    )


def stratified_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of about `n` items with each class in its original proportion (sorted).

    Args:
        labels: int class labels.
        n: how many to keep.
        rng: random generator (fixed seed for reproducibility).

    Returns:
        Sorted int64 indices, exactly n of them.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    # Largest remainders get the leftover slots so the total is exactly n.
    remainder = counts / counts.sum() * n - quota
    for i in np.argsort(-remainder)[: n - quota.sum()]:
        quota[i] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with `fraction` of every class held out.

    Each class keeps at least one training image and, when it has two or more, gives at least
    one to the held-out part.
    """
    held, rest = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * fraction))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        held.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def save_dataset(ds: Dataset, folder: str | Path) -> None:
    """Write a Dataset as `arrays.npz` + `manifest.json` (the pipeline's Dataset artifact)."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(ds, k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    atomic_write(folder / "arrays.npz", lambda tmp: _savez(tmp, arrays))
    atomic_write_json(folder / "manifest.json", ds.summary())


def read_saved_dataset(folder: str | Path) -> Dataset:
    """Read what `save_dataset` wrote."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        with np.load(folder / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise ConvbenchError(f"{folder} is not a saved convbench dataset ({exc}); run prepare_data again") from None
    return Dataset(**arrays, class_names=manifest["class_names"], source=manifest["source"], issues=manifest["issues"])


# ---------------------------------------------------------------------------------------------
# CIFAR binary archives


def _load_cifar(name: str, cache: Path):
    spec = CIFAR_ARCHIVES[name]
    cached = cache / "decoded" / f"{name}-v{CACHE_VERSION}.npz"
    if cached.exists():
        try:
            return _read_cache(cached)
        except ConvbenchError:
            logger.warning(f"warning: the data cache {cached} is unreadable; decoding the archive again")
    archive = cache / "downloads" / Path(spec["url"]).name
    if not archive.exists():
        _download(spec["url"], archive, spec["md5"])
    elif _md5(archive) != spec["md5"]:
        raise ConvbenchError(f"{archive} does not match the published MD5 {spec['md5']}; delete it so it is downloaded again")
    parts = {}
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.extractfile(spec["names"]).read().decode().split()
        for split in ("train", "test"):
            xs, ys = [], []
            for member in spec[split]:
                raw = np.frombuffer(tar.extractfile(member).read(), dtype=np.uint8)
                record = spec["label_bytes"] + 3072
                rows = raw.reshape(-1, record)
                ys.append(rows[:, spec["label_index"]].astype(np.int32))
                # Records are channel-planar (3, 32, 32); convbench keeps images HWC.
                xs.append(rows[:, spec["label_bytes"]:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            parts[split] = (np.concatenate(xs), np.concatenate(ys))
    result = (*parts["train"], *parts["test"], names)
    try:
        _write_cache(cached, *result)
    except (ConvbenchError, OSError) as exc:
        logger.warning(f"warning: cannot write the data cache {cached} ({exc}); the archive will be decoded again next run")
    return result


def _download(url: str, dest: Path, md5: str) -> None:

    logger.info(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ConvbenchError(
            f"cannot download {url} ({getattr(exc, 'reason', exc)}); without network pass --data DIR with a "
            "train/<class>/ and test/<class>/ image folder, or put the archive at " + str(dest)
        ) from None
    got = hashlib.md5(data).hexdigest()
    if got != md5:
        raise ConvbenchError(f"downloaded {url} has MD5 {got}, expected {md5}; the download is corrupt, try again")
    atomic_write(dest, lambda tmp: tmp.write_bytes(data))


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Class-subfolder folders


def _list_split(root: Path, split: str) -> tuple[list[str], list[list[Path]], list[str]]:
    folder = root / split
    if not folder.is_dir():
        raise ConvbenchError(f"{folder} is missing; a data folder needs {split}/<class>/ subfolders with images")
    try:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError:
        raise ConvbenchError(f"cannot read {folder} (permission denied); make it readable (chmod +rx)") from None
    if not classes:
        raise ConvbenchError(f"{folder} has no class subfolders; put the images of each class in {split}/<class>/")
    files, ignored = [], []
    for cls in classes:
        try:
            # Subfolders of a class folder belong to that class, as in torchvision's ImageFolder.
            entries = sorted(p for p in (folder / cls).rglob("*") if p.is_file()
                             and not any(part.startswith(".") for part in p.relative_to(folder / cls).parts))
        except PermissionError:
            raise ConvbenchError(f"cannot read {folder / cls} or a folder inside it (permission denied); make it readable (chmod -R +rX)") from None
        images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored += [_printable(p) for p in entries if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            kinds = "/".join(IMAGE_EXTENSIONS)
            raise ConvbenchError(f"class folder {folder / cls} has no {kinds} images (subfolders included); add images or remove the folder")
        files.append(images)
    return classes, files, ignored


def _load_folder(root: Path, cache: Path, strict: bool):
    if not root.exists():
        raise ConvbenchError(f"data folder {root} does not exist; pass --data cifar10, cifar100 or an existing folder")
    if not root.is_dir():
        raise ConvbenchError(f"--data {root} is a file; pass a folder with train/<class>/ and test/<class>/ subfolders")
    train_classes, train_files, ignored_tr = _list_split(root, "train")
    test_classes, test_files, ignored_te = _list_split(root, "test")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise ConvbenchError(
            f"train and test classes differ in {root} (only in train: {only_train}, only in test: {only_test}); "
            "give both splits the same class folders"
        )
    if len(train_classes) < 2:
        raise ConvbenchError(f"{root} has only one class ({train_classes[0]}); a classifier needs at least two")

    nested = [p for group in train_files + test_files for p in group if len(p.relative_to(root).parts) > 3]
    if nested:
        logger.info(f"note: {len(nested)} images in subfolders of class folders (first: {_printable(nested[0].relative_to(root))}) "
                    "are included in their class")
    listing = [(str(p.relative_to(root)), *_stat(p)) for group in train_files + test_files for p in group]
    key = hashlib.sha1(json.dumps([CACHE_VERSION, str(root.resolve()), strict, listing]).encode()).hexdigest()[:16]
    cached = cache / "decoded" / f"folder-{key}.npz"
    if cached.exists():
        try:
            x_tr, y_tr, x_te, y_te, names = _read_cache(cached)
            issues = DataIssues(**json.loads(cached.with_suffix(".issues.json").read_text()))
        except (ConvbenchError, OSError, ValueError, TypeError):
            # The cache is derived data: a damaged or half-written one is rebuilt, not fatal.
            logger.warning(f"warning: the data cache {cached} is unreadable; decoding the images again")
        else:
            _warn_issues(issues)
            return x_tr, y_tr, x_te, y_te, names, issues

    issues = DataIssues(ignored=ignored_tr + ignored_te)
    logger.info(f"decoding {len(listing)} images from {root} (once; cached in {cached.parent})")
    x_tr, y_tr = _decode_split(train_files, issues, strict)
    x_te, y_te = _decode_split(test_files, issues, strict)
    for split, y in (("train", y_tr), ("test", y_te)):
        present = set(np.unique(y).tolist())
        missing = [train_classes[i] for i in range(len(train_classes)) if i not in present]
        if missing:
            raise ConvbenchError(f"no readable {split} images left for classes {missing} in {root}; fix or replace those files")

    try:
        # The issues file first: the .npz appearing is what marks the cache complete.
        atomic_write_json(cached.with_suffix(".issues.json"), issues.__dict__)
        _write_cache(cached, x_tr, y_tr, x_te, y_te, train_classes)
    except (ConvbenchError, OSError) as exc:
        logger.warning(f"warning: cannot write the data cache in {cached.parent} ({exc}); the images will be decoded again next run")
    _warn_issues(issues)
    return x_tr, y_tr, x_te, y_te, train_classes, issues


def _printable(path: Path) -> str:
    # File names that are not valid UTF-8 hold surrogates after decoding; print() and JSON reject those.
    return str(path).encode("utf-8", errors="backslashreplace").decode("utf-8")


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _warn_issues(issues: DataIssues) -> None:
    if issues.skipped:
        logger.warning(f"warning: skipped {len(issues.skipped)} unreadable images (first: {issues.skipped[0]}); use --strict to stop on them")
    if issues.ignored:
        logger.warning(f"warning: ignored {len(issues.ignored)} non-image files (first: {issues.ignored[0]})")
    if issues.converted:
        logger.warning(f"warning: converted {issues.converted} grayscale/RGBA/palette/16-bit images to 8-bit RGB")
    if issues.resized:
        logger.warning(f"warning: resized {issues.resized} images that were not {IMAGE_SIZE}x{IMAGE_SIZE}")


def _decode_split(files_by_class: list[list[Path]], issues: DataIssues, strict: bool):
    paths = [p for group in files_by_class for p in group]
    labels = np.concatenate([np.full(len(g), i, dtype=np.int32) for i, g in enumerate(files_by_class)])
    out = np.zeros((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    # PIL releases the GIL while decoding, so threads use every core without pickling arrays.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, (image, flags, error) in enumerate(pool.map(read_image, paths, chunksize=256)):
            if error:
                if strict:
                    raise ConvbenchError(f"cannot read image {_printable(paths[i])}: {error}; fix or remove it, or drop --strict to skip it")
                issues.skipped.append(f"{_printable(paths[i])}: {error}")
                continue
            out[i] = image
            ok[i] = True
            issues.converted += "converted" in flags
            issues.resized += "resized" in flags
            if (i + 1) % 10000 == 0:
                logger.info(f"  decoded {i + 1}/{len(paths)}")
    return out[ok], labels[ok]


def read_image(path: Path) -> tuple[np.ndarray | None, set[str], str | None]:
    """Decode one image file to 32x32 RGB uint8.

    Args:
        path: an image file (IMAGE_EXTENSIONS).

    Returns:
        (image or None, flags among {"converted", "resized"}, error message or None).
    """
    from PIL import Image, UnidentifiedImageError

    flags: set[str] = set()
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit: PIL's convert("RGB") clips instead of scaling, so scale to 8 bits here.
                arr = np.asarray(im, dtype=np.uint32)
                peak = 65535 if im.mode.startswith("I;16") or arr.max() > 255 else 255
                im = Image.fromarray((arr * 255 // peak).astype(np.uint8), mode="L")
                flags.add("converted")
            if im.mode != "RGB":
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    # Composite on black (the CIFAR background is arbitrary; black keeps it simple).
                    im = im.convert("RGBA")
                    background = Image.new("RGBA", im.size, (0, 0, 0, 255))
                    im = Image.alpha_composite(background, im)
                im = im.convert("RGB")
                flags.add("converted")
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
                flags.add("resized")
            return np.asarray(im, dtype=np.uint8), flags, None
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many types on bad bytes; one bad file must not stop a run
        if isinstance(exc, UnidentifiedImageError):
            reason = "not an image or unsupported format"
        elif isinstance(exc, Image.DecompressionBombError):
            reason = "image too large to decode safely (possible decompression bomb)"
        else:
            reason = (str(exc).splitlines() or [""])[0][:200] or type(exc).__name__
        try:
            if Path(path).stat().st_size == 0:
                reason = "empty file (0 bytes)"
        except OSError:
            pass
        return None, flags, reason


# ---------------------------------------------------------------------------------------------
# Cache


def _write_cache(path: Path, x_tr, y_tr, x_te, y_te, names) -> None:

    arrays = dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, class_names=np.array(names))
    atomic_write(path, lambda tmp: _savez(tmp, arrays))


def _savez(tmp: Path, arrays: dict) -> None:
    # np.savez appends ".npz" to names without it; write through a handle to keep the temp name.
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _read_cache(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["x_train"], z["y_train"], z["x_test"], z["y_test"], [str(n) for n in z["class_names"]]
    except (OSError, ValueError, KeyError) as exc:
        raise ConvbenchError(f"the data cache {path} is unreadable ({exc}); delete it and run again") from None
