"""The ablation's vocabulary (variants, contrasts), its ledger (ablation.json) and its effects:
numbers only. `experiment.ablation` runs the variants; `report.ablation` draws and writes them up."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from convbench import rundir
from convbench.analysis.stats import ablation_effects
from convbench.config import describe_augment
from convbench.errors import ConvbenchError
from convbench.i18n import _, fmt, N_, number

logger = logging.getLogger(__name__)

LEDGER_NAME = rundir.ABLATION_LEDGER
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



def describe_recipe(recipe: Mapping[str, Any]) -> str:
    """A short human description of a recipe's augmentation and regularizers (from its dict form), in the active language."""
    a, g = recipe["augment"], recipe["regularization"]
    dropout = _("model default") if g["dropout"] < 0 else number(g["dropout"], "g")
    return fmt(_("{augmentation}; dropout {dropout}, weight decay {weight_decay:g}, label smoothing {label_smoothing:g}"),
               augmentation=" + ".join(describe_augment(a)) or _("no augmentation"), dropout=dropout,
               weight_decay=g["weight_decay"], label_smoothing=g["label_smoothing"])



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



def _correctness(run_dir: Path, entry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / entry["predictions"]
    try:
        with np.load(path) as z:
            logits, labels = z["test_logits"], z["test_labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConvbenchError(f"cannot read the predictions {path} ({exc}); run `convbench ablate` again to retrain that run") from None
    return logits.argmax(axis=1) == labels, labels



def compute_effects(run_dir: str | Path, runs: Sequence[Mapping[str, Any]],
                    alpha: float = 0.05) -> tuple[list[dict], dict[str, list[int]]]:
    """Effects of every contrast the finished runs allow, Holm-corrected together over all models.

    One family over every model's contrasts, so "helped" holds at `alpha` for the whole ablation,
    as the report states. Each model is compared on the seeds that all its compared variants have,
    so every contrast is paired seed by seed.

    Args:
        run_dir: the run directory (predictions paths are relative to it).
        runs: ledger entries (model, variant, seed, gap, predictions, ...).
        alpha: family-wise level over all contrasts.

    Returns:
        (stats.ablation_effects results of all models concatenated, JSON-safe; model -> seeds used)
    """

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
            logger.info(f"[ablation] {model}: no seed finished in every compared variant yet; no effects")
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
