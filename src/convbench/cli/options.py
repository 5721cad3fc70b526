"""Options and helpers shared by the subcommands: run options, --lang, config resolution, the run folder."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path
from typing import Iterator

from convbench import config
from convbench.config import training_epochs
from convbench.experiment.run_folders import run_folder
from convbench.log import collected, run_log
from convbench.models import model_info



@contextlib.contextmanager
def open_run_folder(out: str | None, config, kind: str = "") -> Iterator[Path]:
    """The run folder (--out, or `run_folders.run_folder`'s choice), its run.log attached for the block (`log.run_log`).

    Args:
        out: the --out value, or None.
        config: the resolved RunConfig.
        kind: "" for `convbench run`, "ablate" or "pipeline".

    Yields:
        The folder; what choosing it said (continuing, runs/latest) is its run.log's first lines.
    """
    with collected() as notes:
        folder = run_folder(out, config, kind)
    with run_log(folder, earlier=notes):
        yield folder



def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `run`, `pipeline local` and `bench`; the defaults named are the quick preset's."""
    quick = config.preset("quick")
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
    return ", ".join(f"{name} {training_epochs(model_info(name).kind, dataclasses.asdict(quick.recipe(name)))}"
                     for name in quick.models)



def resolve_config(args: argparse.Namespace):
    """Preset, then --config file, then flags: the RunConfig a command line asks for (`config.resolve`)."""
    return config.resolve(preset=args.preset, config_file=args.config, data=args.data,
                          max_train_images=args.max_train_images, max_test_images=args.max_test_images,
                          strict=args.strict, models=args.models, seeds=args.seeds,
                          global_batch_size=args.global_batch_size, epochs=args.epochs,
                          lang=getattr(args, "lang", None), check_model=model_info)
