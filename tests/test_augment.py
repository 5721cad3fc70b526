"""Batch augmentation: shapes kept, pixels only moved (crop/flip), deterministic per (seed, epoch, step)."""

import numpy as np
import pytest
import tensorflow as tf

from convbench.data.augment import augment_batch, cutout, epoch_order, make_eval_dataset, make_train_dataset, mix, random_crop, random_flip
from convbench.config import AugmentConfig


def _images(n=16):
    return tf.constant(np.random.default_rng(0).uniform(0, 255, (n, 32, 32, 3)).astype("float32"))


def test_crop_is_a_shift_of_the_reflection_padded_image():
    x = _images(8)
    out = random_crop(x, 4, tf.constant([1, 2], tf.int64)).numpy()
    padded = np.pad(x.numpy(), [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")
    for i in range(8):
        hits = [(dy, dx) for dy in range(9) for dx in range(9) if np.array_equal(padded[i, dy:dy + 32, dx:dx + 32], out[i])]
        assert hits, f"image {i} is not a crop of its padded copy"


def test_crop_offsets_vary_across_the_batch():
    x = tf.tile(_images(1), [64, 1, 1, 1])
    out = random_crop(x, 4, tf.constant([3, 4], tf.int64)).numpy()
    assert len({out[i].tobytes() for i in range(64)}) > 10


def test_flip_mirrors_about_half():
    x = _images(200)
    out = random_flip(x, tf.constant([5, 6], tf.int64)).numpy()
    flipped = [np.array_equal(out[i], x.numpy()[i, :, ::-1]) for i in range(200)]
    same = [np.array_equal(out[i], x.numpy()[i]) for i in range(200)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 60 < sum(flipped) < 140


def test_cutout_zeroes_a_square_per_image():
    x = tf.ones((10, 32, 32, 3)) * 100
    out = cutout(x, 8, tf.constant([7, 8], tf.int64)).numpy()
    zeros = (out == 0).all(axis=-1).sum(axis=(1, 2))
    assert (zeros > 0).all() and (zeros <= 81).all()


def test_mixup_mixes_labels_consistently():
    x = _images(32)
    y = tf.one_hot(np.arange(32) % 10, 10)
    xm, ym = mix(x, y, AugmentConfig(mixup_alpha=1.0), tf.constant([1, 1], tf.int64))
    assert np.allclose(ym.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(xm.numpy(), x.numpy())


def test_cutmix_label_weight_matches_pasted_area():
    x = tf.zeros((4, 32, 32, 3))
    y = tf.one_hot([0, 1, 2, 3], 10)
    xm, ym = mix(x, y, AugmentConfig(cutmix_alpha=1.0), tf.constant([9, 9], tf.int64))
    assert np.allclose(ym.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_augmentation_is_deterministic_in_seed_epoch_step():
    x, y = _images(8), tf.one_hot(np.arange(8), 10)
    cfg = AugmentConfig(cutout=8, mixup_alpha=0.5)
    a = augment_batch(x, y, cfg, 1, 2, 3)
    b = augment_batch(x, y, cfg, 1, 2, 3)
    c = augment_batch(x, y, cfg, 1, 2, 4)
    assert np.array_equal(a[0].numpy(), b[0].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_train_dataset_shards_never_overlap_and_cover_whole_batches():
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1).repeat(32, 1).repeat(32, 2).repeat(3, 3)
    labels = np.arange(100) % 10
    cfg = AugmentConfig(crop_padding=0, flip=False)
    seen = []
    for worker in range(2):
        for xb, _ in make_train_dataset(images, labels, 10, 8, cfg, seed=0, epoch=0, shard=(worker, 2)):
            seen += xb.numpy()[:, 0, 0, 0].astype(int).tolist()
    assert len(seen) == len(set(seen)) == 96  # 6 global batches of 16, the rest dropped
    assert not np.array_equal(epoch_order(100, 0, 0), epoch_order(100, 0, 1))


def test_eval_dataset_keeps_order_and_last_partial_batch():
    images = np.zeros((10, 32, 32, 3), np.uint8)
    labels = np.arange(10) % 3
    got = np.concatenate([y.numpy().argmax(1) for _, y in make_eval_dataset(images, labels, 3, 4)])
    assert got.tolist() == labels.tolist()


def test_alternating_flip_shows_every_image_both_ways_in_two_epochs():
    images = np.random.default_rng(1).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(64) % 10
    cfg = AugmentConfig(crop_padding=0, flip=True, alternate_flip=True)

    def by_image(epoch):
        """{image index: shown mirrored?} over one epoch."""
        out = {}
        for xb, _ in make_train_dataset(images, labels, 10, 16, cfg, seed=3, epoch=epoch):
            for img in xb.numpy().astype(np.uint8):
                for i, im in enumerate(images):
                    if np.array_equal(img, im) or np.array_equal(img, im[:, ::-1]):
                        out[i] = not np.array_equal(img, im)
        return out

    even, odd = by_image(0), by_image(1)
    assert sorted(even) == sorted(odd) == list(range(64))
    assert all(even[i] != odd[i] for i in range(64)), "an image was shown the same way in two consecutive epochs"
    assert 16 < sum(even.values()) < 48
    assert by_image(2) == even, "the coins are fixed by the seed: epoch 2 flips like epoch 0"
