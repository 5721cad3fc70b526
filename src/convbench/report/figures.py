"""Every figure of the report: matplotlib lives here (headless Agg, localised ticks, one colour per model)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from convbench.analysis.calibration import _ece_from_bins
from convbench.errors import ConvbenchError
from convbench.i18n import _, fmt, number
from convbench.io import atomic_write
from convbench.models import list_models


def pyplot():
    """matplotlib.pyplot on the Agg backend with convbench's figure style (never opens a window)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt



def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG atomically and free it (tick numbers in the active language's decimal mark)."""
    localise_ticks(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    import matplotlib.pyplot as plt

    plt.close(fig)



def localise_ticks(fig) -> None:
    """Make every numeric tick label of `fig` use the active language's decimal mark (0,5 in Spanish).

    The axes keep their own locators and formatters (log axes, offsets); only the text they produce
    is rewritten. Fixed labels (class names) are left as they are.
    """
    if number(0.5, ".1f") == "0.5":
        return
    from matplotlib.ticker import FixedFormatter, Formatter, NullFormatter

    mark = number(0.5, ".1f")[1]

    class Localised(Formatter):
        def __init__(self, inner):
            self.inner = inner

        def set_axis(self, axis):
            super().set_axis(axis)
            self.inner.set_axis(axis)

        def set_locs(self, locs):
            self.inner.set_locs(locs)

        def __call__(self, x, pos=None):
            return self.inner(x, pos).replace(".", mark)

        def format_ticks(self, values):
            return [t.replace(".", mark) for t in self.inner.format_ticks(values)]

        def get_offset(self):
            return self.inner.get_offset().replace(".", mark)

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for get, put in ((axis.get_major_formatter, axis.set_major_formatter),
                             (axis.get_minor_formatter, axis.set_minor_formatter)):
                inner = get()
                if not isinstance(inner, (FixedFormatter, NullFormatter, Localised)):
                    put(Localised(inner))


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")



def model_colour(name: str) -> str:
    """The one colour a model has in every figure of every report (by its place in the registry)."""

    names = list_models()
    index = names.index(name) if name in names else len(names) + sum(map(ord, name))
    return _PALETTE[index % len(_PALETTE)]



def _model_of(key: str) -> str:
    """"cnn_vgg_seed0" -> "cnn_vgg"."""
    return key.rsplit("_seed", 1)[0]



def plot_learning_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """Accuracy and loss per epoch: train dashed, validation solid, one colour per model; a transfer
    model's switch from head training to fine-tuning is marked with a dotted line."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, rows in sorted(histories.items()):
        c = model_colour(_model_of(key))
        ep = [r["epoch"] for r in rows]
        switch = next((r["epoch"] for r in rows if r.get("phase") == "finetune"), None)
        if switch is not None and switch > ep[0]:
            for ax in axes:
                ax.axvline(switch - 0.5, color=c, ls=":", lw=1)
            axes[0].annotate(fmt(_("{model}: fine-tuning starts"), model=_model_of(key)), (switch - 0.5, 0.02),
                             xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color=c, ha="right", va="bottom")
        axes[0].plot(ep, [r["train_accuracy"] for r in rows], "--", color=c, alpha=0.7)
        axes[0].plot(ep, [r["val_accuracy"] for r in rows], "-o", color=c, ms=3, label=key)
        axes[1].plot(ep, [r["train_loss"] for r in rows], "--", color=c, alpha=0.7)
        axes[1].plot(ep, [r["val_loss"] for r in rows], "-o", color=c, ms=3, label=key)
    xlabel = _("epoch")
    if any(r.get("phase") == "head" for rows in histories.values() for r in rows):
        xlabel = _("epoch (transfer: head rounds, then epochs)")
    axes[0].set(title=_("Accuracy (dashed: train on augmented batches, solid: validation)"), xlabel=xlabel,
                ylabel=_("accuracy"))
    axes[1].set(title=_("Loss (dashed: train, solid: validation)"), xlabel=xlabel, ylabel=_("cross-entropy"))
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    axes[0].legend(fontsize=8)
    save_figure(fig, path)



def plot_confusion_matrices(runs: list[dict], class_names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix per model (first seed)."""
    plt = pyplot()
    first = {}
    for r in runs:
        first.setdefault(r["name"], r)
    n = len(first)
    # Room for the rotated class names between panels, and one colour bar for all of them.
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n + 0.8, 4.6), squeeze=False, constrained_layout=True)
    for ax, (name, r) in zip(axes[0], first.items()):
        cm = np.asarray(r["confusion_matrix"], dtype=float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(fmt(_("{model} (seed {seed})"), model=name, seed=str(r["seed"])))
        ticks = range(len(class_names))
        small = len(class_names) <= 20
        ax.set_xticks(ticks if small else [])
        ax.set_yticks(ticks if small else [])
        if small:
            ax.set_xticklabels(class_names, rotation=90, fontsize=7)
            ax.set_yticklabels(class_names, fontsize=7)
            for i in ticks:
                for j in ticks:
                    if cm[i, j] >= 0.05:
                        ax.text(j, i, number(cm[i, j], ".2f"), ha="center", va="center", fontsize=6,
                                color="white" if cm[i, j] > 0.5 else "black")
        ax.set_xlabel(_("predicted"))
        ax.set_ylabel(_("true"))
        ax.grid(False)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=_("fraction of the true class"))
    save_figure(fig, path)



def plot_per_class(models: dict[str, list[float]], class_names: list[str], path: Path) -> None:
    """Grouped bars of per-class test accuracy (recall)."""
    plt = pyplot()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * k * max(1, len(models)) / 2), 4))
    width = 0.8 / max(1, len(models))
    for i, (name, recall) in enumerate(models.items()):
        ax.bar(np.arange(k) + i * width - 0.4 + width / 2, recall, width, label=name, color=model_colour(name))
    ax.set_xticks(np.arange(k))
    ax.set_xticklabels(class_names, rotation=45 if k <= 20 else 90, ha="right", fontsize=8 if k <= 20 else 5)
    ax.set(ylabel=_("test accuracy (recall)"), ylim=(0, 1), title=_("Per-class test accuracy"))
    ax.legend(fontsize=8)
    save_figure(fig, path)



def plot_accuracy_vs_flops(models: list[dict], path: Path) -> None:
    """Test accuracy against forward GFLOPs per image (log scale), error bars over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in models:
        g = m["flops_per_image"] / 1e9
        ax.errorbar([g], [m["test_accuracy"]], yerr=[m.get("test_accuracy_std", 0.0)], fmt="o", capsize=3, color=model_colour(m["name"]))
        ax.annotate(fmt(_("{model}\n{params:.2f}M params"), model=m["name"], params=m["params"] / 1e6), (g, m["test_accuracy"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel=_("forward GFLOPs per image (log)"), ylabel=_("test accuracy"), title=_("Accuracy vs compute"))
    save_figure(fig, path)


def plot_reliability(
    bins_before: Sequence[dict[str, Any]],
    bins_after: Sequence[dict[str, Any]] | None,
    path: str | Path,
    title: str,
    *,
    temperature: float | None = None,
) -> Path:
    """Write a reliability diagram (before and, optionally, after temperature scaling) as PNG.

    Each panel shows accuracy per confidence bin as bars against the diagonal of perfect
    calibration, the gap to the mean confidence in red, the ECE in the panel title, and a strip
    below with the number of images per bin.

    Args:
        bins_before: reliability_bins output before scaling.
        bins_after: reliability_bins output after scaling, or None for a single panel.
        path: Output PNG path; parent folders are created.
        title: Figure title, e.g. "resnet20: reliability (test set)".
        temperature: Fitted T, shown in the second panel's title when given.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    panels = [(_("Before temperature scaling"), bins_before)]
    if bins_after is not None:
        after = (fmt(_("After temperature scaling (T = {temperature:.2f})"), temperature=temperature) if temperature
                 else _("After temperature scaling"))
        panels.append((after, bins_after))
    fig = Figure(figsize=(5.2 * len(panels), 5.6), dpi=120, layout="constrained")
    grid = fig.add_gridspec(2, len(panels), height_ratios=[4, 1])
    for col, (name, bins) in enumerate(panels):
        if not bins:
            raise ConvbenchError(f"{name}: no reliability bins to plot; pass reliability_bins(...) output")
        ax = fig.add_subplot(grid[0, col])
        ax_n = fig.add_subplot(grid[1, col], sharex=ax)
        centers = np.array([(b["lower"] + b["upper"]) / 2 for b in bins])
        width = float(bins[0]["upper"] - bins[0]["lower"])
        filled = [i for i, b in enumerate(bins) if b["count"]]
        acc = np.array([bins[i]["accuracy"] for i in filled])
        conf = np.array([bins[i]["confidence"] for i in filled])
        ax.bar(centers[filled], acc, width=width * 0.95, color="#4C72B0", edgecolor="black",
               linewidth=0.6, label=_("Accuracy"))
        ax.bar(centers[filled], conf - acc, bottom=acc, width=width * 0.95, color="#DD8452",
               alpha=0.45, edgecolor="#C44E52", hatch="//", linewidth=0.6, label=_("Gap to confidence"))
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1.2, label=_("Perfect calibration"))
        ece = _ece_from_bins(bins)
        ax.set_title(fmt(_("{panel}\nECE = {ece:.2f} %"), panel=name, ece=100 * ece), fontsize=11)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel(_("Accuracy in bin"))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
        ax.tick_params(labelbottom=False)
        ax_n.bar(centers, [b["count"] for b in bins], width=width * 0.95, color="#8C8C8C")
        ax_n.set_xlabel(_("Confidence (max softmax probability)"))
        ax_n.set_ylabel(_("Images"))
        ax_n.grid(alpha=0.3)
    fig.suptitle(title, fontsize=12)
    out = Path(path)

    localise_ticks(fig)
    # Atomic like every other figure: a full disk leaves the old file (or none), never a 0-byte PNG.
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    return out
