"""When a layer takes convbench's bf16-on-CPU code paths (`SmallMapConv2D`, `FusedActivation`)."""

from __future__ import annotations


def bf16_on_cpu(layer) -> bool:
    """The layer computes in bfloat16 through TensorFlow with no GPU visible.

    On GPUs (cuDNN) and in float32 the layers keep Keras' own code: their bf16 paths were measured
    only on CPUs (oneDNN), where they pay.
    """
    import keras

    if keras.backend.backend() != "tensorflow" or layer.compute_dtype != "bfloat16":
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")
