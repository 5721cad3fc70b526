"""The comparison driver: data → train every (model, seed) → evaluate → results.json → REPORT.md.

The run directory is a ledger: each (model, seed) is trained once; its result is appended to
`results.json` (atomically) as soon as it is evaluated, so a crash loses at most the model in
progress, which then resumes from its last epoch checkpoint when the same command runs again.

Layout of a run directory:
    REPORT.md, results.json, config.yaml, figures/*.png,
    history/<model>_seed<k>.csv, predictions/<model>_seed<k>.npz (test/val logits and labels),
    models/<model>/seed<k>/best.weights.h5 (+ checkpoint*.npz while training),
    tensorboard/<model>_seed<k>/ (see tensorboard_events)

    convbench run --data ../shared/datasets/cifar10-jpeg --preset quick --out runs/quick
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from convbench import rundir
from convbench.rundir import run_key
from convbench import config as cfgmod
from convbench.analysis.probes import measure_extras
from convbench.config import RunConfig
from convbench.data.datasets import load_dataset
from convbench.env import describe_environment
from convbench.errors import ConvbenchError
from convbench.i18n import message_data
from convbench.io import atomic_write, atomic_write_json, atomic_write_text, check_writable, quarantine
from convbench.lock import RunLock
from convbench.models import model_info
from convbench.report.document import damaged_predictions, write_report, results_problem
from convbench.training.evaluation import score_model, predict_logits
from convbench.training.loop import TrainingDiverged
from convbench.training.tensorboard_events import EpochWriter, flat_hparams, session_dir

logger = logging.getLogger(__name__)

DIVERGED = "diverged"  # the "status" of a run whose loss became NaN/inf
RESULT_KEYS = ("name", "test_accuracy", "params", "flops_per_image", "train_seconds", "epochs_run", "best_val_accuracy")


def load_data(config: RunConfig):
    """Load the dataset a config names."""

    d = config.data
    return load_dataset(d.source, d.cache_dir or None, d.val_fraction, d.split_seed, d.max_train_images, d.max_test_images, d.strict)


def history_to_csv(history) -> str:
    """The per-epoch history as CSV text."""
    import pandas as pd

    return pd.DataFrame([dataclasses.asdict(r) for r in history]).to_csv(index=False)


def train_and_evaluate(name: str, seed: int, config: RunConfig, data, out_dir: Path, strategy=None,
                       shard=(0, 1), on_epoch_end=None) -> dict:
    """Train one (model, seed), evaluate it on test and save its artifacts under out_dir.

    Args:
        name: registered model name.
        seed: the training seed.
        config: the run config (its recipe for `name` is used, with this seed).
        data: the Dataset.
        out_dir: the run directory.
        strategy: tf.distribute strategy (default: local devices).
        shard: (worker index, worker count) under multi-worker training.
        on_epoch_end: per-epoch callback.

    Returns:
        The run's result entry (JSON-ready).
    """
    from convbench.training.recipes import fit_model

    recipe = config.recipe(name)
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=seed))
    key = run_key(name, seed)
    model_dir = rundir.model_dir(out_dir, name, seed)
    label = f"{name} seed {seed}"
    events = None
    if shard[0] == 0:
        # No checkpoint left means this model starts from scratch: an earlier attempt's events go.
        events = EpochWriter(session_dir(out_dir, key), fresh=not any(model_dir.glob(rundir.CHECKPOINT_GLOB)))
    callback = _chain(events.write_epoch if events else None, on_epoch_end)
    try:
        model, result = fit_model(name, data, recipe, checkpoint_dir=model_dir, label=label, strategy=strategy,
                                    shard=shard, on_epoch_end=callback, budget=config.budget)
    except TrainingDiverged as exc:
        if shard[0] != 0:
            return {}
        entry = _diverged_entry(name, seed, recipe, out_dir, exc)
        events.finish(exc.history, _hparams(entry, recipe), None)
        return entry
    if shard[0] != 0:
        return {}
    logger.info(f"[{label}] evaluating on {len(data.y_test)} test images")
    metrics, test_logits = score_model(model, data.x_test, data.y_test, data.class_names, recipe.train.eval_batch_size,
                                          config.measure_latency)
    val_logits = predict_logits(model, data.x_val, recipe.train.eval_batch_size)
    if not (np.isfinite(test_logits).all() and np.isfinite(val_logits).all()):
        last = result.history[-1]
        peak = recipe.transfer.head_lr_per_1024 * recipe.train.global_batch_size / 1024 if model_info(name).kind == "transfer" \
            else recipe.train.learning_rate()
        exc = TrainingDiverged(label, last.epoch, last.phase, "test or validation logits", float("nan"), peak, result.history)
        exc.train_seconds, exc.precision = result.train_seconds, result.mixed_precision
        logger.info(f"[{label}] diverged: its best weights give NaN or infinite logits")
        entry = _diverged_entry(name, seed, recipe, out_dir, exc)
        events.finish(exc.history, _hparams(entry, recipe), None)
        return entry
    logger.info(f"[{label}] robustness, test-time augmentation and saliency")
    extras, extra_arrays = measure_extras(model, data, config.analysis, test_logits, recipe.train.eval_batch_size)
    best_path = model_dir / "best.weights.h5"
    atomic_write(best_path, lambda tmp: _save_weights(model, tmp))
    atomic_write_text(out_dir / rundir.history_file(name, seed), history_to_csv(result.history))
    atomic_write(out_dir / rundir.predictions_file(name, seed),
                 lambda tmp: _save_predictions(tmp, test_logits, data.y_test, val_logits, data.y_val, extra_arrays))
    for stale in model_dir.glob(rundir.CHECKPOINT_GLOB):
        stale.unlink()  # the best weights and history are saved; resume state is no longer needed
    last = result.history[-1]
    best = next(r for r in result.history if r.epoch == result.best_epoch)
    entry = {
        "name": name,
        "kind": model_info(name).kind,
        "seed": seed,
        "test_accuracy": metrics["test_accuracy"],
        "params": metrics["params"],
        "trainable_params": metrics["trainable_params"],
        "flops_per_image": metrics["flops_per_image"],
        "train_seconds": result.train_seconds,
        "epochs_run": result.epochs_run,
        "head_steps_run": result.head_steps_run,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "train_accuracy_at_best": best.train_accuracy,
        "final_train_accuracy": last.train_accuracy,
        "final_val_accuracy": last.val_accuracy,
        # End-to-end image throughput: a transfer model's head rounds on cached features are excluded,
        # so a transfer model trained head only has none.
        "train_images_per_s": float(np.mean(speeds)) if (speeds := [r.images_per_s for r in result.history
                                                                     if r.phase != "head"]) else None,
        "stopped_early": result.stopped_early,
        "mixed_precision": result.mixed_precision,
        "precision_reason": result.precision_reason,
        "notes": result.notes,
        # The same texts as msgids and arguments, so the report shows them in its own language.
        "precision_reason_i18n": message_data(result.precision_reason),
        "notes_i18n": [message_data(n) for n in result.notes],
        "recipe": dataclasses.asdict(recipe),
        "history_csv": f"history/{key}.csv",
        "predictions": rundir.predictions_file(name, seed),
        "checkpoint": str(best_path.relative_to(out_dir)),
        **{k: v for k, v in metrics.items() if k not in ("params", "flops_per_image", "test_accuracy", "trainable_params")},
        **extras,
    }
    events.finish(result.history, _hparams(entry, recipe), entry["test_accuracy"])
    logger.info(f"[{label}] test accuracy {entry['test_accuracy']:.4f} (best val {entry['best_val_accuracy']:.4f} at epoch "
                f"{entry['best_epoch']}), {entry['train_seconds']:.0f}s training")
    return entry


def _chain(*callbacks):
    """One per-epoch callback that calls each given one (None entries skipped)."""
    present = [c for c in callbacks if c is not None]
    if not present:
        return None

    def each(record) -> None:
        for callback in present:
            callback(record)

    return each


def _hparams(entry: dict, recipe) -> dict:
    """The HParams a (model, seed) shows in TensorBoard: its recipe and what identifies the run."""
    return {"model": entry["name"], "seed": entry["seed"], "kind": entry["kind"],
            "precision": entry.get("mixed_precision") or "", "status": entry.get("status", "finished"),
            **flat_hparams(dataclasses.asdict(recipe))}


def _diverged_entry(name: str, seed: int, recipe, out_dir: Path, exc) -> dict:
    """The result of a model whose loss became NaN/inf: its history and where and at which LR it happened.

    Such a run is finished (the same recipe would diverge again): the ledger keeps it, the report
    covers the other models and names this one with advice.
    """

    key = run_key(name, seed)
    kind = model_info(name).kind
    atomic_write_text(out_dir / rundir.history_file(name, seed), history_to_csv(exc.history))
    for stale in rundir.model_dir(out_dir, name, seed).glob(rundir.CHECKPOINT_GLOB):
        stale.unlink()  # the state of a diverged model is no use to resume from
    # The setting to lower: a transfer model's phases both scale from the head's learning rate.
    setting, value = (("transfer.head_lr_per_1024", recipe.transfer.head_lr_per_1024) if kind == "transfer"
                      else ("train.lr_per_1024", recipe.train.lr_per_1024))
    return {
        "name": name,
        "kind": kind,
        "seed": seed,
        "status": DIVERGED,
        "diverged": {"epoch": exc.epoch, "phase": exc.phase, "quantity": exc.quantity, "value": str(exc.value), "lr": exc.lr,
                     "lr_setting": setting, "lr_setting_value": value},
        "train_seconds": getattr(exc, "train_seconds", 0.0),
        "epochs_run": sum(1 for r in exc.history if r.phase != "head"),
        "mixed_precision": getattr(exc, "precision", ""),
        "recipe": dataclasses.asdict(recipe),
        "history_csv": f"history/{key}.csv",
    }


def split_diverged(entries: list[dict]) -> tuple[list[dict], list[dict]]:
    """(finished runs with test metrics, diverged runs) of a list of result entries."""
    return ([e for e in entries if e.get("status") != DIVERGED], [e for e in entries if e.get("status") == DIVERGED])


def _save_weights(model, tmp: Path) -> None:
    # Keras insists on the .weights.h5 suffix; write beside the temp name, then move onto it.
    target = tmp.with_name(tmp.name + ".weights.h5")
    model.save_weights(str(target))
    os.replace(target, tmp)


def _save_predictions(tmp: Path, test_logits, y_test, val_logits, y_val, extra: dict) -> None:
    with open(tmp, "wb") as fh:
        np.savez(fh, test_logits=test_logits, test_labels=y_test, val_logits=val_logits, val_labels=y_val, **extra)


def aggregate(runs: list[dict]) -> list[dict]:
    """One entry per model: means over its seeds (and the std of test accuracy)."""
    out = []
    for name in dict.fromkeys(r["name"] for r in runs):
        rs = [r for r in runs if r["name"] == name]
        acc = [r["test_accuracy"] for r in rs]
        entry = {"name": name, "kind": rs[0]["kind"], "seeds": [r["seed"] for r in rs]}
        for k in ("test_accuracy", "best_val_accuracy", "train_seconds", "epochs_run", "head_steps_run", "train_accuracy_at_best",
                  "final_train_accuracy", "final_val_accuracy", "train_images_per_s", "latency_ms_batch1",
                  "throughput_images_per_s_batch256", "tta_accuracy"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                entry[k] = float(np.mean(vals))
        entry["test_accuracy_std"] = float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0
        entry["params"] = rs[0]["params"]
        entry["flops_per_image"] = rs[0]["flops_per_image"]
        entry["epochs_run"] = int(round(entry["epochs_run"]))
        out.append(entry)
    return out


def config_fingerprint(config: RunConfig, data_summary: dict) -> dict:
    """What must match for an existing run directory's results to be reused.

    Per-model overrides are left out: they depend on which models a command names (a preset adds
    them only for those), and each run's own recipe is compared instead (`_mismatched_recipes`).
    """
    d = cfgmod.to_dict(config)
    # The report's language is left out too: `--lang es` on the same command re-renders the same results.
    return {"config": {k: v for k, v in d.items() if k not in ("models", "seeds", "measure_latency", "ablation", "overrides",
                                                              "lang", "data_fractions")},
            "data": data_summary}


def _comparable(fingerprint) -> dict:
    # A saved fingerprint without its overrides, so run folders written before they left it still match.
    if not isinstance(fingerprint, dict):
        return {}
    config = {k: v for k, v in (fingerprint.get("config") or {}).items() if k != "overrides"}
    return {**fingerprint, "config": config}


def saved_recipe(config: RunConfig, name: str, seed: int) -> dict:
    """The recipe, as a result entry saves it (JSON form), that `config` gives (name, seed)."""
    recipe = config.recipe(name)
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=seed))
    return json.loads(json.dumps(dataclasses.asdict(recipe)))


def _mismatched_recipes(config: RunConfig, runs: list[dict]) -> list[str]:
    """Models named now whose finished runs were trained with another recipe."""
    out = []
    for r in runs:
        if r["name"] not in config.models or "recipe" not in r:
            continue
        if saved_recipe(config, r["name"], r["seed"]) != r["recipe"] and r["name"] not in out:
            out.append(r["name"])
    return out


def results_document(config: RunConfig, data_summary: dict, runs: list[dict], environment: dict, **extra) -> dict:
    """The results.json content of a run (also assembled by the Kubeflow pipeline's report step).

    Args:
        config: the run's config.
        data_summary: `Dataset.summary()` (or the pipeline's dataset manifest).
        runs: per-(model, seed) result entries.
        environment: `describe_environment()` of the machine that trained.
        **extra: further top-level fields (e.g. wall_seconds).
    """
    return {
        "convbench_version": _version(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfgmod.to_dict(config),
        "fingerprint": config_fingerprint(config, data_summary),
        "environment": environment,
        "data": data_summary,
        "runs": runs,
        "models": aggregate(runs),
        **extra,
    }


def run_comparison(config: RunConfig, out_dir: str | Path, train_fn: Callable[..., dict] | None = None) -> dict:
    """Run the whole comparison into `out_dir` and render its report.

    Args:
        config: a validated RunConfig.
        out_dir: the run directory (created; reused as a ledger if it holds a run of the same config).
        train_fn: trains and evaluates one (model, seed) with `train_and_evaluate`'s signature
            (default: `train_and_evaluate`; Ray passes its distributed version).

    Returns:
        The results dict written to results.json.
    """

    config.validate()
    for name in config.models:
        model_info(name)  # unknown names fail now, not after an hour of training

    out_dir = Path(out_dir)
    check_writable(out_dir)  # unwritable folder or (nearly) full disk: fail before loading data or training
    lock = RunLock(out_dir).acquire()  # a second run on the same folder refuses here
    try:
        results = _run_locked(config, out_dir, train_fn or train_and_evaluate)
    finally:
        lock.release()
    return results


def _run_locked(config: RunConfig, out_dir: Path, train_fn: Callable[..., dict]) -> dict:
    """run_comparison's body, with the run directory's lock held."""

    data = load_data(config)
    logger.info(f"data: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test images, {data.num_classes} classes")
    results_path = rundir.results_path(out_dir)
    fingerprint = config_fingerprint(config, data.summary())
    previous = read_previous_results(results_path)
    runs: list[dict] = []
    diverged: list[dict] = []
    if previous and _comparable(previous.get("fingerprint")) == json.loads(json.dumps(fingerprint)):
        # Every finished run is kept, named this time or not: a narrower rerun never deletes results.
        runs = list(previous["runs"])

        for run, path, problem in damaged_predictions(out_dir, runs):
            # Its test logits feed every statistic of the report: train the model again.
            if path.exists():
                quarantine(path, problem)
            logger.info(f"retraining {run['name']} seed {run['seed']}: its saved predictions are unusable ({problem})")
            runs.remove(run)
        # A diverged run whose recipe changed (the advice is to lower its learning rate) trains again.
        retrain = set(_mismatched_recipes(config, previous.get("diverged", [])))
        diverged = [r for r in previous.get("diverged", []) if r["name"] not in retrain]
        if retrain:
            logger.info(f"retraining {', '.join(sorted(retrain))} with its changed recipe (it had diverged)")
        changed = _mismatched_recipes(config, runs)
        if changed:
            raise ConvbenchError(
                f"{out_dir} holds runs of {', '.join(changed)} trained with another recipe; pass a new --out folder "
                "(or undo the change)"
            )
        if runs:
            logger.info(f"reusing {len(runs)} finished runs from {results_path}")
        others = sorted({r["name"] for r in runs} - set(config.models))
        if others:
            logger.info(f"keeping the finished runs of {', '.join(others)} (not named this time); the report covers them too")
    elif previous:
        raise ConvbenchError(
            f"{out_dir} holds results of a different config or data; pass a new --out folder (or delete {results_path})"
        )
    cfgmod.save_yaml(config, rundir.config_path(out_dir))
    results = results_document(config, data.summary(), runs, describe_environment(), diverged=diverged)
    done = {run_key(r["name"], r["seed"]) for r in runs + diverged}
    started = time.perf_counter()
    for name in config.models:
        for k in range(config.seeds):
            seed = config.train.seed + k
            if run_key(name, seed) in done:
                continue
            entry = train_fn(name, seed, config, data, out_dir)
            (diverged if entry.get("status") == DIVERGED else runs).append(entry)
            results.update(runs=runs, diverged=diverged, models=aggregate(runs))
            atomic_write_json(results_path, results)
    results["wall_seconds"] = time.perf_counter() - started
    atomic_write_json(results_path, results)
    write_report(out_dir)
    return results


def read_previous_results(path: Path) -> dict:
    """A run directory's results.json, or {} when there is none; a damaged one is set aside with a warning.

    Damaged means unreadable JSON or the wrong shape (not an object whose "runs" is a list of runs
    with a name and a seed); its models are then trained again, never silently.
    """
    if not path.exists():
        return {}

    try:
        previous = json.loads(path.read_text())
        problem = results_problem(previous)
        if problem:
            raise ValueError(problem)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        quarantine(path, f"{type(exc).__name__}: {exc}")
        return {}
    return previous


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("convbench")
    except metadata.PackageNotFoundError:
        return "unknown"
