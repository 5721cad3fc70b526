"""`convbench ablate`: does the augmentation and regularization of the recipe actually help?

Each chosen architecture (default: the custom CNNs of the config) is trained in several variants of
its recipe, for every seed of the config, on the same data, and the variants are compared in pairs
on the same test images with `convbench.analysis.stats.ablation_effects` (paired sign/McNemar test, Holm
correction over a model's contrasts, paired bootstrap CI of the accuracy difference).

Variants (each a change of the model's configured recipe through `ModelOverride`):
    aug=none            no augmentation at all
    aug=crop+flip       random crop (the recipe's padding, else 4 px) and horizontal flip, no
                        cutout or mixing; the recipe's regularizers: the baseline of every contrast
    aug=full            crop + flip + cutout (the recipe's size, else 8 px) + cutmix alpha 1.0
                        (or the recipe's mixup/cutmix when it sets one)
    dropout=off         baseline with dropout 0
    weight_decay=off    baseline with weight decay 0
    label_smoothing=off baseline with label smoothing 0
    precision=float32   baseline in float32 (only when named: not part of "all"); against the
                        policy `mixed_precision: auto` picks, bf16 on CPUs with AMX/AVX512-BF16
A regularizer variant identical to the baseline (already 0 in the recipe, or a model without
dropout; float32 where auto already picks it) is skipped and said so. Contrasts: aug=none ->
aug=crop+flip, aug=crop+flip -> aug=full, <regularizer>=off -> <regularizer>=on and
precision=float32 -> precision=auto (both = the baseline run).

Layout in the run directory:
    ablation.json                     ledger of finished (model, variant, seed) runs, effects, figures
    ablation/<model>/<variant>/       what `experiment.comparison.train_and_evaluate` writes per variant
                                      (history/, predictions/, models/)
    figures/ablation_<model>.png      learning curves of every variant (first seed)

A re-run resumes: finished (model, variant, seed) entries are kept, and a baseline run of the
same recipe already in results.json (from `convbench run`) is reused instead of retrained.

    convbench ablate --data ../shared/datasets/cifar10-jpeg --models cnn_vgg --epochs 4 \\
        --max-train-images 5000 --variants aug=none,aug=crop+flip --out runs/quick
    .venv/bin/pytest tests/test_ablation.py -q
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from convbench import config as cfgmod, rundir
from convbench.analysis.ablation import (
    _on_alias,
    _plain,
    BASELINE,
    compute_effects,
    contrasts,
    DEFAULT_VARIANTS,
    describe_recipe,
    LEDGER_NAME,
    load_ledger,
    parse_variants,
    PRECISION_VARIANT,
    REGULARIZERS,
    VARIANTS,
)
from convbench.config import describe_augment, ModelOverride, Recipe, RunConfig
from convbench.errors import ConvbenchError
from convbench.experiment.comparison import DIVERGED, load_data, train_and_evaluate
from convbench.i18n import _, fmt, Message, message_data, N_, number, render_stored, use_language
from convbench.io import atomic_write_json, check_writable
from convbench.lock import RunLock
from convbench.models import create_model, list_models, model_info
from convbench.report.ablation import curve_caption, plot_ablation_curves
from convbench.report.document import write_report

logger = logging.getLogger(__name__)

DEFAULT_CROP = 4  # pixels of reflection padding when the configured recipe has crop off
DEFAULT_CUTOUT = 8  # the "full" policy's cutout square when the recipe has none
DEFAULT_CUTMIX = 1.0  # the "full" policy's cutmix alpha when the recipe mixes nothing


# ---------------------------------------------------------------------------------------------
# Variants and contrasts


def variant_changes(variant: str, recipe: Recipe) -> dict[str, dict[str, Any]]:
    """Recipe fields a variant sets, per section, given the model's configured recipe.

    Args:
        variant: one of VARIANTS.
        recipe: the model's recipe as configured (`RunConfig.recipe(model)`).

    Returns:
        {"augment": {...}, "regularization": {...}} (sections that change only).
    """
    a = recipe.augment
    crop = a.crop_padding or DEFAULT_CROP
    crop_flip = {"crop_padding": crop, "flip": True, "cutout": 0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}
    if variant == "aug=none":
        return {"augment": {"crop_padding": 0, "flip": False, "cutout": 0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}}
    if variant == BASELINE:
        return {"augment": crop_flip}
    if variant == "aug=full":
        mixing = {"mixup_alpha": a.mixup_alpha, "cutmix_alpha": a.cutmix_alpha}
        if not a.mixup_alpha and not a.cutmix_alpha:
            mixing = {"mixup_alpha": 0.0, "cutmix_alpha": DEFAULT_CUTMIX}
        return {"augment": {"crop_padding": crop, "flip": True, "cutout": a.cutout or DEFAULT_CUTOUT, **mixing}}
    if variant in REGULARIZERS:
        field_name = REGULARIZERS[variant][0]
        return {"augment": crop_flip, "regularization": {field_name: 0.0}}
    if variant == PRECISION_VARIANT:
        return {"augment": crop_flip, "train": {"mixed_precision": "off"}}
    raise ConvbenchError(f"unknown ablation variant {variant!r}; choose from {', '.join(VARIANTS)}")


def variant_config(config: RunConfig, model: str, variant: str) -> RunConfig:
    """The RunConfig that trains `model` in `variant`: only that model, its override extended.

    Args:
        config: the ablation's base config.
        model: a model of the config.
        variant: one of VARIANTS.

    Returns:
        A validated RunConfig with models=(model,); latency, robustness, test-time augmentation,
        mistakes and saliency are off (the ablation compares test accuracy only).
    """
    changes = variant_changes(variant, config.recipe(model))
    over = config.overrides.get(model, ModelOverride())
    merged = dataclasses.replace(
        over,
        augment={**(over.augment or {}), **changes.get("augment", {})},
        regularization={**(over.regularization or {}), **changes["regularization"]} if "regularization" in changes else over.regularization,
        train={**(over.train or {}), **changes["train"]} if "train" in changes else over.train,
    )
    return dataclasses.replace(config, models=(model,), overrides={model: merged}, measure_latency=False,
                               analysis=_only_accuracy(config.analysis)).validate()


# Per-run extras the ablation never reports; each costs about as much as a small training.
_EXTRAS_OFF = {"robustness_images": 0, "tta_flip": False, "saliency_images": 0, "mistakes": 0}


def _only_accuracy(analysis):
    names = {f.name for f in dataclasses.fields(analysis)}
    return dataclasses.replace(analysis, **{k: v for k, v in _EXTRAS_OFF.items() if k in names})


def recipe_diff(base: Recipe, other: Recipe) -> dict[str, dict[str, Any]]:
    """Fields of `other` that differ from `base`, per section: {section: {field: new value}}."""
    a, b = dataclasses.asdict(base), dataclasses.asdict(other)
    out = {}
    for section in a:
        changed = {k: v for k, v in b[section].items() if a[section].get(k) != v}
        if changed:
            out[section] = changed
    return out


def _has_active_dropout(model: str, recipe: Recipe, num_classes: int) -> bool:
    """Whether the model, built with this recipe, has a dropout layer with a rate above 0."""
    if recipe.regularization.dropout >= 0:
        return recipe.regularization.dropout > 0
    import keras

    from convbench.training.recipes import model_kwargs

    # Only the layer list is needed: random init, nothing trained or downloaded.
    net = create_model(model, num_classes=num_classes, **model_kwargs(model, recipe, weights=None))
    rates = [layer.rate for layer in _all_layers(net) if isinstance(layer, keras.layers.Dropout)]
    del net
    return any(r > 0 for r in rates)


def _all_layers(model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if getattr(layer, "layers", None):
            out.extend(_all_layers(layer))
    return out


def skip_reason(variant: str, model: str, recipe: Recipe, num_classes: int) -> str | None:
    """Why a variant would only repeat the baseline for this model, or None when it is a real change.

    Args:
        variant: one of VARIANTS.
        model: the model name.
        recipe: the model's configured recipe.
        num_classes: classes of the data (to build the model for the dropout check).

    Returns:
        One sentence, or None.
    """
    if variant == PRECISION_VARIANT:
        from convbench.training.recipes import model_precision

        policy, reason = model_precision(model, recipe)
        if policy == "float32":
            return Message(N_("the {model} recipe already trains in float32 here ({reason}), so {variant} would repeat "
                              "{baseline}"), model=model, reason=reason, variant=variant, baseline=BASELINE)
        return None
    if variant not in REGULARIZERS:
        return None
    field_name, factor = REGULARIZERS[variant]
    if field_name == "dropout":
        if not _has_active_dropout(model, recipe, num_classes):
            return Message(N_("{model} has no active dropout in its recipe, so {variant} would repeat {baseline}"),
                           model=model, variant=variant, baseline=BASELINE)
        return None
    if getattr(recipe.regularization, field_name) == 0:
        return Message(N_("{factor} is already 0 in the {model} recipe, so {variant} would repeat {baseline}"),
                       factor=Message(factor), model=model, variant=variant, baseline=BASELINE)
    return None


def variant_dir(model: str, variant: str) -> str:
    """Run-directory-relative folder of one (model, variant): `ablation/<model>/<variant>`."""
    return f"ablation/{model}/{variant}"


# ---------------------------------------------------------------------------------------------
# Ledger


def _entry_key(e: Mapping[str, Any]) -> tuple[str, str, int]:
    return (e["model"], e["variant"], int(e["seed"]))


def _files_present(run_dir: Path, entry: Mapping[str, Any]) -> bool:
    return all((run_dir / entry[k]).is_file() for k in ("history_csv", "predictions"))


def ledger_entry(model: str, variant: str, seed: int, result: Mapping[str, Any], prefix: str, source: str) -> dict:
    """The ablation.json entry of one finished run, from a `train_and_evaluate` result entry.

    Args:
        model: model name.
        variant: variant name.
        seed: training seed.
        result: the entry train_and_evaluate returned (or a results.json run).
        prefix: run-directory-relative folder its paths are relative to ("" for results.json runs).
        source: "ablation" (trained here) or "results.json" (reused from `convbench run`).

    Returns:
        JSON-ready dict with model, variant, seed, test_accuracy, gap, history_csv and predictions
        (relative to the run directory), and the recipe.
    """
    def rel(p: str) -> str:
        return f"{prefix}/{p}" if prefix else p

    return _plain({
        "model": model,
        "variant": variant,
        "seed": int(seed),
        "test_accuracy": result["test_accuracy"],
        "gap": result["final_train_accuracy"] - result["final_val_accuracy"],
        "final_train_accuracy": result["final_train_accuracy"],
        "final_val_accuracy": result["final_val_accuracy"],
        "best_val_accuracy": result["best_val_accuracy"],
        "epochs_run": result["epochs_run"],
        "train_seconds": result["train_seconds"],
        "history_csv": rel(result["history_csv"]),
        "predictions": rel(result["predictions"]),
        "recipe": result["recipe"],
        "source": source,
    })


def _main_run_results(run_dir: Path, data_summary: dict) -> list[dict]:
    """Finished runs of `convbench run` in this folder on the same data (reusable baselines)."""
    path = rundir.results_path(run_dir)
    if not path.exists():
        return []
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if _plain(results.get("data")) != data_summary:
        return []
    return [r for r in results.get("runs", []) if isinstance(r, dict) and {"name", "seed", "recipe", "predictions"} <= set(r)]


# ---------------------------------------------------------------------------------------------
# Running


def run_ablation(config: RunConfig, run_dir: str | Path, variants: Sequence[str] | None = None) -> dict:
    """Train every (model, variant, seed) not yet finished, then write ablation.json and figures.

    Args:
        config: the base config; every model of `config.models` is ablated, with seeds
            `config.train.seed .. config.train.seed + config.seeds - 1`.
        run_dir: the run directory (may hold a `convbench run`; its matching baseline runs are reused).
        variants: variant names (default: all); the baseline is always included.

    Returns:
        The ablation.json content.
    """

    config.validate()
    for name in config.models:
        model_info(name)  # unknown names fail now, not after the first training
    chosen = parse_variants(",".join(variants)) if variants else VARIANTS
    run_dir = Path(run_dir)
    check_writable(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        return _ablate_locked(config, run_dir, chosen)
    finally:
        lock.release()


def _ablate_locked(config: RunConfig, run_dir: Path, variants: Sequence[str]) -> dict:

    data = load_data(config)
    summary = _plain(data.summary())
    logger.info(f"ablation data: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test images, {data.num_classes} classes")
    path = run_dir / LEDGER_NAME
    ledger = load_ledger(run_dir) or {}
    if ledger and ledger.get("data") != summary:
        raise ConvbenchError(
            f"{path} holds an ablation on different data; pass a new --out folder (or delete {path} and {run_dir / 'ablation'})"
        )
    runs: list[dict] = list(ledger.get("runs", []))
    variants_info: dict = dict(ledger.get("variants", {}))
    skipped: dict = dict(ledger.get("skipped", {}))
    # The skip reasons' msgids and arguments, beside their English text, so a report in another language can show them.
    skipped_i18n: dict = dict(ledger.get("skipped_i18n", {}))

    # Plan everything first, so a mismatch with earlier results fails before any training.
    seeds = range(config.train.seed, config.train.seed + config.seeds)
    plan = []
    for model in config.models:
        base = config.recipe(model)
        info, model_skips = {}, {}
        for variant in variants:
            reason = skip_reason(variant, model, base, data.num_classes)
            if reason:
                model_skips[variant] = reason
                logger.info(f"[ablation] skipping {model} {variant}: {reason}")
                continue
            vcfg = variant_config(config, model, variant)
            recipe = vcfg.recipe(model)
            with use_language("en"):  # the ledger is English; the report describes each recipe in its own language
                description = describe_recipe(dataclasses.asdict(recipe))
            info[variant] = {"diff": _plain(recipe_diff(base, recipe)), "description": description}
            for seed in seeds:
                expected = _plain(dataclasses.asdict(dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=seed))))
                old = next((e for e in runs if _entry_key(e) == (model, variant, seed)), None)
                if old is not None and old.get("recipe") != expected:
                    raise ConvbenchError(
                        f"{path} holds {model} {variant} seed {seed} trained with another recipe ({_first_difference(old.get('recipe'), expected)}); "
                        f"pass a new --out folder, or delete {path} and {run_dir / 'ablation'} to start the ablation over"
                    )
                plan.append((model, variant, seed, vcfg, expected, old))
        variants_info[model] = {**variants_info.get(model, {}), **info}
        skipped[model] = {**{k: v for k, v in skipped.get(model, {}).items() if k not in info}, **model_skips}
        skipped_i18n[model] = {**{k: v for k, v in skipped_i18n.get(model, {}).items() if k not in info},
                               **{k: message_data(v) for k, v in model_skips.items()}}
        if not skipped[model]:
            del skipped[model]
        if not skipped_i18n[model]:
            del skipped_i18n[model]

    cfgmod.save_yaml(config, rundir.config_path(run_dir / "ablation"))  # only once the plan agrees with earlier runs
    main_runs = _main_run_results(run_dir, summary)
    state = {"data": summary, "alpha": config.analysis.alpha, "variants": variants_info, "skipped": skipped,
             "skipped_i18n": skipped_i18n}

    def save(effects=None, curves=None, curve_seeds=None):
        doc = {
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "models": list(dict.fromkeys(e["model"] for e in runs)),
            **state,
            "runs": runs,
            # Effects are only written once every planned run is in, never stale ones from fewer runs.
            "effects": effects or [],
            "curves": curves or {},
            # The seed each curve figure shows, so the report can caption (and redraw) it in its language.
            "curve_seeds": curve_seeds or {},
        }
        atomic_write_json(path, doc)
        return doc

    trained = reused = kept = 0
    for model, variant, seed, vcfg, expected, old in plan:
        label = f"{model} {variant} seed {seed}"
        if old is not None:
            if _files_present(run_dir, old):
                logger.info(f"[ablation] {label}: already finished ({100 * old['test_accuracy']:.2f} % test), skipped")
                kept += 1
                continue
            logger.info(f"[ablation] {label}: its history or predictions file is missing; training it again")
            runs.remove(old)
        match = next((r for r in main_runs if r["name"] == model and int(r["seed"]) == seed and _plain(r["recipe"]) == expected), None)
        if variant == BASELINE and match is not None and _files_present(run_dir, {"history_csv": match["history_csv"], "predictions": match["predictions"]}):
            runs.append(ledger_entry(model, variant, seed, match, "", rundir.RESULTS))
            logger.info(f"[ablation] {label}: same recipe, seed and data as the `convbench run` in {run_dir}; reusing it")
            reused += 1
        else:
            prefix = variant_dir(model, variant)
            logger.info(f"[ablation] training {label}: {variants_info[model][variant]['description']}")
            result = train_and_evaluate(model, seed, vcfg, data, run_dir / prefix)
            trained += 1
            _free_memory()
            if result.get("status") == DIVERGED:
                # A result, not a crash: the effects leave it out and the ablation report says why.
                d = result["diverged"]
                reason = Message(N_("seed {seed} diverged ({quantity} became {value} at epoch {epoch}, peak learning rate "
                                    "{lr}); lower `{setting}`"), seed=str(seed), quantity=Message(d["quantity"]),
                                 value=str(d["value"]), epoch=str(d["epoch"]), lr=f"{d['lr']:.4g}", setting=d["lr_setting"])
                logger.info(f"[ablation] {label}: {reason}")
                skipped.setdefault(model, {})[variant] = reason
                skipped_i18n.setdefault(model, {})[variant] = message_data(reason)
                save()
                continue
            runs.append(ledger_entry(model, variant, seed, result, prefix, "ablation"))
        save()
    logger.info(f"[ablation] {trained} trained, {reused} reused from results.json, {kept} already finished")
    effects, used_seeds = compute_effects(run_dir, runs, config.analysis.alpha)
    curves, curve_seeds = {}, {}
    for model in dict.fromkeys(e["model"] for e in runs):
        rel = rundir.ablation_figure(model)
        with use_language(getattr(config, "lang", None)):
            seed = plot_ablation_curves(run_dir, runs, model, run_dir / rel, seeds=used_seeds.get(model))
        if seed is not None:
            with use_language("en"):
                curves[curve_caption(model, seed)] = rel
            curve_seeds[model] = seed
    doc = save(effects, curves, curve_seeds)
    logger.info(f"ablation written: {path} ({len(effects)} effects)")
    return _plain(doc)


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return _first_difference(old.get(k), new.get(k), f"{where}.{k}" if where else k)
    return f"{where or 'recipe'}: {old!r} then, {new!r} now"


def _free_memory() -> None:
    # Several trainings in one process: drop the finished model's graphs before the next one.
    import keras

    keras.backend.clear_session()
    gc.collect()


def run_configured_ablation(config: RunConfig, out_dir: str | Path) -> bool:
    """The ablation a run's config asks for (`ablation.variants`), after its comparison; re-renders REPORT.md.

    `convbench run` calls it after the comparison: the comparison driver does not trigger it itself.

    Returns:
        Whether an ablation ran (False when the config names no variants).
    """
    if not config.ablation.variants:
        return False
    models = config.ablation.models or tuple(m for m in config.models if m in list_models("custom"))
    logger.info(f"ablation of {', '.join(models)}: {', '.join(config.ablation.variants)}")
    ablation_config = dataclasses.replace(config, models=models, overrides={k: v for k, v in config.overrides.items() if k in models})
    run_ablation(ablation_config, out_dir, config.ablation.variants)
    write_report(out_dir)
    return True
