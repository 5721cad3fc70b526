"""`convbench gpu-check`: what a GPU user needs to trust convbench on their machine, in one command.

    make gpu-check ARGS="--data /path/to/cifar10-jpeg"      # installs the CUDA extra, then runs this
    convbench gpu-check --data cifar10 --out runs/gpu-check

It prints, and saves as gpu-check.json in --out: the GPUs TensorFlow sees (name, compute
capability), the precision policy `mixed_precision: auto` picks and why, the replicas
MirroredStrategy trains on, the training images/s of each default model (`convbench bench`, one
round, the float32 speed-up beside it), and the quick preset trained on CIFAR-10 with its wall time
and test accuracies. Sized for under 8 minutes on one modern GPU: `--max-train-images` trims the
quick run where a GPU is slower. Without a GPU it stops at once with one line saying so.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from convbench import rundir
from convbench.bench.benchmark import run_bench
from convbench.config import preset
from convbench.errors import ConvbenchError
from convbench.experiment.comparison import run_comparison
from convbench.io import atomic_write_json
from convbench.log import run_log
from convbench.training.loop import choose_precision, default_strategy

logger = logging.getLogger(__name__)

NO_GPU = ("no GPU is visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty); run gpu-check on a machine "
          "with an NVIDIA GPU and driver, with TensorFlow's CUDA build (`pip install -e \".[gpu]\"`, which `make gpu-check` does)")


def describe_gpus() -> list[dict]:
    """Name and compute capability of every GPU TensorFlow sees; a ConvbenchError when there is none."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise ConvbenchError(NO_GPU)
    out = []
    for dev in gpus:
        details = tf.config.experimental.get_device_details(dev)
        cc = details.get("compute_capability")
        out.append({"device": dev.name, "name": details.get("device_name", "?"),
                    "compute_capability": f"{cc[0]}.{cc[1]}" if cc else "?"})
    return out


def run_gpu_check(out_dir: str | Path, data: str = "cifar10", models: list[str] | None = None, max_train_images: int = 0,
                  max_test_images: int = 0) -> dict:
    """Devices, precision, replicas, bench throughput and the quick preset; writes gpu-check.json.

    Args:
        out_dir: folder for gpu-check.json, bench/ and quick/.
        data: images for the quick run ("cifar10" downloads; a folder as for `convbench run`).
        models: models for bench and the quick run (default: the quick preset's).
        max_train_images, max_test_images: stratified subsets for the quick run (0 = all).

    Returns:
        The gpu-check.json content.
    """
    import dataclasses

    import tensorflow as tf

    out = Path(out_dir)
    started = time.perf_counter()
    gpus = describe_gpus()
    for g in gpus:
        logger.info(f"[gpu-check] {g['device']}: {g['name']}, compute capability {g['compute_capability']}")
    policy, reason = choose_precision("auto")
    logger.info(f"[gpu-check] precision (mixed_precision: auto): {policy} ({reason})")
    strategy = default_strategy()
    replicas = int(strategy.num_replicas_in_sync)
    logger.info(f"[gpu-check] {type(strategy).__name__}: {replicas} replica(s) on {', '.join(g['device'] for g in gpus)}")
    config = preset("quick")
    names = list(models) if models else list(config.models)
    bench = run_bench(out / "bench", names, None, steps=20, warmup=5, rounds=1, variants=False,
                      command="convbench gpu-check (bench part)")
    rows = [{"model": m["name"], "precision": m["precision"], "train_images_per_s": m["train_images_per_s"],
             "fp32_train_images_per_s": m["fp32_train_images_per_s"], "precision_speedup": m["precision_speedup"], "mfu": m["mfu"]}
            for m in bench["models"]]
    for r in rows:
        logger.info(f"[gpu-check] {r['model']}: {r['train_images_per_s']:,.0f} img/s in {r['precision']} "
                    f"({r['precision_speedup']:.2f}x float32), MFU {r['mfu']:.1%}")
    quick = dataclasses.replace(config, models=tuple(names), data=dataclasses.replace(
        config.data, source=data, max_train_images=max_train_images, max_test_images=max_test_images)).validate()
    quick_started = time.perf_counter()
    results = run_comparison(quick, out / "quick")
    quick_seconds = time.perf_counter() - quick_started
    accuracies = {m["name"]: m["test_accuracy"] for m in results.get("models", [])}
    logger.info(f"[gpu-check] quick preset on {data}: {quick_seconds / 60:.1f} min wall; test accuracy "
                + ", ".join(f"{k} {v:.2%}" for k, v in accuracies.items()))
    result = {"gpus": gpus, "precision": policy, "precision_reason": reason, "strategy": type(strategy).__name__,
              "replicas": replicas, "bench": rows, "quick": {"data": data, "wall_seconds": quick_seconds, "test_accuracy": accuracies,
                                                              "report": str(rundir.report_path(out / "quick"))},
              "total_seconds": time.perf_counter() - started, "tensorflow": tf.__version__}

    atomic_write_json(out / "gpu-check.json", result)
    logger.info(f"[gpu-check] done in {result['total_seconds'] / 60:.1f} min; {out / 'gpu-check.json'}")
    return result


def cmd_gpu_check(args) -> int:

    out = Path(args.out)
    models = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else None
    describe_gpus()  # fail before creating anything when there is no GPU
    with run_log(out):
        run_gpu_check(out, args.data, models, args.max_train_images, args.max_test_images)
    return 0


def add_commands(subparsers) -> None:
    """Register `convbench gpu-check` on the CLI's subparsers."""
    p = subparsers.add_parser("gpu-check", help="devices, precision, replicas, throughput and the quick preset on a GPU machine")
    p.add_argument("--data", default="cifar10", help="images for the quick run (default cifar10, downloaded once)")
    p.add_argument("--models", help="comma-separated models (default: the quick preset's)")
    p.add_argument("--out", default="runs/gpu-check", help="output folder (default runs/gpu-check)")
    p.add_argument("--max-train-images", type=int, default=0, help="stratified subset of train for the quick run (0 = all)")
    p.add_argument("--max-test-images", type=int, default=0, help="stratified subset of test for the quick run (0 = all)")
    p.set_defaults(func=cmd_gpu_check)

