"""Forward FLOPs per image, counted analytically from the layers.

FLOPs = 2 x multiply-accumulates of every convolution and dense layer (the convention of the
ResNet and EfficientNet papers' "FLOPs" doubled, and of MFU arithmetic). BatchNorm, activations,
pooling, resizing and additions are not counted: they are a few percent of a CNN's work.

    python -c "from convbench.models import create_model; from convbench.models.flops import count_flops; print(count_flops(create_model('cnn_vgg')))"
"""

from __future__ import annotations

import math


def _prod(shape) -> int:
    return int(math.prod(int(d) for d in shape))


def layer_flops(layer) -> int:
    """FLOPs of one (non-nested) layer for a single example."""
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        out = layer.output.shape  # (None, H, W, C*mult)
        return 2 * kh * kw * _prod(out[1:])
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        out = layer.output.shape
        cin = layer.input.shape[-1]
        depth = 2 * kh * kw * cin * layer.depth_multiplier * _prod(out[1:3])
        point = 2 * cin * layer.depth_multiplier * _prod(out[1:])
        return depth + point
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = layer.input.shape[-1] // layer.groups
        return 2 * kh * kw * cin * _prod(layer.output.shape[1:])
    if isinstance(layer, keras.layers.Dense):
        cin = layer.input.shape[-1]
        return 2 * cin * _prod(layer.output.shape[1:])
    return 0


def count_flops(model) -> int:
    """Forward FLOPs per image of a Keras model (nested models included).

    Args:
        model: a built functional keras.Model.

    Returns:
        FLOPs for one example.
    """
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            total += count_flops(layer)
        else:
            total += layer_flops(layer)
    return total
