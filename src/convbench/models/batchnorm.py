"""`FusedBatchNorm`: Keras' BatchNormalization computed by TensorFlow's fused kernel, for bf16 on CPUs.

    .venv/bin/pytest tests/test_batchnorm.py -q

Keras 3's BatchNormalization casts a bfloat16 input to float32 and computes the moments op by op;
under `mixed_bfloat16` on a CPU with AMX that unfused float32 work costs more than the
convolutions it sits between (a conv-BN-ReLU net measured 149 img/s in float32 and 149 in bf16
with Keras' BN, 666 in bf16 with the fused kernel: ../shared/ENVIRONMENT.md). This layer runs
`FusedBatchNormV3`, which oneDNN implements for a bfloat16 input with float32 scale, offset and
statistics, so the activations stay in bf16 while every statistic is float32.

It is a subclass: the same weights in the same order (gamma, beta, moving_mean, moving_variance),
the same config and the same arithmetic (the moving variance is updated with the biased batch
variance, as Keras does), so weights saved from either layer load into the other, and code that
asks `isinstance(layer, keras.layers.BatchNormalization)` (freezing BN for fine-tuning) still
works. Cases the fused kernel does not cover (a mask, renormalisation, synchronized statistics
across replicas, inputs that are not 4-D channels-last) run Keras' own code.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

_CLASS = None
_SYNCHRONIZED = [False]  # set by `synchronized_statistics` while a model is built


def fused_batch_norm_class():
    """The FusedBatchNorm layer class (built lazily so importing the registry does not import Keras)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import keras

    @keras.saving.register_keras_serializable(package="convbench")
    class FusedBatchNorm(keras.layers.BatchNormalization):
        """BatchNormalization through TensorFlow's fused kernel; float32 statistics, any input dtype."""

        def _fused(self, inputs) -> bool:
            return (not self.renorm and not self.synchronized and len(inputs.shape) == 4
                    and self.axis in (-1, 3) and keras.backend.backend() == "tensorflow")

        def call(self, inputs, training=None, mask=None):
            if mask is not None or not self._fused(inputs):
                return super().call(inputs, training=training, mask=mask)
            import tensorflow as tf

            channels = int(inputs.shape[-1])
            # oneDNN's bf16 batch-norm kernels block channels by 16; other counts fall back to a
            # generic kernel that was 4.7x slower than float32 here (24 channels, 256x32x32:
            # 85.5 ms against 18.3 ms forward + backward). Such inputs get zero channels up to the
            # next multiple of 16 (statistics are per channel, so the real ones are unchanged) and
            # lose them again after the kernel: cheaper than float32 with its two casts.
            pad = -channels % 16 if inputs.dtype == tf.bfloat16 else 0
            x = tf.pad(inputs, [[0, 0]] * 3 + [[0, pad]]) if pad else tf.cast(inputs, self.compute_dtype)
            # autocast=False on these weights (Keras' build): they stay float32 under a mixed policy.
            scale = tf.convert_to_tensor(self.gamma) if self.scale else tf.ones([channels], tf.float32)
            offset = tf.convert_to_tensor(self.beta) if self.center else tf.zeros([channels], tf.float32)
            if pad:
                scale = tf.pad(scale, [[0, pad]], constant_values=1.0)
                offset = tf.pad(offset, [[0, pad]])
            if training and self.trainable:
                empty = tf.zeros([0], tf.float32)
                y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=self.epsilon,
                    exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
                mean, variance = mean[:channels], variance[:channels]
                # The kernel returns the unbiased (n - 1) variance for the running average; Keras
                # updates it with the biased one, and so does this layer.
                n = tf.cast(tf.size(x, out_type=tf.int64) // int(x.shape[-1]), tf.float32)  # values per channel
                variance = variance * tf.maximum(n - 1.0, 0.0) / tf.maximum(n, 1.0)
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
                self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
            else:
                mean, variance = tf.convert_to_tensor(self.moving_mean), tf.convert_to_tensor(self.moving_variance)
                if pad:
                    mean, variance = tf.pad(mean, [[0, pad]]), tf.pad(variance, [[0, pad]], constant_values=1.0)
                y, *_ = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=scale, offset=offset, mean=mean, variance=variance, epsilon=self.epsilon,
                    exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
            if pad:  # tf.slice: its gradient is a Pad; a strided slice's (StridedSliceGrad) took 31 ms here
                y = tf.slice(y, [0, 0, 0, 0], [-1, -1, -1, channels])
            return tf.cast(y, self.compute_dtype)

    _CLASS = FusedBatchNorm
    return _CLASS


@contextlib.contextmanager
def synchronized_statistics(on: bool) -> Iterator[None]:
    """Layers made by `batch_norm` inside this block all-reduce their batch statistics across replicas.

    Per-replica statistics (the default, as in Keras and PyTorch DDP) are computed on each
    replica's slice of the global batch; with small slices they get noisy, and synchronized
    statistics (`TrainConfig.sync_batchnorm`) make several replicas compute what one replica
    would on the whole batch, at the cost of one all-reduce per BatchNorm layer and step.
    """
    previous = _SYNCHRONIZED[0]
    _SYNCHRONIZED[0] = bool(on)
    try:
        yield
    finally:
        _SYNCHRONIZED[0] = previous


def batch_norm(**kwargs):
    """A FusedBatchNorm layer taking BatchNormalization's arguments (momentum, epsilon, center, ...)."""
    kwargs.setdefault("synchronized", _SYNCHRONIZED[0])
    return fused_batch_norm_class()(**kwargs)
