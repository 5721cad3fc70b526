"""The custom training loop: a tf.function step with GradientTape under a tf.distribute strategy.

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so convbench
trains with its own loop: `strategy.run(step)` and `strategy.reduce`. The same loop serves a single
CPU (default strategy), several GPUs (MirroredStrategy) and Ray workers (MultiWorkerMirrored).

Split as Ray's TensorFlow examples are: dataset function (`convbench.data.augment.make_train_dataset`),
model function (`convbench.models.create_model`), per-epoch loop (`Trainer.run_epochs`), driver
(`fit_model`, `convbench.experiment.comparison`).

Every epoch it writes an atomic checkpoint (weights, optimizer state including the step count that
drives the LR schedule, history, best weights), so a killed run resumes at the next epoch.

    convbench smoke   # one tiny training on random data, prints the history
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from convbench.config import AugmentConfig, Recipe, RegularizationConfig, TrainConfig
from convbench.env import cpu_flags, onednn_enabled
from convbench.errors import ConvbenchError
from convbench.i18n import Message, N_
from convbench.io import atomic_write
from convbench.models import create_model

logger = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    """One row of the per-epoch history (history.csv)."""

    epoch: int  # 1-based, counted across phases
    phase: str  # "train", or "head"/"finetune" for transfer models
    train_loss: float
    train_accuracy: float  # on augmented batches (soft labels: argmax agreement)
    val_loss: float
    val_accuracy: float
    lr: float  # learning rate at the end of the epoch
    seconds: float  # wall time of the training part of the epoch
    images_per_s: float  # training images per second (all workers together)


class TrainingDiverged(ConvbenchError):
    """A loss became NaN or infinite: the model's result is "diverged", not an error of the run.

    Attributes:
        epoch: the global epoch number where it happened.
        phase: the phase ("train", "head", "finetune").
        quantity: "training loss" or "validation loss".
        value: the loss value (nan, inf or -inf).
        lr: the peak learning rate of the phase's schedule (what the config sets).
        history: every epoch record so far, the one that diverged last.
    """

    def __init__(self, label: str, epoch: int, phase: str, quantity: str, value: float, lr: float, history: list):
        super().__init__(f"{label}: {quantity} became {value} at epoch {epoch} (peak learning rate {lr:.4g}); "
                         "lower lr_per_1024 or check the data")
        self.epoch, self.phase, self.quantity, self.value, self.lr, self.history = epoch, phase, quantity, value, lr, history


@dataclass
class TrainResult:
    """What a training produced."""

    history: list[EpochRecord]
    best_epoch: int
    best_val_accuracy: float
    train_seconds: float
    epochs_run: int
    stopped_early: bool
    mixed_precision: str
    notes: list[str] = field(default_factory=list)
    precision_reason: str = ""  # why `mixed_precision` was chosen (choose_precision)
    head_steps_run: int = 0  # a transfer model's optimizer steps on cached features (its head phase)


# ---------------------------------------------------------------------------------------------
# Strategy, precision, schedules


def default_strategy():
    """MirroredStrategy over all local GPUs if there are any, else the default (one CPU device)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def choose_precision(setting: str, gpus: list | None = None, flags: set[str] | None = None,
                     onednn: bool | None = None, depthwise: bool = False) -> tuple[str, str]:
    """The Keras dtype policy for a `mixed_precision` setting, and why it was chosen.

    "auto": on a GPU, mixed_bfloat16 from compute capability 8.0 (Ampere) and mixed_float16 below;
    on a CPU, mixed_bfloat16 where its flags show AMX bf16 or AVX512-BF16 and TensorFlow runs
    oneDNN (whose bf16 kernels use them), float32 elsewhere. A depthwise-convolution model
    (MobileNet, EfficientNet) stays float32 on every CPU: oneDNN runs bf16 depthwise convolutions
    on AVX512 kernels, not AMX, and `convbench bench` measured fine-tuning efficientnet_lite0 in
    bf16 at 0.78x float32's speed on an AVX512-BF16 CPU and 0.63x on an AMX CPU (README).
    Decided from the CPU's flags, never its model name.
    "off" is float32; a policy name is used as given.

    Args:
        setting: "auto", "off", "mixed_bfloat16" or "mixed_float16".
        gpus: the visible GPUs (default: TensorFlow's list).
        flags: the CPU's feature flags (default: /proc/cpuinfo).
        onednn: whether oneDNN is on (default: asked of TensorFlow).
        depthwise: the model is built mostly of depthwise convolutions (`ModelInfo.depthwise`).

    Returns:
        (policy, reason), e.g. ("mixed_bfloat16", "AMX bf16 present").
    """

    if setting == "off":
        return "float32", Message(N_("mixed_precision: off"))
    if setting != "auto":
        return setting, Message(N_("mixed_precision: {setting} in the config"), setting=setting)
    if gpus is None:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        import tensorflow as tf

        cc = tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))
        if cc >= (8, 0):
            return "mixed_bfloat16", Message(N_("GPU compute capability {capability} >= 8.0 (bf16 tensor cores)"),
                                             capability=f"{cc[0]}.{cc[1]}")
        return "mixed_float16", Message(N_("GPU compute capability {capability} < 8.0 (fp16 tensor cores, no bf16)"),
                                        capability=f"{cc[0]}.{cc[1]}")
    flags = cpu_flags() if flags is None else flags
    isa = "AMX bf16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else ""
    if not isa:
        return "float32", Message(N_("CPU without AMX or AVX512-BF16"))
    if not (onednn_enabled() if onednn is None else onednn):
        return "float32", Message(N_("{isa} present but oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0)"), isa=isa)
    if depthwise:
        return "float32", Message(N_("{isa} present, but depthwise convolutions run slower in bf16 than in float32 on CPUs"),
                                  isa=isa)
    return "mixed_bfloat16", Message(N_("{isa} present"), isa=isa)



def make_schedule(cfg: TrainConfig, steps_per_epoch: int, epochs: int, peak_lr: float | None = None):
    """Learning-rate schedule as a Keras LearningRateSchedule of the optimizer's step count.

    - onecycle: linear warmup from 10 % of the peak over `warmup_epochs`, then linear decay to 0
      (the shape airbench and the ResNet-9 DAWNBench entry use).
    - cosine: the same warmup, then cosine decay to 0.
    - constant: the peak throughout.
    """
    import keras

    peak = cfg.learning_rate() if peak_lr is None else peak_lr
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    kind = cfg.schedule

    @keras.saving.register_keras_serializable(package="convbench")
    class Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = keras.ops.cast(step, "float32")
            if kind == "constant":
                return keras.ops.convert_to_tensor(peak, "float32")
            warm = peak * (0.1 + 0.9 * step / max(1, warmup))
            progress = keras.ops.clip((step - warmup) / max(1, total - warmup), 0.0, 1.0)
            if kind == "onecycle":
                decay = peak * (1.0 - progress)
            else:
                decay = peak * 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
            return keras.ops.where(step < warmup, warm, decay)

        def get_config(self):
            return {}

    return Schedule()


def make_optimizer(cfg: TrainConfig, reg: RegularizationConfig, schedule, precision: str):
    """SGD with Nesterov momentum or AdamW, decoupled weight decay off BatchNorm and biases."""
    import keras

    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=schedule, momentum=cfg.momentum, nesterov=True, weight_decay=reg.weight_decay or None)
    else:
        opt = keras.optimizers.AdamW(learning_rate=schedule, beta_1=cfg.momentum, weight_decay=reg.weight_decay)
    if reg.weight_decay:
        # Decaying BN scales and biases only fights the normalisation; the literature excludes them.
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "_bn", "bn"])
    if precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


class OptimizerGroups:
    """Several optimizers, each over its own variables, used as one: discriminative learning rates.

    Keras optimizers take one learning rate for all their variables, and Adam's step does not scale
    with the gradient, so a lower rate for lower blocks needs an optimizer of its own per rate. The
    first group's optimizer counts the steps (`iterations`); `variables` lists every optimizer's
    state in group order, which is what checkpoints save and restore.
    """

    def __init__(self, groups: list[tuple[object, list]]):
        self.groups = groups
        self._index = {id(v): g for g, (_, variables) in enumerate(groups) for v in variables}

    @property
    def iterations(self):
        return self.groups[0][0].iterations

    @property
    def variables(self) -> list:
        return [v for opt, _ in self.groups for v in opt.variables]

    def build(self, _variables) -> None:
        for opt, variables in self.groups:
            opt.build(variables)

    def apply_gradients(self, pairs) -> None:
        split: list[list] = [[] for _ in self.groups]
        for grad, var in pairs:
            split[self._index[id(var)]].append((grad, var))
        for (opt, _), group in zip(self.groups, split):
            opt.apply_gradients(group)


# ---------------------------------------------------------------------------------------------
# The loop


class Progress:
    """Progress lines that stay readable in a log file: a few lines per epoch, never \\r spam."""

    def __init__(self, label: str, lines_per_epoch: int = 4):
        self.label, self.lines = label, lines_per_epoch

    def step(self, epoch: int, epochs: int, step: int, steps: int, loss: float, acc: float, started: float, images: int,
             advanced: int = 1):
        """Report after `step` of `steps` if this call (which ran `advanced` steps) crossed a reporting point."""
        every = max(1, steps // self.lines)
        if step // every == (step - advanced) // every and step != steps:
            return
        elapsed = time.perf_counter() - started
        rate = images / elapsed if elapsed > 0 else 0.0
        eta = (steps - step) * elapsed / max(step, 1)
        logger.info(
            f"[{self.label}] epoch {epoch}/{epochs} step {step}/{steps} loss {loss:.4f} acc {acc:.4f} "
            f"{rate:,.0f} img/s eta {eta:.0f}s"
        )


class Trainer:
    """Holds model, optimizer and compiled steps for one training phase.

    Args:
        model: the Keras model (built under `strategy.scope()`).
        train_config: optimisation settings.
        regularization: label smoothing and weight decay.
        strategy: a tf.distribute strategy.
        steps_per_epoch: optimizer steps per epoch (for the schedule).
        epochs: epochs of this phase (for the schedule).
        precision: the dtype policy in force.
        peak_lr: overrides the config's learning rate (transfer phases).
        trainable: variables to train (default: model.trainable_variables).
        lr_groups: (factor, variables) pairs that train at factor x the learning rate, each with an
            optimizer of its own (discriminative fine-tuning); they replace `trainable`. Under
            mixed_float16 one optimizer keeps one loss scale, so the factors are not applied there.
    """

    def __init__(self, model, train_config: TrainConfig, regularization: RegularizationConfig, strategy, steps_per_epoch: int,
                 epochs: int, precision: str = "float32", peak_lr: float | None = None, trainable=None,
                 lr_groups: list[tuple[float, list]] | None = None):
        import tensorflow as tf

        self.model = model
        self.strategy = strategy
        self.cfg = train_config
        self.global_batch_size = train_config.global_batch_size
        self.peak_lr = train_config.learning_rate() if peak_lr is None else peak_lr
        with strategy.scope():
            self.schedule = make_schedule(train_config, steps_per_epoch, epochs, peak_lr)
            if lr_groups and precision != "mixed_float16":
                self.optimizer = OptimizerGroups([
                    (make_optimizer(train_config, regularization,
                                    make_schedule(train_config, steps_per_epoch, epochs, self.peak_lr * factor), precision),
                     list(variables))
                    for factor, variables in lr_groups])
                self.trainable = [v for _, variables in self.optimizer.groups for v in variables]
            else:
                self.optimizer = make_optimizer(train_config, regularization, self.schedule, precision)
                if lr_groups:
                    trainable = [v for _, variables in lr_groups for v in variables]
                self.trainable = list(model.trainable_variables if trainable is None else trainable)
            self.optimizer.build(self.trainable)
        smoothing = regularization.label_smoothing
        global_batch = self.global_batch_size

        def train_step(x, y):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(x, training=True), tf.float32)
                y_s = y * (1.0 - smoothing) + smoothing / tf.cast(tf.shape(y)[-1], tf.float32)
                per_example = tf.nn.softmax_cross_entropy_with_logits(y_s, logits)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
            grads = tape.gradient(scaled, self.trainable)
            self.optimizer.apply_gradients(zip(grads, self.trainable))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1)), tf.float32))
            return tf.reduce_sum(per_example), correct

        def eval_step(x, y):
            logits = tf.cast(model(x, training=False), tf.float32)
            per_example = tf.nn.softmax_cross_entropy_with_logits(y, logits)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1)), tf.float32))
            return tf.reduce_sum(per_example), correct, tf.cast(tf.shape(x)[0], tf.float32)

        sum_ = tf.distribute.ReduceOp.SUM
        self._init_lookahead(steps_per_epoch, epochs)

        def distributed_step(x, y):
            loss, correct = strategy.run(train_step, args=(x, y))
            self._maybe_lookahead()
            return strategy.reduce(sum_, loss, axis=None), strategy.reduce(sum_, correct, axis=None)

        distributed_train = tf.function(distributed_step)

        @tf.function
        def distributed_train_steps(iterator, n):
            # n steps in one graph loop, the sums kept on the device: Python dispatch and the loss
            # read-back happen once per call (Keras' steps_per_execution).
            loss = correct = tf.constant(0.0)
            for _ in tf.range(n):
                x, y = next(iterator)
                step_loss, step_correct = distributed_step(x, y)
                loss += step_loss
                correct += step_correct
            return loss, correct

        @tf.function
        def distributed_eval(x, y):
            out = strategy.run(eval_step, args=(x, y))
            return tuple(strategy.reduce(sum_, v, axis=None) for v in out)

        self._train = distributed_train
        self._train_steps = distributed_train_steps
        self._eval = distributed_eval
        self.steps_per_execution = train_config.steps_per_execution
        # Under MultiWorkerMirroredStrategy each worker's dataset already holds only its own slice of
        # every global batch (make_train_dataset(shard=...)); experimental_distribute_dataset would
        # auto-shard it again and treat its batch as the global one.
        self._multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    # Lookahead (Zhang et al. 2019) as airbench uses it: every `lookahead_every` steps the slow
    # copy moves towards the weights, slow += (1 - rho) (w - slow), and the weights jump back to it;
    # rho warms up as decay x progress**3, so training moves fast early and averages strongly at the
    # end. Every float variable takes part, BatchNorm statistics included. At each epoch end the
    # weights are set to the slow copy, and at each epoch start the slow copy to the weights, so
    # the epoch-boundary state lives in the model alone and checkpoints need nothing extra.

    def _init_lookahead(self, steps_per_epoch: int, epochs: int) -> None:
        import keras
        import tensorflow as tf

        every = self.cfg.lookahead_every
        self._lookahead_pairs = []
        if not every:
            return
        self._lookahead_total = float(max(1, steps_per_epoch * epochs))
        start = int(math.ceil(self.cfg.lookahead_from_epoch * steps_per_epoch))
        self._lookahead_first = -(-start // every) * every  # the first averaging step: it starts the slow copy
        weights = [v for v in self.model.variables if keras.backend.is_float_dtype(v.dtype)]
        with self.strategy.scope():
            slow = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"lookahead_{i}") for i, v in enumerate(weights)]
        self._lookahead_pairs = list(zip(weights, slow))

    def _lookahead_started(self) -> bool:
        return bool(self._lookahead_pairs) and int(self.optimizer.iterations.numpy()) >= self._lookahead_first

    def _maybe_lookahead(self) -> None:
        """In the compiled step, after the optimizer step: average if this step is an averaging step."""
        import tensorflow as tf

        if not self._lookahead_pairs:
            return
        every, first = self.cfg.lookahead_every, self._lookahead_first
        t = tf.cast(self.optimizer.iterations, tf.int64)

        def average():
            progress = tf.cast(t, tf.float32) / self._lookahead_total
            rho = tf.where(t == first, 0.0, self.cfg.lookahead_decay * progress**3)
            for w, s in self._lookahead_pairs:
                s.assign(s + (1.0 - rho) * (tf.convert_to_tensor(w) - s))
                w.assign(s)
            return tf.constant(True)

        tf.cond((t >= first) & (t % every == 0), average, lambda: tf.constant(False))

    def _sync_lookahead(self, to_weights: bool) -> None:
        if not self._lookahead_started():
            return
        for w, s in self._lookahead_pairs:
            if to_weights:
                w.assign(s)
            else:
                s.assign(w)

    def _distribute(self, dataset, eval_batch: int | None = None):
        if not self._multi_worker:
            return self.strategy.experimental_distribute_dataset(dataset)

        def per_worker(context):
            # The dataset is this worker's already; only split its batches over the worker's own
            # replicas (GPUs): a training batch is global / workers, an eval batch is eval_batch_size.
            local = context.num_replicas_in_sync // context.num_input_pipelines
            if local > 1:
                per_worker_batch = eval_batch or self.global_batch_size // context.num_input_pipelines
                return dataset.rebatch(-(-per_worker_batch // local))
            return dataset

        return self.strategy.distribute_datasets_from_function(per_worker)

    def current_lr(self) -> float:
        return float(self.schedule(self.optimizer.iterations))

    def train_epoch(self, dataset, epoch: int, epochs: int, steps: int, progress: Progress | None = None) -> tuple[float, float, float, int]:
        """One pass over `dataset` (already batched per worker). Returns (loss, accuracy, seconds, images).

        Runs `steps_per_execution` steps per compiled call when the dataset's length is known (it
        is for `make_train_dataset`), else one step per call; progress is reported after each call.
        """
        import tensorflow as tf

        batches = int(dataset.cardinality())
        per_call = self.steps_per_execution if batches >= 0 else 1
        dist = self._distribute(dataset)
        total_loss = total_correct = 0.0
        images = done = 0
        started = time.perf_counter()
        self._sync_lookahead(to_weights=False)
        if per_call == 1:
            calls = ((self._train(x, y), 1) for x, y in dist)
        else:
            iterator = iter(dist)
            sizes = [min(per_call, batches - start) for start in range(0, batches, per_call)]
            calls = ((self._train_steps(iterator, tf.constant(n)), n) for n in sizes)
        for (loss, correct), n in calls:
            total_loss += float(loss)
            total_correct += float(correct)
            done += n
            images += n * self.global_batch_size
            if progress:
                progress.step(epoch, epochs, done, steps, total_loss / images, total_correct / images, started, images, advanced=n)
        self._sync_lookahead(to_weights=True)
        seconds = time.perf_counter() - started
        if images == 0:
            raise ConvbenchError("an epoch had no training batches; use more images or a smaller global_batch_size")
        return total_loss / images, total_correct / images, seconds, images

    def evaluate(self, dataset) -> tuple[float, float]:
        """(mean loss, accuracy) over an unaugmented dataset.

        Under several workers every worker scores the whole dataset, so all run the same number of
        collective steps; the SUM-reduced totals count each example once per worker, which leaves
        both ratios exact.
        """
        dist = self._distribute(dataset, eval_batch=self.cfg.eval_batch_size)
        loss = correct = count = 0.0
        for x, y in dist:
            l, c, n = self._eval(x, y)
            loss, correct, count = loss + float(l), correct + float(c), count + float(n)
        return loss / max(count, 1), correct / max(count, 1)


# ---------------------------------------------------------------------------------------------
# Checkpoints (crash-safe resume)


def _weights_blob(values: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"v{i:04d}": v for i, v in enumerate(values)}


def save_checkpoint(path: Path, model, optimizer, state: dict, best_weights: list[np.ndarray] | None) -> None:
    """Atomically write weights, optimizer variables, best weights and a JSON state to one .npz."""
    # model.variables, not get_weights(): it includes the dropout layers' RNG states, so a resumed
    # run draws the same dropout masks as an uninterrupted one.
    arrays = {f"model/{k}": v for k, v in _weights_blob([v.numpy() for v in model.variables]).items()}
    arrays.update({f"opt/{k}": np.asarray(v) for k, v in _weights_blob([v.numpy() for v in optimizer.variables]).items()})
    if best_weights is not None:
        arrays.update({f"best/{k}": v for k, v in _weights_blob(best_weights).items()})
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)

    def write(tmp: Path):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def load_checkpoint(path: Path) -> tuple[dict, list, list, list | None]:
    """Read what save_checkpoint wrote: (state, model weights, optimizer values, best weights or None)."""
    with np.load(path, allow_pickle=False) as z:
        state = json.loads(bytes(z["state"]).decode())

        def group(prefix):
            keys = sorted(k for k in z.files if k.startswith(prefix))
            return [z[k] for k in keys] if keys else None

        return state, group("model/"), group("opt/") or [], group("best/")


def _assign(variables, values: list[np.ndarray], what: str) -> None:
    # Checked whole before any assignment: a checkpoint of an older build of the model (cnn_resnet
    # was widened from 24 to 32 channels) has as many variables, of other shapes.
    if len(variables) != len(values) or any(tuple(v.shape) != np.shape(x) for v, x in zip(variables, values)):
        raise ConvbenchError(f"the checkpoint's {what} does not match this model (saved by another version of it?); "
                             "delete the run folder's checkpoints to start over")
    for var, value in zip(variables, values):
        var.assign(value)


def restore_variables(model, values: list[np.ndarray]) -> None:
    """Assign what save_checkpoint stored as model state (weights and RNG states)."""
    _assign(model.variables, values, "model state")


def restore_optimizer(optimizer, values: list[np.ndarray]) -> None:
    """Assign what save_checkpoint stored as optimizer state (slots and step count)."""
    _assign(optimizer.variables, values, "optimizer state")


# ---------------------------------------------------------------------------------------------
# Driver for one model


class Stopwatch:
    """Wall seconds of one model's training across processes: a resumed run adds what the
    checkpoint recorded (`prior`) to its own time, so an interrupted model's time is not lost."""

    def __init__(self):
        self.prior = 0.0
        self.started = time.perf_counter()

    def __call__(self) -> float:
        return self.prior + time.perf_counter() - self.started


def run_epochs(
    trainer: Trainer,
    make_dataset: Callable[[int], object],
    steps_per_epoch: int,
    val_dataset,
    epochs: int,
    label: str,
    phase: str = "train",
    first_epoch_number: int = 1,
    patience: int = 0,
    checkpoint: Path | None = None,
    checkpoint_state: dict | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    resume: dict | None = None,
    max_seconds: float | None = None,
    stopwatch: Stopwatch | None = None,
    unit: str = "epoch",
    progress_lines: int = 4,
) -> tuple[list[EpochRecord], list[np.ndarray] | None, int, float, bool]:
    """Run `epochs` epochs with validation, early stopping and per-epoch checkpoints.

    Args:
        trainer: a Trainer for this phase.
        make_dataset: epoch index (0-based within the phase) -> this worker's batched dataset.
        steps_per_epoch: batches per epoch.
        val_dataset: unaugmented validation batches.
        epochs: epochs in this phase.
        label: name shown in progress lines.
        phase: recorded in the history.
        first_epoch_number: the global number of this phase's first epoch.
        patience: stop after this many epochs without a lower validation loss (0 = never).
        checkpoint: where to write the per-epoch checkpoint (None = no checkpoint).
        checkpoint_state: extra JSON fields saved with each checkpoint (phase, fingerprint...).
        on_epoch_end: called with each record (Ray reports from here).
        resume: {"history": [...], "best": [...], "best_epoch": n, "best_val_accuracy": a,
            "best_val_loss": l, "stale": k} from a checkpoint; epochs already in history are skipped.
        max_seconds: stop once the history's training seconds reach this (a wall-clock budget).
        stopwatch: the model's training time so far, saved in each checkpoint as "call_seconds".
        unit: what one pass of the loop is called in the log ("epoch"; "round" for the head's step rounds).
        progress_lines: progress lines within each pass (0 = only the line at its end).

    Returns:
        (history, best weights, best epoch, best val accuracy, stopped early)

    Raises:
        TrainingDiverged: the training or validation loss became NaN or infinite.
    """
    resume = resume or {}
    history = [EpochRecord(**r) for r in resume.get("history", [])]
    done_in_phase = sum(1 for r in history if r.phase == phase)
    best = resume.get("best")
    best_epoch = resume.get("best_epoch", 0)
    best_acc = resume.get("best_val_accuracy", -1.0)
    best_loss = resume.get("best_val_loss", math.inf)
    stale = resume.get("stale", 0)
    progress = Progress(label, progress_lines) if progress_lines else None
    stopped = False
    for e in range(done_in_phase, epochs):
        number = first_epoch_number + e
        # The log counts within the phase ("fine-tune epoch 1/2" after 9 head rounds); the history, globally.
        loss, acc, seconds, images = trainer.train_epoch(make_dataset(e), e + 1, epochs, steps_per_epoch, progress)
        # A NaN training loss makes validation meaningless; a NaN validation loss with a finite
        # training loss means the weights blew up at the end of the epoch. Either way: stop.
        val_loss, val_acc = trainer.evaluate(val_dataset) if math.isfinite(loss) else (math.nan, 0.0)
        record = EpochRecord(number, phase, loss, acc, val_loss, val_acc, trainer.current_lr(), seconds, images / seconds)
        history.append(record)
        for quantity, value in ((N_("training loss"), loss), (N_("validation loss"), val_loss)):
            if not math.isfinite(value):
                logger.info(f"[{label}] diverged: {quantity} became {value} at epoch {number} (peak learning rate "
                            f"{trainer.peak_lr:.4g}); stopping this model")
                raise TrainingDiverged(label, number, phase, quantity, value, trainer.peak_lr, history)
        if val_acc > best_acc:
            best_acc, best_epoch, best = val_acc, number, [w.copy() for w in trainer.model.get_weights()]
        if val_loss < best_loss - 1e-6:
            best_loss, stale = val_loss, 0
        else:
            stale += 1
        logger.info(
            f"[{label}] {unit} {e + 1}/{epochs} {phase}: loss {loss:.4f} acc {acc:.4f} | val loss {val_loss:.4f} "
            f"acc {val_acc:.4f} | lr {record.lr:.4g} | {seconds:.1f}s {record.images_per_s:,.0f} img/s"
        )
        if checkpoint is not None:
            state = dict(checkpoint_state or {})
            state.update(history=[dataclasses.asdict(r) for r in history], best_epoch=best_epoch, best_val_accuracy=best_acc,
                         best_val_loss=best_loss, stale=stale, phase=phase)
            if stopwatch is not None:
                state["call_seconds"] = stopwatch()
            save_checkpoint(checkpoint, trainer.model, trainer.optimizer, state, best)
        if on_epoch_end:
            on_epoch_end(record)
        if max_seconds is not None and sum(r.seconds for r in history) >= max_seconds and e < epochs - 1:
            logger.info(f"[{label}] time budget of {max_seconds / 60:.1f} min reached after epoch {number}")
            stopped = True
            break
        if patience and stale >= patience:
            logger.info(f"[{label}] early stop: validation loss has not improved for {patience} {unit}s")
            stopped = True
            break
    return history, best, best_epoch, best_acc, stopped


def smoke() -> list[EpochRecord]:
    """Train cnn_vgg for two epochs on random data (`convbench smoke`); proves the loop runs end to end.

    Returns:
        The per-epoch history.
    """
    from convbench.data.augment import make_eval_dataset, make_train_dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 512).astype(np.int32)
    cfg = TrainConfig(epochs=2, global_batch_size=64)
    strategy = default_strategy()
    with strategy.scope():
        model = create_model("cnn_vgg", num_classes=10)
    steps = len(y) // cfg.global_batch_size
    trainer = Trainer(model, cfg, RegularizationConfig(), strategy, steps, cfg.epochs)
    history, *_ = run_epochs(
        trainer,
        lambda e: make_train_dataset(x, y, 10, cfg.global_batch_size, AugmentConfig(), cfg.seed, e),
        steps,
        make_eval_dataset(x[:128], y[:128], 10, 128),
        cfg.epochs,
        "smoke",
    )
    return history
