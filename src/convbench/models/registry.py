"""`register_model`, `create_model`, `list_models`: one registry for every architecture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from convbench.errors import ConvbenchError


@dataclass(frozen=True)
class ModelInfo:
    """A registered architecture."""

    name: str
    kind: str  # "custom" (designed here, trained from scratch) or "transfer" (pretrained backbone)
    builder: Callable
    description: str  # one line for `convbench models`
    # Built mostly of depthwise convolutions (MobileNet, EfficientNet): oneDNN runs those in bf16 on
    # AVX512 kernels, not AMX, slower than float32, so `mixed_precision: auto` keeps them float32 on CPUs.
    depthwise: bool = False


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, kind: str, description: str = "", depthwise: bool = False) -> Callable:
    """Decorator registering `builder(num_classes, input_shape, **kwargs) -> keras.Model`.

    Args:
        name: registry key (snake_case).
        kind: "custom" or "transfer".
        description: one line; defaults to the first line of the builder's docstring.
        depthwise: the architecture is built mostly of depthwise convolutions (see ModelInfo).
    """
    if kind not in ("custom", "transfer"):
        raise ValueError(f"kind must be custom or transfer, got {kind!r}")

    def decorate(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = description or (builder.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = ModelInfo(name=name, kind=kind, builder=builder, description=doc, depthwise=depthwise)
        return builder

    return decorate


def list_models(kind: str | None = None) -> list[str]:
    """Registered names, sorted; only one kind when `kind` is given."""
    return sorted(n for n, info in _REGISTRY.items() if kind is None or info.kind == kind)


def model_info(name: str) -> ModelInfo:
    """The ModelInfo of `name`; an unknown name is a ConvbenchError listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConvbenchError(f"unknown model {name!r}; choose from {', '.join(list_models())} (see `convbench models`)") from None


def create_model(name: str, num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 3), **kwargs):
    """Build a registered model.

    Every model takes float32 pixels in [0, 255] of `input_shape` and returns `num_classes` logits;
    each does its own normalisation (and resizing, for pretrained backbones).

    Args:
        name: a name from `list_models()`.
        num_classes: output classes.
        input_shape: (height, width, channels) of the input images.
        **kwargs: builder options (e.g. `width`, `dropout`; for transfer models `resolution`, `head`,
            `weights`, `weights_dir`).

    Returns:
        An unbuilt-optimizer keras.Model.
    """
    info = model_info(name)
    if num_classes < 2:
        raise ConvbenchError(f"num_classes must be >= 2, got {num_classes}")
    return info.builder(num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
