"""Single-op timings behind convbench's bf16 layers, each against what it replaces.

    .venv/bin/python tools/op_timings.py

Times, on this machine, in one run and interleaved (best of `--repeats` rounds of 10 calls):
- the weight gradient of a 3x3 conv, 192 -> 192 channels at 4x4, batch 256: oneDNN's native
  kernel in bf16 and float32, and `SmallMapConv2D`'s forward-convolution form in bf16;
- the forward pass of the first conv, 3 -> 32 channels at 32x32: 3 input channels, and 4;
- exact GELU forward + backward on 256x32x32x64 values: Keras' bf16 ops, and `FusedActivation`'s
  XLA loops; with each one's largest error against float32's exact GELU.
These are the figures of docs/precision-and-performance.md; what they add up to in training is
`convbench bench`'s to measure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _best_ms(fn, args, calls: int = 10) -> float:
    fn(*args)
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
    (out[0] if isinstance(out, (tuple, list)) else out).numpy()
    return (time.perf_counter() - start) / calls * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best is printed (default 3)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from convbench.models.activations import fused_activation_class
    from convbench.models.conv import weight_grad_as_conv

    bf16, f32 = tf.bfloat16, tf.float32
    rng = tf.random.Generator.from_seed(0)

    def weight_grad(dtype):
        x, dy = (tf.cast(rng.normal(shape), dtype) for shape in ((256, 4, 4, 192), (256, 4, 4, 192)))
        return x, dy

    def native(x, dy):
        return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[3, 3, 192, 192], out_backprop=dy,
                                               strides=[1, 1, 1, 1], padding="SAME")

    def first_conv(channels):
        return tf.cast(rng.normal((256, 32, 32, channels)), bf16), tf.cast(rng.normal((3, 3, channels, 32)), bf16)

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    fused_gelu, keras_gelu = fused_activation_class()("gelu"), keras.layers.Activation("gelu")
    keras.mixed_precision.set_dtype_policy("float32")
    exact_gelu = keras.layers.Activation("gelu")

    def gelu_step(layer):
        def step(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            return y, tape.gradient(y, x, output_gradients=dy)
        return tf.function(step)

    gelu_x32, gelu_dy32 = rng.normal((256, 32, 32, 64)), rng.normal((256, 32, 32, 64))
    gelu_x, gelu_dy = tf.cast(gelu_x32, bf16), tf.cast(gelu_dy32, bf16)
    cases = {
        "weight gradient 4x4 192->192, oneDNN bf16": (tf.function(native), weight_grad(bf16)),
        "weight gradient 4x4 192->192, oneDNN float32": (tf.function(native), weight_grad(f32)),
        "weight gradient 4x4 192->192, as a forward conv, bf16": (
            tf.function(lambda x, dy: weight_grad_as_conv(x, dy, (3, 3))), weight_grad(bf16)),
        "first conv 3->32 at 32x32, bf16, 3 input channels": (tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME")), first_conv(3)),
        "first conv 3->32 at 32x32, bf16, 4 input channels": (tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME")), first_conv(4)),
        "GELU forward+backward 256x32x32x64, Keras bf16": (gelu_step(keras_gelu), (gelu_x, gelu_dy)),
        "GELU forward+backward 256x32x32x64, FusedActivation bf16": (gelu_step(fused_gelu), (gelu_x, gelu_dy)),
    }
    best = {name: float("inf") for name in cases}
    for _ in range(args.repeats):
        for name, (fn, fn_args) in cases.items():
            best[name] = min(best[name], _best_ms(fn, fn_args))
    y_exact, g_exact = gelu_step(exact_gelu)(gelu_x32, gelu_dy32)
    errors = {}
    for label, layer in (("Keras bf16", keras_gelu), ("FusedActivation bf16", fused_gelu)):
        y, g = gelu_step(layer)(gelu_x, gelu_dy)
        errors[label] = max(float(tf.reduce_max(tf.abs(tf.cast(y, f32) - y_exact))),
                            float(tf.reduce_max(tf.abs(tf.cast(g, f32) - g_exact))))
    print(f"load average {os.getloadavg()[0]:.2f}; best of {args.repeats} interleaved rounds of 10 calls")
    for name, ms in best.items():
        print(f"{ms:9.2f} ms  {name}")
    for label, err in errors.items():
        print(f"GELU largest error against float32's exact GELU (value or gradient), {label}: {err:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
