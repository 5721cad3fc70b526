"""Data efficiency: every model trained again on stratified fractions of the training images.

Transfer learning is chosen for small data; this is where a run shows it. With
`data_fractions: [0.01, 0.1, 1.0]` in the config, after the comparison every model trains on 1 %
and 10 % of the training images (1.0 is the comparison itself), each fraction a whole run
directory under `data-fractions/<fraction>/` with the same recipe, the same test images and more
epochs for fewer images (`fraction_config`). The report then plots test accuracy against training
images and says where the curves cross (`convbench.report.data_efficiency`).

    printf 'data_fractions: [0.01, 0.1, 1.0]\\n' > fractions.yaml
    convbench run --data ../shared/datasets/cifar10-jpeg --config fractions.yaml

Each fraction run is a ledger like any run: stopped and started again, it resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Callable

from convbench import rundir
from convbench.config import DATA_FRACTION_MAX_EPOCH_FACTOR, ModelOverride, RunConfig
from convbench.errors import ConvbenchError
from convbench.log import run_log
from convbench.experiment.comparison import read_previous_results, run_comparison
from convbench.models import model_info
from convbench.report.document import write_report

logger = logging.getLogger(__name__)


def epoch_factor(fraction: float) -> float:
    """How many times the recipe's epochs a run on `fraction` of the images trains: 1/fraction, capped."""
    return min(1.0 / fraction, float(DATA_FRACTION_MAX_EPOCH_FACTOR))


def fraction_config(config: RunConfig, fraction: float, pool_images: int) -> RunConfig:
    """The config of the run on `fraction` of the training images.

    The same recipe on a stratified subset of the training pool (before the validation split, as
    `--max-train-images` takes it), with `epoch_factor(fraction)` times the epochs of full training
    (a transfer model's fine-tuning epochs; its head phase is counted in optimizer steps already),
    rounded up. The test images stay the same, so the accuracies are comparable. The extra analyses
    (latency, corruptions, saliency, mistakes, ablations) are left out: only accuracy is plotted.

    Args:
        config: the comparison's config.
        fraction: in (0, 1).
        pool_images: training plus validation images the comparison drew from.

    Returns:
        The validated RunConfig of that fraction.

    Raises:
        ConvbenchError: the resulting config is invalid.
    """
    images = round(fraction * pool_images)
    factor = epoch_factor(fraction)
    overrides = {}
    for name in config.models:
        recipe = config.recipe(name)
        over = config.overrides.get(name, ModelOverride())
        train = dict(over.train or {})
        transfer = dict(over.transfer or {})
        if model_info(name).kind == "transfer":
            if recipe.transfer.finetune_epochs:
                transfer["finetune_epochs"] = math.ceil(recipe.transfer.finetune_epochs * factor)
        else:
            train["epochs"] = math.ceil(recipe.train.epochs * factor)
        overrides[name] = dataclasses.replace(over, train=train or None, transfer=transfer or None)
    analysis = dataclasses.replace(config.analysis, robustness_images=0, saliency_images=0, mistakes=0)
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, max_train_images=images),
        overrides=overrides,
        measure_latency=False,
        analysis=analysis,
        ablation=dataclasses.replace(config.ablation, variants=()),
        data_fractions=(),
    ).validate()


def run_data_fractions(config: RunConfig, out_dir: str | Path,
                       run_fn: Callable[[RunConfig, Path], object] = run_comparison) -> list[Path]:
    """Train every model on each fraction below 1 of `config.data_fractions`, then re-render the report.

    Args:
        config: the comparison's config (nothing happens when `data_fractions` has no fraction below 1).
        out_dir: the comparison's run directory; fractions go to `data-fractions/<fraction>/` in it.
        run_fn: runs one comparison into a folder (default `run_comparison`; Ray passes its own).

    Returns:
        The fraction run directories, smallest fraction first.
    """
    fractions = sorted(f for f in config.data_fractions if f < 1)
    if not fractions:
        return []
    out_dir = Path(out_dir)
    # The comparison just wrote its data's sizes: no need to load the images again for them.
    data = read_previous_results(rundir.results_path(out_dir))["data"]
    pool, classes = data["train_images"] + data["val_images"], data["num_classes"]
    smallest = round(fractions[0] * pool)
    if smallest < 2 * classes:
        raise ConvbenchError(f"data fraction {fractions[0]:g} leaves {smallest} of {pool} training images, fewer than 2 per "
                             f"class; use fractions of at least {2 * classes / pool:.2g} in data_fractions")
    folders = []
    for fraction in fractions:
        folder = rundir.fraction_dir(out_dir, fraction)
        sub = fraction_config(config, fraction, pool)
        logger.info(f"data fraction {fraction:g}: {sub.data.max_train_images:,} of {pool:,} training images, "
                    f"{epoch_factor(fraction):g}x the epochs, into {folder}")
        with run_log(folder):  # its own run.log too, as any run folder has; the comparison's gets the lines as well
            run_fn(sub, folder)
        folders.append(folder)
    write_report(out_dir)
    return folders
