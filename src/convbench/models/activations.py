"""`FusedActivation`: ReLU and GELU as one fused loop each way in bf16 on CPUs.

    .venv/bin/pytest tests/test_precision.py -q -k fused_activation

On a CPU, TensorFlow runs an activation op by op through Eigen, and in bf16 each op converts every
element to float32 and back: exact GELU forward and backward on 256x32x32x64 bf16 values took
165 ms on a 2-core Intel Xeon with AMX, and before this layer `tools/profile_step.py cnn_airbench`
put GELU's ops at 58 % of a bf16 step. The same arithmetic in float32, compiled by XLA into one
fused loop for the forward and one for the gradient, took 31 ms, and it is closer to float32's
exact GELU than Keras' bf16 one (largest error of value or gradient 0.032 against 0.044;
`python tools/op_timings.py`). XLA is slow for
convolutions on CPUs, so only these element-wise functions are compiled, inside the usual graph.

ReLU's gradient, an unfused `ReluGrad` in bf16, is compiled the same way (its forward stays
`tf.nn.relu`, which TensorFlow fuses into a preceding batch norm). Float32 and GPUs run Keras' own
activations; the layer keeps `Activation`'s config, so models save and load as before.
"""

from __future__ import annotations

import functools
import math

from convbench.models.cpu_bf16 import bf16_on_cpu


@functools.cache
def _fused_functions() -> dict:
    """{name: custom-gradient function} with XLA-compiled forward and backward (built once)."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def gelu_forward(x):
        x32 = tf.cast(x, tf.float32)
        return tf.cast(0.5 * x32 * tf.math.erfc(-x32 * (1.0 / math.sqrt(2.0))), x.dtype)

    @tf.function(jit_compile=True)
    def gelu_backward(x, dy):
        x32 = tf.cast(x, tf.float32)
        cdf = 0.5 * tf.math.erfc(-x32 * (1.0 / math.sqrt(2.0)))
        pdf = tf.exp(-0.5 * tf.square(x32)) * (1.0 / math.sqrt(2.0 * math.pi))
        return tf.cast(tf.cast(dy, tf.float32) * (cdf + x32 * pdf), x.dtype)

    @tf.function(jit_compile=True)
    def relu_backward(y, dy):
        return tf.where(y > 0, dy, tf.zeros_like(dy))

    @tf.custom_gradient
    def gelu(x):
        return gelu_forward(x), lambda dy: gelu_backward(x, dy)

    @tf.custom_gradient
    def relu(x):
        y = tf.nn.relu(x)
        return y, lambda dy: relu_backward(y, dy)

    return {"gelu": gelu, "relu": relu}


@functools.cache
def fused_activation_class():
    """FusedActivation: keras.layers.Activation with XLA-fused GELU and ReLU in bf16 on CPUs."""
    import keras

    @keras.saving.register_keras_serializable(package="convbench")
    class FusedActivation(keras.layers.Activation):
        """Activation whose GELU (exact) and ReLU run as fused loops in bf16 on a CPU."""

        def call(self, inputs):
            name = getattr(self.activation, "__name__", "")
            if name in ("gelu", "relu") and bf16_on_cpu(self):
                return _fused_functions()[name](inputs)
            return super().call(inputs)

    return FusedActivation


def activation(kind: str, name: str):
    """A FusedActivation layer of Keras' activation `kind` ("gelu", "relu", ...)."""
    return fused_activation_class()(kind, name=name)
