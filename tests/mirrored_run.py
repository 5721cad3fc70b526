"""Train one model with `convbench.training.recipes.fit_model` on 1 replica and on 2 (MirroredStrategy); print JSON.

    python tests/mirrored_run.py cnn_vgg [--sync-batchnorm] [--precision off]

Run in its own process by tests/test_mirrored.py: two logical CPU devices must be configured
before TensorFlow initialises, and that split would leak into every later test of a pytest
process. Both runs use the same seed, data, recipe and global batch, in float32 with dropout off
(dropout masks are drawn per replica), so their losses differ only by what the replica split
changes: BatchNorm statistics per replica slice, unless --sync-batchnorm all-reduces them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np


def separable(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int32)
    x = np.where(y[:, None, None, None] == 1, 170, 70) + rng.integers(-50, 50, (n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--sync-batchnorm", action="store_true")
    parser.add_argument("--precision", default="off")
    args = parser.parse_args()

    import tensorflow as tf

    [cpu] = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from convbench.data.augment import make_train_dataset
    from convbench.config import RegularizationConfig, TrainConfig, preset
    from convbench.data.datasets import Dataset
    from convbench.training.recipes import fit_model
    from convbench.models import model_info
    from convbench.training.loop import Trainer

    x, y = separable(256, 0)
    xv, yv = separable(64, 1)
    data = Dataset(x, y, xv, yv, xv, yv, ["dark", "bright"], "synthetic")
    base = preset("quick").recipe(args.model)
    transfer = model_info(args.model).kind == "transfer"
    recipe = dataclasses.replace(
        base,
        train=TrainConfig(epochs=2, global_batch_size=32, lr_per_1024=0.4, warmup_epochs=0.5, mixed_precision=args.precision,
                          eval_batch_size=32, steps_per_execution=2, sync_batchnorm=args.sync_batchnorm),
        regularization=dataclasses.replace(base.regularization, dropout=0.0, early_stopping_patience=0),
        transfer=dataclasses.replace(base.transfer, resolution=32, head_steps=16, finetune_epochs=1, finetune_blocks=1),  # two rounds of 8 steps
    )
    out = {"model": args.model, "transfer": transfer}
    if transfer:
        # keras.applications backbones with random weights (no ImageNet weights can be downloaded
        # in the tests) give near-constant features at 32 px; the test needs to know.
        from convbench.training.recipes import build_model

        probe, _, _ = build_model(args.model, 2, recipe, weights=None)
        out["feature_std"] = float(probe.get_layer("features")(x[:16].astype("float32"), training=False).numpy().std(axis=0).mean())
    for label, strategy in (("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                            ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        model, result = fit_model(args.model, data, recipe, strategy=strategy, weights=None)
        # How the Trainer splits a global batch over this strategy's replicas.
        trainer = Trainer(model, recipe.train, RegularizationConfig(), strategy, 1, 1)
        images, _ = next(iter(trainer._distribute(make_train_dataset(x, y, 2, 32, recipe.augment, 0, 0))))
        out[label] = {
            "replicas": strategy.num_replicas_in_sync,
            "replica_batches": [int(v.shape[0]) for v in strategy.experimental_local_results(images)],
            "history": [dataclasses.asdict(r) for r in result.history],
        }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
