"""REPORT.md and its figures, generated from a run directory's results.json and histories.

Nothing in the report is written in advance: every sentence of the conclusions is chosen by a rule
from the measured numbers (`conclusions`), so different results give different conclusions.

    convbench report runs/quick          # re-render runs/quick/REPORT.md from saved results
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from convbench.config import describe_augment, training_epochs
from convbench.errors import ConvbenchError
from convbench.glossary import glossary_markdown
from convbench.io import atomic_write, atomic_write_text

# Thresholds the conclusions use; named so the report can quote them.
OVERFIT_GAP = 0.05  # train accuracy minus validation accuracy above this reads as overfitting
STILL_IMPROVING = 0.003  # validation accuracy gained over the last epochs that reads as "not converged"
CLOSE_CALL = 0.01  # accuracy differences below this are within typical seed-to-seed noise on CIFAR


def load_results(run_dir: Path) -> dict:
    """results.json of a run directory, with a clear error when it is missing or broken."""
    path = Path(run_dir) / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvbenchError(f"{path} does not exist; pass the --out folder of a finished `convbench run`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvbenchError(f"cannot read {path} ({exc}); re-run `convbench run` into that folder to rebuild it") from None
    problem = results_problem(results)
    if problem:
        raise ConvbenchError(f"{path} is not a convbench results file ({problem}); re-run `convbench run` into that "
                             "folder to rebuild it")
    return results


def results_problem(results) -> str:
    """What makes a parsed results.json unusable ("" when nothing does)."""
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        return 'not an object with a "runs" list'
    diverged = results.get("diverged", [])
    if not isinstance(diverged, list):
        return '"diverged" is not a list'
    if not all(isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("seed"), int)
               for r in results["runs"] + diverged):
        return "a run without a name or seed"
    if not all(isinstance(r.get("diverged"), dict) for r in diverged):
        return "a diverged run without its record"
    return ""


def diverged_markdown(results: dict) -> str:
    """The "Diverged models" section: where each NaN/inf loss appeared and what to change ("" when none)."""
    diverged = results.get("diverged") or []
    if not diverged:
        return ""
    lines = ["## Diverged models", "",
             "These trainings stopped when a loss became NaN or infinite; they are not ranked. The usual cause is a "
             "learning rate too high for the model, batch size and precision.", ""]
    for r in diverged:
        d = r["diverged"]
        setting, value = d.get("lr_setting", "train.lr_per_1024"), d.get("lr_setting_value")
        section, key = setting.split(".", 1)
        lower = f"{value / 10:.3g}" if isinstance(value, (int, float)) else "a tenth of it"
        lines.append(
            f"- **{_md_cell(r['name'])}** (seed {r['seed']}): {d.get('quantity', 'loss')} became {d.get('value', 'nan')} at epoch "
            f"{d.get('epoch')} ({d.get('phase', 'train')} phase) at a peak learning rate of {float(d.get('lr', float('nan'))):.4g}"
            + (f" (`{setting}` {value:g})" if isinstance(value, (int, float)) else "")
            + f". Lower the learning rate, e.g. `overrides: {{{r['name']}: {{{section}: {{{key}: {lower}}}}}}}` in the config, "
            "and run the same command again: this model is retrained with its new recipe and the finished ones are kept."
        )
    return "\n".join(lines) + "\n"


def _epochs_text(m: dict) -> str:
    """"12 epochs", or for a transfer model "600 head steps on cached features and 3 fine-tuning epochs"."""
    if m.get("head_steps_run"):
        return f"{m['head_steps_run']:.0f} head steps on cached features and {_plural(m['epochs_run'], 'fine-tuning epoch')}"
    return _plural(m["epochs_run"], "epoch")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _head_phase(transfer: dict) -> str:
    """The head phase of a saved transfer recipe, in the units it ran in."""
    if "head_steps" in transfer:
        return f"head up to {transfer['head_steps']} steps on cached features"
    return f"{transfer['frozen_epochs']} frozen head epochs"  # recipes saved before head_steps


HISTORY_COLUMNS = ("epoch", "phase", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
PREDICTION_KEYS = ("test_logits", "test_labels", "val_logits", "val_labels")


def load_histories(run_dir: Path, results: dict, log: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Per-run history rows keyed by "<model>_seed<k>" (finished and diverged runs).

    A missing or damaged history CSV only costs its learning curve: it is left out with a warning
    (the metrics live in results.json and the predictions).
    """
    import pandas as pd

    out = {}
    for r in results.get("runs", []) + results.get("diverged", []):
        path = Path(run_dir) / r.get("history_csv", f"history/{r['name']}_seed{r['seed']}.csv")
        if not path.exists():
            continue
        try:
            frame = pd.read_csv(path)
            missing = [c for c in HISTORY_COLUMNS if c not in frame.columns]
            if missing:
                raise ValueError(f"no {', '.join(missing)} column")
            frame["epoch"] = frame["epoch"].astype(int)
        except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
            log(f"warning: {path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"the learning curve of {r['name']} seed {r['seed']} is left out of the report")
            continue
        out[f"{r['name']}_seed{r['seed']}"] = frame.to_dict("records")
    return out


def predictions_problem(path: Path) -> str:
    """Why a run's predictions .npz cannot be used ("" when it can): missing, cut short, wrong content."""
    import zipfile

    if not path.exists():
        return "it is missing"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in PREDICTION_KEYS if k not in z.files]
            if missing:
                return f"it lacks {', '.join(missing)}"
            for split in ("test", "val"):
                logits, labels = z[f"{split}_logits"], z[f"{split}_labels"]
                if logits.ndim != 2 or labels.shape != (len(logits),):
                    return f"its {split} logits {logits.shape} do not match its labels {labels.shape}"
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def damaged_predictions(run_dir: Path, runs: list[dict]) -> list[tuple[dict, Path, str]]:
    """(run, predictions path, problem) for every finished run whose saved predictions are unusable."""
    out = []
    for r in runs:
        path = Path(run_dir) / r.get("predictions", f"predictions/{r['name']}_seed{r['seed']}.npz")
        problem = predictions_problem(path)
        if problem:
            out.append((r, path, problem))
    return out


# ---------------------------------------------------------------------------------------------
# Figures


def pyplot():
    """matplotlib.pyplot on the Agg backend with convbench's figure style (never opens a window)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG atomically and free it."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    import matplotlib.pyplot as plt

    plt.close(fig)


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def model_colour(name: str) -> str:
    """The one colour a model has in every figure of every report (by its place in the registry)."""
    from convbench.models import list_models

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
            axes[0].annotate(f"{_model_of(key)}: fine-tuning starts", (switch - 0.5, 0.02), xycoords=("data", "axes fraction"),
                             rotation=90, fontsize=7, color=c, ha="right", va="bottom")
        axes[0].plot(ep, [r["train_accuracy"] for r in rows], "--", color=c, alpha=0.7)
        axes[0].plot(ep, [r["val_accuracy"] for r in rows], "-o", color=c, ms=3, label=key)
        axes[1].plot(ep, [r["train_loss"] for r in rows], "--", color=c, alpha=0.7)
        axes[1].plot(ep, [r["val_loss"] for r in rows], "-o", color=c, ms=3, label=key)
    xlabel = "epoch"
    if any(r.get("phase") == "head" for rows in histories.values() for r in rows):
        xlabel = "epoch (transfer: head rounds, then epochs)"
    axes[0].set(title="Accuracy (dashed: train on augmented batches, solid: validation)", xlabel=xlabel, ylabel="accuracy")
    axes[1].set(title="Loss (dashed: train, solid: validation)", xlabel=xlabel, ylabel="cross-entropy")
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
        ax.set_title(f"{name} (seed {r['seed']})")
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
                        ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if cm[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.grid(False)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="fraction of the true class")
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
    ax.set(ylabel="test accuracy (recall)", ylim=(0, 1), title="Per-class test accuracy")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_accuracy_vs_flops(models: list[dict], path: Path) -> None:
    """Test accuracy against forward GFLOPs per image (log scale), error bars over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in models:
        g = m["flops_per_image"] / 1e9
        ax.errorbar([g], [m["test_accuracy"]], yerr=[m.get("test_accuracy_std", 0.0)], fmt="o", capsize=3, color=model_colour(m["name"]))
        ax.annotate(f"{m['name']}\n{m['params'] / 1e6:.2f}M params", (g, m["test_accuracy"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="forward GFLOPs per image (log)", ylabel="test accuracy", title="Accuracy vs compute")
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Text


def _md_cell(text: str) -> str:
    """A user-given name (a class folder's) as literal text in a Markdown table cell: no column break, no HTML."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\n", " "))


def _precision_text(runs: list[dict]) -> str:
    """Each dtype policy with the models that trained in it, when they differ ("a, b: mixed_bfloat16 (...); c: float32 (...)")."""
    groups: dict[str, list[str]] = {}
    for r in runs:
        names = groups.setdefault(_precision(r), [])
        if r["name"] not in names:
            names.append(r["name"])
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{', '.join(names)}: {policy}" for policy, names in groups.items())


def _split_text(data: dict, configured: float) -> str:
    """The validation split as it came out; different from `val_fraction` when classes are tiny."""
    actual = data["val_images"] / max(1, data["train_images"] + data["val_images"])
    text = f"stratified, {actual:.0%} of train"
    if abs(actual - configured) > 0.02:  # per-class rounding moves it by less on any real data set
        text += (f"; the configured {configured:.0%} rounds differently on classes this small, since every class "
                 "gives at least one image to each side")
    return text


def _precision(run: dict) -> str:
    """The dtype policy a run trained in, with the reason it was chosen (older runs have none)."""
    reason = run.get("precision_reason")
    return f"{run['mixed_precision']} ({reason})" if reason else run["mixed_precision"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _pts(x: float) -> str:
    return f"{100 * x:+.2f} points"


def model_diagnostics(model: dict, rows: list[dict], val_images: int = 0) -> dict:
    """Numbers the conclusions reason with, for one model (first seed's curves).

    Verdicts allow for chance: a validation accuracy p on n images varies by about
    2 sqrt(p (1 - p) / n) (two standard errors), so a gap or a late rise within that is not read
    as overfitting or as still improving, and fewer than 3 evaluations cannot tell overfitting from
    a model that is still learning.
    """
    val = [r["val_accuracy"] for r in rows]
    tail = val[-3:] if len(val) >= 3 else val
    gain = (tail[-1] - tail[0]) if len(tail) > 1 else 0.0
    head = [r["val_accuracy"] for r in rows if r.get("phase") == "head"]
    tune = [r["val_accuracy"] for r in rows if r.get("phase") == "finetune"]
    p = float(model["best_val_accuracy"])
    noise = 2.0 * math.sqrt(max(p * (1.0 - p), 0.0) / val_images) if val_images else 0.0
    gap = model.get("train_accuracy_at_best", float("nan")) - p
    if not np.isfinite(gap):
        overfit = "unknown"
    elif gap > OVERFIT_GAP:
        overfit = "noise" if gap <= noise else ("too_short" if len(val) < 3 else "overfit")
    else:
        overfit = "none" if gap < 0.01 else "mild"
    # The kept weights are those of the first evaluation with the highest validation accuracy.
    best_phase = rows[int(np.argmax(val))].get("phase") if val else None
    return {
        # A transfer model's best validation accuracy with the head alone, and after fine-tuning (None: no such phase).
        "head_best": max(head) if head else None,
        "finetune_best": max(tune) if tune else None,
        "gap": gap,
        "overfit": overfit,
        "noise": noise,
        "val_images": val_images,
        "gap_on_cached_features": best_phase == "head",
        "late_gain": gain,
        "still_improving": bool(len(val) >= 2 and model.get("best_epoch", len(val)) >= len(val) - 1
                                and gain > max(STILL_IMPROVING, noise)),
        "epochs": len(val),
    }


def conclusions(results: dict, histories: dict[str, list[dict]]) -> str:
    """The Conclusions section: best model, why (with numbers), what would improve it and how.

    Args:
        results: results.json content.
        histories: per-run histories from `load_histories`.

    Returns:
        Markdown text.
    """
    models = sorted(results["models"], key=lambda m: (-m["test_accuracy"], m["name"]))  # ties as stats.verdict breaks them
    if not models:
        return "## Conclusions\n\nNo model finished training, so nothing can be concluded yet.\n"
    first_rows = {}
    for r in results["runs"]:
        first_rows.setdefault(r["name"], histories.get(f"{r['name']}_seed{r['seed']}", []))
    n_val = int(results.get("data", {}).get("val_images", 0) or 0)
    diag = {m["name"]: model_diagnostics(m, first_rows.get(m["name"], []), n_val) for m in models}
    best = models[0]
    lines = ["## Conclusions", "", "### Which architecture was best?", ""]
    seeds = len(best.get("seeds", [0]))
    if len(models) == 1:
        lines.append(f"Only **{best['name']}** was trained: {_pct(best['test_accuracy'])} test accuracy. There is nothing to compare it with.")
    else:
        second = models[1]
        margin = best["test_accuracy"] - second["test_accuracy"]
        lines.append(
            f"**{best['name']}** ({best['kind']}) has the highest test accuracy, {_pct(best['test_accuracy'])}, "
            f"{_pts(margin)} ahead of {second['name']} ({_pct(second['test_accuracy'])})"
            + (f" and {_pts(best['test_accuracy'] - models[-1]['test_accuracy'])} ahead of {models[-1]['name']}." if len(models) > 2 else ".")
        )
        stats = results.get("statistics", {}).get("verdict")
        if stats:
            if stats.get("winner"):
                lines.append("The paired test on the test images says this lead is significant (see the paired significance tests above).")
            else:
                lines.append("The paired test on the test images cannot separate the top models at this budget (see the paired significance tests above): "
                             "treat the ranking as provisional.")
        elif margin < CLOSE_CALL:
            lines.append(
                f"The margin is under {_pts(CLOSE_CALL).replace('+', '')}, which is within the seed-to-seed spread typical of "
                f"CIFAR training; with {seeds} seed(s) this ranking is not reliable. Run `--seeds 3` or more to decide."
            )
        parity = _compute_parity(models, results.get("config", {}).get("budget", {}))
        if parity:
            lines.append(parity)
    lines += ["", "### Why?", ""]
    for m in models:
        d = diag[m["name"]]
        parts = [
            f"**{m['name']}**{_description(m['name'])}: {_pct(m['test_accuracy'])} test, best validation {_pct(m['best_val_accuracy'])}",
            f"{m['params'] / 1e6:.2f} M parameters, {m['flops_per_image'] / 1e6:.0f} MFLOPs per image",
            f"{m['train_seconds']:.0f} s of training over {_epochs_text(m)}",
        ]
        if np.isfinite(d["gap"]):
            noise = f"±{100 * d['noise']:.1f} points, the chance variation of {d['val_images']:,} validation images"
            kind = {"overfit": f"a sign of overfitting: larger than {noise}",
                    "noise": f"within {noise}: too few images to call it overfitting",
                    "too_short": "too few epochs to tell overfitting from a model still learning",
                    "mild": "mild overfitting", "none": "no overfitting"}[d["overfit"]]
            where = "; its train accuracy is on un-augmented cached features" if d["gap_on_cached_features"] else ""
            parts.append(f"train-validation gap {_pts(d['gap'])} ({kind}{where})")
        if d["still_improving"]:
            beyond = f", more than the ±{100 * d['noise']:.1f}-point chance variation" if d["noise"] else ""
            parts.append(f"validation accuracy was still rising at the end ({_pts(d['late_gain'])} over the last epochs{beyond})")
        if d["head_best"] is not None and d["finetune_best"] is not None:
            change = d["finetune_best"] - d["head_best"]
            parts.append(
                f"fine-tuning raised the best validation accuracy of the head alone from {_pct(d['head_best'])} to "
                f"{_pct(d['finetune_best'])} ({_pts(change)})" if change > 0 else
                f"fine-tuning did not improve on the head alone (best validation {_pct(d['head_best'])} with the head alone, "
                f"{_pct(d['finetune_best'])} after fine-tuning), so the head-only weights were kept"
            )
        lines.append("- " + "; ".join(parts) + ".")
    if len(models) > 1:
        cheapest = min(models, key=lambda m: m["flops_per_image"])
        lines.append("")
        if cheapest["name"] == best["name"]:
            lines.append(f"{best['name']} is also the cheapest per image, so it wins on both accuracy and cost.")
        else:
            ratio = best["flops_per_image"] / max(cheapest["flops_per_image"], 1)
            lines.append(
                f"{best['name']} costs {ratio:.1f}x the forward FLOPs of the cheapest model, {cheapest['name']} "
                f"({_pct(cheapest['test_accuracy'])}): {_pts(best['test_accuracy'] - cheapest['test_accuracy'])} of test "
                f"accuracy for {ratio:.1f}x the cost of each prediction."
            )
        if best["kind"] == "transfer":
            lines.append("Its ImageNet features carry knowledge that the from-scratch CNNs must learn from CIFAR alone within the epoch budget.")
        elif any(m["kind"] == "transfer" for m in models):
            t = next(m for m in models if m["kind"] == "transfer")
            res = next((r["recipe"]["transfer"]["resolution"] for r in results["runs"] if r["name"] == t["name"]), None)
            lines.append(
                f"The pretrained {t['name']} did not win here ({_pct(t['test_accuracy'])}). A likely reason, not tested by this "
                f"run: ImageNet features computed from CIFAR images upsampled to {res} px carry less than the network "
                f"was trained to see at 224 px, and its fine-tuning had a budget of {t['epochs_run']} epochs. To test it, raise "
                f"its resolution alone: `overrides: {{{t['name']}: {{transfer: {{resolution: {min(2 * res, 224) if res else 128}}}}}}}`."
            )
    lines += ["", "### What would improve it, and how?", ""]
    advice = _advice(best, diag[best["name"]], results)
    for name in dict.fromkeys(r["name"] for r in results.get("diverged") or []):
        advice.append(f"Retrain {_md_cell(name)} at a lower learning rate: it diverged (see Diverged models), so this comparison "
                      "does not yet say how it ranks.")
    lines += [f"{i}. {a}" for i, a in enumerate(advice, 1)]
    return "\n".join(lines) + "\n"


def _description(name: str) -> str:
    """" (what the registry says the model is)", or "" for a name it no longer holds (an old run)."""
    from convbench.models import model_info

    try:
        return f" ({model_info(name).description.rstrip('.')})"
    except ConvbenchError:
        return ""


# Train times within this factor of each other count as roughly equal compute.
PARITY_RATIO = 1.5


def _compute_parity(models: list[dict], budget: dict) -> str:
    """Whether the ranking compares architectures alone or architectures and budgets together."""
    if budget.get("kind", "none") != "none":
        return ""  # an equal budget was set; the Compute budget section states it
    timed = [m for m in models if m.get("train_seconds", 0) > 0]
    if len(timed) < 2:
        return ""
    fast, slow = min(timed, key=lambda m: m["train_seconds"]), max(timed, key=lambda m: m["train_seconds"])
    ratio = slow["train_seconds"] / fast["train_seconds"]
    spread = (f"from {fast['train_seconds']:.0f} s ({fast['name']}) to {slow['train_seconds']:.0f} s ({slow['name']})")
    if ratio < PARITY_RATIO:
        return f"Compute was roughly matched: train times ran {spread}, within {PARITY_RATIO:g}x of each other."
    minutes = max(1, round(float(np.median([m["train_seconds"] for m in timed])) / 60))
    return (f"Compute was not matched: train times ran {spread}, {ratio:.1f}x apart, so this ranking compares "
            f"architectures and budgets together. To compare the architectures alone, give every model the same "
            f"budget, e.g. `budget: {{kind: minutes, value: {minutes}}}` or `budget: {{kind: train_flops, value: ...}}`.")


def _advice(best: dict, d: dict, results: dict) -> list[str]:
    out = []
    recipe = next((r["recipe"] for r in results["runs"] if r["name"] == best["name"]), {})
    aug = recipe.get("augment", {})
    reg = recipe.get("regularization", {})
    if d["still_improving"]:
        out.append(
            f"Train longer: validation accuracy gained {_pts(d['late_gain'])} over the last epochs and had not plateaued; "
            f"raise `train.epochs` (now {d['epochs']}) with the same one-cycle schedule stretched over them."
        )
    transfer = recipe.get("transfer", {})
    head_won = d.get("finetune_best") is not None and d["head_best"] >= d["finetune_best"]
    if best["kind"] == "transfer" and d["overfit"] == "overfit" and (head_won or d.get("finetune_best") is None):
        # Its best weights came from the head phase: the gap is on cached features, which augmentation never reaches.
        stronger = ([f"a head with dropout and BatchNorm, `overrides: {{{best['name']}: {{transfer: {{head: gap_bn_dropout}}}}}}`"]
                    if transfer.get("head") != "gap_bn_dropout" else [])
        stronger.append("a higher `regularization.weight_decay`")
        out.append(f"Regularize the head: the train-validation gap is {_pts(d['gap'])}, measured on cached features, which "
                   "augmentation does not reach (it acts only while fine-tuning); try " + " or ".join(stronger) + ".")
    elif d["overfit"] == "overfit":
        stronger = []
        if not aug.get("cutout"):
            stronger.append("`augment.cutout: 8`")
        if not aug.get("mixup_alpha") and not aug.get("cutmix_alpha"):
            stronger.append("`augment.cutmix_alpha: 1.0`")
        if reg.get("label_smoothing", 0) < 0.1:
            stronger.append("`regularization.label_smoothing: 0.1`")
        stronger.append("a higher `regularization.weight_decay`")
        out.append(f"Regularize more: the train-validation gap is {_pts(d['gap'])}; add " + ", ".join(stronger) + ".")
    elif np.isfinite(d["gap"]) and d["gap"] < 0.01 and not d["still_improving"]:
        out.append(
            f"Add capacity: the train-validation gap is only {_pts(d['gap'])} and validation accuracy has flattened, so the model "
            "underfits; widen it (`width`) or train it at a higher learning rate."
        )
    if best["kind"] == "transfer":
        t = transfer
        if t.get("resolution", 224) < 160:
            out.append(f"Feed the pretrained backbone larger images: it ran at {t.get('resolution')} px, far below the 224 px it was "
                       "trained at; raise `transfer.resolution` (on a GPU, `--preset full` uses 224).")
        if head_won:
            epochs, blocks = t.get("finetune_epochs", 0), t.get("finetune_blocks", 0)
            out.append(
                f"Fine-tuning did not pay at this budget ({_plural(epochs, 'epoch')} of the top {_plural(blocks, 'block')}): give it "
                f"more, `overrides: {{{best['name']}: {{transfer: {{finetune_epochs: {max(3, 2 * epochs)}, finetune_blocks: "
                f"{blocks + 1}}}}}}}`, or drop it, `transfer: {{finetune_epochs: 0}}`, which keeps the same weights for less time."
            )
        else:
            out.append("Fine-tune more of the backbone: raise `transfer.finetune_epochs` and `transfer.finetune_blocks`.")
    for e in results.get("ablation_effects", []):
        if e.get("verdict") == "hurt":
            out.append(
                f"On {e['model']}, {e['factor']} hurt in the ablation ({e['without']} → {e['with']}: {_pts(e['diff'])}, "
                f"Holm p = {e['p_holm']:.2g}), which suggests the model underfits at this budget; drop it "
                "or train longer before adding it back."
            )
        elif e.get("verdict") == "helped":
            out.append(f"Keep {e['factor']} on {e['model']}: it helped in the ablation ({_pts(e['diff'])}, Holm p = {e['p_holm']:.2g}).")
    seeds = len(best.get("seeds", [0]))
    if seeds < 3:
        out.append(f"Confirm the ranking with more seeds: `--seeds 3` (now {seeds}) gives a confidence interval for every model; "
                   "a paired test on one seed captures test-set sampling, not seed-to-seed variation.")
    if not out:
        out.append("The model has converged without overfitting at this budget; the next gains need a larger budget (`--preset full`).")
    return out


def render_markdown(results: dict, histories: dict[str, list[dict]], figures: dict[str, str], notice: str = "") -> str:
    """The whole REPORT.md as text (pure: no files read or written).

    Args:
        results: results.json content.
        histories: per-run histories.
        figures: figure key -> relative path (keys: curves, confusion, per_class, accuracy_flops).
        notice: a paragraph shown first (e.g. `coverage_notice`: a run still in progress).
    """
    models = sorted(results["models"], key=lambda m: (-m["test_accuracy"], m["name"]))  # ties as stats.verdict breaks them
    data = results["data"]
    env = results["environment"]
    cfg = results["config"]
    best = models[0]["name"] if models else "none"
    out = [f"# convbench report: {', '.join(m['name'] for m in models)}", ""]
    if notice:
        out += [notice, ""]
    stats_summary = results.get("statistics", {}).get("summary_markdown")
    if not stats_summary:
        out.append(
        f"**Summary.** Best on the held-out test set: **{best}**"
        + (f" with {_pct(models[0]['test_accuracy'])}" if models else "")
        + f", out of {_plural(len(models), 'model')} trained on {data['train_images']} images of `{data['source']}`"
        + f" ({cfg['preset']} preset). Details and the reasoning are below; conclusions are at the end."
        )
    else:
        out += [stats_summary.rstrip(), "", f"Data: {data['train_images']} training images of `{data['source']}`, "
                f"{cfg['preset']} preset. Details below; conclusions at the end."]
    if results.get("diverged"):
        out += ["", "**Diverged** (not ranked, see Diverged models below): "
                + ", ".join(dict.fromkeys(_md_cell(r["name"]) for r in results["diverged"])) + "."]
    out += ["", "## Setup", ""]
    issues = data.get("issues", {})
    out += [
        f"- Data: `{data['source']}`, {data['num_classes']} classes, {data['train_images']} train / {data['val_images']} validation "
        f"({_split_text(data, cfg['data']['val_fraction'])}, seed {cfg['data']['split_seed']}) / {data['test_images']} test images. "
        "The test split was used only for the final evaluation, never for early stopping or model selection.",
        f"- Data issues: {issues.get('skipped', 0)} unreadable images skipped, {issues.get('ignored', 0)} non-image files ignored, "
        f"{issues.get('converted', 0)} images converted to RGB, {issues.get('resized', 0)} resized to 32x32.",
        f"- Hardware: {env['cpu']} ({env['cpu_count']} logical CPUs), GPUs: {', '.join(env['gpus']) or 'none'}; {env['platform']}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f", Python {env['python']}.",
        f"- Seeds: {cfg['seeds']} per model (starting at {cfg['train']['seed']}); precision: " + _precision_text(results["runs"]) + ".",
        "- Full configuration: `config.yaml` beside this report; per-epoch histories in `history/`, best weights in `models/`.",
    ]
    out += ["", "## Comparison", ""]
    out.append("| model | kind | test acc | best val acc | train acc at best | params | MFLOPs/img | train time | epochs | train img/s | batch-1 latency | batch-256 img/s |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        acc = _pct(m["test_accuracy"]) + (f" ± {100 * m['test_accuracy_std']:.2f}" if len(m.get("seeds", [])) > 1 else "")
        out.append(
            f"| {m['name']} | {m['kind']} | {acc} | {_pct(m['best_val_accuracy'])} | {_pct(m.get('train_accuracy_at_best', float('nan')))} | "
            f"{m['params'] / 1e6:.2f} M | {m['flops_per_image'] / 1e6:.1f} | {m['train_seconds']:.0f} s | {m['epochs_run']} | "
            f"{m.get('train_images_per_s', float('nan')):,.0f} | {m.get('latency_ms_batch1', float('nan')):.1f} ms | "
            f"{m.get('throughput_images_per_s_batch256', float('nan')):,.0f} |"
        )
    out += ["", "Train accuracy is measured on augmented batches during training; FLOPs count convolutions and dense layers (2 x MACs). "
            "Train time is the wall time of the whole training call (for transfer models it includes computing the frozen features once); "
            "train img/s is the end-to-end training throughput (for transfer models, of the fine-tuning epochs)."]
    diverged = diverged_markdown(results)
    if diverged:
        out += ["", diverged.rstrip()]
    out += ["", "## Training recipes (augmentation and regularization)", ""]
    out.append("| model | epochs | batch | optimizer | peak lr | schedule | augmentation | label smoothing | weight decay | dropout | early stop | transfer |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    seen = set()
    for r in results["runs"]:
        if r["name"] in seen:
            continue
        seen.add(r["name"])
        rc = r["recipe"]
        t, a, g = rc["train"], rc["augment"], rc["regularization"]
        augs = describe_augment(a)
        tr = rc["transfer"]
        transfer = (f"{tr['resolution']}px, head {tr['head']}, {_head_phase(tr)} + {_plural(tr['finetune_epochs'], 'fine-tune epoch')} "
                    f"(top {_plural(tr['finetune_blocks'], 'block')})") if r["kind"] == "transfer" else "-"
        lr_per_1024 = t["lr_per_1024"] if r["kind"] == "custom" else tr["head_lr_per_1024"]
        peak = lr_per_1024 * t["global_batch_size"] / 1024
        optimizer = t["optimizer"] if r["kind"] == "custom" else "adamw"
        if r["kind"] == "custom" and t.get("lookahead_every"):
            optimizer += f" + lookahead every {t['lookahead_every']} steps"
        if r["kind"] == "transfer":
            augs = [f"{x} (fine-tuning only)" for x in augs]
        out.append(
            f"| {r['name']} | {training_epochs(r['kind'], rc)} | {t['global_batch_size']} | "
            f"{optimizer} | {peak:.3g} | {t['schedule'] if r['kind'] == 'custom' else 'cosine'} | "
            f"{', '.join(augs) or 'none'} | {g['label_smoothing']} | {g['weight_decay']} | "
            f"{'model default' if g['dropout'] < 0 else g['dropout']} | {g['early_stopping_patience'] or 'off'} | {transfer} |"
        )
    notes = [f"- {r['name']} (seed {r['seed']}): {n}" for r in results["runs"] for n in r.get("notes", [])]
    if notes:
        out += ["", *notes]
    curves = "Train (dashed) against validation (solid) accuracy and loss per epoch."
    if any(r.get("kind") == "transfer" for r in results["runs"]):
        curves += (" A transfer model's first points are its head's evaluation rounds on cached features (each a "
                   "fixed number of optimizer steps, not an epoch); its fine-tuning epochs follow the dotted line.")
    for key, title, text in (
        ("curves", "Learning curves", curves),
        ("confusion", "Confusion matrices", "Rows are true classes, normalised to 1; off-diagonal cells are the confusions."),
        ("per_class", "Per-class accuracy", ""),
        ("accuracy_flops", "Accuracy vs FLOPs", "Forward cost per image against test accuracy; up and left is better."),
    ):
        if key in figures:
            out += ["", f"## {title}", "", *( [text, ""] if text else []), f"![{title}]({figures[key]})"]
        if key == "per_class" and models:
            out += ["", _per_class_table(results)]
    for section in results.get("statistics", {}).get("sections_markdown", []):
        out += ["", section]
    out += ["", conclusions(results, histories)]
    body = "\n".join(out).rstrip() + "\n"
    glossary = glossary_markdown(body)
    return body + ("\n" + glossary if glossary else "")


def _per_class_table(results: dict) -> str:
    names = results["data"]["class_names"]
    first = {}
    for r in results["runs"]:
        first.setdefault(r["name"], r)
    header = "| class | " + " | ".join(first) + " |"
    rows = [header, "|---|" + "---|" * len(first)]
    for i, c in enumerate(names):
        rows.append(f"| {_md_cell(c)} | " + " | ".join(_pct(r["per_class"]["recall"][i]) for r in first.values()) + " |")
    return "\n".join(rows)


def _ablation_effects(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / "ablation.json").read_text()).get("effects") or []
    except (OSError, json.JSONDecodeError):
        return []


def _ablation_markdown(run_dir: Path) -> str | None:
    try:
        from convbench.ablation import render_ablation_markdown
    except ImportError:
        return None
    return render_ablation_markdown(run_dir)


def coverage_notice(results: dict, owner: dict | None) -> str:
    """A paragraph saying which configured trainings the report lacks, and why; "" when none is missing.

    Args:
        results: results.json content (its config names the models and seeds).
        owner: the lock owner of a run still training in the folder (`lock.live_owner`), or None.
    """
    cfg = results.get("config") or {}
    first = int((cfg.get("train") or {}).get("seed", 0))
    expected = [(m, first + k) for m in cfg.get("models") or [] for k in range(int(cfg.get("seeds") or 1))]
    done = {(r["name"], int(r["seed"])) for r in results.get("runs", []) + results.get("diverged", [])}
    missing = [f"{m} seed {s}" for m, s in expected if (m, s) not in done]
    if not missing:
        return ""
    covered = f"this report covers {len(expected) - len(missing)} of the {len(expected)} trainings the config asks for; not finished: {', '.join(missing)}"
    if owner:
        return (f"**In progress.** A convbench run (pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}) "
                f"is still training in this folder: {covered}. Run `convbench report` again when it has finished.")
    return (f"**Incomplete.** {covered[0].upper() + covered[1:]}. Run the same `convbench run` command again to finish them; "
            "finished models are kept.")


def render_report(run_dir: str | Path, log: Callable[[str], None] = print) -> Path:
    """Write figures/*.png and REPORT.md for a run directory from its saved results.

    Args:
        run_dir: a folder holding results.json.
        log: progress output.

    Returns:
        The REPORT.md path.
    """
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    if not results.get("runs") and results.get("diverged"):
        names = ", ".join(dict.fromkeys(r["name"] for r in results["diverged"]))
        path = run_dir / "REPORT.md"
        atomic_write_text(path, f"# convbench report: {names}\n\nNo model finished training: every one diverged.\n\n"
                          + diverged_markdown(results))
        log(f"report written: {path} (every model diverged)")
        return path
    if not results.get("runs"):
        raise ConvbenchError(f"{run_dir / 'results.json'} has no finished runs yet; wait for `convbench run` to finish a model")
    damaged = damaged_predictions(run_dir, results["runs"])
    for run, path, _ in [d for d in damaged if not d[1].exists()]:
        log(f"warning: {path} is missing; the statistics leave out {run['name']} seed {run['seed']} (the same "
            "`convbench run` command retrains it)")
    damaged = [d for d in damaged if d[1].exists()]
    if damaged:
        run, path, problem = damaged[0]
        raise ConvbenchError(f"{path} is damaged ({problem}); run the same `convbench run` command again: it sets the file "
                             f"aside and retrains {run['name']} seed {run['seed']} (the other models are kept)")
    histories = load_histories(run_dir, results, log)
    fig_dir = run_dir / "figures"
    figures = {}
    plot_learning_curves(histories, fig_dir / "learning_curves.png")
    figures["curves"] = "figures/learning_curves.png"
    plot_confusion_matrices(results["runs"], results["data"]["class_names"], fig_dir / "confusion_matrices.png")
    figures["confusion"] = "figures/confusion_matrices.png"
    per_class = {}
    for r in results["runs"]:
        per_class.setdefault(r["name"], r["per_class"]["recall"])
    plot_per_class(per_class, results["data"]["class_names"], fig_dir / "per_class_accuracy.png")
    figures["per_class"] = "figures/per_class_accuracy.png"
    plot_accuracy_vs_flops(results["models"], fig_dir / "accuracy_vs_flops.png")
    figures["accuracy_flops"] = "figures/accuracy_vs_flops.png"
    from convbench.analysis import analyze_run
    from convbench.io import atomic_write_json

    results["statistics"] = analyze_run(run_dir, results, histories)
    results["ablation_effects"] = _ablation_effects(run_dir)
    ablation = _ablation_markdown(run_dir)
    if ablation:
        results["statistics"]["sections_markdown"].append(ablation)
    atomic_write_json(run_dir / "statistics.json", {k: v for k, v in results["statistics"].items() if k != "sections_markdown"})
    from convbench.lock import live_owner

    owner = live_owner(run_dir)
    notice = coverage_notice(results, owner if owner and owner.get("pid") != os.getpid() else None)
    if notice:
        log(notice.replace("**", ""))
    text = render_markdown(results, histories, figures, notice)
    path = run_dir / "REPORT.md"
    atomic_write_text(path, text)
    log(f"report written: {path}")
    return path
