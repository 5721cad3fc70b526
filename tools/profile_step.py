"""Where a training step's time goes: TensorFlow's own profiler, summed per op type.

    .venv/bin/python tools/profile_step.py cnn_vgg --policy mixed_bfloat16
    .venv/bin/python tools/profile_step.py cnn_resnet --policy float32 --batch 256 --steps 5

Builds a registered model, runs a bare training step (forward, softmax cross-entropy, backward,
Nesterov SGD) on random data a few times, then traces `--steps` more with `tf.profiler` and prints
the milliseconds per step of each op type (`_MklNativeConv2DBackpropFilter`, `ReluGrad`, ...),
largest first. Inter-op parallelism is 1 while tracing, so the op times add up to the step.
This is how the bf16 changes of README "Precision and performance" were found; the trace goes to
a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

# Ops that are containers of other ops (an XLA launch around its fused kernels, a parallel-for
# around its shards) or the profiler's own bookkeeping, not work.
_NOT_WORK = {"Process", "StartRegion", "StopRegion", "Record", "MemoryAllocation", "MemoryDeallocation",
             "ExecutorDoneCallback", "ParallelFor", "Start", "ExecuteAsyncOnStream"}


def profile_step(name: str, policy: str, batch: int, steps: int) -> tuple[float, list[tuple[str, float, float]]]:
    """Images/s of the traced steps and (op type, ms per step, calls per step), largest first."""
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from convbench.models import create_model

    keras.mixed_precision.set_global_policy(policy)
    model = create_model(name, num_classes=10)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, 256, (batch, 32, 32, 3)).astype("float32"))
    y = tf.one_hot(rng.integers(0, 10, batch), 10)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(3):
        step(x, y).numpy()
    with tempfile.TemporaryDirectory(prefix="convbench-profile-") as logdir:
        tf.profiler.experimental.start(logdir)
        started = time.perf_counter()
        for _ in range(steps):
            step(x, y).numpy()
        seconds = time.perf_counter() - started
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    total: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                op = plane.event_metadata[event.metadata_id].name.split(":")[-1]
                if op not in _NOT_WORK:
                    total[op] += event.duration_ps / 1e9
                    calls[op] += 1
    rows = sorted(((op, ms / steps, calls[op] / steps) for op, ms in total.items()), key=lambda r: -r[1])
    return batch * steps / seconds, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a registered model, e.g. cnn_vgg")
    parser.add_argument("--policy", default="mixed_bfloat16", help="Keras dtype policy (default mixed_bfloat16)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="traced steps (default 3)")
    parser.add_argument("--top", type=int, default=20, help="op types to print (default 20)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    images_per_s, rows = profile_step(args.model, args.policy, args.batch, args.steps)
    step_ms = sum(ms for _, ms, _ in rows)
    print(f"{args.model}, {args.policy}, batch {args.batch}: {images_per_s:,.0f} img/s while traced; "
          f"ops sum to {step_ms:.1f} ms per step; load average {os.getloadavg()[0]:.2f}")
    for op, ms, n in rows[:args.top]:
        print(f"{ms:9.2f} ms  {100 * ms / step_ms:5.1f} %  {n:5.1f} calls  {op}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
