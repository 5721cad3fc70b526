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

from convbench.errors import INTERRUPTED, ConvbenchError, interrupt_status, raise_terminated


def setup_environment() -> None:
    """Point Keras, matplotlib and TensorFlow at the user's cache instead of ~ and quiet TF's logs.

    Runs before TensorFlow is imported. Variables the user already set are kept.
    """
    from convbench.data.datasets import default_cache_dir

    cache = default_cache_dir()
    os.environ.setdefault("KERAS_HOME", str(cache / "keras"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # Ray's C++ crash handler catches SIGTERM too, prints a stack and aborts, where convbench's own
    # handler releases the lock, prints one line and exits with 143. Read when ray is imported.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def make_logger(run_dir: Path | None) -> Callable[[str], None]:
    """print() that also appends to run_dir/run.log, flushed line by line."""
    handle = None
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(run_dir / "run.log", "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        except OSError as exc:
            raise ConvbenchError(f"cannot write to the output folder {run_dir} ({exc.strerror}); pass --out with a writable folder") from None

    def log(message: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        print(f"{stamp} {message}", flush=True)
        if handle:
            handle.write(f"{stamp} {message}\n")

    return log


def open_run_folder(out: str | None, config, kind: str = "") -> tuple[Path, Callable[[str], None]]:
    """The run folder (--out, or `run_folders.run_folder`'s choice) and a logger writing to its run.log.

    Args:
        out: the --out value, or None.
        config: the resolved RunConfig.
        kind: "" for `convbench run`, "ablate" or "pipeline".

    Returns:
        (folder, log); what choosing the folder said (continuing, runs/latest) is the log's first lines.
    """
    from convbench.experiment.run_folders import run_folder

    notes: list[str] = []
    folder = run_folder(out, config, kind, log=notes.append)
    log = make_logger(folder)
    for note in notes:
        log(note)
    return folder, log


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `run`, `pipeline local` and `bench`; the defaults named are the quick preset's."""
    from convbench.config import preset

    quick = preset("quick")
    p.add_argument("--config", help="YAML config file (see README); flags override it")
    p.add_argument("--preset", choices=["quick", "full"], help="starting values: quick (the default; CPU) or full (GPU)")
    p.add_argument("--data", help="cifar10, cifar100 or a folder with train/<class>/ and test/<class>/ images "
                   f"(default {quick.data.source}, downloaded once)")
    p.add_argument("--models", help="comma-separated model names (see `convbench models --names`; default "
                   f"{','.join(quick.models)})")
    p.add_argument("--out", help="run directory (default runs/<timestamp>-<config hash>: the same command continues "
                   "its folder, a changed option starts a new one; runs/latest links to it)")
    p.add_argument("--epochs", type=int, help="epochs of full training for every model (transfer: fine-tuning epochs, after the head's "
                   "transfer.head_steps on cached features; "
                   f"default {_quick_epochs(quick)})")
    p.add_argument("--seeds", type=int, help=f"trainings per model with different seeds (default {quick.seeds})")
    p.add_argument("--global-batch-size", type=int, help="examples per optimizer step over all workers "
                   f"(default {quick.train.global_batch_size})")
    p.add_argument("--max-train-images", type=int, help="stratified subset of train (default 0 = all)")
    p.add_argument("--max-test-images", type=int, help="stratified subset of test (default 0 = all)")
    p.add_argument("--strict", action="store_true", default=None, help="stop on unreadable images instead of skipping them")
    p.add_argument("--workers", type=int, help="Ray Train workers per model (above 1 trains under Ray; 1 without --ray-address is the plain loop)")
    p.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs per Ray worker (default 0: CPU)")
    p.add_argument("--ray-address", help="Ray cluster: http://HEAD:8265 submits a job, ray://HEAD:10001 or auto attaches; "
                   "without it a local Ray starts when --workers > 1")


def add_lang_option(p: argparse.ArgumentParser, rerender: bool = False) -> None:
    """`--lang`: the language REPORT.md and its figures are written in (checked by `i18n.check_language`,
    so a bad value is one `convbench: error:` line, not argparse's usage block).

    Args:
        p: the subcommand's parser.
        rerender: True for `convbench report`, whose default is the language the run recorded.
    """
    if rerender:
        p.add_argument("--lang", help="language of REPORT.md and its figures: en (English) or es (Spanish); "
                       "default: the language the run recorded (`convbench run --lang`), else en")
        return
    p.add_argument("--lang", help="language of REPORT.md and its figures: en (English, the default) or es (Spanish); "
                   "recorded with the run, so `convbench report` re-renders in it unless given another --lang")


def _quick_epochs(quick) -> str:
    """The quick preset's epochs per model, as --help states them ("cnn_vgg 5, cnn_resnet 4, ...")."""
    from convbench.config import training_epochs
    from convbench.models import model_info

    return ", ".join(f"{name} {training_epochs(model_info(name).kind, dataclasses.asdict(quick.recipe(name)))}"
                     for name in quick.models)


def resolve_config(args: argparse.Namespace):
    """Preset, then --config file, then flags: the RunConfig a command line asks for."""
    from convbench import config as c

    base = c.preset(args.preset or "quick")
    cfg = c.load_yaml(args.config, base) if args.config else base
    if args.preset and args.config:
        cfg = dataclasses.replace(cfg, preset=args.preset)
    data_changes = {k: v for k, v in {
        "source": args.data, "max_train_images": args.max_train_images, "max_test_images": args.max_test_images,
        "strict": args.strict}.items() if v is not None}
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_changes))
    if args.models:
        names = tuple(n.strip() for n in args.models.split(",") if n.strip())
        cfg = dataclasses.replace(cfg, models=names, overrides={k: v for k, v in cfg.overrides.items() if k in names})
    if args.seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=args.seeds)
    if args.global_batch_size is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, global_batch_size=args.global_batch_size))
    if args.epochs is not None:
        cfg = with_epochs(cfg, args.epochs)
    if getattr(args, "lang", None) is not None:
        from convbench.i18n import check_language

        cfg = dataclasses.replace(cfg, lang=check_language(args.lang))
    from convbench.models import model_info

    for name in cfg.models:
        model_info(name)
    return cfg.validate()


def with_epochs(cfg, epochs: int):
    """Every model trains `epochs` epochs of full training (transfer models: fine-tuning epochs, after the head)."""
    from convbench.config import ModelOverride

    if epochs < 1:
        raise ConvbenchError(f"--epochs must be >= 1, got {epochs}")
    overrides = {}
    for name, over in cfg.overrides.items():
        train = {k: v for k, v in (over.train or {}).items() if k != "epochs"} or None
        transfer = {k: v for k, v in (over.transfer or {}).items() if k != "finetune_epochs"} or None
        overrides[name] = dataclasses.replace(over, train=train, transfer=transfer)
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, epochs=epochs),
        transfer=dataclasses.replace(cfg.transfer, finetune_epochs=epochs),
        overrides={k: v for k, v in overrides.items() if v != ModelOverride()},
    )


def cmd_run(args) -> int:
    from convbench.experiment.comparison import run_comparison

    cfg = resolve_config(args)
    out, log = open_run_folder(args.out, cfg)
    log(f"convbench run: models {', '.join(cfg.models)}; preset {cfg.preset}; data {cfg.data.source}; out {out}")
    log(device_line(cfg))
    from convbench.orchestrate import ray_train

    if ray_train.wants_ray(args.workers, args.ray_address):
        options = ray_train.RayOptions(workers=args.workers or 1, gpus_per_worker=args.gpus_per_worker or 0,
                                       address=args.ray_address or "")
        ray_train.run_comparison_ray(cfg, out, options, log=log)
        if options.mode() == "submit":
            return 0
    else:
        run_comparison(cfg, out, log=log)
    log(f"done: {out / 'REPORT.md'}")
    return 0


def device_line(cfg) -> str:
    """One line on what this machine trains on and in which precision each model runs."""
    from convbench.env import cpu_model
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
    from convbench.report.document import render_report

    # --lang wins; without it the report is rendered in the language the run recorded (`run --lang`).
    render_report(Path(args.run_dir), lang=args.lang)
    return 0


def cmd_models(args) -> int:
    from convbench.models import list_models, model_info

    names = list_models()
    if args.names:
        print("\n".join(names))
        return 0
    from convbench.config import preset
    from convbench.models.flops import count_flops
    from convbench.models import create_model

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
    from convbench.experiment.run_folders import describe_runs, format_runs

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
    """Subcommands contributed by other modules (pipeline, bench, ...), each `add_commands(subparsers)`."""
    import importlib

    for module in ("convbench.cli.pipeline", "convbench.bench.benchmark", "convbench.experiment.ablation", "convbench.cli.gpu_check"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        yield mod.add_commands


# Commands that train or build models: TensorFlow is imported up front, with its start-up lines filtered.
TENSORFLOW_COMMANDS = ("run", "models", "bench", "pipeline", "ablate", "gpu-check")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `convbench` console script."""
    setup_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in TENSORFLOW_COMMANDS:
        from convbench.env import import_tensorflow_quietly

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
