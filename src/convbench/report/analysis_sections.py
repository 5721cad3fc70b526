"""The report's analysis sections and their figures, from a run directory's saved files only: significance,
seeds, calibration, robustness, budgets, error analysis (the numbers come from `convbench.analysis`).

    convbench report RUN_DIR     # recomputes this analysis from RUN_DIR's saved predictions
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convbench import rundir
from convbench.analysis.calibration import (
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    softmax,
)
from convbench.analysis.probes import _load_predictions, significance
from convbench.analysis.stats import mean_std_ci
from convbench.config import AnalysisConfig
from convbench.i18n import _, fmt, number
from convbench.report import sections as rs
from convbench.report.figures import model_colour, plot_reliability, pyplot, save_figure


def calibration_rows(preds: dict[str, list[dict]], bins: int, fig_dir: Path) -> tuple[list[dict], dict[str, str]]:
    """ECE before/after temperature scaling (fit on validation, scored on test), first seed's diagram."""

    rows, figures = [], {}
    for name, runs in preds.items():
        row = {"model": name, "ece_before": [], "ece_after": [], "temperature": [], "nll_before": [], "nll_after": []}
        for i, p in enumerate(runs):
            t = fit_temperature(p["val_logits"], p["val_labels"])
            before = softmax(p["test_logits"])
            after = softmax(p["test_logits"], temperature=t)
            row["ece_before"].append(expected_calibration_error(before, p["test_labels"], bins))
            row["ece_after"].append(expected_calibration_error(after, p["test_labels"], bins))
            row["temperature"].append(t)
            row["nll_before"].append(nll(p["test_logits"], p["test_labels"]))
            row["nll_after"].append(nll(p["test_logits"], p["test_labels"], temperature=t))
            if i == 0:
                path = fig_dir / f"reliability_{name}.png"
                plot_reliability(reliability_bins(before, p["test_labels"], bins), reliability_bins(after, p["test_labels"], bins),
                                 path, fmt(_("{model}: reliability on the test set"), model=name), temperature=t)
                figures[name] = f"{rundir.FIGURES_DIR}/{path.name}"
        rows.append(row)
    return rows, figures



def budget_curves(results: dict, histories: dict[str, list[dict]], target: float, fig_dir: Path) -> tuple[str, list[dict]]:
    """Validation accuracy against cumulative training time and training FLOPs; time and FLOPs to `target`.

    Training FLOPs per epoch = 3 x forward FLOPs x training images (backward ~ 2 x forward); for a
    transfer model's head phase, the backbone's forward pass is paid once (feature caching) and the
    head's own cost is negligible next to it.
    """

    plt = pyplot()
    n_train = results["data"]["train_images"]
    n_val = results["data"]["val_images"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows, seen = [], set()
    for r in results["runs"]:
        rows_h = histories.get(rundir.run_key(r["name"], r["seed"]))
        if not rows_h or r["name"] in seen:
            continue  # first seed of each model only, to keep the plot readable
        seen.add(r["name"])
        # One train time in every table: the whole training call (train_seconds). What the epochs'
        # own seconds leave out is feature caching, before a transfer model's first round, or
        # validation and input set-up, spread over a custom model's epochs.
        epoch_seconds = np.array([h["seconds"] for h in rows_h], dtype=float)
        extra = max(0.0, float(r.get("train_seconds", epoch_seconds.sum())) - float(epoch_seconds.sum()))
        if r.get("kind") == "transfer":
            epoch_seconds[0] += extra
        else:
            epoch_seconds += extra / len(epoch_seconds)
        t = np.cumsum(epoch_seconds)
        flops, total = [], 0.0
        for h in rows_h:
            if h.get("phase") == "head":
                total += r["flops_per_image"] * (n_train + n_val) if not flops else 0.0
            else:
                total += 3.0 * r["flops_per_image"] * n_train
            flops.append(total)
        val = np.array([h["val_accuracy"] for h in rows_h])
        axes[0].plot(t / 60, val, "-o", ms=3, label=r["name"], color=model_colour(r["name"]))
        axes[1].plot(np.array(flops), val, "-o", ms=3, label=r["name"], color=model_colour(r["name"]))
        hit = np.flatnonzero(val >= target)
        rows.append({"model": r["name"], "reached": bool(len(hit)),
                     "minutes": float(t[hit[0]] / 60) if len(hit) else None,
                     "train_flops": float(flops[hit[0]]) if len(hit) else None,
                     "best_val": float(val.max()), "total_minutes": float(t[-1] / 60), "total_flops": float(flops[-1])})
    for ax in axes:
        ax.axhline(target, color="grey", ls=":", lw=1)
    axes[0].set(xlabel=_("cumulative training time (min)"), ylabel=_("validation accuracy"),
                title=_("Validation accuracy vs wall time"))
    axes[1].set(xlabel=_("cumulative training FLOPs"), ylabel=_("validation accuracy"),
                title=_("Validation accuracy vs training FLOPs"))
    spans = [r["total_flops"] for r in rows] + [r["train_flops"] for r in rows if r["train_flops"]]
    if spans and max(spans) >= 10 * min(spans):
        axes[1].set_xscale("log")
        from matplotlib.ticker import LogLocator, NullFormatter

        # Minor-tick labels of a log axis overlap; one label per decade.
        axes[1].xaxis.set_major_locator(LogLocator(base=10, numticks=8))
        axes[1].xaxis.set_minor_formatter(NullFormatter())
    # Under a decade a log axis would show no labelled tick at all: a linear one reads better.
    axes[0].legend(fontsize=8)
    path = fig_dir / "accuracy_vs_budget.png"
    save_figure(fig, path)
    return f"{rundir.FIGURES_DIR}/{path.name}", rows



def plot_mistakes(preds: dict[str, list[dict]], class_names: list[str], path: Path) -> bool:
    """Grid: a row per model of its most confident test mistakes (true → predicted, confidence)."""

    rows = [(name, runs[0]) for name, runs in preds.items() if "mistake_images" in runs[0] and len(runs[0]["mistake_images"])]
    if not rows:
        return False
    plt = pyplot()
    cols = max(len(p["mistake_images"]) for _name, p in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.45 * cols, 1.9 * len(rows)), squeeze=False)
    for i, (name, p) in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(p["mistake_images"]):
                ax.imshow(p["mistake_images"][j], interpolation="nearest")
                # One name per line: CIFAR's longest ("automobile") must not be cut.
                ax.set_title(f"{class_names[p['mistake_true'][j]][:14]}\n→ {class_names[p['mistake_pred'][j]][:14]}\n"
                             f"{number(p['mistake_confidence'][j], '.2f')}", fontsize=6)
        axes[i, 0].text(-0.15, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=8, rotation=90)
    fig.suptitle(_("Most confident mistakes (true → predicted, confidence)"), fontsize=9)
    save_figure(fig, path)
    return True



def plot_saliency(preds: dict[str, list[dict]], class_names: list[str], path: Path) -> bool:
    """Grid: the fixed test images (top row) and each model's input-gradient saliency below them."""

    rows = [(name, runs[0]) for name, runs in preds.items() if "saliency" in runs[0]]
    if not rows:
        return False
    plt = pyplot()
    images, labels = rows[0][1]["saliency_images"], rows[0][1]["saliency_labels"]
    n = len(images)
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(1.4 * n, 1.45 * (len(rows) + 1)), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j], interpolation="nearest")
        axes[0, j].set_title(class_names[labels[j]][:10], fontsize=7)
    for i, (name, p) in enumerate(rows, start=1):
        for j in range(n):
            axes[i, j].imshow(images[j], interpolation="nearest")
            heat = axes[i, j].imshow(p["saliency"][j].astype(np.float32), cmap="inferno", alpha=0.65, vmin=0, vmax=1)
        axes[i, 0].text(-0.15, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=7, rotation=90)
    for ax in axes.flat:
        ax.axis("off")
    bar = fig.colorbar(heat, ax=axes[1:, :].ravel().tolist(), shrink=0.8, pad=0.02)
    bar.set_label(_("saliency (1 = the pixel that moves the score most)"), fontsize=7)
    bar.ax.tick_params(labelsize=6)
    fig.suptitle(_("Where each model looks: |d logit(true class) / d pixel| on the same test images"), fontsize=9)
    save_figure(fig, path)
    return True



def _budget_table(rows: list[dict], target: float) -> str:
    headers = [_("model"), fmt(_("time to {target:.0f}% val acc"), target=100 * target),
               fmt(_("training FLOPs to {target:.0f}%"), target=100 * target), _("best val acc"),
               _("total time (train time)"), _("total training FLOPs")]
    lines = ["| " + " | ".join(headers) + " |", "|---|---|---|---|---|---|"]
    for r in rows:
        reached = ((fmt(_("{minutes:.1f} min"), minutes=r["minutes"]), number(r["train_flops"], ".3g")) if r["reached"]
                   else (_("not reached"), _("not reached")))
        total = fmt(_("{minutes:.1f} min"), minutes=r["total_minutes"])
        lines.append(f"| {r['model']} | {reached[0]} | {reached[1]} | {number(r['best_val'] * 100, '.2f')} % | "
                     f"{total} | {number(r['total_flops'], '.3g')} |")
    return "\n".join(lines)



def _budget_each(budget: dict) -> str:
    """The equal budget every model had, as the executive summary states it ("10 epochs each")."""
    kind, value = budget.get("kind"), budget.get("value", 0)
    if kind == "epochs":
        return fmt(_("{value:g} epochs each"), value=value)
    if kind == "minutes":
        return fmt(_("{value:g} minutes each"), value=value)
    return fmt(_("{value:g} train flops each"), value=value)



def analyze_run(run_dir: Path, results: dict, histories: dict[str, list[dict]]) -> dict:
    """Every statistic and figure beyond the basic comparison, from a run directory's saved files.

    Args:
        run_dir: the run directory.
        results: its results.json content.
        histories: per-run histories.

    Returns:
        {"verdict": compare_models output or None, "summary_markdown": str, "sections_markdown": [str]}
    """

    cfg = results.get("config", {})
    acfg = {**AnalysisConfig().__dict__, **cfg.get("analysis", {})}
    budget = cfg.get("budget", {"kind": "none", "target_accuracy": 0.8})
    fig_dir = rundir.figures_dir(run_dir)
    preds = _load_predictions(run_dir, results)
    names = results["data"]["class_names"]
    sections: list[str] = []
    verdict = significance(preds, acfg["alpha"])
    costs = {m["name"]: {"params": m["params"], "flops_per_image": m["flops_per_image"], "train_time_s": m["train_seconds"]}
             for m in results["models"]}
    extra_rows = []
    summary = ""
    if verdict:
        budget_words = _budget_each(budget) if budget.get("kind", "none") != "none" else None
        by_model = {r["name"]: r for r in results["models"]}
        for name in verdict["ranking"]:
            row = {"model": name}
            if by_model[name].get("tta_accuracy") is not None:
                row["tta_accuracy"] = by_model[name]["tta_accuracy"]
            extra_rows.append(row)
        summary = rs.render_executive_summary(verdict, None, costs, budget=budget_words, level=2)
        sections.append(rs.render_significance_section(verdict))
    per_seed = {name: [r["test_accuracy"] for r in results["runs"] if r["name"] == name] for name in preds}
    if per_seed and max(len(v) for v in per_seed.values()) > 1:
        sections.append(rs.render_seed_table(per_seed))
    if preds:
        rows, figs = calibration_rows(preds, acfg["calibration_bins"], fig_dir)
        sections.append(rs.render_calibration_section(rows, figures=figs, n_bins=acfg["calibration_bins"]))
    robust = []
    for name in preds:
        entries = [r for r in results["runs"] if r["name"] == name and r.get("robustness")]
        if entries:
            by = {c: {s: [e["robustness"]["accuracy_by_corruption"][c][s] for e in entries] for s in sev}
                  for c, sev in entries[0]["robustness"]["accuracy_by_corruption"].items()}
            robust.append({"model": name, "clean_accuracy": [e["robustness"]["clean_accuracy"] for e in entries],
                           "test_accuracy": [e["test_accuracy"] for e in entries],
                           "accuracy_by_corruption": by,
                           "tta_accuracy": [e["tta_accuracy"] for e in entries if e.get("tta_accuracy") is not None] or None})
    if robust:
        n_img = next(r for r in results["runs"] if r.get("robustness"))["robustness"]["images"]
        sections.append(rs.render_robustness_section(robust, subset_images=n_img, test_images=results["data"]["test_images"])
                        + "\n" + fmt(_("Corruptions were generated here, deterministically, on {n} stratified test images."),
                                     n=str(n_img)) + "\n")
    if histories:
        target = float(budget.get("target_accuracy", 0.8))
        fig, rows = budget_curves(results, histories, target, fig_dir)
        value = budget.get("value", 0)
        words = {"none": _("no equal budget was set; each model trained its own epochs"),
                 "epochs": fmt(_("every model trained {value:g} epochs"), value=value),
                 "minutes": fmt(_("every model had {value:g} minutes of training"), value=value),
                 "train_flops": fmt(_("every model had {value:.3g} training FLOPs"), value=value)}[budget.get("kind", "none")]
        sections.append("## " + _("Compute budget and time to target") + "\n\n"
                        + fmt(_("Budget: {words}. Training FLOPs = 3 x forward FLOPs x images (transfer head phase: one forward "
                                "pass of the backbone for feature caching). Time is the train time of the Comparison table, the "
                                "whole training call: feature caching and validation included."), words=words)
                        + "\n\n![" + _("Accuracy vs budget") + f"]({fig})\n\n{_budget_table(rows, target)}\n")
    err = []
    if plot_mistakes(preds, names, fig_dir / "confident_mistakes.png"):
        err.append("![" + _("Most confident mistakes") + "](figures/confident_mistakes.png)")
    if plot_saliency(preds, names, fig_dir / "saliency.png"):
        err.append("![" + _("Saliency") + "](figures/saliency.png)")
    if err:
        sections.append("## " + _("Error analysis") + "\n\n"
                        + _("Each model's most confident mistakes on the test set (first seed), and input-gradient saliency on "
                            "the same fixed test images for every model.") + "\n\n" + "\n\n".join(err) + "\n")
    acc_ci = {name: mean_std_ci(v) for name, v in per_seed.items()}
    return {"verdict": verdict, "summary_markdown": summary, "sections_markdown": sections, "accuracy_ci": acc_ci}
