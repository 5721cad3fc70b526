"""What the Kubeflow pipeline's steps do, as plain functions (`convbench.components` only wraps them).

Artifacts between the steps:
- Dataset: `convbench.data.datasets.save_dataset` (arrays.npz + manifest.json), the validated uint8 split,
  plus `config.json`, the resolved config. Keeping the config inside the Dataset keys the later
  steps' cache on data and config together, and avoids passing a task's output parameter into the
  ParallelFor (kfp's local runner substitutes the loop item for it).
- Model: one model's slice of a run directory: `runs.json` (the result entries of its seeds, as
  `experiment.comparison.train_and_evaluate` returns them), `history/`, `predictions/`, `models/<name>/seed<k>/`,
  `run.log`.
- The report step merges the Model artifacts into a run directory that matches `convbench run`'s
  (results.json, REPORT.md, figures/, ...), and writes REPORT.md and REPORT.html with the figures
  embedded, so the Kubeflow UI shows them without the run directory.

Every step function works on local paths, so the same code runs in a container on the cluster and
in `convbench pipeline local`. The four the components call (prepare_dataset, train_and_export,
evaluate_models, report_step) each start their step's process, so each sets up console logging
(`convbench.log`); the train and report steps also append their lines to their run.log:

    .venv/bin/pytest -q tests/test_pipeline.py
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import html
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import tempfile

from convbench import config as cfgmod, rundir
from convbench.rundir import run_key
from convbench.config import from_dict, RunConfig, to_dict
from convbench.data.datasets import read_saved_dataset, save_dataset
from convbench.env import describe_environment, import_tensorflow_quietly
from convbench.errors import ConvbenchError
from convbench.experiment.comparison import (
    DIVERGED,
    load_data,
    results_document,
    saved_recipe,
    split_diverged,
    train_and_evaluate,
)
from convbench.i18n import check_language
from convbench.io import atomic_write_json, atomic_write_text
from convbench.log import run_log, setup_console_logging
from convbench.models import model_info
from convbench.orchestrate import ray_train
from convbench.report.document import predictions_problem, write_report
from convbench.training.evaluation import confusion_matrix

logger = logging.getLogger(__name__)

RUNS_FILE = "runs.json"
CONFIG_FILE = "config.json"


# ---------------------------------------------------------------------------------------------
# Config


def pipeline_config(data_source: str, models: list[str], preset: str = "quick", epochs: int = 0, seeds: int = 0,
                   max_train_images: int = 0, max_test_images: int = 0, global_batch_size: int = 0,
                   config_yaml: str = "") -> RunConfig:
    """The RunConfig that pipeline parameters describe, resolved exactly as `convbench run` resolves flags.

    Args:
        data_source: cifar10, cifar100 or a folder (as the steps see it).
        models: model names.
        preset: quick or full.
        epochs: epochs per model; 0 keeps the preset's.
        seeds: trainings per model; 0 keeps the preset's.
        max_train_images: stratified train subset; 0 = all.
        max_test_images: stratified test subset; 0 = all.
        global_batch_size: 0 keeps the preset's.
        config_yaml: text of a YAML config applied between the preset and these parameters ("" = none).

    Returns:
        The validated RunConfig.
    """
    given = dict(preset=preset or None, data=data_source or None, models=list(models) if models else None, epochs=epochs or None,
                 seeds=seeds or None, global_batch_size=global_batch_size or None,
                 max_train_images=max_train_images or None, max_test_images=max_test_images or None,
                 check_model=model_info)
    if not config_yaml.strip():
        return cfgmod.resolve(**given)
    with tempfile.TemporaryDirectory(prefix="convbench-config-") as tmp:
        path = Path(tmp) / rundir.CONFIG
        path.write_text(config_yaml, encoding="utf-8")
        return cfgmod.resolve(config_file=path, **given)


def config_to_json(config: RunConfig) -> str:
    """Canonical JSON of a config: the parameter that keys the training steps' cache."""

    return json.dumps(to_dict(config), sort_keys=True)


def config_from_json(text: str) -> RunConfig:
    """Inverse of `config_to_json`."""

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConvbenchError(f"the Dataset artifact's config.json is not JSON ({exc}); run prepare_data again") from None
    return from_dict(data, base=RunConfig(), where="config_json").validate()


# ---------------------------------------------------------------------------------------------
# Steps


def prepare_dataset(dataset_dir: str, metadata: dict, data_source: str, models: list[str], preset: str = "quick",
                 epochs: int = 0, seeds: int = 0, max_train_images: int = 0, max_test_images: int = 0,
                 global_batch_size: int = 0, config_yaml: str = "") -> str:
    """Resolve the config, load and validate the data, save it as the Dataset artifact.

    Args:
        dataset_dir: where the Dataset artifact goes.
        metadata: the artifact's metadata dict, updated with the data summary.
        data_source .. config_yaml: see `pipeline_config`.

    Returns:
        The resolved config as JSON (also saved in the Dataset as config.json).
    """
    setup_console_logging()

    config = pipeline_config(data_source, models, preset, epochs, seeds, max_train_images, max_test_images,
                            global_batch_size, config_yaml)
    # The report step's `lang` parameter decides the language; the Dataset's config keeps the default,
    # so the training steps, whose cache is keyed on the Dataset, never rerun for another language.
    config = dataclasses.replace(config, lang="en")
    data = load_data(config)
    save_dataset(data, dataset_dir)
    atomic_write_text(Path(dataset_dir) / CONFIG_FILE, config_to_json(config))
    summary = data.summary()
    metadata.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    metadata["class_names"] = list(data.class_names)
    logger.info(f"data: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test images, {data.num_classes} classes")
    return config_to_json(config)


def dataset_config(dataset_dir: str | Path) -> RunConfig:
    """The resolved config saved in a Dataset artifact by `prepare_data`."""
    path = Path(dataset_dir) / CONFIG_FILE
    try:
        return config_from_json(path.read_text())
    except OSError:
        raise ConvbenchError(f"{path} is missing; the Dataset artifact was not written by prepare_data") from None


def train_models(dataset_dir: str, model_name: str, model_dir: str, workers: int = 1,
                 gpus_per_worker: int = 0, ray_address: str = "", run_name: str = "", shared_dir: str = "",
                 resume_dir: str = "") -> list[dict]:
    """Train and evaluate every seed of one model into `model_dir` (the Model artifact).

    Plain single-process training unless `ray_train.wants_ray(workers, ray_address)`. With an
    http:// address the training runs as a Ray job on the cluster; with ray:// or auto it attaches
    to the cluster; both then work in `shared_dir/<job>` (storage the cluster and this step share,
    e.g. the PVC) and copy the result back.

    Args:
        dataset_dir: the Dataset artifact (with its config).
        model_name: the model to train.
        model_dir: where the Model artifact goes.
        workers: Ray Train workers (1 without an address = plain loop).
        gpus_per_worker: GPUs per Ray worker.
        ray_address: "", "auto", ray://HOST:10001 or http://HOST:8265.
        run_name: names the Ray jobs and runs (with the model).
        shared_dir: storage shared with the Ray cluster (needed with an address).
        resume_dir: a folder that outlives the run ("" = none): the training works in
            `resume_dir/<model>-<dataset digest>`, so a rerun after an interruption resumes each seed
            from its last epoch checkpoint and reuses the seeds already finished, then copies the
            result into model_dir. `convbench pipeline local` passes `<out>/.kfp/resume`.

    Returns:
        The result entries, one per seed (also written to model_dir/runs.json).
    """

    config = dataset_config(dataset_dir)
    if model_name not in config.models:
        raise ConvbenchError(f"model {model_name!r} is not in the config's models {list(config.models)}")
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    # kfp's job-name placeholder reads "<run>/<loop iteration>" inside a ParallelFor; the run is enough.
    options = ray_train.RayOptions(workers=workers, gpus_per_worker=gpus_per_worker, address=ray_address,
                                   run_name=(run_name or "convbench").split("/")[0])
    here = not ray_train.wants_ray(workers, ray_address) or options.mode() == "local"
    if not here:
        return _train_on_cluster(dataset_dir, config, model_name, out, options, shared_dir)
    options = options if ray_train.wants_ray(workers, ray_address) else None
    if not resume_dir:
        return train_here(dataset_dir, model_name, out, options)
    work = Path(resume_dir) / f"{model_name}-{dataset_digest(dataset_dir)}"
    entries = train_here(dataset_dir, model_name, work, options)
    shutil.copytree(work, out, dirs_exist_ok=True)
    return entries


def dataset_digest(dataset_dir: str | Path) -> str:
    """12 hex digits naming a Dataset artifact's content (its config and manifest): resume folders
    of different data or configs never mix."""
    import hashlib

    digest = hashlib.sha256()
    for name in (CONFIG_FILE, "manifest.json"):
        path = Path(dataset_dir) / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:12]


def train_here(dataset_dir: str | Path, model_name: str, out_dir: str | Path, options=None) -> list[dict]:
    """Train and evaluate every seed of one model from this process; write out_dir/runs.json.

    Args:
        dataset_dir: a Dataset artifact (with its config).
        model_name: the model.
        out_dir: run-directory layout for this model's files.
        options: `ray_train.RayOptions` to train under Ray (a local Ray, or the cluster this process
            attaches to, e.g. inside a Ray job), None for the plain loop.

    Returns:
        The result entries, one per seed.
    """

    import_tensorflow_quietly()
    config = dataset_config(dataset_dir)
    data = read_saved_dataset(dataset_dir)
    out = Path(out_dir)
    with run_log(out):  # creates out; the Model artifact keeps the training's run.log
        seeds = [config.train.seed + k for k in range(config.seeds)]
        done = _finished_seeds(out, model_name, config)
        entries = [done[seed] for seed in seeds if seed in done]

        def record(entry: dict | None = None) -> None:
            # After every seed, so an interrupted step keeps its finished seeds (`_finished_seeds`).
            entries.extend([entry] if entry else [])
            finished, diverged = split_diverged(sorted(entries, key=lambda e: e["seed"]))
            atomic_write_json(out / RUNS_FILE, {"model": model_name, "runs": finished, "diverged": diverged,
                                                "environment": describe_environment()})

        todo = [seed for seed in seeds if seed not in done]
        record()
        if options is not None and todo:
            with ray_train.ray_session(options):
                for seed in todo:
                    record(ray_train.train_and_evaluate_ray(model_name, seed, config, data, out, options))
        else:
            for seed in todo:
                record(train_and_evaluate(model_name, seed, config, data, out))
        return sorted(entries, key=lambda e: e["seed"])


def _finished_seeds(out: Path, model_name: str, config: RunConfig) -> dict[int, dict]:
    """Seeds of `model_name` an earlier, interrupted train step already finished in `out`, with the same recipe."""

    path = out / RUNS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        entries = list(data["runs"]) + list(data.get("diverged", []))
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    done = {}
    for e in entries:
        if not isinstance(e, dict) or e.get("name") != model_name or not isinstance(e.get("seed"), int):
            continue
        if e.get("recipe") != saved_recipe(config, model_name, e["seed"]):
            continue
        if e.get("status") != DIVERGED and predictions_problem(out / e.get("predictions", "")):
            continue
        done[e["seed"]] = e
    if done:
        logger.info(f"[{model_name}] reusing finished seed(s) {', '.join(map(str, sorted(done)))} from {path}")
    return done


def _train_on_cluster(dataset_dir: str, config: RunConfig, model_name: str, out: Path, options, shared_dir: str) -> list[dict]:

    if not shared_dir:
        raise ConvbenchError(
            "training on a Ray cluster needs shared_dir: a folder this step and the Ray pods both mount "
            "(e.g. /data/pipeline on the convbench-data PVC; compile with --shared-pvc)"
        )
    job = ray_train.job_name(options.run_name, model_name)
    work = Path(shared_dir) / job
    shutil.rmtree(work / "dataset", ignore_errors=True)
    shutil.copytree(dataset_dir, work / "dataset")
    if options.mode() == "submit":
        entry = (f"python -m convbench.orchestrate.ray_job train-model --dataset {work / 'dataset'} "
                 f"--model {model_name} --out {work / 'out'} --workers {options.workers} "
                 f"--gpus-per-worker {options.gpus_per_worker} --run-name {options.run_name}")
        ray_train.submit_job(options.address, entry, job)
    else:
        train_here(work / "dataset", model_name, work / "out", options)
    if not (work / "out" / RUNS_FILE).exists():
        raise ConvbenchError(f"the Ray training of {model_name} left no {work / 'out' / RUNS_FILE}; see its log above")
    # Ray's own checkpoint copies stay on the shared storage; the artifact holds the run's files.
    shutil.copytree(work / "out", out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint_*"))
    return json.loads((out / RUNS_FILE).read_text())["runs"]


def train_and_export(dataset_dir: str, model_name: str, model_dir: str, history_path: str,
                     log_metric: Callable[[str, float], None], **train_options) -> list[dict]:
    """The train_model step: `train_models`, then its per-epoch history as the Metrics artifact.

    Args:
        dataset_dir, model_name, model_dir: see `train_models`.
        history_path: the Metrics artifact's file (`history_metrics`).
        log_metric: `Metrics.log_metric`.
        **train_options: workers, gpus_per_worker, ray_address, run_name, shared_dir, resume_dir (see `train_models`).

    Returns:
        The result entries, one per seed.
    """
    setup_console_logging()
    entries = train_models(dataset_dir, model_name, model_dir, **train_options)
    history_metrics(model_dir, log_metric, history_path)
    return entries


def history_metrics(model_dir: str, log_metric: Callable[[str, float], None], history_path: str) -> dict:
    """Export a Model artifact's per-epoch history as a Metrics artifact.

    Args:
        model_dir: the Model artifact.
        log_metric: `Metrics.log_metric` (one scalar per epoch and quantity, plus summary values).
        history_path: the Metrics artifact's file: the histories as CSV.

    Returns:
        The scalars logged.
    """
    runs = read_runs(model_dir) + read_runs(model_dir, diverged=True)
    scalars: dict[str, float] = {}
    frames = []
    for run in runs:
        rows = _history_rows(Path(model_dir) / run["history_csv"])
        frames.append(f"# {run['name']} seed {run['seed']}\n" + (Path(model_dir) / run["history_csv"]).read_text())
        for row in rows:
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                scalars[f"seed{run['seed']}_epoch{int(row['epoch']):03d}_{key}"] = float(row[key])
        for key in ("best_val_accuracy", "train_seconds"):
            if key in run:  # a diverged run has no best accuracy
                scalars[f"seed{run['seed']}_{key}"] = float(run[key])
    Path(history_path).parent.mkdir(parents=True, exist_ok=True)
    Path(history_path).write_text("\n".join(frames), encoding="utf-8")
    for key, value in scalars.items():
        log_metric(key, value)
    return scalars


def evaluate_models(dataset_dir: str, model_dir: str, log_metric: Callable[[str, float], None],
                    log_confusion_matrix: Callable[[list[str], list[list[int]]], None], metrics_path: str = "",
                    confusion_path: str = "") -> dict:
    """Score a Model artifact's saved test logits: test metrics and the confusion matrix.

    The logits were computed by the library's evaluation right after training (in the train step,
    where the model is in memory); this recomputes accuracy and the confusion matrix from them and
    checks both against the recorded results, so a mismatch between steps fails here.

    Args:
        dataset_dir: the Dataset artifact (class names, test labels).
        model_dir: the Model artifact.
        log_metric: `Metrics.log_metric`.
        log_confusion_matrix: `ClassificationMetrics.log_confusion_matrix`.
        metrics_path: the Metrics artifact's file: the scalars as JSON ("" = not written).
        confusion_path: the ClassificationMetrics artifact's file: classes and matrix as JSON ("" = not written).

    Returns:
        The scalars logged.
    """
    import numpy as np

    setup_console_logging()

    manifest = json.loads((Path(dataset_dir) / "manifest.json").read_text())
    names = list(manifest["class_names"])
    runs = read_runs(model_dir)
    scalars: dict[str, float] = {}
    total = None
    for run in runs:
        with np.load(Path(model_dir) / run["predictions"], allow_pickle=False) as z:
            logits, labels = z["test_logits"], z["test_labels"]
        accuracy = float((logits.argmax(1) == labels).mean())
        if abs(accuracy - run["test_accuracy"]) > 1e-9:
            raise ConvbenchError(f"{run['name']} seed {run['seed']}: saved test logits give accuracy {accuracy:.4f}, "
                                 f"the train step recorded {run['test_accuracy']:.4f}; the Model artifact is inconsistent")
        cm = confusion_matrix(labels, logits.argmax(1), len(names))
        total = cm if total is None else total + cm
        scalars[f"seed{run['seed']}_test_accuracy"] = accuracy
        for key in ("best_val_accuracy", "params", "flops_per_image", "train_seconds", "latency_ms_batch1", "tta_accuracy"):
            if isinstance(run.get(key), (int, float)):
                scalars[f"seed{run['seed']}_{key}"] = float(run[key])
    accs = [v for k, v in scalars.items() if k.endswith("_test_accuracy")]
    if accs:  # none when every seed diverged: nothing to score, the report says why
        scalars["test_accuracy"] = float(np.mean(accs))
    for key, value in scalars.items():
        log_metric(key, value)
    total = np.zeros((len(names), len(names)), dtype=int) if total is None else total
    log_confusion_matrix(names, total.tolist())
    # The artifacts' own files: downloadable from the UI, and kfp's local cache needs them to exist.
    if metrics_path:
        atomic_write_json(Path(metrics_path), scalars)
    if confusion_path:
        atomic_write_json(Path(confusion_path), {"class_names": names, "confusion_matrix": total.tolist()})
    return scalars


def read_runs(model_dir: str | Path, diverged: bool = False) -> list[dict]:
    """The result entries a train step wrote into a Model artifact: finished runs, or the diverged ones."""
    path = Path(model_dir) / RUNS_FILE
    try:
        data = json.loads(path.read_text())
        runs, failed = data["runs"], data.get("diverged", [])
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ConvbenchError(f"{path} is missing or broken ({exc}); the train_model step did not finish") from None
    if not runs and not failed:
        raise ConvbenchError(f"{path} lists no runs; the train_model step did not finish")
    return failed if diverged else runs


def _history_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------
# Report


def assemble_run(dataset_dir: str, model_dirs: list[str], run_dir: str, evaluation_dirs: list[str] | None = None,
                 lang: str = "en") -> Path:
    """Merge the Model artifacts into one run directory and render its report, as `convbench run` would.

    Args:
        dataset_dir: the Dataset artifact.
        model_dirs: the Model artifacts (one per model, any order).
        run_dir: the run directory to create.
        evaluation_dirs: unused contents; passing the evaluate steps' outputs makes the report wait for them.
        lang: the report's language (en, es), recorded in the run directory's config like `convbench run --lang`.

    Returns:
        The REPORT.md path.
    """

    config = dataclasses.replace(dataset_config(dataset_dir), lang=check_language(lang))
    manifest = json.loads((Path(dataset_dir) / "manifest.json").read_text())
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_key: dict[str, dict] = {}
    environment = {}
    for model_dir in model_dirs:
        src = Path(model_dir)
        for sub in (rundir.HISTORY_DIR, rundir.PREDICTIONS_DIR, rundir.MODELS_DIR, rundir.TENSORBOARD_DIR):
            if (src / sub).is_dir():
                shutil.copytree(src / sub, out / sub, dirs_exist_ok=True)
        if rundir.log_path(src).exists():
            with open(rundir.log_path(out), "a", encoding="utf-8") as fh:
                fh.write(rundir.log_path(src).read_text(encoding="utf-8", errors="replace"))
        data = json.loads((src / RUNS_FILE).read_text())
        environment = environment or data.get("environment", {})
        for run in data["runs"] + data.get("diverged", []):
            by_key[run_key(run["name"], run["seed"])] = run
    # The same order as `convbench run`: models as configured, then seeds.
    runs = [by_key[run_key(name, config.train.seed + k)] for name in config.models for k in range(config.seeds)
            if run_key(name, config.train.seed + k) in by_key]
    missing = [f"{name} seed {config.train.seed + k}" for name in config.models for k in range(config.seeds)
               if run_key(name, config.train.seed + k) not in by_key]
    if missing:
        raise ConvbenchError(f"no trained results for {', '.join(missing)}; their train_model steps did not finish")
    cfgmod.save_yaml(config, rundir.config_path(out))
    runs, diverged = split_diverged(runs)
    results = results_document(config, manifest, runs, environment, diverged=diverged,
                               wall_seconds=sum(r.get("train_seconds", 0.0) for r in runs + diverged), pipeline=True)
    atomic_write_json(rundir.results_path(out), results)
    return write_report(out)


def embed_figures(markdown: str, run_dir: Path) -> str:
    """REPORT.md text with each local image link replaced by a base64 data URI."""

    def inline(match: re.Match) -> str:
        alt, target = match.group(1), match.group(2)
        path = run_dir / target
        if target.startswith(("http://", "https://", "data:")) or not path.is_file():
            return match.group(0)
        mime = "image/svg+xml" if path.suffix == ".svg" else f"image/{path.suffix.lstrip('.').replace('jpg', 'jpeg')}"
        return f"![{alt}](data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", inline, markdown)


def markdown_to_html(markdown: str, title: str = "convbench report", lang: str = "en") -> str:
    """A self-contained HTML page for REPORT.md: headings, paragraphs, lists, tables, code, images, emphasis.

    Covers what convbench's reports use; anything else is shown as escaped text, never dropped.
    `lang` is the page's language attribute (the report's language).
    """
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    paragraph: list[str] = []

    def flush():
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(block))}</code></pre>")
        elif re.match(r"^#{1,6} ", stripped):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            out.append(f"<h{level}>{_inline(stripped[level:].strip())}</h{level}>")
        elif stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1].strip()):
            flush()
            header = _cells(stripped)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i].strip()))
                i += 1
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                       + "</tbody></table>")
            continue
        elif re.match(r"^([-*]|\d+\.) ", stripped):
            flush()
            ordered = stripped[0].isdigit()
            items = []
            while i < len(lines) and re.match(r"^([-*]|\d+\.) ", lines[i].strip()):
                items.append(re.sub(r"^([-*]|\d+\.) ", "", lines[i].strip()))
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
            continue
        elif not stripped:
            flush()
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}code{background:#f4f4f4}")
    return (f"<!DOCTYPE html>\n<html lang=\"{html.escape(lang, quote=True)}\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def _cells(row: str) -> list[str]:
    # Markdown's rule: `\|` is a literal pipe inside a cell, not a column break.
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def _inline(text: str) -> str:
    images: list[str] = []

    def keep_image(m: re.Match) -> str:
        images.append(f'<img alt="{html.escape(m.group(1))}" src="{html.escape(m.group(2), quote=True)}">')
        return f"\x00{len(images) - 1}\x00"

    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", keep_image, text)
    # Entity references (`&lt;`, which the report writes for a literal `<`) mean their character, as in Markdown.
    text = html.escape(html.unescape(text), quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![*\w])\*([^*]+)\*(?![*\w])", r"<em>\1</em>", text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)
    return re.sub(r"\x00(\d+)\x00", lambda m: images[int(m.group(1))], text)


def report_step(dataset_dir: str, model_dirs: list[str], run_dir: str, markdown_path: str,
                html_path: str, evaluation_dirs: list[str] | None = None, lang: str = "en") -> str:
    """The render_report step: the run directory, plus REPORT.md and REPORT.html with figures embedded.

    Args:
        dataset_dir: the Dataset artifact.
        model_dirs: the Model artifacts.
        run_dir: the run-directory artifact (same files as `convbench run --out`).
        markdown_path: the Markdown artifact's file (REPORT.md, figures as data URIs).
        html_path: the HTML artifact's file.
        evaluation_dirs: the evaluate steps' outputs (only a dependency).
        lang: the report's language, en or es (the pipeline's `lang` parameter).

    Returns:
        The best model's name ("" when every model diverged).
    """
    setup_console_logging()
    started = time.perf_counter()
    with run_log(run_dir):  # the run directory's run.log: the models' lines (assemble_run), then this step's
        report = assemble_run(dataset_dir, model_dirs, run_dir, evaluation_dirs, lang=lang)
        text = embed_figures(report.read_text(encoding="utf-8"), report.parent)
        page = markdown_to_html(text, lang=lang)
        for path, content in ((markdown_path, text), (html_path, page)):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content, encoding="utf-8")
        (Path(run_dir) / "REPORT.html").write_text(page, encoding="utf-8")
        results = json.loads(rundir.results_path(run_dir).read_text())
        if not results["models"]:
            logger.info(f"report: {report} ({time.perf_counter() - started:.1f} s); every model diverged")
            return ""
        best = max(results["models"], key=lambda m: m["test_accuracy"])
        logger.info(f"report: {report} ({time.perf_counter() - started:.1f} s); best model {best['name']}")
        return best["name"]
