"""The `convbench` command line.

    convbench run --data ../shared/datasets/cifar10-jpeg --preset quick --out runs/quick
    convbench report runs/quick
    convbench report runs/quick --lang es     # the same report in Spanish
    convbench models [--names]
    convbench data ../shared/datasets/cifar10-jpeg   # decode and cache a data source, print its summary
    convbench lock-status runs/quick                 # who holds a run directory's lock
    convbench smoke                                  # two epochs of cnn_vgg on random data: the loop works
    convbench k8s validate                           # the Kubernetes manifests (convbench.orchestrate.k8s_render)

Progress lines go to stdout as `HH:MM:SS message` (and to the run directory's run.log, `convbench.log`).
Errors a user can fix print one line (`convbench: error: ...`) and exit with status 2 (`errors.run_command`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

from convbench.bench import benchmark
from convbench.cli import ablate, gpu_check, pipeline
from convbench.cli.options import add_lang_option, add_run_options, open_run_folder, resolve_config
from convbench.config import preset
from convbench.data.datasets import load_dataset
from convbench.env import cpu_model, import_tensorflow_quietly, setup_environment
from convbench.errors import run_command
from convbench.experiment.ablation import run_configured_ablation
from convbench.experiment.comparison import run_comparison
from convbench.experiment.data_efficiency import run_data_fractions
from convbench.experiment.run_folders import describe_runs, format_runs
from convbench.lock import describe_lock
from convbench.log import setup_console_logging
from convbench.models import create_model, list_models, model_info
from convbench.models.flops import count_flops
from convbench.orchestrate import k8s_render, ray_train
from convbench.report.document import write_report
from convbench.training.loop import smoke

logger = logging.getLogger(__name__)


def cmd_run(args) -> int:

    cfg = resolve_config(args)
    with open_run_folder(args.out, cfg) as out:
        logger.info(f"convbench run: models {', '.join(cfg.models)}; preset {cfg.preset}; data {cfg.data.source}; out {out}")
        logger.info(device_line(cfg))

        if ray_train.wants_ray(args.workers, args.ray_address):
            options = ray_train.RayOptions(workers=args.workers or 1, gpus_per_worker=args.gpus_per_worker or 0,
                                           address=args.ray_address or "")
            ray_train.run_comparison_ray(cfg, out, options)
            if options.mode() == "submit":
                return 0
            run_data_fractions(cfg, out, lambda sub, folder: ray_train.run_comparison_ray(sub, folder, options))
        else:
            run_comparison(cfg, out)
            run_data_fractions(cfg, out)
        run_configured_ablation(cfg, out)
        logger.info(f"done: {out / 'REPORT.md'}")
    return 0


def device_line(cfg) -> str:
    """One line on what this machine trains on and in which precision each model runs."""
    from convbench.training.recipes import model_precision

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU(s)" if gpus else f"CPU ({cpu_model()}, {os.cpu_count()} logical cores)"
    by_policy: dict[str, list[str]] = {}
    for name in cfg.models:
        policy, reason = model_precision(name, cfg.recipe(name))
        by_policy.setdefault(f"{policy} ({reason})", []).append(name)
    return f"device: {device}; precision: " + "; ".join(f"{', '.join(names)} in {policy}" for policy, names in by_policy.items())


def cmd_report(args) -> int:

    # --lang wins; without it the report is rendered in the language the run recorded (`run --lang`).
    write_report(Path(args.run_dir), lang=args.lang)
    return 0


def cmd_models(args) -> int:

    names = list_models()
    if args.names:
        print("\n".join(names))
        return 0

    quick = preset("quick")
    print(f"{'name':<20} {'kind':<9} {'params':>10} {'MFLOPs':>9}  input  description")
    for name in names:
        info = model_info(name)
        recipe = quick.recipe(name)
        kwargs = {"weights": None, "resolution": recipe.transfer.resolution, "head": recipe.transfer.head} \
            if info.kind == "transfer" else {}
        model = create_model(name, num_classes=10, **kwargs)
        res = f"{recipe.transfer.resolution}px" if info.kind == "transfer" else "32px"
        print(f"{name:<20} {info.kind:<9} {model.count_params():>10,} {count_flops(model) / 1e6:>9.1f}  {res:<6} {info.description}")
    print("\nParameters and FLOPs for 10 classes, as the quick preset builds each model (transfer models at its "
          "transfer.resolution, upsampled from 32 px).")
    return 0


def cmd_runs(args) -> int:

    root = Path(args.root)
    print(format_runs(describe_runs(root), root))
    return 0


def cmd_data(args) -> int:

    summary = load_dataset(args.source).summary()
    print(json.dumps({k: v for k, v in summary.items() if k != "class_names"}, indent=2))
    return 0


def cmd_lock_status(args) -> int:

    print(describe_lock(args.run_dir))
    return 0


def cmd_smoke(args) -> int:

    print(json.dumps([dataclasses.asdict(r) for r in smoke()], indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convbench", description="Train and compare CNN architectures on CIFAR; write one Markdown report.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train and compare models, write REPORT.md")
    add_run_options(p)
    add_lang_option(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="re-render REPORT.md from a run directory's saved results")
    p.add_argument("run_dir")
    add_lang_option(p, rerender=True)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--names", action="store_true", help="print only the names, one per line")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("runs", help="list the run folders: status, data, models and epochs, seeds, best model")
    p.add_argument("--root", default="runs", help="the folder holding the runs (default runs)")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("data", help="decode and cache a data source (once), print its summary")
    p.add_argument("source", nargs="?", default="cifar10", help="cifar10 (the default), cifar100 or a folder with "
                   "train/<class>/ and test/<class>/ images")
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("lock-status", help="who holds a run directory's lock (pid, host, start) and whether it is alive")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_lock_status)
    p = sub.add_parser("smoke", help="train cnn_vgg two epochs on random data and print the history: the loop works")
    p.set_defaults(func=cmd_smoke)
    for extend in _extensions():
        extend(sub)
    return parser


def _extensions():
    """Subcommands defined in their own modules (pipeline, bench, ablate, gpu-check, k8s), each `add_commands(subparsers)`."""
    return (pipeline.add_commands, benchmark.add_commands, ablate.add_commands, gpu_check.add_commands,
            k8s_render.add_commands)


# Commands that train or build models: TensorFlow is imported up front, with its start-up lines filtered.
TENSORFLOW_COMMANDS = ("run", "models", "bench", "pipeline", "ablate", "gpu-check", "smoke")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `convbench` console script."""
    setup_environment()
    args = build_parser().parse_args(argv)
    if args.command in TENSORFLOW_COMMANDS:

        import_tensorflow_quietly()
    setup_console_logging()
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
