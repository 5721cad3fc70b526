"""Batch augmentation and the tf.data input pipeline.

Images stay uint8 in memory; each batch is gathered, then augmented as a whole tensor (random
crop with reflection padding, flip, cutout, mixup/cutmix). All randomness is *stateless* and
derived from (seed, epoch, batch index), so the same seed gives the same batches on any number of
workers, and a resumed run continues with exactly the batches it would have seen.

    python -c "import convbench.data.augment as a; help(a.make_train_dataset)"
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from convbench.config import AugmentConfig


def _seed(seed: int, epoch, step, salt: int) -> tf.Tensor:
    # Two int64 words for the stateless RNG; the salt separates the different random decisions.
    return tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(salt, tf.int64), tf.cast(epoch, tf.int64) * 100_003 + tf.cast(step, tf.int64)])


def random_crop(images: tf.Tensor, padding: int, seed) -> tf.Tensor:
    """Reflection-pad by `padding`, then crop every image back at its own random offset.

    Vectorised with gathers, so a whole batch costs a few tensor ops.
    """
    if padding <= 0:
        return images
    n = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([n, 2], seed=seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(h)[None, :]
    cols = offsets[:, 1:] + tf.range(w)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def random_flip(images: tf.Tensor, seed) -> tf.Tensor:
    """Mirror a random half of the batch left-right."""
    n = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([n, 1, 1, 1], seed=seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def cutout(images: tf.Tensor, size: int, seed) -> tf.Tensor:
    """Zero one random `size` x `size` square per image (DeVries & Taylor 2017); it may cross the border."""
    if size <= 0:
        return images
    n = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    centre = tf.random.stateless_uniform([n, 2], seed=seed, minval=0, maxval=max(h, w), dtype=tf.int32)
    ys = tf.range(h)[None, :, None]
    xs = tf.range(w)[None, None, :]
    cy, cx = centre[:, 0, None, None], centre[:, 1, None, None]
    inside = (tf.abs(ys - cy) <= size // 2) & (tf.abs(xs - cx) <= size // 2)
    return images * tf.cast(~inside, images.dtype)[..., None]


def _beta(alpha: float, seed) -> tf.Tensor:
    # Beta(a, a) from two stateless gammas.
    seeds = tf.random.experimental.stateless_split(seed, 2)
    g1 = tf.random.stateless_gamma([], seed=seeds[0], alpha=alpha)
    g2 = tf.random.stateless_gamma([], seed=seeds[1], alpha=alpha)
    return g1 / (g1 + g2)


def mix(images: tf.Tensor, labels: tf.Tensor, cfg: AugmentConfig, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of the batch with a shuffled copy.

    Labels must be one-hot (float); they are mixed in proportion to the image area or weight.
    """
    use_mixup, use_cutmix = cfg.mixup_alpha > 0, cfg.cutmix_alpha > 0
    if not (use_mixup or use_cutmix):
        return images, labels
    s = tf.random.experimental.stateless_split(seed, 4)
    n = tf.shape(images)[0]
    perm = tf.argsort(tf.random.stateless_uniform([n], seed=s[0]))
    other, other_labels = tf.gather(images, perm), tf.gather(labels, perm)

    def do_mixup():
        lam = _beta(cfg.mixup_alpha, s[1])
        return images * lam + other * (1 - lam), labels * lam + other_labels * (1 - lam)

    def do_cutmix():
        h, w = images.shape[1], images.shape[2]
        lam = _beta(cfg.cutmix_alpha, s[2])
        cut = tf.sqrt(1.0 - lam)
        ch, cw = tf.cast(cut * h, tf.int32), tf.cast(cut * w, tf.int32)
        cy = tf.random.stateless_uniform([], seed=s[3], minval=0, maxval=h, dtype=tf.int32)
        cx = tf.random.stateless_uniform([], seed=tf.reverse(s[3], [0]), minval=0, maxval=w, dtype=tf.int32)
        y0, y1 = tf.clip_by_value(cy - ch // 2, 0, h), tf.clip_by_value(cy + ch // 2, 0, h)
        x0, x1 = tf.clip_by_value(cx - cw // 2, 0, w), tf.clip_by_value(cx + cw // 2, 0, w)
        ys, xs = tf.range(h)[:, None], tf.range(w)[None, :]
        box = tf.cast((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1), images.dtype)[None, :, :, None]
        area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / float(h * w)
        return images * (1 - box) + other * box, labels * (1 - area) + other_labels * area

    if use_mixup and use_cutmix:
        pick = tf.random.stateless_uniform([], seed=tf.reverse(s[1], [0])) < 0.5
        return tf.cond(pick, do_mixup, do_cutmix)
    return do_mixup() if use_mixup else do_cutmix()


def alternate_flip(images: tf.Tensor, coins: tf.Tensor, epoch) -> tf.Tensor:
    """airbench's alternating flip: an image is mirrored iff its fixed coin XOR the epoch is odd.

    Random flipping shows an image the same way in two consecutive epochs half the time; this shows
    it both ways in every pair of epochs (airbench measured it worth about 0.2 % at 10 epochs).

    Args:
        images: (N, H, W, C) batch.
        coins: (N,) bool, one fixed coin per training image (`flip_coins`).
        epoch: epoch number.
    """
    flip = tf.math.logical_xor(coins, tf.math.floormod(tf.cast(epoch, tf.int64), 2) == 1)
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def flip_coins(n: int, seed: int) -> np.ndarray:
    """The fixed per-image coins of `alternate_flip`: a pure function of (n, seed)."""
    return np.random.default_rng([seed, 2]).random(n) < 0.5


def augment_batch(images: tf.Tensor, labels: tf.Tensor, cfg: AugmentConfig, seed: int, epoch, step, coins: tf.Tensor | None = None):
    """Apply the whole policy to one batch.

    Args:
        images: float32 (N, H, W, 3) pixels in [0, 255].
        labels: float32 one-hot (N, K).
        cfg: the augmentation policy.
        seed, epoch, step: determine every random decision.
        coins: (N,) the images' `flip_coins`; needed by `alternate_flip`.

    Returns:
        (images, labels), same shapes and dtypes.
    """
    images = random_crop(images, cfg.crop_padding, _seed(seed, epoch, step, 1))
    if cfg.flip and cfg.alternate_flip:
        if coins is None:
            raise ValueError("alternate_flip needs the images' flip coins")
        images = alternate_flip(images, coins, epoch)
    elif cfg.flip:
        images = random_flip(images, _seed(seed, epoch, step, 2))
    images = cutout(images, cfg.cutout, _seed(seed, epoch, step, 3))
    return mix(images, labels, cfg, _seed(seed, epoch, step, 4))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled example order of one epoch (a pure function of seed and epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def make_train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    cfg: AugmentConfig,
    seed: int,
    epoch: int,
    shard: tuple[int, int] = (0, 1),
) -> tf.data.Dataset:
    """One epoch of augmented training batches.

    Args:
        images: uint8 (N, H, W, 3), held in memory.
        labels: int (N,).
        num_classes: width of the one-hot labels.
        batch_size: examples per batch *of this worker* (per_worker_batch_size).
        cfg: augmentation policy.
        seed: run seed.
        epoch: epoch number (changes order and augmentation).
        shard: (worker index, worker count): each worker takes its own slice of every global batch,
            so workers never see the same example twice in an epoch.

    Returns:
        A dataset of (float32 images in [0, 255], float32 one-hot labels); the last partial batch is
        dropped so every step has the same shape (and every worker the same step count).
    """
    index, count = shard
    order = epoch_order(len(labels), seed, epoch)
    global_batch = batch_size * count
    steps = len(order) // global_batch
    if steps == 0:
        raise ValueError(f"{len(order)} training images are fewer than one global batch of {global_batch}")
    order = order[: steps * global_batch].reshape(steps, count, batch_size)[:, index, :]
    x = tf.constant(images)
    y = tf.constant(labels.astype(np.int32))
    coins = tf.constant(flip_coins(len(labels), seed)) if cfg.alternate_flip else None

    def load(step, idx):
        batch = tf.cast(tf.gather(x, idx), tf.float32)
        onehot = tf.one_hot(tf.gather(y, idx), num_classes)
        batch_coins = None if coins is None else tf.gather(coins, idx)
        return augment_batch(batch, onehot, cfg, seed, epoch, step * count + index, coins=batch_coins)

    ds = tf.data.Dataset.from_tensor_slices((tf.range(steps, dtype=tf.int64), order))
    return _untuned(ds.map(load, num_parallel_calls=_parallel_calls(), deterministic=True))


def make_eval_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int) -> tf.data.Dataset:
    """Unaugmented batches in order (the last batch may be smaller)."""
    x = tf.constant(images)
    y = tf.constant(labels.astype(np.int32))
    n = len(labels)
    starts = tf.range(0, n, batch_size, dtype=tf.int64)

    def load(start):
        end = tf.minimum(start + batch_size, n)
        return tf.cast(x[start:end], tf.float32), tf.one_hot(y[start:end], num_classes)

    return _untuned(tf.data.Dataset.from_tensor_slices(starts).map(load, num_parallel_calls=_parallel_calls()))


def _parallel_calls() -> int:
    # One batch per map call: a few in flight keep the accelerator fed (bench: pipeline_ratio > 30 on CPU).
    return min(os.cpu_count() or 1, 8)


def _untuned(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Fixed parallelism and prefetch, with tf.data's autotuner off.

    The autotuner runs a model thread per iterator, and an iterator's destructor waits for that
    thread to wake from its optimisation-period sleep (up to 60 s). Inside Ray workers that stalled
    the end of epochs by 5-55 s with the CPU idle (gdb: RootDataset::Iterator::~Iterator waiting on
    Model::OptimizeLoop): most of the 26 % by which Ray training trailed the plain loop. A gather-and-augment
    map per batch needs no tuning.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)
