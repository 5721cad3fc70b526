"""Every file name of a run directory, in one place (README "What a run folder holds").

A run directory holds, relative to its root:

    REPORT.md                          the report
    results.json                       every metric, the environment and the config
    config.yaml                        the resolved configuration
    statistics.json                    the significance verdict behind the report
    run.log                            the progress log
    ablation.json                      the ablation's ledger (convbench ablate)
    history/<model>_seed<k>.csv        per-epoch history
    models/<model>/seed<k>/            weights and epoch checkpoints
    predictions/<model>_seed<k>.npz    test/validation logits
    tensorboard/<model>_seed<k>/       TensorBoard event files
    figures/*.png                      every figure
    next/<step>.yaml                   one config per suggestion of the conclusions
    data-fractions/<fraction>/         a whole run directory per data fraction (config data_fractions)

Changing a name here changes the run directory format: old runs must still re-render.
"""

from __future__ import annotations

from pathlib import Path

REPORT = "REPORT.md"
RESULTS = "results.json"
CONFIG = "config.yaml"
STATISTICS = "statistics.json"
LOG = "run.log"
ABLATION_LEDGER = "ablation.json"
HISTORY_DIR = "history"
MODELS_DIR = "models"
PREDICTIONS_DIR = "predictions"
TENSORBOARD_DIR = "tensorboard"
FIGURES_DIR = "figures"
NEXT_DIR = "next"
FRACTIONS_DIR = "data-fractions"
CHECKPOINT_GLOB = "checkpoint*.npz"


def run_key(name: str, seed: int) -> str:
    """`<model>_seed<k>`: the stem of one training's history, predictions and TensorBoard files."""
    return f"{name}_seed{seed}"


def history_file(name: str, seed: int) -> str:
    """history/<model>_seed<k>.csv, relative to the run directory."""
    return f"{HISTORY_DIR}/{run_key(name, seed)}.csv"


def predictions_file(name: str, seed: int) -> str:
    """predictions/<model>_seed<k>.npz, relative to the run directory."""
    return f"{PREDICTIONS_DIR}/{run_key(name, seed)}.npz"


def model_dir(run_dir: str | Path, name: str, seed: int) -> Path:
    """models/<model>/seed<k>/ under `run_dir`: best weights and epoch checkpoints."""
    return Path(run_dir) / MODELS_DIR / name / f"seed{seed}"


def results_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESULTS


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def log_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOG


def report_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / REPORT


def statistics_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STATISTICS


def ablation_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / ABLATION_LEDGER


def figures_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / FIGURES_DIR


def next_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / NEXT_DIR


def next_step_file(run_dir: str | Path, step: str) -> Path:
    """next/<step>.yaml under `run_dir`: the config of one suggestion of the conclusions."""
    return next_dir(run_dir) / f"{step}.yaml"


def ablation_figure(model: str) -> str:
    """figures/ablation_<model>.png, relative to the run directory: one model's ablation learning curves."""
    return f"{FIGURES_DIR}/ablation_{model}.png"


def fraction_dir(run_dir: str | Path, fraction: float) -> Path:
    """data-fractions/<fraction>/ under `run_dir` ("0.01", "0.1"): the run on that fraction of the training images."""
    return Path(run_dir) / FRACTIONS_DIR / f"{fraction:g}"


def fraction_dirs(run_dir: str | Path) -> list[tuple[float, Path]]:
    """(fraction, folder) of every data-fraction run under `run_dir` that has results, smallest first."""
    root = Path(run_dir) / FRACTIONS_DIR
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        try:
            fraction = float(path.name)
        except ValueError:
            continue  # not ours
        if (path / RESULTS).is_file():
            found.append((fraction, path))
    return sorted(found)
