"""`convbench bench`: how fast convbench trains, against the machine's limit measured in the same run.

    convbench bench --out runs/bench                                  # throughput part (~10 min, 2 cores)
    convbench bench --data ../shared/datasets/cifar10-jpeg --out runs/bench --time-to-accuracy
    convbench bench --models cnn_vgg --steps 5 --warmup 1 --out /tmp/b  # a quick look
    .venv/bin/pytest tests/test_bench.py -q                           # the tests (about a minute)

Writes `bench.json` and `bench.md` into --out. Every figure comes from one run, because shared
machines are noisy; the load average at the start and the end is recorded beside them.

- Peak: the best of a few large matmuls (FLOPs = 2 n^3) and of a 3x3 conv through TensorFlow, in
  float32 and bfloat16 (float16 too on a GPU), measured at the start and at the end of the run.
- Precision: each model trains in the policy `mixed_precision: auto` picks (bf16 on CPUs with AMX
  or AVX512-BF16); the same model in float32 is measured in the same rounds, giving
  `precision_speedup`. MFU is relative to the better peak (matmul or conv) of the dtype used.
- Per model: training images/s through convbench's own loop (`convbench.training.loop.Trainer.train_epoch`,
  warm-up steps excluded), forward FLOPs per image, training FLOPs per image (3 x forward when
  every layer trains), achieved FLOP/s and MFU = achieved / peak; the input pipeline alone
  (`make_train_dataset` with the default augmentation, iterated without training); plain Keras
  `model.fit` on the same model, data and batch size, the way the original notebook trains (fed
  un-augmented batches), and convbench's loop fed the same un-augmented batches, which tells the
  loop's own speed apart from the cost of augmentation.
- Variants of the same loop, measured beside it (custom CNNs): one step per compiled call (a host
  round trip every step, `steps_per_execution: 1`), and that step under XLA (`jit_compile=True`).
- The measurements of one model alternate for --rounds rounds and each reports its best round:
  a change in load hits all of them, and contention only ever slows a run down.
- `--time-to-accuracy`: trains `cnn_airbench` (the fastest custom CNN) on real data and records the
  wall time until validation accuracy reaches 90 % and 93 %, and the test accuracy at that point.

Without --data the throughput part uses random uint8 images (throughput does not depend on pixel
values), so it runs anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from convbench.bench import torch_peer
from convbench.config import AugmentConfig, preset, Recipe, RegularizationConfig, TrainConfig, TransferConfig
from convbench.data.datasets import load_dataset
from convbench.env import describe_environment
from convbench.errors import ConvbenchError
from convbench.io import atomic_write_json, atomic_write_text, check_writable
from convbench.log import run_log
from convbench.models import list_models, model_info
from convbench.models.flops import count_flops, layer_flops
from convbench.training.loop import make_optimizer, make_schedule, run_epochs, Trainer

logger = logging.getLogger(__name__)

# The issue's targets on a 2-core CPU; bench.json states each as met or not.
PIPELINE_RATIO_TARGET = 3.0  # input pipeline img/s over the fastest model's training img/s
# Fraction of the best measured peak (matmul or conv) of the dtype a custom CNN computes in: half
# of float32's; for bf16 35 %, since its conv peak is several times higher and the non-conv work
# (pooling, activations, the input pipeline) does not speed up as much.
CUSTOM_MFU_TARGET = {"float32": 0.5, "bfloat16": 0.35, "float16": 0.35}
PRECISION_SPEEDUP_TARGET = 2.5  # custom CNNs' img/s in a mixed policy over their float32 img/s
FIT_RATIO_TARGET = 1.0  # convbench loop img/s over plain model.fit img/s
ACCURACY_TARGETS = ((0.90, 15.0), (0.93, 45.0))  # (validation accuracy, minutes)

FAST_MODEL = "cnn_airbench"
DEFAULT_TRANSFER = "efficientnet_lite0"

REQUIRED_MODEL_KEYS = ("name", "train_images_per_s", "flops_per_image", "mfu", "pipeline_ratio", "fit_ratio")


# ---------------------------------------------------------------------------------------------
# Arithmetic (plain functions, tested by hand-computed cases)


def achieved_flops_per_s(train_flops_per_image: float, images_per_s: float) -> float:
    """Training FLOP/s actually done: FLOPs of one training step per image x images per second."""
    return float(train_flops_per_image) * float(images_per_s)


def mfu(train_flops_per_image: float, images_per_s: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak FLOP/s.

    Args:
        train_flops_per_image: FLOPs of forward + backward for one image (3 x forward when every
            layer trains: the backward pass costs about twice the forward).
        images_per_s: measured training throughput.
        peak_flops_per_s: the machine's measured peak.

    Returns:
        The fraction (0.5 = half the peak).
    """
    if peak_flops_per_s <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak_flops_per_s}")
    return achieved_flops_per_s(train_flops_per_image, images_per_s) / float(peak_flops_per_s)


def training_flops_per_image(model) -> int:
    """FLOPs of one training step per image: forward + 2 x forward of the layers gradients reach.

    Backpropagation stops at the first layer with trainable weights, so a partly frozen model
    (transfer fine-tuning) costs the full forward plus twice the forward of its trainable tail;
    a fully trainable model costs 3 x forward, the usual MFU convention.

    Args:
        model: a built functional keras.Model.

    Returns:
        FLOPs per image.
    """
    from convbench.training.recipes import leaf_layers

    layers = leaf_layers(model)
    flops = [layer_flops(layer) for layer in layers]
    first = next((i for i, layer in enumerate(layers) if layer.trainable_weights), len(layers))
    return int(sum(flops) + 2 * sum(flops[first:]))


def peak_dtype(precision: str) -> str:
    """The matmul dtype whose peak a model's MFU is relative to, from its Keras dtype policy."""
    return {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(precision, "float32")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return float(numerator) / float(denominator)


# ---------------------------------------------------------------------------------------------
# Peak


def peak_matmul_flops(dtype: str = "float32", n: int = 4096, repeats: int = 5, device: str | None = None) -> dict:
    """The machine's practical peak: an n x n matmul through TensorFlow, best of `repeats`.

    Args:
        dtype: "float32" or "bfloat16" (on a GPU TensorFlow's default TF32 applies to float32).
        n: matrix side; FLOPs = 2 n^3 per matmul.
        repeats: timed matmuls after one untimed warm-up.
        device: e.g. "/GPU:0"; None = TensorFlow's default placement.

    Returns:
        {"dtype", "n", "device", "flops_per_s" (best), "median_flops_per_s", "seconds" (each run)}.
    """
    import tensorflow as tf

    if n < 1 or repeats < 1:
        raise ConvbenchError(f"peak matmul needs n >= 1 and repeats >= 1, got n={n}, repeats={repeats}")
    with tf.device(device or ("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0")):
        a = tf.cast(tf.random.stateless_normal((n, n), seed=[1, 2]), dtype)
        b = tf.cast(tf.random.stateless_normal((n, n), seed=[3, 4]), dtype)
        timing = _time_op(lambda a, b: tf.linalg.matmul(a, b)[0, 0], (a, b), repeats, 2.0 * n**3)
    return {"dtype": dtype, "n": n, "device": device or ("GPU" if tf.config.list_physical_devices("GPU") else "CPU"), **timing}


def _time_op(op, args, repeats: int, flops: float) -> dict:
    """Best and median FLOP/s of `repeats` calls of the compiled `op(*args)`, after one untimed call.

    `op` returns one element, so each call syncs with the device without copying its whole output.
    """
    import tensorflow as tf

    fn = tf.function(op)
    float(fn(*args))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(fn(*args))
        seconds.append(time.perf_counter() - start)
    return {"flops_per_s": flops / min(seconds), "median_flops_per_s": flops / statistics.median(seconds), "seconds": seconds}


def peak_conv_flops(dtype: str = "float32", batch: int = 256, side: int = 32, channels: int = 128, repeats: int = 5,
                    device: str | None = None) -> dict:
    """The convolution peak: a 3x3, `channels`->`channels` conv on `batch` `side`x`side` maps, best of `repeats`.

    CNNs are convolution-bound, and oneDNN's convolution kernels reach a different fraction of
    the hardware than its matmul (bf16 convs on AMX run about twice the bf16 matmul's rate), so
    the bench measures both and relates MFU to the better one.

    Returns:
        {"dtype", "kind": "conv3x3", "shape", "device", "flops_per_s" (best), "median_flops_per_s", "seconds"}.
    """
    import tensorflow as tf

    if min(batch, side, channels, repeats) < 1:
        raise ConvbenchError("peak conv needs positive batch, side, channels and repeats")
    on = device or ("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0")
    with tf.device(on):
        x = tf.cast(tf.random.stateless_normal((batch, side, side, channels), seed=[5, 6]), dtype)
        k = tf.cast(tf.random.stateless_normal((3, 3, channels, channels), seed=[7, 8]), dtype)
        timing = _time_op(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME")[0, 0, 0, 0], (x, k), repeats,
                          2.0 * batch * side * side * channels * channels * 9)
    return {"dtype": dtype, "kind": "conv3x3", "shape": f"{batch}x{side}x{side}x{channels}", "device": "GPU" if "GPU" in on else "CPU",
            **timing}


def _best_peaks(peaks: list[dict]) -> dict[str, float]:
    """The best FLOP/s of each dtype over its matmul and conv runs."""
    best: dict[str, float] = {}
    for p in peaks:
        best[p["dtype"]] = max(best.get(p["dtype"], 0.0), p["flops_per_s"])
    return best


def measure_peaks(dtypes: list[str], n: int, repeats: int, when: str) -> list[dict]:
    """The matmul and the conv peak of every dtype, tagged with `when` ("start" or "end")."""
    out = []
    for d in dtypes:
        out.append({**peak_matmul_flops(d, n, repeats), "kind": "matmul", "shape": f"{n}x{n}", "when": when})
        # The conv's batch follows the matmul's size, so a small --peak-size keeps both quick.
        out.append({**peak_conv_flops(d, batch=max(8, n // 16), repeats=repeats), "when": when})
    return out


# ---------------------------------------------------------------------------------------------
# Data


def synthetic_data(n: int, num_classes: int = 10, seed: int = 0, shape=(32, 32, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images and int32 labels (throughput does not depend on pixel values)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, num_classes, n).astype(np.int32)


def _images_needed(batch_size: int, steps: int, warmup: int, steps_per_execution: int) -> int:
    # Each measurement draws its own "epoch" from the same arrays; the largest draw sets the size.
    return batch_size * _batches(steps, warmup, steps_per_execution)


def _batches(steps: int, warmup: int, per_call: int) -> int:
    """Batches of one measurement: whole calls of `per_call` steps, at least one untimed."""
    return _whole_calls(max(warmup, 1), per_call) + _whole_calls(steps, per_call)


def _whole_calls(steps: int, per_call: int) -> int:
    """`steps` rounded up to whole calls of `per_call` steps."""
    return -(-steps // per_call) * per_call


# ---------------------------------------------------------------------------------------------
# Measurements


def pipeline_images_per_s(x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, augment, steps: int,
                          seed: int = 0) -> float:
    """Images/s of `make_train_dataset` alone (gather, cast, augmentation), iterated without training.

    The first batch (pipeline start-up, tracing of the map function) is not timed.
    """
    from convbench.data.augment import make_train_dataset

    ds = make_train_dataset(x, y, num_classes, batch_size, augment, seed, 0).take(steps + 1)
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    count = 0
    for images, _ in it:
        count += int(images.shape[0])
    seconds = time.perf_counter() - start
    if count == 0:
        raise ConvbenchError(f"the input pipeline gave no batches; use at least {2 * batch_size} images or a smaller --batch-size")
    return count / seconds


class _StepClock:
    """A `Progress` stand-in that timestamps every call of `Trainer.train_epoch`.

    train_epoch reports after each call (of `steps_per_execution` steps) once it has read that
    call's loss, so the timestamps mark finished steps; the rate from the first report at or past
    the warm-up to the last excludes tracing and start-up.
    """

    def __init__(self):
        self.times: list[float] = []
        self.steps: list[int] = []
        self.images: list[int] = []

    def step(self, epoch, epochs, step, steps, loss, acc, started, images, advanced=1):
        self.times.append(time.perf_counter())
        self.steps.append(step)
        self.images.append(images)

    def rate(self, warmup: int) -> float:
        # With no warm-up the first call's start is unknown: time from its end.
        first = next((i for i, s in enumerate(self.steps) if s >= max(warmup, 1)), len(self.steps))
        if first >= len(self.steps) - 1:
            raise ConvbenchError(f"only {self.steps[-1] if self.steps else 0} steps ran, too few after warm-up {warmup}; "
                                 "use more images or fewer --warmup steps")
        return (self.images[-1] - self.images[first]) / (self.times[-1] - self.times[first])


def trainer_images_per_s(trainer, make_dataset: Callable[[int, int], object], steps: int, warmup: int, step_fn=None,
                         steps_per_execution: int | None = None) -> float:
    """Training images/s of `Trainer.train_epoch` (convbench's loop as it runs), warm-up excluded.

    One epoch of whole calls: at least `warmup` untimed steps (one call at least: it traces the
    function), then at least `steps` timed ones, as a long epoch would see them.

    Args:
        trainer: a convbench.training.loop.Trainer.
        make_dataset: (epoch, batches) -> a batched training dataset.
        steps: timed steps.
        warmup: untimed steps first.
        step_fn: a replacement for the Trainer's compiled single step during this measurement (e.g.
            `xla_step(trainer)`); it runs one step per call. None = the Trainer's own.
        steps_per_execution: steps per call during this measurement; None = the Trainer's.
    """
    per_call = 1 if step_fn is not None else (steps_per_execution or trainer.steps_per_execution)
    warmup = _whole_calls(max(warmup, 1), per_call)
    clock = _StepClock()
    original = trainer._train, trainer.steps_per_execution
    trainer.steps_per_execution = per_call
    if step_fn is not None:
        trainer._train = step_fn
    try:
        trainer.train_epoch(make_dataset(0, _batches(steps, warmup, per_call)), 1, 1, 1, progress=clock)
    finally:
        trainer._train, trainer.steps_per_execution = original
    return clock.rate(warmup)


def xla_step(trainer):
    """The Trainer's step compiled by XLA: what a `TrainConfig.jit_compile` flag would do."""
    import tensorflow as tf

    return tf.function(trainer._train.python_function, jit_compile=True)


def compile_like_notebook(model, train_config, regularization, precision: str, strategy, steps: int) -> None:
    """`model.compile` as the original notebook does it, with convbench's optimizer and schedule.

    Same optimizer, schedule and label smoothing as convbench's loop; default `compile` settings
    otherwise (Keras resolves jit_compile itself); accuracy as the metric.
    """
    import keras

    with strategy.scope():
        schedule = make_schedule(train_config, steps, 1)
        optimizer = make_optimizer(train_config, regularization, schedule, precision)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=regularization.label_smoothing)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def fit_images_per_s(model, x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, steps: int, warmup: int,
                     offset: int = 0) -> float:
    """Images/s of plain Keras `model.fit` (compiled by `compile_like_notebook`).

    Fed a tf.data dataset of the uint8 images cast to float with one-hot labels, no augmentation,
    the way the original notebook trains. One fit call of `warmup + steps` batches; a callback
    timestamps each batch after reading its loss (the same per-step sync as convbench's loop), and
    the rate counts the batches after the warm-up.

    Args:
        model: a compiled keras.Model.
        x, y: uint8 images and int labels.
        num_classes: width of the one-hot labels.
        batch_size: global batch.
        steps: timed steps.
        warmup: untimed steps first (at least 1).
        offset: first batch index into the data (later rounds see other images).
    """
    import keras
    import tensorflow as tf

    warmup = max(warmup, 1)
    idx = (np.arange((warmup + steps) * batch_size) + offset * batch_size) % len(y)
    ds = tf.data.Dataset.from_tensor_slices((x[idx], y[idx])).batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), tf.one_hot(b, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float((logs or {}).get("loss", 0.0))
            times.append(time.perf_counter())

    model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    if len(times) <= warmup:
        raise ConvbenchError(f"model.fit ran only {len(times)} steps; use more images or fewer --warmup steps")
    return (len(times) - warmup) * batch_size / (times[-1] - times[warmup - 1])


# ---------------------------------------------------------------------------------------------
# One model


def bench_recipe(name: str, batch_size: int, transfer_resolution: int):
    """The recipe a model is benchmarked with: the quick preset's, at this batch size.

    Transfer models run their fine-tuning phase (top blocks unfrozen, BatchNorm frozen) with the
    fine-tuning optimizer (AdamW), at `transfer_resolution`.
    """

    recipe = preset("quick").recipe(name)
    train = dataclasses.replace(recipe.train, global_batch_size=batch_size)
    transfer = dataclasses.replace(recipe.transfer, resolution=transfer_resolution)
    if model_info(name).kind == "transfer":
        train = dataclasses.replace(train, optimizer="adamw", schedule="cosine",
                                    lr_per_1024=transfer.head_lr_per_1024 * transfer.finetune_lr_factor)
    return dataclasses.replace(recipe, train=train, transfer=transfer)


def _build(name: str, num_classes: int, recipe, strategy):
    """The model as it trains: custom CNNs whole; transfer models in their fine-tuning phase."""
    from convbench.training.recipes import build_model, unfreeze_top_blocks

    model, strategy, precision = build_model(name, num_classes, recipe, strategy, weights=None)
    note = ""
    if model_info(name).kind == "transfer":
        blocks = unfreeze_top_blocks(model.get_layer("features"), recipe.transfer.finetune_blocks)
        model.get_layer("head").trainable = True
        note = (f"fine-tuning phase at {recipe.transfer.resolution} px: blocks {', '.join(blocks) or 'none'} and the head train, "
                "BatchNorm frozen; random weights (speed does not depend on them)")
    return model, strategy, precision, note


_CORE_MEASURES = ("convbench", "fit", "same_input", "fp32")


def bench_model(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, recipe, peak_flops_per_s: float | dict[str, float],
                pipeline_ips: float, steps: int, warmup: int, rounds: int = 2, variants: bool = True,
                strategy=None) -> dict:
    """Measure one model: convbench loop, plain model.fit, FLOPs, MFU and variants of the loop.

    The convbench loop and model.fit alternate for `rounds` rounds, so a change in the machine's
    load hits both; each reports its best round (contention only ever slows a run down), and all
    rounds are kept in the entry.

    Args:
        name: registered model name.
        x, y: uint8 images and int labels (at least `_images_needed` of them).
        num_classes: number of classes.
        recipe: `bench_recipe(name, ...)`.
        peak_flops_per_s: the measured peak the MFU is relative to, or {dtype: peak} to pick the
            peak of the dtype the model computes in.
        pipeline_ips: the input pipeline's images/s at this batch size.
        steps: timed training steps per measurement.
        warmup: untimed steps before each measurement.
        rounds: alternations of convbench loop and model.fit.
        variants: also time the loop with one step per call, and that under XLA (custom CNNs only).
        strategy: tf.distribute strategy (default: convbench's).

    Returns:
        The model's entry of bench.json.
    """
    from convbench.data.augment import make_train_dataset
    from convbench.training.recipes import initialize_from_first_batch, model_kwargs, model_precision

    kind = model_info(name).kind
    model, strategy, precision, note = _build(name, num_classes, recipe, strategy)
    if isinstance(peak_flops_per_s, dict):
        peak_flops_per_s = peak_flops_per_s.get(peak_dtype(precision), peak_flops_per_s["float32"])
    batch = recipe.train.global_batch_size
    forward = count_flops(model)
    train_flops = training_flops_per_image(model)
    per_call = recipe.train.steps_per_execution
    trainer = Trainer(model, recipe.train, recipe.regularization, strategy, _batches(steps, warmup, per_call), 1, precision)
    fit_model, _, _, _ = _build(name, num_classes, recipe, strategy)
    built = [model, fit_model]
    fp32_trainer = None
    if precision != "float32":
        # The same model in float32, measured in the same rounds: the speed-up of the mixed policy.
        fp32_recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, mixed_precision="off"))
        fp32_model, _, _, _ = _build(name, num_classes, fp32_recipe, strategy)
        fp32_trainer = Trainer(fp32_model, fp32_recipe.train, recipe.regularization, strategy, _batches(steps, warmup, per_call), 1,
                               "float32")
        built.append(fp32_model)
    for m in built:
        initialize_from_first_batch(m, x, y, num_classes, recipe)
    compile_like_notebook(fit_model, recipe.train, recipe.regularization, precision, strategy, (steps + warmup) * rounds)

    # model.fit is fed un-augmented batches; the loop fed the same tells the loop's speed apart from augmentation's cost.
    plain_input = dataclasses.replace(recipe.augment, crop_padding=0, flip=False, cutout=0, mixup_alpha=0.0, cutmix_alpha=0.0)

    def make_dataset(epoch: int, batches: int, augment=recipe.augment):
        return make_train_dataset(x, y, num_classes, batch, augment, recipe.train.seed, epoch).take(batches)

    measures: dict[str, Callable[[int], float]] = {
        "convbench": lambda r: trainer_images_per_s(trainer, lambda e, n: make_dataset(e + 10 * r, n), steps, warmup),
        "fit": lambda r: fit_images_per_s(fit_model, x, y, num_classes, batch, steps, warmup, offset=r * (steps + warmup)),
        "same_input": lambda r: trainer_images_per_s(trainer, lambda e, n: make_dataset(e + 10 * r + 3, n, plain_input), steps, warmup),
    }
    if fp32_trainer is not None:
        measures["fp32"] = lambda r: trainer_images_per_s(fp32_trainer, lambda e, n: make_dataset(e + 10 * r, n), steps, warmup)

    if torch_peer.torch_missing() is None and name in torch_peer.TWINS:
        for key, bf16 in (("torch_bf16", True), ("torch_fp32", False)):
            measures[key] = lambda r, bf16=bf16: torch_peer.torch_images_per_s(
                name, batch, steps, warmup, bf16, num_classes, recipe.regularization.label_smoothing, seed=r,
                dropout=model_kwargs(name, recipe, weights=None).get("dropout"))
    if variants and kind == "custom":
        jit = xla_step(trainer)
        if per_call > 1:
            measures["one_step_per_call"] = lambda r: trainer_images_per_s(
                trainer, lambda e, n: make_dataset(e + 10 * r + 7, n), steps, warmup, steps_per_execution=1)
        measures["xla"] = lambda r: trainer_images_per_s(trainer, lambda e, n: make_dataset(e + 10 * r + 5, n), steps, warmup, jit)
    results: dict[str, list[float]] = {k: [] for k in measures}
    errors: dict[str, str] = {}
    for r in range(rounds):
        logger.info(f"[bench] {name}: round {r + 1}/{rounds}: {', '.join(k for k in measures if k not in errors)} "
                    f"({warmup} warm-up + {steps} timed steps of {batch} each)")
        for key, measure in measures.items():
            if key in errors:
                continue
            try:
                results[key].append(measure(r))
            except Exception as exc:  # noqa: BLE001 - a variant XLA cannot compile is a finding, not a crash
                if key in _CORE_MEASURES:
                    raise
                errors[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    train_ips, fit_ips = max(results["convbench"]), max(results["fit"])
    fp32_rounds = results.get("fp32") or results["convbench"]
    entry = {
        "name": name,
        "kind": kind,
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
        "precision": precision,
        "precision_reason": model_precision(name, recipe)[1],
        "fp32_train_images_per_s": max(fp32_rounds),
        "fp32_train_images_per_s_rounds": fp32_rounds,
        "precision_speedup": ratio(train_ips, max(fp32_rounds)),
        "batch_size": batch,
        "flops_per_image": int(forward),
        "train_flops_per_image": int(train_flops),
        "train_images_per_s": train_ips,
        "train_images_per_s_rounds": results["convbench"],
        "achieved_flops_per_s": achieved_flops_per_s(train_flops, train_ips),
        "mfu": mfu(train_flops, train_ips, peak_flops_per_s),
        "pipeline_images_per_s": pipeline_ips,
        "pipeline_ratio": ratio(pipeline_ips, train_ips),
        "fit_images_per_s": fit_ips,
        "fit_images_per_s_rounds": results["fit"],
        "fit_jit_compile": getattr(fit_model, "jit_compile", "unknown"),
        "fit_ratio": ratio(train_ips, fit_ips),
        "same_input_images_per_s": max(results["same_input"]),
        "same_input_images_per_s_rounds": results["same_input"],
        "fit_ratio_same_input": ratio(max(results["same_input"]), fit_ips),
    }
    variant_keys = [k for k in measures if k not in _CORE_MEASURES and not k.startswith("torch_")]
    if variant_keys:
        entry["variants"] = {}
        for key in variant_keys:
            if key in errors:
                entry["variants"][key] = {"error": errors[key]}
            else:
                ips = max(results[key])
                entry["variants"][key] = {"train_images_per_s": ips, "rounds": results[key], "speedup": ratio(ips, train_ips),
                                          "mfu": mfu(train_flops, ips, peak_flops_per_s)}
    if "torch_bf16" in measures:
        entry["torch_peer"] = {k: ({"error": errors[k]} if k in errors else {"train_images_per_s": max(results[k]), "rounds": results[k]})
                               for k in ("torch_bf16", "torch_fp32")}
        if "torch_bf16" not in errors:
            # convbench's loop on un-augmented batches against PyTorch's, which gets no augmentation either.
            entry["torch_peer"]["same_input_over_torch_bf16"] = ratio(entry["same_input_images_per_s"], max(results["torch_bf16"]))
    if note:
        entry["note"] = note
    logger.info(f"[bench] {name}: {train_ips:,.0f} img/s in {precision} ({entry['precision_speedup']:.2f}x float32), MFU {entry['mfu']:.1%}, "
                f"model.fit {fit_ips:,.0f} img/s (ratio {entry['fit_ratio']:.2f})")
    return entry


# ---------------------------------------------------------------------------------------------
# Targets and output


def _mfu_target(dtype: str) -> float:
    return CUSTOM_MFU_TARGET.get(dtype, CUSTOM_MFU_TARGET["float32"])


def evaluate_targets(models: list[dict], pipeline_ips: float, time_to_accuracy: dict | None = None) -> list[dict]:
    """Each of the issue's targets with its measured value and whether it is met.

    Args:
        models: the model entries.
        pipeline_ips: input pipeline images/s.
        time_to_accuracy: the --time-to-accuracy result, or None when it did not run.

    Returns:
        A list of {"target", "threshold", "measured", "met"}; "met" is None when not measured.
    """
    targets = []
    if models:
        fastest = max(models, key=lambda m: m["train_images_per_s"])
        value = ratio(pipeline_ips, fastest["train_images_per_s"])
        targets.append({"target": f"input pipeline >= {PIPELINE_RATIO_TARGET:g}x the training images/s of the fastest model ({fastest['name']})",
                        "threshold": PIPELINE_RATIO_TARGET, "measured": value, "met": value is not None and value >= PIPELINE_RATIO_TARGET})
    custom_models = [m for m in models if m.get("kind") == "custom"]
    custom = {m["name"]: m["mfu"] for m in custom_models}
    dtypes = sorted({m.get("peak_dtype", "float32") for m in custom_models}) or ["float32"]
    thresholds = {d: _mfu_target(d) for d in dtypes}
    targets.append({"target": "custom CNNs train at >= " + ", ".join(f"{v:.0%} ({d})" for d, v in thresholds.items())
                    + " of the best measured peak of their dtype (MFU)",
                    "threshold": thresholds, "measured": custom,
                    "met": all(m["mfu"] >= _mfu_target(m.get("peak_dtype", "float32")) for m in custom_models) if custom else None})
    mixed = {m["name"]: m.get("precision_speedup") for m in custom_models if m.get("precision", "float32") != "float32"}
    targets.append({"target": f"custom CNNs train >= {PRECISION_SPEEDUP_TARGET:g}x their float32 images/s in the mixed policy",
                    "threshold": PRECISION_SPEEDUP_TARGET, "measured": mixed,
                    "met": all(v is not None and v >= PRECISION_SPEEDUP_TARGET for v in mixed.values()) if mixed else None})
    fits = {m["name"]: m.get("fit_ratio") for m in models}
    targets.append({"target": f"convbench loop >= {FIT_RATIO_TARGET:g}x plain model.fit images/s on every model",
                    "threshold": FIT_RATIO_TARGET, "measured": fits,
                    "met": all(v is not None and v >= FIT_RATIO_TARGET for v in fits.values()) if fits else None})
    for accuracy, minutes in ACCURACY_TARGETS:
        reached = None
        if time_to_accuracy:
            reached = next((r for r in time_to_accuracy["runs"] if r["target"] == accuracy), None)
        measured = reached["minutes"] if reached and reached.get("reached") else None
        targets.append({"target": f"{FAST_MODEL} reaches {accuracy:.0%} validation accuracy within {minutes:g} minutes",
                        "threshold": minutes, "measured": measured,
                        "met": None if reached is None else (measured is not None and measured <= minutes)})
    return targets


def _fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return none
    return format(value, spec)


def render_markdown(result: dict) -> str:
    """bench.md: peak, the per-model table, variants, targets, time to accuracy, environment."""
    env = result["environment"]
    lines = [
        "# convbench bench",
        "",
        f"{result['started']}; {env.get('cpu', '?')} ({env.get('cpu_count', '?')} logical CPUs)"
        f"{'; GPUs: ' + ', '.join(env['gpus']) if env.get('gpus') else ''}; TensorFlow {env['versions'].get('tensorflow', '?')}.",
        f"Load average (1/5/15 min) at start {_load(result['load_average']['start'])}, at end {_load(result['load_average']['end'])}.",
        f"Data: {result['data']}; batch size {result['batch_size']}; {result['warmup']} warm-up + {result['steps']} timed steps per measurement, "
        f"{result['rounds']} interleaved rounds per model, best round reported.",
        "",
        "## Peak (a large matmul and a 3x3 conv through TensorFlow, best of the runs)",
        "",
        "| dtype | kernel | shape | when | GFLOP/s (best) | GFLOP/s (median) |",
        "|---|---|---|---|---:|---:|",
    ]
    for p in result["peak"]["runs"]:
        shape = p.get("shape", f"{p.get('n', '?')}x{p.get('n', '?')}")
        lines.append(f"| {p['dtype']} | {p.get('kind', 'matmul')} | {shape} | {p['when']} | {p['flops_per_s'] / 1e9:,.1f} | "
                     f"{p['median_flops_per_s'] / 1e9:,.1f} |")
    peaks = ", ".join(f"{d} {v / 1e9:,.1f}" for d, v in result["peak"].get("by_dtype", {"float32": result["peak"]["flops_per_s"]}).items())
    lines += ["", f"MFU is relative to the best peak of the dtype a model computes in (GFLOP/s): {peaks}."
              + (" On a GPU TensorFlow runs float32 matmuls as TF32." if env.get("gpus") else ""), "",
              "## Training throughput", "",
              "| model | kind | params | fwd MFLOP/img | precision | train img/s | float32 img/s | speed-up | train GFLOP/s | MFU | pipeline img/s | pipeline ratio | model.fit img/s | fit ratio | fit ratio, same input |",
              "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in result["models"]:
        lines.append(
            f"| {m['name']} | {m['kind']} | {m['params']:,} | {m['flops_per_image'] / 1e6:,.1f} | {m.get('precision', 'float32')} | "
            f"{m['train_images_per_s']:,.0f} | {_fmt(m.get('fp32_train_images_per_s'))} | {_fmt(m.get('precision_speedup'), '.2f')}x | "
            f"{m['achieved_flops_per_s'] / 1e9:,.1f} | {m['mfu']:.1%} | {m['pipeline_images_per_s']:,.0f} | {_fmt(m['pipeline_ratio'], '.1f')} | "
            f"{_fmt(m.get('fit_images_per_s'))} | {_fmt(m.get('fit_ratio'), '.2f')} | {_fmt(m.get('fit_ratio_same_input'), '.2f')} |"
        )
    notes = [f"- {m['name']}: {m['note']}" for m in result["models"] if m.get("note")]
    reasons = sorted({f"{m.get('precision')}: {m['precision_reason']}" for m in result["models"] if m.get("precision_reason")})
    lines += ["", "Precision chosen by `mixed_precision: auto` (" + "; ".join(reasons) + "); float32 img/s: the same model and loop in "
              "float32, measured in the same interleaved rounds; speed-up = train img/s / float32 img/s." if reasons else ""]
    lines += ["", "Training FLOPs per image = 3 x forward when every layer trains (forward + 2 x the trainable tail otherwise); "
              "MFU = training FLOP/s / peak. model.fit: plain Keras fit, default compile (Keras resolved jit_compile to "
              f"{', '.join(sorted({str(m.get('fit_jit_compile')) for m in result['models']})) or '-'}), uint8 data cast to float, one-hot labels, no augmentation. "
              "Fit ratio, same input: the convbench loop fed un-augmented batches too, over model.fit (the loop's speed without augmentation's cost)."]
    lines += notes
    rows = [(m["name"], k, v) for m in result["models"] for k, v in (m.get("variants") or {}).items()]
    if rows:
        lines += ["", "## Variants of the same training step", "", "| model | variant | img/s | speed-up | MFU |", "|---|---|---:|---:|---:|"]
        for name, label, v in rows:
            if "error" in v:
                lines.append(f"| {name} | {label} | failed: {v['error']} | | |")
            else:
                lines.append(f"| {name} | {label} | {v['train_images_per_s']:,.0f} | {_fmt(v['speedup'], '.2f')}x | {v['mfu']:.1%} |")
        lines += ["", "one_step_per_call: the loop with `steps_per_execution: 1` (a host round trip every step); "
                  "xla: that single step under `tf.function(jit_compile=True)`. Speed-up is against the convbench column above."]
    peer = result.get("torch_peer") or {}
    peer_rows = [m for m in result["models"] if m.get("torch_peer")]
    if peer.get("skipped"):
        lines += ["", "## PyTorch peer", "", f"Skipped: {peer['skipped']}."]
    elif peer_rows:
        lines += ["", f"## PyTorch peer (torch {peer.get('torch', '?')})", "",
                  "The same network in PyTorch (channels-last, SGD Nesterov, label-smoothed cross-entropy, random un-augmented "
                  "batches of the same size), measured in the same interleaved rounds.", "",
                  "| model | convbench, same input | PyTorch bf16 autocast | PyTorch float32 | convbench / PyTorch bf16 |",
                  "|---|---:|---:|---:|---:|"]
        for m in peer_rows:
            tp = m["torch_peer"]

            def cell(key):
                v = tp.get(key, {})
                return f"failed: {v['error']}" if "error" in v else _fmt(v.get("train_images_per_s"))

            lines.append(f"| {m['name']} | {m['same_input_images_per_s']:,.0f} ({m.get('precision', 'float32')}) | {cell('torch_bf16')} | "
                         f"{cell('torch_fp32')} | {_fmt(tp.get('same_input_over_torch_bf16'), '.2f')} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        measured = t["measured"]
        if isinstance(measured, dict):
            text = ", ".join(f"{k} {_fmt(v, '.2f')}" for k, v in measured.items()) or "-"
        else:
            text = _fmt(measured, ".2f")
        met = {True: "met", False: "**not met**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {text} | {met} |")
    tta = result.get("time_to_accuracy")
    if tta:
        lines += ["", f"## Time to accuracy: {tta['model']} on {tta['data']}", "",
                  f"{tta['train_images']:,} training, {tta['val_images']:,} validation, {tta['test_images']:,} test images; "
                  f"batch {tta['batch_size']}; validation accuracy with flip TTA; the clock excludes data loading and the test passes.",
                  "", "| target | epochs planned | reached | minutes | epoch | val acc (TTA) | test acc | test acc (TTA) |",
                  "|---:|---:|---|---:|---:|---:|---:|---:|"]
        for r in tta["runs"]:
            missed = r.get("best") and not r["reached"]
            reached = "yes" if r["reached"] else (f"no: best {r['best']['val_accuracy_tta']:.4f} at epoch {r['best']['epoch']}, "
                                                  f"{r['best']['minutes']:.1f} min" if missed else "no")
            lines.append(f"| {r['target']:.0%} | {r['epochs_planned']} | {reached} | {_fmt(r['minutes'], '.1f')} | "
                         f"{_fmt(r.get('epoch'), 'd')} | {_fmt(r.get('val_accuracy_tta'), '.4f')} | {_fmt(r.get('test_accuracy'), '.4f')} | "
                         f"{_fmt(r.get('test_accuracy_tta'), '.4f')} |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _torch_peer_status() -> dict:

    missing = torch_peer.torch_missing()
    return {"skipped": missing} if missing else {"torch": torch_peer.torch_version(), "models": list(torch_peer.TWINS)}


def _load(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "unknown"


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# Time to accuracy


def airbench_recipe(epochs: int, batch_size: int = 1024, seed: int = 0):
    """The training recipe of `cnn_airbench`, airbench's hyperparameters in convbench's terms.

    airbench: lr 11.5 and weight decay 0.0153 per 1024 examples in its decoupled form, momentum
    0.85 Nesterov, label smoothing 0.2, translate by 2 (reflection) and flip, batch 1024, a
    triangular schedule peaking at 23 % of training. In convbench's mean-loss SGD this is a peak
    learning rate of 11.5 / (1 + 1 / (1 - 0.85)) = 1.5 per 1024 examples, and a decoupled decay of
    0.0089 x lr per step (the same shrink per step as airbench's coupled decay once momentum
    amplifies it). Lookahead every 5 steps from epoch 3 with decay 0.95**5 x progress**3, and the
    alternating flip, as airbench. convbench's one-cycle warms up from 10 % of the peak instead of
    20 % and decays to 0 instead of 7 %.

    Args:
        epochs: epochs the schedule is planned for.
        batch_size: global batch (the learning rate scales linearly with it).
        seed: training seed.
    """

    momentum = 0.85
    return Recipe(
        train=TrainConfig(epochs=epochs, global_batch_size=batch_size, optimizer="sgd", lr_per_1024=11.5 / (1 + 1 / (1 - momentum)),
                          momentum=momentum, schedule="onecycle", warmup_epochs=0.23 * epochs, seed=seed, mixed_precision="auto",
                          eval_batch_size=1000, lookahead_every=5, lookahead_from_epoch=3.0, lookahead_decay=0.95**5),
        augment=AugmentConfig(crop_padding=2, flip=True, alternate_flip=True),
        regularization=RegularizationConfig(label_smoothing=0.2, weight_decay=0.0089),
        transfer=TransferConfig(),
    )


class _Stop(Exception):
    """Raised from the epoch callback to end a time-to-accuracy run."""


def _flip_tta_accuracy(fn, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> tuple[float, float]:
    """(plain accuracy, accuracy of the mean of the image's and its mirror's logits)."""
    import tensorflow as tf

    plain = tta = 0
    for i in range(0, len(labels), batch):
        x = tf.cast(images[i : i + batch], tf.float32)
        a = fn(x)
        b = fn(tf.reverse(x, axis=[2]))
        y = labels[i : i + batch]
        plain += int(np.sum(np.argmax(a, -1) == y))
        tta += int(np.sum(np.argmax(a + b, -1) == y))
    return plain / len(labels), tta / len(labels)


def time_to_accuracy(data, targets: tuple[tuple[float, int], ...] = ((0.90, 10), (0.93, 30)), batch_size: int = 1024,
                     max_minutes: float = 45.0, model_name: str = FAST_MODEL) -> dict:
    """Train `model_name` with `airbench_recipe` until each validation-accuracy target is reached.

    One training per distinct epoch count (the schedule decays over the planned epochs, so a short
    schedule reaches the lower target sooner); a run ends once all its targets are reached, its
    epochs are done, or `max_minutes` have passed. After each epoch the validation accuracy is
    measured with flip TTA; at the first epoch a target is reached, the test accuracy (plain and
    flip TTA) is measured with the clock paused.

    Args:
        data: a convbench.data.datasets.Dataset.
        targets: (validation accuracy, epochs to plan for) pairs.
        batch_size: global batch.
        max_minutes: wall-clock cap per training run.
        model_name: the model to train.

    Returns:
        {"model", "data", "batch_size", "train_images", ..., "runs": [{"target", "epochs_planned",
        "reached", "minutes", "epoch", "val_accuracy", "val_accuracy_tta", "test_accuracy",
        "test_accuracy_tta"}, ...], "histories": {epochs: [...]}}
    """
    import tensorflow as tf

    from convbench.data.augment import make_eval_dataset, make_train_dataset
    from convbench.training.recipes import build_model, initialize_from_first_batch

    if max_minutes <= 0:
        raise ConvbenchError(f"--max-minutes must be > 0, got {max_minutes}")
    runs: list[dict] = []
    histories: dict[str, list] = {}
    info: dict = {}
    for epochs in sorted({e for _, e in targets}):
        goals = sorted(a for a, e in targets if e == epochs)
        recipe = airbench_recipe(epochs, batch_size)
        steps = len(data.y_train) // batch_size
        if steps == 0:
            raise ConvbenchError(f"{len(data.y_train)} training images are fewer than one batch of {batch_size}; lower --tta-batch-size")
        model, strategy, precision = build_model(model_name, data.num_classes, recipe, weights=None)
        initialize_from_first_batch(model, data.x_train, data.y_train, data.num_classes, recipe)
        info = {"params": int(model.count_params()), "flops_per_image": int(count_flops(model)), "precision": precision}
        trainer = Trainer(model, recipe.train, recipe.regularization, strategy, steps, epochs, precision)
        predict = tf.function(lambda x: model(x, training=False))
        val = make_eval_dataset(data.x_val, data.y_val, data.num_classes, recipe.train.eval_batch_size)
        found: dict[float, dict] = {}
        best = {"val_accuracy_tta": 0.0, "epoch": 0, "minutes": 0.0}  # what an unreached target got to
        clock = {"start": time.perf_counter(), "paused": 0.0}

        def elapsed() -> float:
            return time.perf_counter() - clock["start"] - clock["paused"]

        def on_epoch_end(record):
            _, val_tta = _flip_tta_accuracy(predict, data.x_val, data.y_val)
            minutes = elapsed() / 60
            logger.info(f"[time-to-accuracy] {epochs}-epoch run, epoch {record.epoch}: val {record.val_accuracy:.4f} "
                        f"(flip TTA {val_tta:.4f}) at {minutes:.2f} min")
            if val_tta > best["val_accuracy_tta"]:
                best.update(val_accuracy_tta=val_tta, epoch=record.epoch, minutes=minutes)
            for goal in goals:
                if goal not in found and val_tta >= goal:
                    paused = time.perf_counter()
                    test, test_tta = _flip_tta_accuracy(predict, data.x_test, data.y_test)
                    clock["paused"] += time.perf_counter() - paused
                    found[goal] = {"minutes": minutes, "epoch": record.epoch, "val_accuracy": record.val_accuracy,
                                   "val_accuracy_tta": val_tta, "test_accuracy": test, "test_accuracy_tta": test_tta}
                    logger.info(f"[time-to-accuracy] {goal:.0%} reached after {minutes:.2f} min: test {test:.4f} (flip TTA {test_tta:.4f})")
            if len(found) == len(goals):
                raise _Stop()
            if minutes >= max_minutes:
                logger.info(f"[time-to-accuracy] {max_minutes:g} min cap reached")
                raise _Stop()

        history: list = []

        def record_and_check(record):
            history.append(dataclasses.asdict(record))
            on_epoch_end(record)

        try:
            run_epochs(trainer, lambda e: make_train_dataset(data.x_train, data.y_train, data.num_classes, batch_size, recipe.augment,
                                                             recipe.train.seed, e),
                       steps, val, epochs, model_name, on_epoch_end=record_and_check)
        except _Stop:
            pass
        histories[str(epochs)] = history
        for goal in goals:
            hit = found.get(goal)
            runs.append({"target": goal, "epochs_planned": epochs, "reached": hit is not None,
                         "minutes": hit["minutes"] if hit else None, **({k: v for k, v in hit.items() if k != "minutes"} if hit else {}),
                         "minutes_run": elapsed() / 60, "best": dict(best)})
    return {
        "model": model_name,
        "data": data.source,
        "batch_size": batch_size,
        "train_images": int(len(data.y_train)),
        "val_images": int(len(data.y_val)),
        "test_images": int(len(data.y_test)),
        "max_minutes": max_minutes,
        **info,
        "runs": sorted(runs, key=lambda r: r["target"]),
        "histories": histories,
    }


# ---------------------------------------------------------------------------------------------
# The whole benchmark


def default_models() -> list[str]:
    """Every custom CNN and the EfficientNet-Lite0 fine-tuning path."""

    return list_models("custom") + [DEFAULT_TRANSFER]


def run_bench(out_dir: str | Path, models: list[str] | None = None, data_source: str | None = None, steps: int = 20,
              warmup: int = 3, batch_size: int = 256, transfer_resolution: int = 64, rounds: int = 2, variants: bool = True,
              steps_per_execution: int = 0, peak_n: int = 4096, peak_repeats: int = 5, time_to_acc: bool = False,
              tta_targets: tuple[tuple[float, int], ...] = ((0.90, 10), (0.93, 30)), tta_batch_size: int = 1024,
              max_minutes: float = 45.0, max_train_images: int = 0, max_test_images: int = 0, command: str = "") -> dict:
    """Run the benchmark and write bench.json and bench.md into `out_dir`.

    Args:
        out_dir: output folder.
        models: registered names (default: `default_models()`).
        data_source: a folder / "cifar10" / "cifar100" as for `convbench run`; None = random images
            for the throughput part.
        steps: timed training steps per measurement.
        warmup: untimed steps before each measurement.
        batch_size: global batch of the throughput part.
        transfer_resolution: input side of transfer models.
        rounds: alternations of the measurements per model (each reports its best round).
        variants: also time the one-step-per-call and XLA variants of the loop.
        steps_per_execution: steps per compiled call of the convbench loop; 0 = the config default.
        peak_n: matmul side for the peak.
        peak_repeats: timed matmuls per peak measurement.
        time_to_acc: also run the time-to-accuracy part (needs real data).
        tta_targets: (accuracy, planned epochs) pairs for it.
        tta_batch_size: its batch size.
        max_minutes: its wall-clock cap per training run.
        max_train_images, max_test_images: stratified subsets of the data (0 = all).
        command: the command line, recorded in the output.

    Returns:
        The bench.json content.
    """

    out = Path(out_dir)
    check_writable(out)
    for flag, value, low in (("--steps", steps, 1), ("--warmup", warmup, 0), ("--batch-size", batch_size, 1),
                             ("--steps-per-execution", steps_per_execution, 0), ("--rounds", rounds, 1), ("--peak-size", peak_n, 64), ("--peak-repeats", peak_repeats, 1)):
        if value < low:
            raise ConvbenchError(f"{flag} must be >= {low}, got {value}")
    models = list(models) if models else default_models()
    for name in models:
        model_info(name)
    if time_to_acc and not data_source:
        raise ConvbenchError("--time-to-accuracy needs real images; pass --data ../shared/datasets/cifar10-jpeg (or cifar10)")

    started = dt.datetime.now().isoformat(timespec="seconds")
    load_start = _loadavg()
    import tensorflow as tf

    # Each dtype a model may compute in gets its own peak (on a GPU TensorFlow's float32 matmul uses TF32).
    dtypes = ["float32", "bfloat16", "float16"] if tf.config.list_physical_devices("GPU") else ["float32", "bfloat16"]
    logger.info(f"[bench] peak: {peak_repeats} matmuls of {peak_n}x{peak_n} and 3x3 convs in {', '.join(dtypes)}")
    peaks = measure_peaks(dtypes, peak_n, peak_repeats, "start")

    data = None
    need = _images_needed(batch_size, steps, warmup, steps_per_execution or TrainConfig().steps_per_execution)
    if data_source:

        data = load_dataset(data_source, max_train_images=max_train_images, max_test_images=max_test_images)
        x, y, num_classes = data.x_train, data.y_train, data.num_classes
        if len(y) < need:
            reps = -(-need // len(y))  # repeat a small set: throughput needs images, not distinct ones
            x, y = np.concatenate([x] * reps), np.concatenate([y] * reps)
        data_label = f"{data_source} ({len(data.y_train):,} training images)"
    else:
        x, y = synthetic_data(need)
        num_classes = 10
        data_label = f"random uint8 32x32 images ({need:,}), 10 classes"

    augment = AugmentConfig()
    logger.info(f"[bench] input pipeline alone: make_train_dataset with {augment}")
    pipeline_ips = pipeline_images_per_s(x, y, num_classes, batch_size, augment, steps + warmup)
    entries = []
    start_best = _best_peaks(peaks)
    for name in models:
        recipe = bench_recipe(name, batch_size, transfer_resolution)
        recipe = dataclasses.replace(recipe, augment=augment)
        if steps_per_execution:
            recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps_per_execution=steps_per_execution))
        entries.append(bench_model(name, x, y, num_classes, recipe, start_best, pipeline_ips, steps, warmup, rounds,
                                   variants))

    logger.info("[bench] peak again at the end")
    peaks += measure_peaks(dtypes, peak_n, peak_repeats, "end")
    best = _best_peaks(peaks)
    for e in entries:
        # MFU against the best peak seen in this run (start or end) of the dtype the model computes in.
        e["peak_dtype"] = peak_dtype(e["precision"]) if peak_dtype(e["precision"]) in best else "float32"
        peak = best[e["peak_dtype"]]
        e["mfu"] = mfu(e["train_flops_per_image"], e["train_images_per_s"], peak)
        e["fp32_mfu"] = mfu(e["train_flops_per_image"], e["fp32_train_images_per_s"], best["float32"])
        for v in (e.get("variants") or {}).values():
            if "train_images_per_s" in v:
                v["mfu"] = mfu(e["train_flops_per_image"], v["train_images_per_s"], peak)
    fp32_peak = best["float32"]

    tta = None
    if time_to_acc:
        tta = time_to_accuracy(data, tta_targets, tta_batch_size, max_minutes)

    result = {
        "started": started,
        "command": command,
        "environment": describe_environment(),
        "load_average": {"start": load_start, "end": _loadavg()},
        "data": data_label,
        "batch_size": batch_size,
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "peak": {"flops_per_s": fp32_peak, "dtype": "float32", "by_dtype": best, "runs": peaks},
        "models": entries,
        "torch_peer": _torch_peer_status(),
        "time_to_accuracy": tta,
    }
    result["targets"] = evaluate_targets(entries, pipeline_ips, tta)
    atomic_write_json(out / "bench.json", result)
    atomic_write_text(out / "bench.md", render_markdown(result))
    logger.info(f"[bench] wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return result


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_targets(text: str) -> tuple[tuple[float, int], ...]:
    pairs = []
    for part in text.split(","):
        try:
            acc, epochs = part.split(":")
            acc_f = float(acc) / (100.0 if float(acc) > 1 else 1.0)
            pairs.append((round(acc_f, 4), int(epochs)))
        except ValueError:
            raise ConvbenchError(f"--tta-targets takes ACCURACY:EPOCHS pairs like 90:6,93:12, got {part!r}") from None
        if not 0 < pairs[-1][0] <= 1 or pairs[-1][1] < 1:
            raise ConvbenchError(f"--tta-targets: accuracy must be in (0, 100] and epochs >= 1, got {part!r}")
    return tuple(pairs)


_OPTIONS = ("models", "data", "out", "steps", "warmup", "batch_size", "transfer_resolution", "rounds", "no_variants", "steps_per_execution",
            "peak_size", "peak_repeats", "time_to_accuracy", "tta_targets", "tta_batch_size", "max_minutes",
            "max_train_images", "max_test_images")


def _command_line(args) -> str:
    """The bench command with every option as resolved (so the run can be repeated exactly)."""
    parts = ["convbench bench"]
    for key in _OPTIONS:
        value = getattr(args, key, None)
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {value}")
    return " ".join(parts)


def cmd_bench(args) -> int:

    out = Path(args.out) if args.out else Path("runs") / dt.datetime.now().strftime("bench-%Y%m%d-%H%M%S")
    models = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else None
    with run_log(out):
        run_bench(out, models, args.data, args.steps, args.warmup, args.batch_size, args.transfer_resolution, args.rounds,
                  not args.no_variants, args.steps_per_execution, args.peak_size, args.peak_repeats, args.time_to_accuracy,
                  _parse_targets(args.tta_targets), args.tta_batch_size, args.max_minutes, args.max_train_images,
                  args.max_test_images, command=_command_line(args))
    return 0


def add_commands(subparsers) -> None:
    """Register `convbench bench` on the CLI's subparsers."""
    p = subparsers.add_parser("bench", help="training speed against the machine's measured peak; bench.json + bench.md")
    p.add_argument("--models", help=f"comma-separated model names (default: the custom CNNs and {DEFAULT_TRANSFER})")
    p.add_argument("--data", help="images for the benchmark (as for `run`); default: random images for the throughput part")
    p.add_argument("--out", help="output folder (default runs/bench-<timestamp>)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement (default 3)")
    p.add_argument("--batch-size", type=int, default=256, help="global batch of the throughput part (default 256)")
    p.add_argument("--transfer-resolution", type=int, default=preset("quick").transfer.resolution,
                   help="input side of transfer models (default: the quick preset's, %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the measurements per model; each reports its best (default 2)")
    p.add_argument("--no-variants", action="store_true", help="skip the one-step-per-call and XLA variants of the loop")
    p.add_argument("--steps-per-execution", type=int, default=0,
                   help="steps per compiled call of the convbench loop (default 0 = the config's, 8)")
    p.add_argument("--peak-size", type=int, default=4096, help="side of the peak matmul (default 4096)")
    p.add_argument("--peak-repeats", type=int, default=5, help="timed matmuls per peak measurement (default 5)")
    p.add_argument("--time-to-accuracy", action="store_true", help=f"also train {FAST_MODEL} to 90 %% and 93 %% (long; needs --data)")
    p.add_argument("--tta-targets", default="90:10,93:30", help="ACCURACY:EPOCHS pairs for --time-to-accuracy (default 90:10,93:30: about 15 and 45 min of training on a 2-core CPU)")
    p.add_argument("--tta-batch-size", type=int, default=1024, help="batch size of --time-to-accuracy (default 1024, airbench's)")
    p.add_argument("--max-minutes", type=float, default=45.0, help="wall-clock cap per time-to-accuracy training (default 45)")
    p.add_argument("--max-train-images", type=int, default=0, help="stratified subset of train (0 = all)")
    p.add_argument("--max-test-images", type=int, default=0, help="stratified subset of test (0 = all)")
    p.set_defaults(func=cmd_bench)
