"""The `convbench` command line.

    convbench run --data ../shared/datasets/cifar10-jpeg --preset quick --out runs/quick
    convbench report runs/quick
    convbench report runs/quick --lang es     # the same report in Spanish
    convbench models [--names]

Errors a user can fix print one line (`convbench: error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from convbench.bench import benchmark
from convbench.cli import ablate, gpu_check, pipeline
from convbench.cli.options import add_lang_option, add_run_options, open_run_folder, resolve_config
from convbench.config import preset
from convbench.env import cpu_model, import_tensorflow_quietly, setup_environment
from convbench.errors import ConvbenchError, interrupt_status, INTERRUPTED, raise_terminated
from convbench.experiment.ablation import run_configured_ablation
from convbench.experiment.comparison import run_comparison
from convbench.experiment.run_folders import describe_runs, format_runs
from convbench.models import create_model, list_models, model_info
from convbench.models.flops import count_flops
from convbench.orchestrate import ray_train
from convbench.report.document import write_report


def cmd_run(args) -> int:

    cfg = resolve_config(args)
    out, log = open_run_folder(args.out, cfg)
    log(f"convbench run: models {', '.join(cfg.models)}; preset {cfg.preset}; data {cfg.data.source}; out {out}")
    log(device_line(cfg))

    if ray_train.wants_ray(args.workers, args.ray_address):
        options = ray_train.RayOptions(workers=args.workers or 1, gpus_per_worker=args.gpus_per_worker or 0,
                                       address=args.ray_address or "")
        ray_train.run_comparison_ray(cfg, out, options, log=log)
        if options.mode() == "submit":
            return 0
    else:
        run_comparison(cfg, out, log=log)
    run_configured_ablation(cfg, out, log=log)
    log(f"done: {out / 'REPORT.md'}")
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
    for extend in _extensions():
        extend(sub)
    return parser


def _extensions():
    """Subcommands defined in their own modules (pipeline, bench, ablate, gpu-check), each `add_commands(subparsers)`."""
    return (pipeline.add_commands, benchmark.add_commands, ablate.add_commands, gpu_check.add_commands)


# Commands that train or build models: TensorFlow is imported up front, with its start-up lines filtered.
TENSORFLOW_COMMANDS = ("run", "models", "bench", "pipeline", "ablate", "gpu-check")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `convbench` console script."""
    setup_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in TENSORFLOW_COMMANDS:

        import_tensorflow_quietly()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if main_thread else None
    try:
        return args.func(args)
    except ConvbenchError as exc:
        print(f"convbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(INTERRUPTED, file=sys.stderr)
        return interrupt_status(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
