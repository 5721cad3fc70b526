"""Frozen-feature speed of a transfer model in float32 and in bf16, interleaved in one run.

    .venv/bin/python tools/feature_speed.py --resolutions 128,192

For each resolution, builds the model's `features` layer under each Keras global policy and times
`convbench.training.recipes.compute_features` (pooled, as for a GAP head) on 1,024 random images,
`--repeats` times in turn. Prints images per second, the load average, and how far the bf16
features are from float32's. This is the figure of docs/precision-and-performance.md behind
keeping depthwise models in float32 on CPUs also for their head-only (feature-caching) training.
"""

from __future__ import annotations

import argparse
import logging
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--resolutions", default="128,192", help="comma-separated input sides in pixels")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import keras
    import numpy as np

    from convbench.models.registry import create_model
    from convbench.training.recipes import compute_features

    logging.disable(logging.INFO)  # compute_features' progress lines
    policies = ("float32", "mixed_bfloat16")
    resolutions = [int(r) for r in args.resolutions.split(",")]
    images = np.random.default_rng(0).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    features = {}
    for r in resolutions:
        for policy in policies:
            keras.mixed_precision.set_global_policy(policy)
            features[r, policy] = create_model(args.model, resolution=r, head="gap_bn_dropout").get_layer("features")
            compute_features(features[r, policy], images[:256], 256, pool=True)  # trace once
    keras.mixed_precision.set_global_policy("float32")
    speed: dict = {}
    for _ in range(args.repeats):
        for r in resolutions:
            outputs = {}
            for policy in policies:
                started = time.perf_counter()
                outputs[policy] = compute_features(features[r, policy], images, 256, pool=True).astype(np.float32)
                speed.setdefault((r, policy), []).append(len(images) / (time.perf_counter() - started))
            gap = np.abs(outputs["float32"] - outputs["mixed_bfloat16"]).mean() / np.abs(outputs["float32"]).mean()
            print(f"{args.model} {r} px: bf16 features differ from float32's by {gap:.1%} (mean absolute, relative)")
    for (r, policy), values in speed.items():
        print(f"{args.model} {r} px {policy}: " + ", ".join(f"{v:,.0f}" for v in values) + " img/s")
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
