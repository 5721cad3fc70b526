"""Train one registered model on a Dataset with its Recipe: from scratch, or transfer in two phases.

Custom CNNs train end to end with the recipe's augmentation and regularization.

Transfer models train in two phases:
1. *head*: the backbone is frozen, so its features of every train/val image are computed once
   (float16, in memory; pooled to 1x1 for heads that begin with global average pooling) and the
   head trains on them; this is what makes transfer usable on a CPU. It runs `head_steps`
   optimizer steps whatever the data size, on its own cosine schedule, evaluated 20 times and
   stopped early when validation loss stops falling; its best round is kept. Augmentation cannot
   apply to cached features; regularization (dropout, weight decay, label smoothing) does.
2. *finetune*: the top `finetune_blocks` blocks of the backbone are unfrozen with every BatchNorm
   kept frozen (inference mode, so small CIFAR batches do not wreck ImageNet statistics), and the
   whole model trains `finetune_epochs` epochs on augmented images, the head at
   `finetune_lr_factor` times its phase-1 rate and each lower block at `finetune_lr_decay` times
   the rate above it. The best epoch (or the head alone, if fine-tuning never beats it) is kept.

    python -m convbench.cli run --models cnn_vgg --max-train-images 500 --epochs 1 --out /tmp/cb
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from convbench.config import AugmentConfig, BudgetConfig, Recipe
from convbench.data.augment import make_eval_dataset, make_train_dataset
from convbench.data.datasets import Dataset
from convbench.errors import ConvbenchError
from convbench.i18n import Message, N_
from convbench.io import quarantine
from convbench.models import create_model, initialize_from_data, model_info
from convbench.models.batchnorm import synchronized_statistics
from convbench.models.flops import count_flops
from convbench.models.transfer import POOLING_HEADS
from convbench.training.loop import (
    choose_precision,
    default_strategy,
    EpochRecord,
    load_checkpoint,
    restore_optimizer,
    restore_variables,
    run_epochs,
    Stopwatch,
    Trainer,
    TrainingDiverged,
    TrainResult,
)

logger = logging.getLogger(__name__)

NO_AUGMENT = AugmentConfig(crop_padding=0, flip=False)


def model_kwargs(name: str, recipe: Recipe, weights: str | None = "imagenet") -> dict:
    """Builder options the recipe implies for a model."""

    kwargs: dict = {}
    if recipe.regularization.dropout >= 0:
        kwargs["dropout"] = recipe.regularization.dropout
    if model_info(name).kind == "transfer":
        t = recipe.transfer
        kwargs.update(resolution=t.resolution, head=t.head, weights=weights, weights_dir=t.weights_dir)
    return kwargs


def model_precision(name: str, recipe: Recipe) -> tuple[str, str]:
    """(Keras dtype policy, reason) for training `name` with `recipe` on this machine (`choose_precision`)."""

    return choose_precision(recipe.train.mixed_precision, depthwise=model_info(name).depthwise)


def build_model(name: str, num_classes: int, recipe: Recipe, strategy=None, weights: str | None = "imagenet"):
    """Set the precision policy and build the model under the strategy's scope."""
    import keras

    strategy = strategy or default_strategy()
    precision, _ = model_precision(name, recipe)
    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(recipe.train.seed)
    with strategy.scope(), synchronized_statistics(recipe.train.sync_batchnorm):
        model = create_model(name, num_classes=num_classes, **model_kwargs(name, recipe, weights))
    return model, strategy, precision


def fit_model(
    name: str,
    data: Dataset,
    recipe: Recipe,
    checkpoint_dir: Path | None = None,
    label: str | None = None,
    strategy=None,
    shard: tuple[int, int] = (0, 1),
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    weights: str | None = "imagenet",
    budget: BudgetConfig | None = None,
):
    """Build and train `name`; restore its best-on-validation weights.

    Args:
        name: registered model name.
        data: the dataset (test split unused here).
        recipe: resolved training recipe (its train.seed is the seed).
        checkpoint_dir: per-epoch checkpoints for resume; None disables them.
        label: name in progress lines (default: the model name).
        strategy: tf.distribute strategy (default: MirroredStrategy on GPUs, else CPU).
        shard: (worker index, worker count) when several workers train together.
        on_epoch_end: callback per epoch record.
        weights: "imagenet" or None (random init; tests and ablations).
        budget: an equal compute budget that sets the epoch count (see `apply_budget`).

    Returns:
        (model with best weights, TrainResult)
    """

    model, strategy, precision = build_model(name, data.num_classes, recipe, strategy, weights)
    label = label or name
    kind = model_info(name).kind
    initialize_from_first_batch(model, data.x_train, data.y_train, data.num_classes, recipe)
    runner = _train_transfer if kind == "transfer" else _train_custom
    stopwatch = Stopwatch()
    recipe, max_seconds, budget_note = apply_budget(recipe, budget, model, data, kind, strategy, precision, shard)
    try:
        history, best, best_epoch, best_acc, stopped, notes = runner(
            model, data, recipe, strategy, precision, checkpoint_dir, label, shard, on_epoch_end, max_seconds, stopwatch
        )
    except TrainingDiverged as exc:
        exc.train_seconds, exc.precision = stopwatch(), precision
        raise
    notes = ([budget_note] if budget_note else []) + notes
    if best is not None:
        model.set_weights(best)

    # The whole training call: input pipeline, validation and, for transfer, feature caching; summed
    # over the processes of an interrupted and resumed model, up to its last checkpoint.
    train_seconds = stopwatch()
    result = TrainResult(
        history=history,
        best_epoch=best_epoch,
        best_val_accuracy=best_acc,
        train_seconds=train_seconds,
        epochs_run=sum(1 for r in history if r.phase != "head"),  # epochs of full training; head rounds are not epochs
        head_steps_run=sum(1 for r in history if r.phase == "head") * head_schedule(
            recipe.transfer.head_steps, _steps(len(data.y_train), recipe))[0],
        stopped_early=stopped,
        mixed_precision=precision,
        precision_reason=model_precision(name, recipe)[1],
        notes=notes + [Message(N_("training call {seconds:.1f} s (input pipeline, validation, feature caching); epochs alone "
                                  "{epochs:.1f} s") if kind == "transfer" else
                               N_("training call {seconds:.1f} s (input pipeline, validation); epochs alone {epochs:.1f} s"),
                               seconds=float(train_seconds), epochs=float(sum(r.seconds for r in history)))],
    )
    return model, result


def initialize_from_first_batch(model, images: np.ndarray, labels: np.ndarray, num_classes: int, recipe: Recipe) -> list[str]:
    """Data-dependent initialisation (cnn_airbench's whitening) from the first training batch.

    The batch is the first global batch of epoch 1 exactly as one replica trains on it, computed
    here outside any replica context: every worker and replica derives the same filters from the
    same seed, so a run with several replicas starts where a single-replica run does.

    Returns:
        The names of the layers initialised (empty for models without such a layer).
    """

    if not any(hasattr(layer, "initialize_from_data") for layer in model.layers):
        return []
    dataset = make_train_dataset(images, labels, num_classes, recipe.train.global_batch_size, recipe.augment, recipe.train.seed, 0)
    first, _ = next(iter(dataset.take(1)))
    return initialize_from_data(model, first)


def with_total_epochs(recipe: Recipe, epochs: int, kind: str) -> Recipe:
    """The recipe with `epochs` epochs of full training (transfer: fine-tuning epochs; the head keeps its steps)."""
    if kind != "transfer":
        return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=epochs))
    return dataclasses.replace(recipe, transfer=dataclasses.replace(recipe.transfer, finetune_epochs=epochs))


def apply_budget(recipe: Recipe, budget: BudgetConfig | None, model, data: Dataset, kind: str, strategy, precision: str,
                 shard=(0, 1)) -> tuple[Recipe, float | None, str]:
    """Turn an equal compute budget into this model's epoch count.

    - epochs: that many epochs.
    - train_flops: floor(budget / (3 x forward FLOPs x training images)) epochs (backward ~ 2x forward),
      at least one.
    - minutes: a few timed training steps estimate the epoch time; the epoch count fills the budget
      and a hard stop at the deadline catches a wrong estimate (the LR schedule is planned for the
      estimated count, so it still decays).

    Returns:
        (recipe, wall-clock limit in seconds or None, a note for the report or "")
    """
    if budget is None or budget.kind == "none":
        return recipe, None, ""

    n = len(data.y_train)
    if budget.kind == "epochs":
        epochs = max(1, int(budget.value))
        return with_total_epochs(recipe, epochs, kind), None, Message(N_("budget: {epochs} epochs"), epochs=epochs)
    if budget.kind == "train_flops":
        per_epoch = 3 * count_flops(model) * n
        epochs = max(1, int(budget.value // per_epoch))
        return with_total_epochs(recipe, epochs, kind), None, Message(
            N_("budget: {budget:.3g} training FLOPs = {epochs} epochs at {per_epoch:.3g} FLOPs per epoch"),
            budget=float(budget.value), epochs=epochs, per_epoch=float(per_epoch))
    seconds = budget.value * 60
    step = _time_training_steps(model, data, recipe, strategy, precision, shard)
    steps = _steps(n, recipe)
    epochs = max(1, int(seconds // (step * steps)))
    return with_total_epochs(recipe, epochs, kind), seconds, Message(
        N_("budget: {minutes:g} min; a timed probe gave {ms:.0f} ms per step, so {epochs} epochs were planned"),
        minutes=float(budget.value), ms=float(step * 1000), epochs=epochs)


def _time_training_steps(model, data, recipe, strategy, precision, shard, steps: int = 6) -> float:
    """Seconds per training step of the full model, measured then undone (weights restored)."""
    saved = [v.numpy() for v in model.variables]
    trainer = Trainer(model, recipe.train, recipe.regularization, strategy, steps, 1, precision)
    batch = _per_worker_batch(recipe, shard)
    ds = make_train_dataset(data.x_train, data.y_train, data.num_classes, batch, recipe.augment, recipe.train.seed, 10_000, shard)
    ds = ds.take(steps + 1)
    times = []
    for i, (x, y) in enumerate(trainer.strategy.experimental_distribute_dataset(ds)):
        t = time.perf_counter()
        loss, _ = trainer._train(x, y)
        float(loss)
        if i:  # the first step traces the function
            times.append(time.perf_counter() - t)
    restore_variables(model, saved)
    return float(np.median(times)) if times else 1.0


def _per_worker_batch(recipe: Recipe, shard) -> int:
    count = shard[1]
    if recipe.train.global_batch_size % count:
        raise ConvbenchError(
            f"global_batch_size {recipe.train.global_batch_size} is not divisible by {count} workers; pick a multiple of {count}"
        )
    return recipe.train.global_batch_size // count


def _steps(n: int, recipe: Recipe) -> int:
    steps = n // recipe.train.global_batch_size
    if steps == 0:
        raise ConvbenchError(
            f"{n} training images are fewer than one batch of {recipe.train.global_batch_size}; "
            "lower global_batch_size or use more images"
        )
    return steps


def _resume_state(path: Path | None, fingerprint: str) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        state, weights, opt_values, best = load_checkpoint(path)
        if not isinstance(state, dict) or not isinstance(state.get("history"), list) or weights is None:
            raise ValueError("it lacks the state or the weights")
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        # A kill during a copy, a full disk outside convbench, a hand edit: restart the model, keep the file.
        quarantine(path, f"{type(exc).__name__}: {exc}")
        return None
    if state.get("fingerprint") != fingerprint:
        return None  # a checkpoint of another config: start over rather than mix runs
    return {"state": state, "weights": weights, "opt": opt_values, "best": best}


def _apply_resume(resume, model, trainer, label, path, stopwatch: Stopwatch | None = None) -> dict | None:
    if resume is None:
        return None
    restore_variables(model, resume["weights"])
    restore_optimizer(trainer.optimizer, resume["opt"])
    state = resume["state"]
    if stopwatch is not None:
        # Checkpoints written before call_seconds existed: their epochs' own time is the best known.
        stopwatch.prior = float(state.get("call_seconds", sum(r["seconds"] for r in state["history"])))
    logger.info(f"[{label}] resuming from {path.name}: {len(state['history'])} epochs already done")
    return {**{k: state[k] for k in ("history", "best_epoch", "best_val_accuracy", "best_val_loss", "stale")}, "best": resume["best"]}


def _fingerprint(recipe: Recipe, data: Dataset, name: str) -> str:
    import hashlib
    import json

    blob = json.dumps([name, dataclasses.asdict(recipe), data.summary()], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _train_custom(model, data, recipe, strategy, precision, checkpoint_dir, label, shard, on_epoch_end, max_seconds=None,
                  stopwatch=None):
    cfg = recipe.train
    batch = _per_worker_batch(recipe, shard)
    steps = _steps(len(data.y_train), recipe)
    trainer = Trainer(model, cfg, recipe.regularization, strategy, steps, cfg.epochs, precision)
    path = checkpoint_dir / "checkpoint.npz" if checkpoint_dir else None
    fp = _fingerprint(recipe, data, model.name)
    resume = _apply_resume(_resume_state(path, fp), model, trainer, label, path, stopwatch)
    val = make_eval_dataset(data.x_val, data.y_val, data.num_classes, cfg.eval_batch_size)
    result = run_epochs(
        trainer,
        lambda e: make_train_dataset(data.x_train, data.y_train, data.num_classes, batch, recipe.augment, cfg.seed, e, shard),
        steps,
        val,
        cfg.epochs,
        label,
        patience=recipe.regularization.early_stopping_patience,
        checkpoint=path,
        checkpoint_state={"fingerprint": fp},
        on_epoch_end=on_epoch_end,
        resume=resume,
        max_seconds=max_seconds,
        stopwatch=stopwatch,
    )
    return (*result, [])


def block_keys(layers) -> list[str]:
    """Ordered block names among `layers` (e.g. "block6a", "conv5_block3", "block_16")."""
    keys: list[str] = []
    for layer in layers:
        key = _block_key(layer.name)
        if key and key not in keys:
            keys.append(key)
    return keys


def _block_key(layer_name: str) -> str | None:
    """The block a layer belongs to ("block_16_expand" -> "block_16"), or None outside blocks."""
    m = re.match(r"^(conv\d+_block\d+|block_\d+|block\d+[a-z]?)", layer_name)
    return m.group(1) if m else None


def unfreeze_top_blocks(features, n_blocks: int) -> list[str]:
    """Make the last `n_blocks` blocks (and every layer after them) trainable; BatchNorm stays frozen.

    Returns:
        The block names unfrozen.
    """
    import keras

    layers = leaf_layers(features)
    keys = block_keys(layers)
    chosen = keys[-n_blocks:] if n_blocks else []
    start = None
    for i, layer in enumerate(layers):
        if chosen and _block_key(layer.name) == chosen[0]:
            start = i
            break
    features.trainable = True
    for i, layer in enumerate(layers):
        train = start is not None and i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = train
    return chosen


def discriminative_groups(model, unfrozen: list[str], decay: float) -> list[tuple[float, list]]:
    """(learning-rate factor, variables) of a transfer model being fine-tuned: the head at 1, the top
    unfrozen block (and the layers after it) at `decay`, the block below at decay**2, and so on.

    Args:
        model: a transfer model after `unfreeze_top_blocks`.
        unfrozen: the block names it returned, lowest first.
        decay: factor per block going down (1 = one learning rate for all).

    Returns:
        Groups with trainable variables, highest factor first.
    """
    head = model.get_layer("head")
    by_depth: dict[int, list] = {0: list(head.trainable_variables)}
    depth = 0
    for layer in leaf_layers(model.get_layer("features")):
        key = _block_key(layer.name)
        if key in unfrozen:
            depth = len(unfrozen) - unfrozen.index(key)  # top block 1, the one below 2...
        elif depth == 0:
            continue  # below the unfrozen blocks: frozen
        # A layer outside any block keeps the depth of the block before it (after the last: the top's).
        if layer.trainable_variables:
            by_depth.setdefault(depth, []).extend(layer.trainable_variables)
    return [(decay ** d, by_depth[d]) for d in sorted(by_depth) if by_depth[d]]


def leaf_layers(model) -> list:
    """Every non-container layer of a model, nested sub-models flattened, in order."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            out.extend(leaf_layers(layer))
        else:
            out.append(layer)
    return out


def compute_features(features, images: np.ndarray, batch_size: int, label="", pool: bool = False) -> np.ndarray:
    """Backbone features of uint8 images, float16, computed in inference mode.

    Args:
        pool: average the feature map to 1x1 (keeping its rank), for a head that begins with
            global average pooling: the head computes the same outputs from it.
    """
    import tensorflow as tf

    def extract(x):
        maps = features(tf.cast(x, tf.float32), training=False)
        if pool:
            maps = tf.reduce_mean(tf.cast(maps, tf.float32), axis=(1, 2), keepdims=True)
        return tf.cast(maps, tf.float16)

    fn = tf.function(extract, autograph=False)
    chunks = []
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        chunks.append(fn(images[i : i + batch_size]).numpy())
        if (i // batch_size) % 20 == 0 and i:
            logger.info(f"[{label}] features {i}/{len(images)} ({i / (time.perf_counter() - started):,.0f} img/s)")
    return np.concatenate(chunks)


# The head phase is evaluated this many times over its steps: often enough for early stopping to
# catch the best point, rarely enough that its log stays short whatever the data size.
HEAD_EVALUATIONS = 20


def head_schedule(head_steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """(steps per evaluation round, rounds) of the head phase: about HEAD_EVALUATIONS rounds, each at least one pass."""
    if head_steps <= 0:
        return steps_per_epoch, 0
    per_round = max(steps_per_epoch, math.ceil(head_steps / HEAD_EVALUATIONS))
    return per_round, math.ceil(head_steps / per_round)


def _train_transfer(model, data, recipe, strategy, precision, checkpoint_dir, label, shard, on_epoch_end, max_seconds=None,
                    stopwatch=None):
    t = recipe.transfer
    features = model.get_layer("features")
    head = model.get_layer("head")
    batch = _per_worker_batch(recipe, shard)
    steps = _steps(len(data.y_train), recipe)
    round_steps, rounds = head_schedule(t.head_steps, steps)
    fp = _fingerprint(recipe, data, model.name)
    notes = [Message(N_("transfer at {resolution}px with head {head}: up to {steps} head steps on cached features (evaluated "
                        "every {every}), no fine-tuning") if t.finetune_epochs == 0 else
                     N_("transfer at {resolution}px with head {head}: up to {steps} head steps on cached features (evaluated "
                        "every {every}), then {epochs} fine-tuning epoch") if t.finetune_epochs == 1 else
                     N_("transfer at {resolution}px with head {head}: up to {steps} head steps on cached features (evaluated "
                        "every {every}), then {epochs} fine-tuning epochs"),
                     resolution=str(t.resolution), head=t.head, steps=str(rounds * round_steps), every=str(round_steps),
                     epochs=str(t.finetune_epochs))]
    # Half a round of warmup (5 % of the head's steps), then cosine to 0 at the last head step.
    head_cfg = dataclasses.replace(recipe.train, optimizer="adamw", lr_per_1024=t.head_lr_per_1024, schedule="cosine",
                                   warmup_epochs=0.5)
    history: list[EpochRecord] = []
    best, best_epoch, best_acc, out_of_time = None, 0, -1.0, False
    head_path = checkpoint_dir / "checkpoint-head.npz" if checkpoint_dir else None
    tune_path = checkpoint_dir / "checkpoint-finetune.npz" if checkpoint_dir else None
    tune_resume = _resume_state(tune_path, fp)

    if rounds and tune_resume is None:
        features.trainable = False
        started = time.perf_counter()
        logger.info(f"[{label}] computing frozen {t.resolution}px features of {len(data.y_train) + len(data.y_val)} images (once)")
        pool = t.head in POOLING_HEADS
        f_train = compute_features(features, data.x_train, recipe.train.eval_batch_size, label, pool)
        f_val = compute_features(features, data.x_val, recipe.train.eval_batch_size, label, pool)
        notes.append(Message(N_("feature caching: {seconds:.1f} s for {images} images"),
                             seconds=float(time.perf_counter() - started), images=str(len(f_train) + len(f_val))))
        trainer = Trainer(head, head_cfg, recipe.regularization, strategy, round_steps, rounds, precision)
        resume = _apply_resume(_resume_state(head_path, fp), head, trainer, label, head_path, stopwatch)
        val = make_eval_dataset(f_val, data.y_val, data.num_classes, recipe.train.eval_batch_size)
        passes = math.ceil(round_steps / steps)

        def head_round(e: int):
            # Consecutive passes, each shuffled by its own index, cut to the round's steps.
            ds = None
            for j in range(passes):
                one = make_train_dataset(f_train, data.y_train, data.num_classes, batch, _feature_augment(recipe.augment),
                                         recipe.train.seed, e * passes + j, shard)
                ds = one if ds is None else ds.concatenate(one)
            return ds.take(round_steps)

        history, best_head, best_epoch, best_acc, stopped = run_epochs(
            trainer,
            head_round,
            round_steps,
            val,
            rounds,
            label,
            phase="head",
            unit="round",
            progress_lines=0,
            patience=t.head_patience,
            checkpoint=head_path,
            checkpoint_state={"fingerprint": fp},
            on_epoch_end=on_epoch_end,
            resume=resume,
            max_seconds=max_seconds,
            stopwatch=stopwatch,
        )
        out_of_time = stopped and max_seconds is not None and sum(r.seconds for r in history) >= max_seconds
        if stopped and not out_of_time:
            notes.append(Message(N_("head phase stopped early after {done} of {steps} steps (validation loss no lower for "
                                    "{patience} evaluations)"), done=str(len(history) * round_steps),
                                 steps=str(rounds * round_steps), patience=str(t.head_patience)))
        if best_head is not None:
            head.set_weights(best_head)
        best = [w.copy() for w in model.get_weights()]
        del f_train, f_val

    stopped = out_of_time
    if t.finetune_epochs and not out_of_time:
        unfrozen = unfreeze_top_blocks(features, t.finetune_blocks)
        head.trainable = True
        tune_cfg = dataclasses.replace(head_cfg, lr_per_1024=t.head_lr_per_1024 * t.finetune_lr_factor,
                                       warmup_epochs=recipe.train.warmup_epochs)
        groups = discriminative_groups(model, unfrozen, t.finetune_lr_decay)
        trainer = Trainer(model, tune_cfg, recipe.regularization, strategy, steps, t.finetune_epochs, precision, lr_groups=groups)
        rates = [Message(N_("{n} variables at {rate:.3g}"), n=str(len(v)), rate=float(tune_cfg.learning_rate() * f))
                 for f, v in groups]
        blocks = ", ".join(unfrozen) if unfrozen else Message(N_("none (head only)"))
        one_rate = precision == "mixed_float16" and len(groups) > 1
        notes.append(Message(
            N_("fine-tuned blocks: {blocks}; BatchNorm frozen; peak learning rates from the head down: {rates} (one rate: "
               "mixed_float16 keeps one loss scale)") if one_rate else
            N_("fine-tuned blocks: {blocks}; BatchNorm frozen; peak learning rates from the head down: {rates}"),
            blocks=blocks, rates=rates))
        resume = _apply_resume(tune_resume, model, trainer, label, tune_path, stopwatch)
        if resume is None:
            resume = {"history": [dataclasses.asdict(r) for r in history], "best": best, "best_epoch": best_epoch,
                      "best_val_accuracy": best_acc, "best_val_loss": min((r.val_loss for r in history), default=float("inf")), "stale": 0}
        val = make_eval_dataset(data.x_val, data.y_val, data.num_classes, recipe.train.eval_batch_size)
        history, best, best_epoch, best_acc, stopped = run_epochs(
            trainer,
            lambda e: make_train_dataset(data.x_train, data.y_train, data.num_classes, batch, recipe.augment, recipe.train.seed + 7919, e, shard),
            steps,
            val,
            t.finetune_epochs,
            label,
            phase="finetune",
            first_epoch_number=sum(1 for r in resume["history"] if r["phase"] == "head") + 1,
            patience=recipe.regularization.early_stopping_patience,
            checkpoint=tune_path,
            checkpoint_state={"fingerprint": fp},
            on_epoch_end=on_epoch_end,
            resume=resume,
            max_seconds=max_seconds,
            stopwatch=stopwatch,
        )
    return history, best, best_epoch, best_acc, stopped, notes


def _feature_augment(cfg: AugmentConfig) -> AugmentConfig:
    # Geometric augmentation means nothing on cached feature vectors; mixing still does.
    return dataclasses.replace(cfg, crop_padding=0, flip=False, cutout=0)
