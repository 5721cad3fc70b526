"""`SmallMapConv2D`: Keras' Conv2D, faster in bf16 on CPUs for RGB inputs and small feature maps.

    .venv/bin/pytest tests/test_precision.py -q -k small_map

oneDNN's bf16 weight-gradient kernel (`brgconv_bwd_w` on AMX) is slow on small feature maps: a
3x3 conv of 192 -> 192 channels at 4x4, batch 256, took 11.3 ms for its weight gradient, slower
than float32's 10.8 ms, on a 2-core Intel Xeon with AMX (`python tools/op_timings.py`;
`python tools/profile_step.py cnn_resnet` shows the weight gradients' share of a step). The weight gradient is itself a convolution:

    dW[i, j, c, o] = sum over n, h, w of x_padded[n, h + i, w + j, c] * dy[n, h, w, o]

which is a "valid" forward convolution of the padded input, transposed to (c, h, w, n), with the
output gradient, transposed to (h, w, n, o), as its kernel. oneDNN's forward AMX kernel computes it
in 4.8 ms at 4x4 (2.3x faster); at 8x8 and above it is slower than the native kernel, so only maps
of at most `SMALL_MAP_PIXELS` pixels take this path.

An RGB input has 3 channels, an odd fit for the bf16 kernels: the first 3x3 conv of 3 -> 32
channels at 32x32, batch 256, took 2.8 ms forward in bf16 with 3 input channels and 2.0 ms with 4.
So an input of fewer than 4 channels gets zero channels (and the kernel zero rows) up to 4, which
adds nothing to any output.

Same weights, same config, same arithmetic up to the summation order: weights load into and from a
plain Conv2D, and float32 and GPUs always run Keras' own code.
"""

from __future__ import annotations

import functools

from convbench.models.cpu_bf16 import bf16_on_cpu

# Feature maps of at most this many pixels (4x4) take the forward-convolution weight gradient.
SMALL_MAP_PIXELS = 16
# Inputs of fewer channels than this are zero-padded to it (an RGB image: 3 -> 4).
MIN_INPUT_CHANNELS = 4

def weight_grad_as_conv(x, dy, kernel_size):
    """The kernel gradient of a stride-1 "same" convolution, computed as one forward "valid" one.

    Args:
        x: the convolution's input, (n, h, w, c).
        dy: the gradient of its output, (n, h, w, o).
        kernel_size: (kh, kw).

    Returns:
        dW, (kh, kw, c, o), in the inputs' dtype.
    """
    import tensorflow as tf

    kh, kw = kernel_size
    padded = tf.pad(x, [[0, 0], [(kh - 1) // 2, kh // 2], [(kw - 1) // 2, kw // 2], [0, 0]])
    images = tf.transpose(padded, [3, 1, 2, 0])  # (c, h + kh - 1, w + kw - 1, n): channels as the batch
    kernel = tf.transpose(dy, [1, 2, 0, 3])  # (h, w, n, o): the output gradient as the kernel
    return tf.transpose(tf.nn.conv2d(images, kernel, strides=1, padding="VALID"), [1, 2, 0, 3])


@functools.cache
def small_map_conv_class():
    """The SmallMapConv2D layer class (built on first use, so importing the registry does not import Keras)."""
    import keras

    @keras.saving.register_keras_serializable(package="convbench")
    class SmallMapConv2D(keras.layers.Conv2D):
        """Conv2D for bf16 on CPUs: a 3-channel input padded to 4; on maps of at most 16 pixels, the weight gradient as a forward conv."""

        def _bf16_on_cpu(self) -> bool:
            return bf16_on_cpu(self) and self.data_format == "channels_last" and self.groups == 1

        def _small_map(self, inputs) -> bool:
            h, w = inputs.shape[1], inputs.shape[2]
            return (self.padding == "same" and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1)
                    and h is not None and w is not None and h * w <= SMALL_MAP_PIXELS)

        def convolution_op(self, inputs, kernel):
            # Keras' Conv2D.call adds the bias and the activation around this; only the
            # convolution itself changes.
            if not self._bf16_on_cpu():
                return super().convolution_op(inputs, kernel)
            import tensorflow as tf

            channels = inputs.shape[-1]
            if channels is not None and channels < MIN_INPUT_CHANNELS:
                pad = MIN_INPUT_CHANNELS - channels
                return super().convolution_op(tf.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, pad]]),
                                              tf.pad(kernel, [[0, 0], [0, 0], [0, pad], [0, 0]]))
            if not self._small_map(inputs):
                return super().convolution_op(inputs, kernel)
            kernel_size = tuple(self.kernel_size)

            @tf.custom_gradient
            def conv(x, k):
                def grad(dy):
                    dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=k, out_backprop=dy,
                                                         strides=[1, 1, 1, 1], padding="SAME")
                    return dx, weight_grad_as_conv(x, dy, kernel_size)

                return tf.nn.conv2d(x, k, strides=1, padding="SAME"), grad

            # The kernel as a bf16 tensor outside the custom gradient, so the variable is read (and
            # its gradient flows) through the cast, not inside the function.
            return conv(inputs, tf.cast(kernel, self.compute_dtype))

    return SmallMapConv2D


def conv2d(filters: int, kernel_size, **kwargs):
    """A SmallMapConv2D layer taking Conv2D's arguments."""
    return small_map_conv_class()(filters, kernel_size, **kwargs)
