"""The ablation in the report: its learning-curve figures and its REPORT.md section (from ablation.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from convbench import rundir
from convbench.analysis.ablation import (
    _on_alias,
    BASELINE,
    describe_recipe,
    load_ledger,
    PRECISION_VARIANT,
    REGULARIZERS,
    VARIANTS,
)
from convbench.errors import ConvbenchError
from convbench.i18n import _, fmt, number, render_stored
from convbench.report.figures import pyplot, save_figure
from convbench.report.sections import render_ablation_section



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
        rel = next((r for r in (ledger.get("curves") or {}).values() if r == rundir.ablation_figure(model)), None)
        if rel is not None:
            plot_ablation_curves(run_dir, ledger.get("runs", []), model, run_dir / rel, seeds=[int(seed)])



def render_ablation_markdown(run_dir: str | Path) -> str | None:
    """The ablation section of REPORT.md, from RUN_DIR/ablation.json, in the active language.

    Args:
        run_dir: the run directory.

    Returns:
        Markdown starting with a level-2 heading, or None when the folder has no ablation.json.
    """

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
            model = next((m for m in seeds if rel == rundir.ablation_figure(m)), None)
            if model is not None:
                caption = curve_caption(model, seeds[model])
            lines += [f"![{caption}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"
