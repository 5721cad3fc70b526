"""Run configuration: frozen, typed dataclasses; YAML is only their saved form.

A run is fully described by one `RunConfig`. It is built from a preset (`quick` or `full`), then a
YAML file (`--config FILE`), then command-line flags, each layer overriding the previous one.
Unknown keys and wrong types are errors with the fix named, never silently ignored.

Try it:
    python -c "from convbench.config import preset; print(preset('quick'))"
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from convbench.errors import ConvbenchError
from convbench.i18n import _, check_language, fmt, LANGUAGES
from convbench.io import atomic_write_text


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split."""

    source: str = "cifar10"  # "cifar10", "cifar100" (official archives, downloaded once) or a folder
    cache_dir: str = ""  # decoded uint8 arrays and downloads; "" means $CONVBENCH_CACHE or ~/.cache/convbench
    val_fraction: float = 0.1  # fraction of train held out, stratified, for early stopping and selection
    split_seed: int = 0  # fixed so every model and every seed sees the same validation split
    max_train_images: int = 0  # stratified subset of train (before the val split); 0 = all
    max_test_images: int = 0  # stratified subset of test; 0 = all
    strict: bool = False  # corrupt/unreadable images are an error instead of skipped-and-counted


@dataclass(frozen=True)
class AugmentConfig:
    """Data augmentation, applied per batch on the device (never per image in Python)."""

    crop_padding: int = 4  # pixels of reflection padding before a random crop back to size; 0 = off
    flip: bool = True  # random horizontal flip
    alternate_flip: bool = False  # flip a fixed random half of the images on even epochs, the other half on odd ones (airbench): every image is seen both ways in two epochs, never the same way twice
    cutout: int = 0  # side in pixels of one random square zeroed per image; 0 = off
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing of image pairs; 0 = off
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) box mixing; 0 = off (if both set, each batch picks one)


def describe_augment(augment: Mapping[str, Any]) -> list[str]:
    """The active augmentations of an `AugmentConfig` in its saved (dict) form, as short labels (in the report's language)."""

    a = augment
    flip = (_("alternating flip") if a.get("alternate_flip") else _("flip")) if a["flip"] else ""
    labels = [fmt(_("crop±{pixels}px"), pixels=a["crop_padding"]) if a["crop_padding"] else "", flip,
              fmt(_("cutout {pixels}px"), pixels=a["cutout"]) if a["cutout"] else "",
              fmt(_("mixup α={alpha:g}"), alpha=a["mixup_alpha"]) if a["mixup_alpha"] else "",
              fmt(_("cutmix α={alpha:g}"), alpha=a["cutmix_alpha"]) if a["cutmix_alpha"] else ""]
    return [x for x in labels if x]


@dataclass(frozen=True)
class RegularizationConfig:
    """Regularizers; what a model does not support is ignored and said so in the report."""

    label_smoothing: float = 0.0  # mass moved from the true class to the uniform distribution
    weight_decay: float = 5e-4  # decoupled weight decay per step, multiplied by the learning rate
    dropout: float = -1.0  # dropout rate override for the model's dropout layers; -1 = model default
    early_stopping_patience: int = 0  # epochs without a new best validation loss before stopping; 0 = off


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation for one model."""

    epochs: int = 10  # passes over the training split
    global_batch_size: int = 256  # examples per optimizer step summed over all workers and devices
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr_per_1024: float = 0.8  # peak learning rate for a global batch of 1024; scaled linearly to the real batch
    momentum: float = 0.9  # SGD momentum (beta_1 for AdamW)
    schedule: str = "onecycle"  # "onecycle" (linear warmup, linear decay), "cosine" (warmup + cosine), "constant"
    warmup_epochs: float = 1.0  # epochs of linear warmup from 10 % of the peak learning rate
    seed: int = 0  # init, data order and augmentation all derive from it
    # "auto": bf16 on GPUs of compute capability >= 8.0 (fp16 below) and on CPUs with AMX or
    # AVX512-BF16 (oneDNN's bf16 kernels; depthwise models only with AMX), float32 elsewhere;
    # "off" (float32), "mixed_bfloat16", "mixed_float16"
    mixed_precision: str = "auto"
    eval_batch_size: int = 512  # batch for validation and test passes; no effect on results
    steps_per_execution: int = 8  # optimizer steps per compiled call: one host round trip (loss read-back) per call, not per step
    # BatchNorm statistics all-reduced across replicas (GPUs, Ray workers) instead of per replica's
    # slice of the batch; worth it when a replica's slice is small (under about 32 images).
    # Applies to the custom CNNs and EfficientNet-Lite; one all-reduce per BN layer and step.
    sync_batchnorm: bool = False
    lookahead_every: int = 0  # optimizer steps between lookahead averagings of all float weights (airbench: 5); 0 = off
    lookahead_from_epoch: float = 3.0  # epochs before averaging starts: early weights move too fast to be worth averaging
    lookahead_decay: float = 0.7738  # the slow weights' decay per averaging at the end of training (0.95**5), warmed up as progress**3

    def learning_rate(self) -> float:
        """Peak learning rate for this global batch (linear scaling rule, Goyal et al. 2017)."""
        return self.lr_per_1024 * self.global_batch_size / 1024.0


@dataclass(frozen=True)
class TransferConfig:
    """Transfer learning of pretrained backbones, in two phases."""

    resolution: int = 96  # input side in pixels; CIFAR images are upsampled to it inside the model
    head: str = "gap_dense128"  # "gap_dense128", "flatten_mlp" or "gap_bn_dropout" (the notebook's three heads)
    # Phase 1, the head alone on backbone features computed once and cached, is counted in optimizer
    # steps, not epochs: a head on 2,000 images needs as many steps to converge as on 45,000, and
    # steps on cached features cost almost nothing. It has its own cosine schedule and stops early.
    head_steps: int = 1500  # phase-1 optimizer steps, rounded up to whole evaluation rounds; its cosine schedule spans them
    head_patience: int = 3  # phase 1 stops after this many evaluations (twenty per phase) without a lower val loss; 0 = never
    finetune_epochs: int = 2  # phase 2, epochs of full training: the top blocks unfrozen, BatchNorm kept frozen; what --epochs sets
    finetune_blocks: int = 2  # how many of the last blocks to unfreeze in phase 2
    finetune_lr_factor: float = 0.1  # phase-2 peak learning rate of the head, relative to phase 1
    # Discriminative fine-tuning (ULMFiT): lower blocks hold more general features and move less.
    finetune_lr_decay: float = 0.5  # each unfrozen block learns at this x the rate of the one above (the top block: x the head's); 1 = one rate
    head_lr_per_1024: float = 4e-3  # phase-1 AdamW learning rate for a global batch of 1024
    weights_dir: str = ""  # folder with keras.applications weight files for offline machines; "" = download


@dataclass(frozen=True)
class BudgetConfig:
    """An equal compute budget for every model; overrides their epoch counts when set."""

    kind: str = "none"  # "none", "epochs", "minutes" (training wall time) or "train_flops" (3 x forward FLOPs x images)
    value: float = 0.0  # epochs, minutes or FLOPs, per model
    target_accuracy: float = 0.8  # validation accuracy for the report's time-to-target and FLOPs-to-target


@dataclass(frozen=True)
class AnalysisConfig:
    """What is measured after training, beyond test accuracy."""

    alpha: float = 0.05  # family-wise significance level of the model comparisons (Holm-corrected)
    calibration_bins: int = 15  # equal-width confidence bins of the expected calibration error
    robustness_images: int = 1000  # stratified test images evaluated under each corruption and severity; 0 = off
    corruption_severities: int = 5  # severities 1..N of each corruption (CIFAR-10-C uses 5)
    tta_flip: bool = True  # also report accuracy with horizontal-flip test-time augmentation
    saliency_images: int = 6  # fixed test images shown with each model's saliency map; 0 = off
    mistakes: int = 12  # most confident mistakes shown per model; 0 = off


@dataclass(frozen=True)
class AblationConfig:
    """Ablations run after the comparison (the same as `convbench ablate`); no variants = off."""

    variants: tuple[str, ...] = ()  # e.g. [aug=none, aug=crop+flip, aug=full, dropout=off, weight_decay=off, label_smoothing=off]
    models: tuple[str, ...] = ()  # architectures to ablate; empty = the custom CNNs among `models`


@dataclass(frozen=True)
class ModelOverride:
    """Per-model changes to the shared recipe; None keeps the shared value."""

    train: Mapping[str, Any] | None = None
    augment: Mapping[str, Any] | None = None
    regularization: Mapping[str, Any] | None = None
    transfer: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how one model is trained (resolved shared config plus its override)."""

    train: TrainConfig
    augment: AugmentConfig
    regularization: RegularizationConfig
    transfer: TransferConfig


def training_epochs(kind: str, recipe: Mapping) -> int:
    """Epochs of full training a recipe asks for: `train.epochs`, or a transfer model's fine-tuning epochs.

    Args:
        kind: the model's kind, "custom" or "transfer".
        recipe: a recipe in its saved form (`dataclasses.asdict(Recipe)` or a results.json entry).
            Recipes saved before `head_steps` existed counted the head's epochs as well, as they ran.

    Returns:
        The epoch count the report, `convbench runs` and `--help` show.
    """
    if kind != "transfer":
        return recipe["train"]["epochs"]
    transfer = recipe["transfer"]
    return transfer.get("frozen_epochs", 0) + transfer["finetune_epochs"]


# At most this many times the recipe's epochs for a data fraction (RunConfig.data_fractions): 1 % of
# the images for 4x the epochs costs 4 % of the full run, 10 % costs 40 %.
DATA_FRACTION_MAX_EPOCH_FACTOR = 4


@dataclass(frozen=True)
class RunConfig:
    """One comparison run."""

    preset: str = "quick"  # which preset the values started from ("quick", "full" or "custom")
    models: tuple[str, ...] = ("cnn_vgg", "cnn_resnet", "efficientnet_lite0")
    seeds: int = 1  # independent trainings of every model, with seeds train.seed, train.seed + 1, ...
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    overrides: Mapping[str, ModelOverride] = field(default_factory=dict)  # model name -> its changes
    measure_latency: bool = True  # batch-1 latency and batch-256 throughput after training
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    # Data efficiency, what transfer learning is for: after the comparison, every model trains again
    # on each of these stratified fractions of the training images (e.g. [0.01, 0.1, 1.0]; 1.0 is
    # the comparison itself) and the report plots test accuracy against training images. A fraction
    # of the images gets 1/fraction times the epochs, at most DATA_FRACTION_MAX_EPOCH_FACTOR times,
    # so small sets still get enough optimizer steps to learn. Empty = off.
    data_fractions: tuple[float, ...] = ()
    # Language of REPORT.md and its figures: "en" or "es" (`--lang`). Not part of what a run folder's
    # results are compared on (`experiment.comparison.config_fingerprint`): another language re-renders, never retrains.
    lang: str = "en"

    def recipe(self, model_name: str) -> Recipe:
        """Resolve the shared sections plus `overrides[model_name]` into one Recipe.

        Args:
            model_name: a registered model name.

        Returns:
            The recipe that model trains with.
        """
        over = self.overrides.get(model_name, ModelOverride())
        sections = {}
        for section in ("train", "augment", "regularization", "transfer"):
            base = getattr(self, section)
            changes = getattr(over, section) or {}
            sections[section] = _from_dict(type(base), dict(changes), f"overrides.{model_name}.{section}", base)
        return Recipe(**sections)

    def validate(self) -> "RunConfig":
        """Check ranges and names that types alone cannot; returns self for chaining."""
        if not self.models:
            raise ConvbenchError("no models selected; pass --models with at least one name (see `convbench models`)")
        if self.seeds < 1:
            raise ConvbenchError(f"seeds must be >= 1, got {self.seeds}; pass --seeds 1 or more")
        repeated = sorted({n for n in self.models if self.models.count(n) > 1})
        if repeated:
            raise ConvbenchError(f"models lists {', '.join(repeated)} more than once; name each model once (use seeds for repeats)")
        if not self.data.source.strip():
            raise ConvbenchError("data.source is empty; pass --data cifar10, cifar100 or a folder")
        for key in ("max_train_images", "max_test_images"):
            value = getattr(self.data, key)
            if value < 0:
                raise ConvbenchError(f"--{key.replace('_', '-')} must be >= 0 (0 means all), got {value}")
        if not 0 <= self.data.split_seed < 2**32:
            raise ConvbenchError(f"data.split_seed must be in [0, 2**32), got {self.data.split_seed}")
        if not 0.0 < self.data.val_fraction < 0.9:
            raise ConvbenchError(f"data.val_fraction must be in (0, 0.9), got {self.data.val_fraction}")
        for name in self.models:
            _validate_recipe(self.recipe(name), name)
        b, a = self.budget, self.analysis
        if b.kind not in ("none", "epochs", "minutes", "train_flops"):
            raise ConvbenchError(f"budget.kind must be none, epochs, minutes or train_flops, got {b.kind!r}")
        if b.kind != "none" and not b.value > 0:
            raise ConvbenchError(f"budget.value must be > 0 for a {b.kind} budget, got {b.value}")
        if not 0 < b.target_accuracy <= 1:
            raise ConvbenchError(f"budget.target_accuracy must be in (0, 1], got {b.target_accuracy}")
        if not 0 < a.alpha < 1 or a.calibration_bins < 2 or a.robustness_images < 0 or not 1 <= a.corruption_severities <= 5:
            raise ConvbenchError("analysis: alpha must be in (0, 1), calibration_bins >= 2, robustness_images >= 0, "
                                 "corruption_severities in 1..5; fix the analysis block of the config")

        if self.lang not in LANGUAGES:
            raise ConvbenchError(f"lang must be {' or '.join(LANGUAGES)}, got {self.lang!r}; pass --lang es (or en), "
                                 "or fix `lang:` in the config file")
        if any(not 0 < f <= 1 for f in self.data_fractions) or len(set(self.data_fractions)) != len(self.data_fractions):
            raise ConvbenchError(f"data_fractions must be different numbers in (0, 1], got {list(self.data_fractions)}; "
                                 "for example `data_fractions: [0.01, 0.1, 1.0]`")
        unknown = set(self.overrides) - set(self.models)
        if unknown:
            raise ConvbenchError(
                f"overrides name models that are not selected: {sorted(unknown)}; add them to models or remove the override"
            )
        return self


def _validate_recipe(recipe: Recipe, name: str) -> None:
    checks = [
        (recipe.train.epochs >= 1, f"epochs must be >= 1 (got {recipe.train.epochs}); pass --epochs 1 or more"),
        (recipe.train.global_batch_size >= 1, f"global_batch_size must be >= 1 (got {recipe.train.global_batch_size})"),
        (recipe.train.eval_batch_size >= 1, f"eval_batch_size must be >= 1 (got {recipe.train.eval_batch_size})"),
        (recipe.train.steps_per_execution >= 1,
         f"steps_per_execution must be >= 1 (got {recipe.train.steps_per_execution}); 1 = a host round trip every step"),
        (recipe.train.lookahead_every >= 0, f"lookahead_every must be >= 0 (got {recipe.train.lookahead_every}); 0 turns lookahead off"),
        (recipe.train.lookahead_from_epoch >= 0, f"lookahead_from_epoch must be >= 0 (got {recipe.train.lookahead_from_epoch})"),
        (0 <= recipe.train.lookahead_decay < 1, f"lookahead_decay must be in [0, 1) (got {recipe.train.lookahead_decay})"),
        (recipe.train.lr_per_1024 > 0, f"lr_per_1024 must be > 0 (got {recipe.train.lr_per_1024})"),
        # Keras and NumPy seeds are 32-bit; 2**31 leaves room for seed + k and the fine-tune offset.
        (0 <= recipe.train.seed < 2**31, f"train.seed must be in [0, 2**31) (got {recipe.train.seed})"),
        (0 <= recipe.train.momentum < 1, f"momentum must be in [0, 1) (got {recipe.train.momentum})"),
        (recipe.train.optimizer in ("sgd", "adamw"), f"optimizer must be sgd or adamw (got {recipe.train.optimizer!r})"),
        (
            recipe.train.schedule in ("onecycle", "cosine", "constant"),
            f"schedule must be onecycle, cosine or constant (got {recipe.train.schedule!r})",
        ),
        (
            recipe.train.mixed_precision in ("auto", "off", "mixed_bfloat16", "mixed_float16"),
            f"mixed_precision must be auto, off, mixed_bfloat16 or mixed_float16 (got {recipe.train.mixed_precision!r})",
        ),
        (recipe.train.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
        # Reflection padding needs fewer pixels than the 32-pixel image side.
        (0 <= recipe.augment.crop_padding < 32, f"augment.crop_padding must be in [0, 31] (got {recipe.augment.crop_padding})"),
        (recipe.augment.flip or not recipe.augment.alternate_flip, "augment.alternate_flip needs augment.flip: true"),
        (0 <= recipe.augment.cutout <= 32, f"augment.cutout must be in [0, 32] (got {recipe.augment.cutout})"),
        (recipe.augment.mixup_alpha >= 0 and recipe.augment.cutmix_alpha >= 0, "mixup/cutmix alpha must be >= 0"),
        (0 <= recipe.regularization.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        (recipe.regularization.weight_decay >= 0, "weight_decay must be >= 0"),
        (recipe.regularization.dropout == -1.0 or 0 <= recipe.regularization.dropout < 1, "dropout must be -1 or in [0, 1)"),
        (recipe.regularization.early_stopping_patience >= 0, "early_stopping_patience must be >= 0"),
        (
            32 <= recipe.transfer.resolution <= 1024,
            f"transfer.resolution must be in [32, 1024] (got {recipe.transfer.resolution})",
        ),
        (
            recipe.transfer.head in ("gap_dense128", "flatten_mlp", "gap_bn_dropout"),
            f"transfer.head must be gap_dense128, flatten_mlp or gap_bn_dropout (got {recipe.transfer.head!r})",
        ),
        (recipe.transfer.head_steps >= 0 and recipe.transfer.finetune_epochs >= 0,
         "transfer.head_steps and transfer.finetune_epochs must be >= 0"),
        (recipe.transfer.head_patience >= 0, f"transfer.head_patience must be >= 0 (got {recipe.transfer.head_patience})"),
        (
            recipe.transfer.head_steps + recipe.transfer.finetune_epochs >= 1,
            "transfer.head_steps and transfer.finetune_epochs are both 0: nothing would train; set either above 0",
        ),
        (recipe.transfer.finetune_blocks >= 0, "transfer.finetune_blocks must be >= 0"),
        (recipe.transfer.head_lr_per_1024 > 0, f"transfer.head_lr_per_1024 must be > 0 (got {recipe.transfer.head_lr_per_1024})"),
        (recipe.transfer.finetune_lr_factor > 0, f"transfer.finetune_lr_factor must be > 0 (got {recipe.transfer.finetune_lr_factor})"),
        (0 < recipe.transfer.finetune_lr_decay <= 1,
         f"transfer.finetune_lr_decay must be in (0, 1] (got {recipe.transfer.finetune_lr_decay}); 1 gives every block the head's rate"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConvbenchError(f"model {name}: {message}")


# ---------------------------------------------------------------------------------------------
# Presets


def preset(name: str) -> RunConfig:
    """The named preset.

    `quick` trains the three default models on the full CIFAR-10 on a CPU: few epochs, narrow custom
    nets, transfer at 160 px with the head alone trained on cached features (measured on all of
    CIFAR-10 in README "Transfer learning": 160 px beat 128 and 192 px, and one fine-tuning epoch
    did not beat the head alone). `full` is the real comparison, sized for a GPU: 224 px, ten
    fine-tuning epochs of the top three blocks.

    Args:
        name: "quick" or "full".

    Returns:
        The preset's RunConfig.
    """
    if name == "quick":
        return RunConfig(
            preset="quick",
            # Epochs sized on bf16 speed (README "Start here"): about 20 minutes in all on 2 AMX cores.
            train=TrainConfig(epochs=10, global_batch_size=256, lr_per_1024=0.8),
            regularization=RegularizationConfig(label_smoothing=0.1, weight_decay=5e-4),
            # Head only: on 2 cores one fine-tuning epoch at 160 px costs about 3 minutes, and one
            # did not beat the head at 128 px. `--epochs N` or `finetune_epochs: N` turns fine-tuning of the top block on.
            transfer=TransferConfig(resolution=160, finetune_epochs=0, finetune_blocks=1),
            # cnn_vgg without dropout: at a CPU budget it underfits; at 5 epochs dropout cost it 6.97
            # points of test accuracy on all of CIFAR-10 (README "Augmentation and regularization at the quick budget").
            overrides={"cnn_resnet": ModelOverride(train={"epochs": 8}),
                       "cnn_vgg": ModelOverride(regularization={"dropout": 0.0})},
        )
    if name == "full":
        return RunConfig(
            preset="full",
            train=TrainConfig(epochs=40, global_batch_size=512, lr_per_1024=0.8),
            augment=AugmentConfig(crop_padding=4, flip=True, cutout=8),
            regularization=RegularizationConfig(label_smoothing=0.1, weight_decay=5e-4, early_stopping_patience=10),
            transfer=TransferConfig(resolution=224, finetune_epochs=10, finetune_blocks=3),
        )
    raise ConvbenchError(f"unknown preset {name!r}; use --preset quick or --preset full")


# ---------------------------------------------------------------------------------------------
# YAML form


def to_dict(config: RunConfig) -> dict:
    """Plain-data form of a RunConfig (what config.yaml holds)."""

    def convert(value):
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items() if v is not None}
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        return value

    data = convert(config)
    data["overrides"] = {k: {s: dict(v) for s, v in ov.items() if v} for k, ov in data["overrides"].items()}
    return data


def from_dict(data: Mapping[str, Any], base: RunConfig | None = None, where: str = "config") -> RunConfig:
    """Build a RunConfig from plain data, starting from `base` (default: the quick preset).

    Args:
        data: nested mapping as read from YAML; absent keys keep the base value.
        base: the config to update.
        where: prefix for error messages (e.g. the file name).

    Returns:
        The updated RunConfig.

    Raises:
        ConvbenchError: unknown key or wrong type, naming the key and the expected type.
    """
    if not isinstance(data, Mapping):
        raise ConvbenchError(f"{where} must be a mapping of keys (like `models:`), not {type(data).__name__}")
    if base is None:
        base = preset(str(data.get("preset", "quick"))) if isinstance(data, Mapping) and data.get("preset") in ("quick", "full") else preset("quick")
    return _from_dict(RunConfig, dict(data), where, base)


def load_yaml(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Read a YAML config with the safe loader.

    Args:
        path: the file.
        base: the config it updates (default: the preset it names, else quick).

    Returns:
        The RunConfig.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConvbenchError(f"config file {path} does not exist; check the path given to --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvbenchError(f"cannot read config file {path}: {exc}; check its permissions and encoding") from None
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        # Tags such as !!python/object are refused by the safe loader: nothing in a config is executed.
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConvbenchError(
            f"config file {path} has a value convbench cannot read{at} ({(exc.problem or 'unsupported tag').splitlines()[0]}); "
            "use plain numbers, strings, lists and mappings"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConvbenchError(f"config file {path} is not valid YAML{at}; fix the syntax there") from None
    except (ValueError, OverflowError) as exc:
        # PyYAML builds dates itself and raises plain errors for impossible ones (2024-13-01).
        raise ConvbenchError(f"config file {path} has a value YAML cannot convert ({exc}); quote it or fix it") from None
    except RecursionError:
        raise ConvbenchError(f"config file {path} is nested too deeply to be a convbench config; fix its structure") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConvbenchError(f"config file {path} must hold a mapping of keys (like `models:`), not {type(data).__name__}")
    try:
        return from_dict(data, base)
    except ConvbenchError as exc:
        raise ConvbenchError(f"{path}: {exc}") from None


def save_yaml(config: RunConfig, path: str | Path) -> None:
    """Write config.yaml (the resolved config of a run)."""

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


# Keys earlier versions accepted, with what replaced them, so an old config fails with the fix.
RENAMED_KEYS = {
    "frozen_epochs": "was replaced by head_steps (optimizer steps of the head phase, which now trains to convergence); "
                     "remove it, or set head_steps",
}


def _from_dict(cls, data: dict, where: str, base):
    if not isinstance(data, dict):
        raise ConvbenchError(f"{where} must be a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names), key=str)  # YAML keys may be numbers, not only strings
    if unknown and unknown[0] in RENAMED_KEYS:
        raise ConvbenchError(f"{where}: {unknown[0]!r} {RENAMED_KEYS[unknown[0]]}")
    if unknown:
        raise ConvbenchError(f"{where}: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    changes = {}
    for key, value in data.items():
        changes[key] = _coerce(hints[key], value, f"{where}.{key}", getattr(base, key))
    return dataclasses.replace(base, **changes)


_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _coerce(hint, value, where: str, current):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value if isinstance(value, dict) else _bad(where, "a mapping", value), where, current)
    if hint is bool:
        if isinstance(value, bool):
            return value
        return _bad(where, "true or false", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return _bad(where, "an integer", value)
    if hint is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
            value = float(value)  # YAML 1.1 (PyYAML) reads 2.0e15 as text; YAML 1.2 and users mean a number
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return _bad(where, "a number", value)
    if hint is str:
        if isinstance(value, str):
            return value
        return _bad(where, "a string", value)
    if origin is tuple and typing.get_args(hint)[0] is float:
        if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(float(v) for v in value)
        return _bad(where, "a list of numbers", value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        return _bad(where, "a list of names", value)
    if origin in (typing.Union, types.UnionType):  # Mapping[str, Any] | None in ModelOverride
        if value is None:
            return None
        if isinstance(value, dict):
            return dict(value)
        return _bad(where, "a mapping", value)
    if origin in (Mapping, dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return _bad(where, "a mapping of model name to overrides", value)
        result = {}
        for model, over in value.items():
            result[str(model)] = _from_dict(ModelOverride, over if isinstance(over, dict) else _bad(f"{where}.{model}", "a mapping", over), f"{where}.{model}", ModelOverride())
        return result
    raise AssertionError(f"unhandled type {hint} for {where}")  # a programming error, not user input


def _bad(where: str, expected: str, value):
    raise ConvbenchError(f"{where} must be {expected}, got {value!r}; fix it in the config file")


def with_epochs(cfg, epochs: int):
    """Every model trains `epochs` epochs of full training (transfer models: fine-tuning epochs, after the head)."""

    if epochs < 1:
        raise ConvbenchError(f"--epochs must be >= 1, got {epochs}")
    overrides = {}
    for name, over in cfg.overrides.items():
        train = {k: v for k, v in (over.train or {}).items() if k != "epochs"} or None
        transfer = {k: v for k, v in (over.transfer or {}).items() if k != "finetune_epochs"} or None
        overrides[name] = dataclasses.replace(over, train=train, transfer=transfer)
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, epochs=epochs),
        transfer=dataclasses.replace(cfg.transfer, finetune_epochs=epochs),
        overrides={k: v for k, v in overrides.items() if v != ModelOverride()},
    )


# `resolve` takes a keyword named `preset`, like the flag; the function stays reachable under this name.
_named_preset = preset


def resolve(*, preset: str | None = None, config_file: str | Path | None = None, data: str | None = None,
            max_train_images: int | None = None, max_test_images: int | None = None, strict: bool | None = None,
            models: str | Sequence[str] | None = None, seeds: int | None = None, global_batch_size: int | None = None,
            epochs: int | None = None, lang: str | None = None,
            check_model: Callable[[str], Any] | None = None) -> RunConfig:
    """Preset, then the YAML config file, then the given values: the one way a RunConfig is resolved.

    `convbench run` (and every command with its options) and the pipeline's prepare-data step both
    call this; None means "not given" for every value.

    Args:
        preset: quick (the default) or full.
        config_file: a YAML config applied over the preset.
        data, max_train_images, max_test_images, strict: the data section's values.
        models: comma-separated names or a sequence; per-model overrides of other models are dropped.
        seeds, global_batch_size: as in the config.
        epochs: every model's epochs of full training (`with_epochs`).
        lang: the report language (checked).
        check_model: called with each model name before validation (the registry's `model_info`,
            which raises for an unknown name); the config layer does not know the registry.

    Returns:
        The validated RunConfig.
    """
    base = _named_preset(preset or "quick")
    cfg = load_yaml(config_file, base) if config_file else base
    if preset and config_file:
        cfg = dataclasses.replace(cfg, preset=preset)
    data_changes = {k: v for k, v in {
        "source": data, "max_train_images": max_train_images, "max_test_images": max_test_images,
        "strict": strict}.items() if v is not None}
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_changes))
    if models:
        names = tuple(n.strip() for n in (models.split(",") if isinstance(models, str) else models) if n.strip())
        cfg = dataclasses.replace(cfg, models=names, overrides={k: v for k, v in cfg.overrides.items() if k in names})
    if seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=seeds)
    if global_batch_size is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, global_batch_size=global_batch_size))
    if epochs is not None:
        cfg = with_epochs(cfg, epochs)
    if lang is not None:
        cfg = dataclasses.replace(cfg, lang=check_language(lang))
    for name in cfg.models:
        if check_model is not None:
            check_model(name)
    return cfg.validate()
