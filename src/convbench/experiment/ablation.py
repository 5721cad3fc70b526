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
    ablation/<model>/<variant>/       what `runner.train_and_evaluate` writes per variant
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
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from convbench.config import ModelOverride, Recipe, RunConfig, describe_augment
from convbench.errors import ConvbenchError
from convbench.i18n import N_, Message, _, fmt, message_data, number, render_stored, use_language

LEDGER_NAME = "ablation.json"
BASELINE = "aug=crop+flip"
DEFAULT_VARIANTS = ("aug=none", BASELINE, "aug=full", "dropout=off", "weight_decay=off", "label_smoothing=off")
# Named on request only (not in "all"): float32 against the precision `auto` picks (bf16 on AMX/AVX512-BF16 CPUs).
PRECISION_VARIANT = "precision=float32"
VARIANTS = (*DEFAULT_VARIANTS, PRECISION_VARIANT)
# Regularizer variant -> (recipe field switched off, the factor's name in the report). Factor names
# are stored in English (ablation.json) and translated where the report shows them.
REGULARIZERS = {
    "dropout=off": ("dropout", N_("dropout")),
    "weight_decay=off": ("weight_decay", N_("weight decay")),
    "label_smoothing=off": ("label_smoothing", N_("label smoothing")),
}
DEFAULT_CROP = 4  # pixels of reflection padding when the configured recipe has crop off
DEFAULT_CUTOUT = 8  # the "full" policy's cutout square when the recipe has none
DEFAULT_CUTMIX = 1.0  # the "full" policy's cutmix alpha when the recipe mixes nothing


# ---------------------------------------------------------------------------------------------
# Variants and contrasts


def parse_variants(text: str | None) -> tuple[str, ...]:
    """The variants a `--variants` value names, in canonical order, always with the baseline.

    Args:
        text: comma-separated variant names, "all" or None (= all).

    Returns:
        Variant names ordered as in VARIANTS (None and "all" give DEFAULT_VARIANTS); `aug=crop+flip` is
        added because every contrast uses it.

    Raises:
        ConvbenchError: an unknown name, or nothing to compare with the baseline.
    """
    if text is None or text.strip().lower() in ("", "all"):
        return DEFAULT_VARIANTS
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConvbenchError(f"unknown ablation variant {unknown[0]!r}; choose from {', '.join(VARIANTS)} (comma-separated) or all")
    chosen = set(names) | {BASELINE}
    if chosen == {BASELINE}:
        raise ConvbenchError(
            f"--variants {text!r} leaves nothing to compare with the baseline {BASELINE}; add e.g. aug=none or dropout=off"
        )
    return tuple(v for v in VARIANTS if v in chosen)


def contrasts(variants: Sequence[str]) -> list[dict[str, str]]:
    """The contrasts (for `stats.ablation_effects`) that the given variants allow.

    Regularizer contrasts compare `<name>=off` with `<name>=on`, an alias of the baseline run, so the
    report reads "dropout=off → dropout=on".

    Args:
        variants: variant names that have runs.

    Returns:
        Mappings {"factor", "without", "with"}.
    """
    have = set(variants)
    out = []
    if BASELINE in have and "aug=none" in have:
        out.append({"factor": N_("augmentation (crop+flip)"), "without": "aug=none", "with": BASELINE})
    if BASELINE in have and "aug=full" in have:
        out.append({"factor": N_("stronger augmentation (full policy)"), "without": BASELINE, "with": "aug=full"})
    for variant, (_field, factor) in REGULARIZERS.items():
        if BASELINE in have and variant in have:
            out.append({"factor": factor, "without": variant, "with": _on_alias(variant)})
    if BASELINE in have and PRECISION_VARIANT in have:
        out.append({"factor": N_("mixed precision (the auto policy)"), "without": PRECISION_VARIANT,
                    "with": _on_alias(PRECISION_VARIANT)})
    return out


def _on_alias(off_variant: str) -> str:
    """The name the baseline run takes opposite a switched-off variant ("dropout=on", "precision=auto")."""
    if off_variant == PRECISION_VARIANT:
        return "precision=auto"
    return off_variant.replace("=off", "=on")


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


def describe_recipe(recipe: Mapping[str, Any]) -> str:
    """A short human description of a recipe's augmentation and regularizers (from its dict form), in the active language."""
    a, g = recipe["augment"], recipe["regularization"]
    dropout = _("model default") if g["dropout"] < 0 else number(g["dropout"], "g")
    return fmt(_("{augmentation}; dropout {dropout}, weight decay {weight_decay:g}, label smoothing {label_smoothing:g}"),
               augmentation=" + ".join(describe_augment(a)) or _("no augmentation"), dropout=dropout,
               weight_decay=g["weight_decay"], label_smoothing=g["label_smoothing"])


def _has_active_dropout(model: str, recipe: Recipe, num_classes: int) -> bool:
    """Whether the model, built with this recipe, has a dropout layer with a rate above 0."""
    if recipe.regularization.dropout >= 0:
        return recipe.regularization.dropout > 0
    import keras

    from convbench.training.recipes import model_kwargs
    from convbench.models import create_model

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


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def load_ledger(run_dir: str | Path) -> dict | None:
    """RUN_DIR/ablation.json, or None when there is none.

    Raises:
        ConvbenchError: the file exists but cannot be read as JSON.
    """
    path = Path(run_dir) / LEDGER_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConvbenchError(f"cannot read {path} ({exc}); delete it and run `convbench ablate` again to rebuild it") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ConvbenchError(f"{path} is not an ablation ledger; delete it and run `convbench ablate` again to rebuild it")
    return data


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
    path = run_dir / "results.json"
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


def run_ablation(config: RunConfig, run_dir: str | Path, variants: Sequence[str] | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Train every (model, variant, seed) not yet finished, then write ablation.json and figures.

    Args:
        config: the base config; every model of `config.models` is ablated, with seeds
            `config.train.seed .. config.train.seed + config.seeds - 1`.
        run_dir: the run directory (may hold a `convbench run`; its matching baseline runs are reused).
        variants: variant names (default: all); the baseline is always included.
        log: progress output.

    Returns:
        The ablation.json content.
    """
    from convbench.io import check_writable
    from convbench.lock import RunLock
    from convbench.models import model_info

    config.validate()
    for name in config.models:
        model_info(name)  # unknown names fail now, not after the first training
    chosen = parse_variants(",".join(variants)) if variants else VARIANTS
    run_dir = Path(run_dir)
    check_writable(run_dir)
    lock = RunLock(run_dir, log=log).acquire()
    try:
        return _ablate_locked(config, run_dir, chosen, log)
    finally:
        lock.release()


def _ablate_locked(config: RunConfig, run_dir: Path, variants: Sequence[str], log: Callable[[str], None]) -> dict:
    from convbench import config as cfgmod
    from convbench.io import atomic_write_json
    from convbench.experiment.comparison import DIVERGED, load_data, train_and_evaluate

    data = load_data(config, log)
    summary = _plain(data.summary())
    log(f"ablation data: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test images, {data.num_classes} classes")
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
                log(f"[ablation] skipping {model} {variant}: {reason}")
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

    cfgmod.save_yaml(config, run_dir / "ablation" / "config.yaml")  # only once the plan agrees with earlier runs
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
                log(f"[ablation] {label}: already finished ({100 * old['test_accuracy']:.2f} % test), skipped")
                kept += 1
                continue
            log(f"[ablation] {label}: its history or predictions file is missing; training it again")
            runs.remove(old)
        match = next((r for r in main_runs if r["name"] == model and int(r["seed"]) == seed and _plain(r["recipe"]) == expected), None)
        if variant == BASELINE and match is not None and _files_present(run_dir, {"history_csv": match["history_csv"], "predictions": match["predictions"]}):
            runs.append(ledger_entry(model, variant, seed, match, "", "results.json"))
            log(f"[ablation] {label}: same recipe, seed and data as the `convbench run` in {run_dir}; reusing it")
            reused += 1
        else:
            prefix = variant_dir(model, variant)
            log(f"[ablation] training {label}: {variants_info[model][variant]['description']}")
            result = train_and_evaluate(model, seed, vcfg, data, run_dir / prefix, log)
            trained += 1
            _free_memory()
            if result.get("status") == DIVERGED:
                # A result, not a crash: the effects leave it out and the ablation report says why.
                d = result["diverged"]
                reason = Message(N_("seed {seed} diverged ({quantity} became {value} at epoch {epoch}, peak learning rate "
                                    "{lr}); lower `{setting}`"), seed=str(seed), quantity=Message(d["quantity"]),
                                 value=str(d["value"]), epoch=str(d["epoch"]), lr=f"{d['lr']:.4g}", setting=d["lr_setting"])
                log(f"[ablation] {label}: {reason}")
                skipped.setdefault(model, {})[variant] = reason
                skipped_i18n.setdefault(model, {})[variant] = message_data(reason)
                save()
                continue
            runs.append(ledger_entry(model, variant, seed, result, prefix, "ablation"))
        save()
    log(f"[ablation] {trained} trained, {reused} reused from results.json, {kept} already finished")
    effects, used_seeds = compute_effects(run_dir, runs, config.analysis.alpha, log)
    curves, curve_seeds = {}, {}
    for model in dict.fromkeys(e["model"] for e in runs):
        rel = f"figures/ablation_{model}.png"
        with use_language(getattr(config, "lang", None)):
            seed = plot_ablation_curves(run_dir, runs, model, run_dir / rel, seeds=used_seeds.get(model))
        if seed is not None:
            with use_language("en"):
                curves[curve_caption(model, seed)] = rel
            curve_seeds[model] = seed
    doc = save(effects, curves, curve_seeds)
    log(f"ablation written: {path} ({len(effects)} effects)")
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


# ---------------------------------------------------------------------------------------------
# Statistics and figures


def _correctness(run_dir: Path, entry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / entry["predictions"]
    try:
        with np.load(path) as z:
            logits, labels = z["test_logits"], z["test_labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConvbenchError(f"cannot read the predictions {path} ({exc}); run `convbench ablate` again to retrain that run") from None
    return logits.argmax(axis=1) == labels, labels


def compute_effects(run_dir: str | Path, runs: Sequence[Mapping[str, Any]], alpha: float = 0.05,
                    log: Callable[[str], None] = print) -> tuple[list[dict], dict[str, list[int]]]:
    """Effects of every contrast the finished runs allow, Holm-corrected together over all models.

    One family over every model's contrasts, so "helped" holds at `alpha` for the whole ablation,
    as the report states. Each model is compared on the seeds that all its compared variants have,
    so every contrast is paired seed by seed.

    Args:
        run_dir: the run directory (predictions paths are relative to it).
        runs: ledger entries (model, variant, seed, gap, predictions, ...).
        alpha: family-wise level over all contrasts.
        log: progress output.

    Returns:
        (stats.ablation_effects results of all models concatenated, JSON-safe; model -> seeds used)
    """
    from convbench.analysis.stats import ablation_effects

    run_dir = Path(run_dir)
    all_correct: dict[str, list[np.ndarray]] = {}
    all_gaps: dict[str, list[float]] = {}
    all_contrasts: list[dict[str, str]] = []
    used: dict[str, list[int]] = {}
    for model in dict.fromkeys(e["model"] for e in runs):
        by_variant: dict[str, dict[int, Mapping[str, Any]]] = {}
        for e in runs:
            if e["model"] == model:
                by_variant.setdefault(e["variant"], {})[int(e["seed"])] = e
        cons = contrasts(list(by_variant))
        if not cons:
            continue
        involved = {c["without"] for c in cons} | {c["with"] for c in cons}
        aliases = {_on_alias(v) for v in (*REGULARIZERS, PRECISION_VARIANT)}
        involved = {BASELINE if v in aliases else v for v in involved}
        seeds = sorted(set.intersection(*(set(by_variant[v]) for v in involved)))
        if not seeds:
            log(f"[ablation] {model}: no seed finished in every compared variant yet; no effects")
            continue
        labels0 = None
        correct: dict[str, list[np.ndarray]] = {}
        gaps: dict[str, list[float]] = {}
        for v in sorted(involved):
            correct[v], gaps[v] = [], []
            for s in seeds:
                c, labels = _correctness(run_dir, by_variant[v][s])
                if labels0 is None:
                    labels0 = labels
                elif labels.shape != labels0.shape or not np.array_equal(labels, labels0):
                    raise ConvbenchError(
                        f"{model} {v} seed {s} was evaluated on other test images than the rest of the ablation; "
                        "delete ablation.json and the ablation/ folder and run `convbench ablate` again"
                    )
                correct[v].append(c)
                gaps[v].append(float(by_variant[v][s]["gap"]))
        for variant in (*REGULARIZERS, PRECISION_VARIANT):
            if variant in involved:  # "<reg>=on" is the baseline under the name the report should show
                correct[_on_alias(variant)] = correct[BASELINE]
                gaps[_on_alias(variant)] = gaps[BASELINE]
        # One family over all models: keys carry the model, which is stripped again below.
        for v in correct:
            all_correct[f"{model}|{v}"] = correct[v]
            all_gaps[f"{model}|{v}"] = gaps[v]
        for c in cons:
            all_contrasts.append({"factor": c["factor"], "without": f"{model}|{c['without']}", "with": f"{model}|{c['with']}"})
        used[model] = seeds
    if not all_contrasts:
        return [], used
    effects = ablation_effects(all_correct, all_contrasts, alpha, gaps=all_gaps)
    for e in effects:
        model, e["with"] = e["with"].split("|", 1)
        e["model"], e["without"] = model, e["without"].split("|", 1)[1]
    return _plain(effects), used


def plot_ablation_curves(run_dir: str | Path, runs: Sequence[Mapping[str, Any]], model: str, path: Path,
                         seeds: Sequence[int] | None = None) -> int | None:
    """Accuracy per epoch of every variant of one model: validation solid, train dashed.

    Args:
        run_dir: the run directory (history paths are relative to it).
        runs: ledger entries.
        model: the model to plot.
        path: the PNG to write.
        seeds: seeds to pick the first one from (default: all of the model's seeds).

    Returns:
        The seed plotted, or None when no history of the model could be read.
    """
    import pandas as pd

    from convbench.report.document import pyplot, save_figure

    own = [e for e in runs if e["model"] == model and (not seeds or int(e["seed"]) in seeds)]
    if not own:
        return None
    seed = min(int(e["seed"]) for e in own)
    histories = {}
    for variant in VARIANTS:
        entry = next((e for e in own if e["variant"] == variant and int(e["seed"]) == seed), None)
        hist = Path(run_dir) / entry["history_csv"] if entry else None
        if hist is not None and hist.is_file():
            histories[variant] = pd.read_csv(hist)
    if not histories:
        return None
    # Side by side: augmentation variants, then regularizers switched off; the baseline is in both.
    groups = [(title, [v for v in members if v in histories]) for title, members in (
        ("augmentation", ("aug=none", BASELINE, "aug=full")),
        ("regularizers switched off", (BASELINE, *REGULARIZERS)),
        ("precision", (BASELINE, PRECISION_VARIANT)))]
    groups = [(t, vs) for t, vs in groups if set(vs) - {BASELINE}] or [("variants", list(histories))]
    titles = {"augmentation": _("augmentation"), "regularizers switched off": _("regularizers switched off"),
              "precision": _("precision"), "variants": _("variants")}
    plt = pyplot()
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups) + 1.5, 4.4), sharey=True, squeeze=False)
    epochs = sorted({int(x) for rows in histories.values() for x in rows["epoch"]})
    from matplotlib.lines import Line2D

    for ax, (title, members) in zip(axes[0], groups):
        for variant in members:
            rows = histories[variant]
            c = colours[VARIANTS.index(variant) % len(colours)]
            # Opposite float32, the baseline is the run in the auto policy: say so in its label.
            label = f"{_on_alias(PRECISION_VARIANT)} ({BASELINE})" if title == "precision" and variant == BASELINE else variant
            ax.plot(rows["epoch"], rows["val_accuracy"], "-o", color=c, ms=4, lw=1.8, label=label)
            ax.plot(rows["epoch"], rows["train_accuracy"], "--", color=c, lw=1.2, alpha=0.8)
        ax.set(xlabel=_("epoch"), title=fmt(_("{model}: {panel}"), model=model, panel=titles[title]))
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
        handles, _labels = ax.get_legend_handles_labels()
        style = [Line2D([], [], color="0.3", ls="-", marker="o", ms=4, label=_("validation")),
                 Line2D([], [], color="0.3", ls="--", label=_("train (augmented batches)"))]
        ax.legend(handles=handles + style, loc="best", fontsize=8, framealpha=0.85)
    axes[0][0].set_ylabel(_("accuracy"))
    fig.suptitle(fmt(_("Ablation learning curves, {model}, seed {seed}"), model=model, seed=str(seed)), fontsize=10)
    save_figure(fig, Path(path))
    return seed


# ---------------------------------------------------------------------------------------------
# Report


def curve_caption(model: str, seed: int) -> str:
    """The caption of a model's ablation learning-curve figure, in the active language."""
    return fmt(_("Ablation learning curves of {model} (seed {seed}; solid: validation, dashed: train)"), model=model,
               seed=str(seed))


def replot_ablation_curves(run_dir: str | Path, ledger: Mapping[str, Any]) -> None:
    """Redraw the ablation's learning-curve figures in the active language (the report's), from the ledger.

    Args:
        run_dir: the run directory.
        ledger: its ablation.json content; figures whose seed it does not record are left as they are.
    """
    run_dir = Path(run_dir)
    for model, seed in (ledger.get("curve_seeds") or {}).items():
        rel = next((r for r in (ledger.get("curves") or {}).values() if r == f"figures/ablation_{model}.png"), None)
        if rel is not None:
            plot_ablation_curves(run_dir, ledger.get("runs", []), model, run_dir / rel, seeds=[int(seed)])


def render_ablation_markdown(run_dir: str | Path) -> str | None:
    """The ablation section of REPORT.md, from RUN_DIR/ablation.json, in the active language.

    Args:
        run_dir: the run directory.

    Returns:
        Markdown starting with a level-2 heading, or None when the folder has no ablation.json.
    """
    from convbench.report.sections import render_ablation_section

    run_dir = Path(run_dir)
    try:
        ledger = load_ledger(run_dir)
    except ConvbenchError as exc:
        # A broken ledger must not stop the rest of the report from rendering; say what to do instead.
        return "## " + _("Ablations") + "\n\n" + fmt(_("The ablation results could not be read: {error}."), error=str(exc)) + "\n"
    if ledger is None:
        return None
    effects = ledger.get("effects") or []
    stored = ledger.get("skipped_i18n") or {}
    notes = [fmt(_("- {model}: {variant} not run: {reason}."), model=model, variant=variant,
                 reason=render_stored(stored.get(model, {}).get(variant), fallback=reason))
             for model, d in ledger.get("skipped", {}).items() for variant, reason in d.items()]
    if not effects:
        return ("## " + _("Ablations") + "\n\n" + _("No ablation contrast has finished runs on both sides yet; run the same "
                                                   "`convbench ablate` command again to finish it.") + "\n"
                + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    text = render_ablation_section(effects).rstrip("\n")
    lines = [text, "", _("Per variant (mean ± std over seeds; train accuracy is measured on augmented batches, so mixing "
                         "augmentations such as cutmix lower it and the gap by construction):"), "",
             "| " + " | ".join([_("Model"), _("Variant"), _("Recipe"), _("Seeds"), _("Test acc. (%)"),
                                _("Train−val gap (points)")]) + " |", "|---|---|---|---|---|---|"]
    for model in ledger.get("models", []):
        for variant in VARIANTS:
            rs = [e for e in ledger["runs"] if e["model"] == model and e["variant"] == variant]
            if not rs:
                continue
            acc = np.array([e["test_accuracy"] for e in rs], dtype=float)
            gap = np.array([e["gap"] for e in rs], dtype=float)
            spread = f" ± {number(100 * acc.std(ddof=1), '.2f')}" if len(acc) > 1 else ""
            # Described from the run's own recipe, in the report's language (the ledger's description is English).
            desc = (describe_recipe(rs[0]["recipe"]) if isinstance(rs[0].get("recipe"), dict) and "augment" in rs[0]["recipe"]
                    else ledger.get("variants", {}).get(model, {}).get(variant, {}).get("description", ""))
            lines.append(f"| {model} | {variant} | {desc} | {', '.join(str(e['seed']) for e in rs)} | "
                         f"{number(100 * acc.mean(), '.2f')}{spread} | {number(100 * gap.mean(), '+.2f')} |")
    if notes:
        lines += ["", *notes]
    curves = ledger.get("curves") or {}
    seeds = ledger.get("curve_seeds") or {}
    if curves:
        lines.append("")
        for caption, rel in curves.items():
            model = next((m for m in seeds if rel == f"figures/ablation_{m}.png"), None)
            if model is not None:
                caption = curve_caption(model, seeds[model])
            lines += [f"![{caption}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Command line


def add_commands(subparsers) -> None:
    """Add `convbench ablate` to the CLI (called by convbench.cli.commands.build_parser)."""
    from convbench.cli.commands import add_lang_option, add_run_options

    p = subparsers.add_parser(
        "ablate", help="train recipe variants (augmentation none/crop+flip/full, regularizers off) and test what helped")
    add_run_options(p)
    add_lang_option(p)
    p.add_argument("--variants", help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all = {', '.join(DEFAULT_VARIANTS)}; "
                   f"{BASELINE} is always run; {PRECISION_VARIANT} only when named)")
    p.set_defaults(func=cmd_ablate)


def _recorded_language(run_dir: Path) -> str | None:
    """The report language a `convbench run` recorded in run_dir/results.json (None without one)."""
    try:
        lang = (json.loads((run_dir / "results.json").read_text()).get("config") or {}).get("lang")
    except (OSError, ValueError, AttributeError):
        return None
    from convbench.i18n import LANGUAGES

    return lang if lang in LANGUAGES else None


def cmd_ablate(args) -> int:
    """`convbench ablate`: run the ablation into --out, then re-render its REPORT.md if it has one."""
    from convbench.cli.commands import open_run_folder, resolve_config
    from convbench.models import model_info

    variants = parse_variants(args.variants)
    cfg = resolve_config(args)
    if not args.models:
        # Transfer models train their head on cached features, where augmentation cannot act:
        # ablate them only when asked by name.
        custom = tuple(n for n in cfg.models if model_info(n).kind == "custom")
        if not custom:
            raise ConvbenchError("the config selects no custom CNN to ablate; pass --models with the models to ablate")
        cfg = dataclasses.replace(cfg, models=custom, overrides={k: v for k, v in cfg.overrides.items() if k in custom})
    out, log = open_run_folder(args.out, cfg, kind="ablate")
    # --lang when given; else the language the `convbench run` in this folder recorded, so that the
    # ablation's figures match the report they join; else the config's (en by default).
    lang = cfg.lang if getattr(args, "lang", None) else (_recorded_language(out) or cfg.lang)
    cfg = dataclasses.replace(cfg, lang=lang)
    log(f"convbench ablate: models {', '.join(cfg.models)}; variants {', '.join(variants)}; seeds {cfg.seeds}; out {out}")
    run_ablation(cfg, out, variants, log=log)
    if (out / "results.json").exists():
        from convbench.report.document import render_report

        try:
            render_report(out, log=log, lang=lang)
        except ConvbenchError as exc:
            log(f"REPORT.md not re-rendered: {exc}")
    else:
        log(f"no results.json in {out}: the ablation is in {out / LEDGER_NAME}; `convbench run --out {out}` adds the full report")
    return 0
