"""REPORT.md and its figures, generated from a run directory's results.json and histories.

Nothing in the report is written in advance: every sentence of the conclusions is chosen by a rule
from the measured numbers (`conclusions`), so different results give different conclusions.

    convbench report runs/quick          # re-render runs/quick/REPORT.md from saved results
    convbench report runs/quick --lang es   # the same report in Spanish (figures too)

Every user-visible string goes through `convbench.i18n` (`_`, `ngettext`, `fmt`), so the same rules
write the report in the run's language; numbers are formatted with `i18n.number`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from convbench import rundir
from convbench.analysis.ablation import load_ledger
from convbench.config import RunConfig, describe_augment, from_dict, save_yaml, training_epochs
from convbench.errors import ConvbenchError
from convbench.i18n import _, check_language, fmt, N_, ngettext, number, pgettext, render_stored, use_language
from convbench.io import atomic_write, atomic_write_json, atomic_write_text
from convbench.lock import live_owner
from convbench.models import model_info
from convbench.report.ablation import render_ablation_markdown, replot_ablation_curves
from convbench.report.analysis_sections import analyze_run
from convbench.report.figures import (
    localise_ticks,
    model_colour,
    plot_accuracy_vs_flops,
    plot_confusion_matrices,
    plot_learning_curves,
    plot_per_class,
    pyplot,
    save_figure,
)
from convbench.report.data_efficiency import crossing_sentence, data_efficiency_markdown, fraction_points
from convbench.report.glossary import glossary_markdown
from convbench.report.sections import percent, points

logger = logging.getLogger(__name__)

# Thresholds the conclusions use; named so the report can quote them.
OVERFIT_GAP = 0.05  # train accuracy minus validation accuracy above this reads as overfitting
STILL_IMPROVING = 0.003  # validation accuracy gained over the last epochs that reads as "not converged"
CLOSE_CALL = 0.01  # accuracy differences below this are within typical seed-to-seed noise on CIFAR
# Frozen ImageNet features of upsampled 32 px CIFAR images stop improving at this resolution
# (README "Transfer learning": 160 px beat 128 and 192 px on all of CIFAR-10).
FEATURES_SATURATE_PX = 160


def load_results(run_dir: Path) -> dict:
    """results.json of a run directory, with a clear error when it is missing or broken."""
    path = rundir.results_path(run_dir)
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


# Words stored in results.json as English codes, shown in the report's language.
_QUANTITIES = {"training loss": N_("training loss"), "validation loss": N_("validation loss")}
_KINDS = {"custom": N_("custom"), "transfer": N_("transfer")}


def _kind(kind: str) -> str:
    """A model kind ("custom", "transfer") as the report shows it."""
    return _(_KINDS[kind]) if kind in _KINDS else str(kind)


def _phase(phase: str) -> str:
    """A training phase ("train", "head", "finetune") as the report shows it."""
    names = {"train": pgettext("training phase", "train"), "head": pgettext("training phase", "head"),
             "finetune": pgettext("training phase", "finetune")}
    return names.get(phase, str(phase))


def diverged_markdown(results: dict) -> str:
    """The "Diverged models" section: where each NaN/inf loss appeared and what to change ("" when none)."""
    diverged = results.get("diverged") or []
    if not diverged:
        return ""
    lines = ["## " + _("Diverged models"), "",
             _("These trainings stopped when a loss became NaN or infinite; they are not ranked. The usual cause is a "
               "learning rate too high for the model, batch size and precision."), ""]
    for r in diverged:
        d = r["diverged"]
        setting, value = d.get("lr_setting", "train.lr_per_1024"), d.get("lr_setting_value")
        section, key = setting.split(".", 1)
        numeric = isinstance(value, (int, float))
        lower = f"{value / 10:.3g}" if numeric else _("a tenth of it")
        quantity = d.get("quantity", "loss")
        snippet = f"`overrides: {{{r['name']}: {{{section}: {{{key}: {lower}}}}}}}`"
        if numeric:
            text = _("- **{name}** (seed {seed}): {quantity} became {value} at epoch {epoch} ({phase} phase) at a peak "
                     "learning rate of {lr:.4g} (`{setting}` {setting_value}). Lower the learning rate, e.g. {snippet} in "
                     "the config, and run the same command again: this model is retrained with its new recipe and the "
                     "finished ones are kept.")
        else:
            text = _("- **{name}** (seed {seed}): {quantity} became {value} at epoch {epoch} ({phase} phase) at a peak "
                     "learning rate of {lr:.4g}. Lower the learning rate, e.g. {snippet} in the config, and run the same "
                     "command again: this model is retrained with its new recipe and the finished ones are kept.")
        lines.append(fmt(text, name=_md_cell(r["name"]), seed=r["seed"], quantity=_(_QUANTITIES.get(quantity, quantity)),
                         value=str(d.get("value", "nan")), epoch=str(d.get("epoch")), phase=_phase(d.get("phase", "train")),
                         lr=float(d.get("lr", float("nan"))), setting=setting,
                         setting_value=f"{value:g}" if numeric else "", snippet=snippet))
    return "\n".join(lines) + "\n"


def _epochs_text(m: dict) -> str:
    """"12 epochs", or for a transfer model "600 head steps on cached features and 3 fine-tuning epochs"."""
    if m.get("head_steps_run") and not m.get("epochs_run"):
        return fmt(_("{steps:.0f} head steps on cached features, no fine-tuning"), steps=float(m["head_steps_run"]))
    if m.get("head_steps_run"):
        return fmt(ngettext("{steps:.0f} head steps on cached features and {n} fine-tuning epoch",
                            "{steps:.0f} head steps on cached features and {n} fine-tuning epochs", m["epochs_run"]),
                   steps=float(m["head_steps_run"]), n=m["epochs_run"])
    return fmt(ngettext("{n} epoch", "{n} epochs", m["epochs_run"]), n=m["epochs_run"])


def _training_speed(m: dict) -> str:
    """A model's end-to-end training img/s; "-" for a transfer model trained head only, whose head
    ran on cached feature vectors (results saved before that rule carry that speed)."""
    if m.get("train_images_per_s") is None or (m["kind"] == "transfer" and not m.get("epochs_run")):
        return "-"
    return number(m["train_images_per_s"], ",.0f")


def _head_phase(transfer: dict) -> str:
    """The head phase of a saved transfer recipe, in the units it ran in."""
    if "head_steps" in transfer:
        return fmt(_("head up to {steps} steps on cached features"), steps=transfer["head_steps"])
    # Recipes saved before head_steps counted the head phase in epochs.
    return fmt(ngettext("{n} frozen head epoch", "{n} frozen head epochs", transfer["frozen_epochs"]), n=transfer["frozen_epochs"])


HISTORY_COLUMNS = ("epoch", "phase", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
PREDICTION_KEYS = ("test_logits", "test_labels", "val_logits", "val_labels")


def load_histories(run_dir: Path, results: dict) -> dict[str, list[dict]]:
    """Per-run history rows keyed by "<model>_seed<k>" (finished and diverged runs).

    A missing or damaged history CSV only costs its learning curve: it is left out with a warning
    (the metrics live in results.json and the predictions).
    """
    import pandas as pd

    out = {}
    for r in results.get("runs", []) + results.get("diverged", []):
        path = Path(run_dir) / r.get("history_csv", rundir.history_file(r["name"], r["seed"]))
        if not path.exists():
            continue
        try:
            frame = pd.read_csv(path)
            missing = [c for c in HISTORY_COLUMNS if c not in frame.columns]
            if missing:
                raise ValueError(f"no {', '.join(missing)} column")
            frame["epoch"] = frame["epoch"].astype(int)
        except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
            logger.warning(f"warning: {path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                           f"the learning curve of {r['name']} seed {r['seed']} is left out of the report")
            continue
        out[rundir.run_key(r["name"], r["seed"])] = frame.to_dict("records")
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
        path = Path(run_dir) / r.get("predictions", rundir.predictions_file(r["name"], r["seed"]))
        problem = predictions_problem(path)
        if problem:
            out.append((r, path, problem))
    return out


# ---------------------------------------------------------------------------------------------
# Figures


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
    if abs(actual - configured) > 0.02:  # per-class rounding moves it by less on any real data set
        return fmt(_("stratified, {share:.0f}% of train; the configured {configured:.0f}% rounds differently on classes "
                     "this small, since every class gives at least one image to each side"),
                   share=100 * actual, configured=100 * configured)
    return fmt(_("stratified, {share:.0f}% of train"), share=100 * actual)


def _precision(run: dict) -> str:
    """The dtype policy a run trained in, with the reason it was chosen (older runs have none)."""
    reason = run.get("precision_reason")
    if not reason:
        return run["mixed_precision"]
    return f"{run['mixed_precision']} ({render_stored(run.get('precision_reason_i18n'), fallback=reason)})"


def model_diagnostics(model: dict, rows: list[dict], val_images: int = 0, num_classes: int = 0) -> dict:
    """Numbers the conclusions reason with, for one model (first seed's curves).

    Verdicts allow for chance: a validation accuracy p on n images varies by about
    2 sqrt(p (1 - p) / n) (two standard errors), so a gap or a late rise within that is not read
    as overfitting or as still improving, and fewer than 3 evaluations cannot tell overfitting from
    a model that is still learning. A model whose best validation accuracy is within that of
    guessing (1 / num_classes) has learned nothing yet; no other verdict applies to it.
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
    chance = 1.0 / num_classes if num_classes else 0.0
    chance_noise = 2.0 * math.sqrt(chance * (1.0 - chance) / val_images) if val_images and chance else 0.0
    return {
        "chance": chance,
        # At most two standard errors (and 2 points) above guessing: nothing learned yet.
        "at_chance": bool(chance and p <= chance + max(chance_noise, 0.02)),
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


def conclusions(results: dict, histories: dict[str, list[dict]], run_path: str = "") -> str:
    """The Conclusions section, as the assignment's four questions: which was best, why, what would
    I improve, how would I improve it.

    Args:
        results: results.json content.
        histories: per-run histories from `load_histories`.
        run_path: the run folder as the reader's commands name it (e.g. "runs/quick"); each runnable
            suggestion then gets its `convbench run` command. "" leaves the commands out.

    Returns:
        Markdown text, in the active language (`i18n.use_language`).
    """
    models = sorted(results["models"], key=lambda m: (-m["test_accuracy"], m["name"]))  # ties as stats.verdict breaks them
    if not models:
        return "## " + _("Conclusions") + "\n\n" + _("No model finished training, so nothing can be concluded yet.") + "\n"
    first_rows = {}
    for r in results["runs"]:
        first_rows.setdefault(r["name"], histories.get(rundir.run_key(r["name"], r["seed"]), []))
    n_val = int(results.get("data", {}).get("val_images", 0) or 0)
    n_classes = int(results.get("data", {}).get("num_classes", 0) or 0)
    diag = {m["name"]: model_diagnostics(m, first_rows.get(m["name"], []), n_val, n_classes) for m in models}
    best = models[0]
    lines = ["## " + _("Conclusions"), "", "### " + _("Which was best?"), ""]
    seeds = len(best.get("seeds", [0]))
    if len(models) == 1:
        lines.append(fmt(_("Only **{model}** was trained: {accuracy} test accuracy. There is nothing to compare it with."),
                         model=best["name"], accuracy=percent(best["test_accuracy"])))
    else:
        second = models[1]
        margin = best["test_accuracy"] - second["test_accuracy"]
        values = dict(model=best["name"], kind=_kind(best["kind"]), accuracy=percent(best["test_accuracy"]), margin=points(margin),
                      second=second["name"], second_accuracy=percent(second["test_accuracy"]),
                      last_margin=points(best["test_accuracy"] - models[-1]["test_accuracy"]), last=models[-1]["name"])
        if len(models) > 2:
            lines.append(fmt(_("**{model}** ({kind}) has the highest test accuracy, {accuracy}, {margin} ahead of {second} "
                               "({second_accuracy}) and {last_margin} ahead of {last}."), **values))
        else:
            lines.append(fmt(_("**{model}** ({kind}) has the highest test accuracy, {accuracy}, {margin} ahead of {second} "
                               "({second_accuracy})."), **values))
        stats = results.get("statistics", {}).get("verdict")
        if stats:
            if stats.get("winner"):
                lines.append(_("The paired test on the test images says this lead is significant (see the paired significance "
                               "tests above)."))
            else:
                lines.append(_("The paired test on the test images cannot separate the top models at this budget (see the "
                               "paired significance tests above): treat the ranking as provisional."))
        elif margin < CLOSE_CALL:
            lines.append(fmt(ngettext(
                "The margin is under {close}, which is within the seed-to-seed spread typical of CIFAR training; with "
                "{n} seed this ranking is not reliable. Run `--seeds 3` or more to decide.",
                "The margin is under {close}, which is within the seed-to-seed spread typical of CIFAR training; with "
                "{n} seeds this ranking is not reliable. Run `--seeds 3` or more to decide.", seeds),
                close=fmt(_("{value:.2f} points"), value=100 * CLOSE_CALL), n=seeds))
        parity = _compute_parity(models, results.get("config", {}).get("budget", {}))
        if parity:
            lines.append(parity)
    efficiency = crossing_sentence(results.get("data_efficiency") or {})
    if efficiency:
        lines += ["", efficiency]
    lines += ["", "### " + _("Why?"), ""]
    for m in models:
        d = diag[m["name"]]
        parts = [
            fmt(_("**{model}**{description}: {test} test, best validation {val}"), model=m["name"],
                description=_description(m["name"]), test=percent(m["test_accuracy"]), val=percent(m["best_val_accuracy"])),
            fmt(_("{params:.2f} M parameters, {mflops:.0f} MFLOPs per image"), params=m["params"] / 1e6,
                mflops=m["flops_per_image"] / 1e6),
            fmt(_("{seconds:.0f} s of training over {epochs}"), seconds=m["train_seconds"], epochs=_epochs_text(m)),
        ]
        if d["at_chance"]:
            parts.append(fmt(_("it has not learned yet: its best validation accuracy is at the level of guessing ({chance} "
                               "with {classes} classes), so its curves say nothing about overfitting"),
                             chance=percent(d["chance"]), classes=round(1 / d["chance"])))
        elif np.isfinite(d["gap"]):
            noise = fmt(_("±{noise:.1f} points, the chance variation of {images:,} validation images"),
                        noise=100 * d["noise"], images=d["val_images"])
            kind = {"overfit": fmt(_("a sign of overfitting: larger than {noise}"), noise=noise),
                    "noise": fmt(_("within {noise}: too few images to call it overfitting"), noise=noise),
                    "too_short": _("too few epochs to tell overfitting from a model still learning"),
                    "mild": _("mild overfitting"), "none": _("no overfitting")}[d["overfit"]]
            if d["gap_on_cached_features"]:
                parts.append(fmt(_("train-validation gap {gap} ({verdict}; its train accuracy is on un-augmented cached "
                                   "features)"), gap=points(d["gap"]), verdict=kind))
            else:
                parts.append(fmt(_("train-validation gap {gap} ({verdict})"), gap=points(d["gap"]), verdict=kind))
        if d["still_improving"]:
            if d["noise"]:
                parts.append(fmt(_("validation accuracy was still rising at the end ({gain} over the last epochs, more than "
                                   "the ±{noise:.1f}-point chance variation)"), gain=points(d["late_gain"]), noise=100 * d["noise"]))
            else:
                parts.append(fmt(_("validation accuracy was still rising at the end ({gain} over the last epochs)"),
                                 gain=points(d["late_gain"])))
        if d["head_best"] is not None and d["finetune_best"] is not None:
            change = d["finetune_best"] - d["head_best"]
            if change > 0:
                parts.append(fmt(_("fine-tuning raised the best validation accuracy of the head alone from {head} to {tuned} "
                                   "({change})"), head=percent(d["head_best"]), tuned=percent(d["finetune_best"]), change=points(change)))
            else:
                parts.append(fmt(_("fine-tuning did not improve on the head alone (best validation {head} with the head alone, "
                                   "{tuned} after fine-tuning), so the head-only weights were kept"),
                                 head=percent(d["head_best"]), tuned=percent(d["finetune_best"])))
        lines.append("- " + "; ".join(parts) + ".")
    # A model at chance level is no point of an accuracy-for-cost trade-off.
    learned = [m for m in models if not diag[m["name"]]["at_chance"]]
    if len(models) > 1:
        cheapest = min(learned, key=lambda m: m["flops_per_image"]) if len(learned) > 1 and best in learned else None
        lines.append("")
        if cheapest is None:
            pass
        elif cheapest["name"] == best["name"]:
            lines.append(fmt(_("{model} is also the cheapest per image, so it wins on both accuracy and cost."), model=best["name"]))
        else:
            ratio = best["flops_per_image"] / max(cheapest["flops_per_image"], 1)
            lines.append(fmt(_("{model} costs {ratio:.1f}x the forward FLOPs of the cheapest model, {cheapest} ({accuracy}): "
                               "{gain} of test accuracy for {ratio:.1f}x the cost of each prediction."),
                             model=best["name"], ratio=ratio, cheapest=cheapest["name"], accuracy=percent(cheapest["test_accuracy"]),
                             gain=points(best["test_accuracy"] - cheapest["test_accuracy"])))
        if best["kind"] == "transfer":
            lines.append(_("Its ImageNet features carry knowledge that the from-scratch CNNs must learn from CIFAR alone within "
                           "the epoch budget."))
        elif any(m["kind"] == "transfer" for m in models):
            t = next(m for m in models if m["kind"] == "transfer")
            res = next((r["recipe"]["transfer"]["resolution"] for r in results["runs"] if r["name"] == t["name"]), None)
            if not t["epochs_run"] and res and res >= FEATURES_SATURATE_PX:
                lines.append(fmt(_(
                    "The pretrained {model} did not win here ({accuracy}). A likely reason, not tested by this run: only its "
                    "head was trained, on frozen ImageNet features of CIFAR images upsampled to {resolution} px, and "
                    "fine-tuning is what adapts those features to CIFAR. To test it, fine-tune its top block: {snippet}."),
                    model=t["name"], accuracy=percent(t["test_accuracy"]), resolution=str(res),
                    snippet=f"`overrides: {{{t['name']}: {{transfer: {{finetune_epochs: 2}}}}}}`"))
            else:
                lines.append(fmt(_(
                    "The pretrained {model} did not win here ({accuracy}). A likely reason, not tested by this run: ImageNet "
                    "features computed from CIFAR images upsampled to {resolution} px carry less than the network was trained "
                    "to see at 224 px, and its fine-tuning had a budget of {epochs}. To test it, raise its resolution alone: "
                    "{snippet}."), model=t["name"], accuracy=percent(t["test_accuracy"]), resolution=str(res),
                    epochs=fmt(ngettext("{n} epoch", "{n} epochs", t["epochs_run"]), n=t["epochs_run"]),
                    snippet=f"`overrides: {{{t['name']}: {{transfer: {{resolution: {min(2 * res, 224) if res else 128}}}}}}}`"))
    advice = advice_steps(results, histories)
    steps = [step for step in advice if step.what]
    kept = [step for step in advice if not step.what]
    wall = float(results.get("wall_seconds") or 0.0)
    lines += ["", "### " + _("What would I improve?"), ""]
    lines += [f"{i}. {step.what}" for i, step in enumerate(steps, 1)]
    lines += ["", "### " + _("How would I improve it?"), ""]
    if steps:
        lines += [_("Point by point, in the order above. Each command trains into a new folder beside this one, from "
                    "this run's config with that one change (the file it names holds it):"), ""]
    runnable = next_step_configs(results, advice)
    lines += [f"{i}. {_how_with_command(step, run_path if step.slug in runnable else '', wall)}"
              for i, step in enumerate(steps + kept, 1)]
    return "\n".join(lines) + "\n"


def advice_steps(results: dict, histories: dict[str, list[dict]]) -> list[Step]:
    """The conclusions' suggestions for a run, best model first, then the diverged models.

    Args:
        results: results.json content.
        histories: per-run histories from `load_histories`.

    Returns:
        The steps ([] when no model finished).
    """
    models = sorted(results["models"], key=lambda m: (-m["test_accuracy"], m["name"]))
    if not models:
        return []
    best = models[0]
    rows = next((histories.get(rundir.run_key(r["name"], r["seed"]), []) for r in results["runs"] if r["name"] == best["name"]), [])
    n_val = int(results.get("data", {}).get("val_images", 0) or 0)
    n_classes = int(results.get("data", {}).get("num_classes", 0) or 0)
    steps = _advice(best, model_diagnostics(best, rows, n_val, n_classes), results)
    for name in dict.fromkeys(r["name"] for r in results.get("diverged") or []):
        steps.append(Step(fmt(_("{model} diverged (see Diverged models), so this comparison does not yet say how it ranks."),
                              model=_md_cell(name)),
                          fmt(_("Retrain {model} at a lower learning rate, as Diverged models shows."), model=_md_cell(name))))
    return steps


def _description(name: str) -> str:
    """" (what the registry says the model is)", or "" for a name it no longer holds (an old run)."""

    try:
        return f" ({_(model_info(name).description).rstrip('.')})"
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
    spread = fmt(_("from {fast_seconds:.0f} s ({fast}) to {slow_seconds:.0f} s ({slow})"), fast_seconds=fast["train_seconds"],
                 fast=fast["name"], slow_seconds=slow["train_seconds"], slow=slow["name"])
    if ratio < PARITY_RATIO:
        return fmt(_("Compute was roughly matched: train times ran {spread}, within {parity}x of each other."),
                   spread=spread, parity=number(PARITY_RATIO, "g"))
    minutes = max(1, round(float(np.median([m["train_seconds"] for m in timed])) / 60))
    return fmt(_("Compute was not matched: train times ran {spread}, {ratio:.1f}x apart, so this ranking compares architectures "
                 "and budgets together. To compare the architectures alone, give every model the same budget, e.g. {minutes} "
                 "or {flops}."), spread=spread, ratio=ratio,
               minutes=f"`budget: {{kind: minutes, value: {minutes}}}`", flops="`budget: {kind: train_flops, value: ...}`")


class Step(NamedTuple):
    """One suggestion of the conclusions.

    Attributes:
        what: the problem, with the measurement that shows it ("" for a change to keep).
        how: the change, in words.
        slug: names the next-step config (`next/<slug>.yaml` in the run folder) and its run folder.
        change: the config change, shaped as config.yaml (None: nothing to run, e.g. an inference choice).
        seconds: the estimated wall time of the next run on this machine (None: not estimated).
    """

    what: str
    how: str
    slug: str = ""
    change: dict | None = None
    seconds: float | None = None


def _setting(config: dict, model: str, section: str, key: str) -> tuple[list[str], object]:
    """Where a model's setting lives (its override when it has one, else the shared section) and its value."""
    override = (config.get("overrides") or {}).get(model, {}).get(section) or {}
    if key in override:
        return ["overrides", model, section, key], override[key]
    return [section, key], (config.get(section) or {}).get(key)


def _nested(path: list[str], value) -> dict:
    """{"a": {"b": value}} for path ["a", "b"]."""
    out: dict = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


def _merge(base: dict, change: dict) -> dict:
    """base with change written over it, key by key (nested mappings merged, not replaced)."""
    out = dict(base)
    for key, value in change.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def next_step_configs(results: dict, steps: list[Step]) -> dict[str, RunConfig]:
    """The config of each runnable step: the run's own config with the step's change written over it.

    Args:
        results: results.json content (its "config" is the run's resolved config).
        steps: the conclusions' steps (`advice_steps`).

    Returns:
        slug -> config, for the steps that carry a change that validates (one that does not, a
        setting an older run's config cannot take, is offered in words only, without a command).
    """
    out = {}
    for step in steps:
        if not step.change:
            continue
        try:
            out[step.slug] = from_dict(_merge(results.get("config") or {}, step.change), base=RunConfig(),
                                       where=f"{rundir.NEXT_DIR}/{step.slug}.yaml")
        except ConvbenchError:
            continue
    return out


def _minutes(seconds: float) -> str:
    return fmt(_("{n} min"), n=max(1, round(seconds / 60)))


def _how_with_command(step: Step, run_path: str, wall_seconds: float) -> str:
    """A step's "how", followed by the command that runs it and what it costs."""
    if not step.change or not run_path:
        return step.how
    path = Path(run_path)
    command = f"convbench run --config {rundir.next_step_file(path, step.slug)} --out {path.parent / (path.name + '-' + step.slug)}"
    if step.seconds:
        cost = fmt(_("About {estimate} on this machine (this run took {actual}):"), estimate=_minutes(step.seconds),
                   actual=_minutes(wall_seconds))
    else:
        cost = fmt(_("Run it (this run took {actual}):"), actual=_minutes(wall_seconds)) if wall_seconds else _("Run it:")
    return f"{step.how} {cost}\n\n   ```\n   {command}\n   ```"


def _tta_step(best: dict, results: dict) -> Step | None:
    """Flip test-time augmentation, when the run measured that it helps the best model."""
    runs = [r for r in results["runs"] if r["name"] == best["name"] and r.get("tta_accuracy") is not None]
    if not runs:
        return None
    gain = float(np.mean([r["tta_accuracy"] - r["test_accuracy"] for r in runs]))
    images = int(runs[0].get("test_images") or 0)
    # One test image changes accuracy by 1/images; a gain of a few images is no evidence.
    if images <= 0 or gain * images < 3:
        return None
    latency = runs[0].get("latency_ms_batch1")
    cost = (fmt(_("twice the prediction cost ({single:.1f} ms → {double:.1f} ms per image at batch 1)"),
                single=latency, double=2 * latency) if latency else _("twice the prediction cost"))
    return Step(
        fmt(_("Predict with flip test-time augmentation: in this run it raised {model}'s test accuracy by {gain} "
              "({plain} → {tta} on {images} test images), for {cost}."),
            model=best["name"], gain=points(gain), plain=percent(float(np.mean([r["test_accuracy"] for r in runs]))),
            tta=percent(float(np.mean([r["tta_accuracy"] for r in runs]))), images=images, cost=cost),
        fmt(_("Average the softmax of each image and of its mirror image where you use the model: {snippet}. No "
              "retraining needed."), snippet="`(model(x) + model(x[:, :, ::-1])) / 2`"))


def _advice(best: dict, d: dict, results: dict) -> list[Step]:
    """What limits the best model and how to change that, as Steps in the report's language.

    "what" names the problem with the measurement that shows it, "how" the change to make; a
    step with an empty "what" is a change to keep (an ablation that helped). A step with a change
    can be run as it stands (`next_step_configs`), with its cost estimated from this run's times.
    """
    out: list[Step] = []
    config = results.get("config") or {}
    wall = float(results.get("wall_seconds") or 0.0)
    best_seconds = float(best.get("train_seconds") or 0.0)
    recipe = next((r["recipe"] for r in results["runs"] if r["name"] == best["name"]), {})
    aug = recipe.get("augment", {})
    reg = recipe.get("regularization", {})
    if d["still_improving"]:
        section, key = ("transfer", "finetune_epochs") if best["kind"] == "transfer" else ("train", "epochs")
        where, now = _setting(config, best["name"], section, key)
        now = int(now or d["epochs"] or 1)
        more = 2 * now
        out.append(Step(
            fmt(_("Train longer: validation accuracy gained {gain} over the last epochs and had not plateaued."),
                gain=points(d["late_gain"])),
            fmt(_("Raise `{setting}` from {now} to {more}, with the same schedule stretched over them."),
                setting=".".join(where), now=str(now), more=str(more)),
            "train-longer", _nested(where, more), wall + best_seconds * (more / now - 1) if wall else None))
    transfer = recipe.get("transfer", {})
    head_won = d.get("finetune_best") is not None and d["head_best"] >= d["finetune_best"]
    if best["kind"] == "transfer" and d["overfit"] == "overfit" and (head_won or d.get("finetune_best") is None):
        # Its best weights came from the head phase: the gap is on cached features, which augmentation never reaches.
        stronger = ([fmt(_("a head with dropout and BatchNorm, {snippet}"),
                         snippet=f"`overrides: {{{best['name']}: {{transfer: {{head: gap_bn_dropout}}}}}}`")]
                    if transfer.get("head") != "gap_bn_dropout" else [])
        where, decay = _setting(config, best["name"], "regularization", "weight_decay")
        stronger.append(fmt(_("a higher `{setting}` (now {now})"), setting=".".join(where), now=str(decay)))
        change = (_nested(["overrides", best["name"], "transfer", "head"], "gap_bn_dropout") if len(stronger) == 2
                  else _nested(where, 2 * float(decay or 5e-4)))
        out.append(Step(
            fmt(_("Regularize the head: the train-validation gap is {gap}, measured on cached features, which augmentation "
                  "does not reach (it acts only while fine-tuning)."), gap=points(d["gap"])),
            fmt(_("Try {options}; the command below tries the first."), options=stronger[0] if len(stronger) == 1
                else fmt(_("{first} or {second}"), first=stronger[0], second=stronger[1])),
            "regularize-head", change, wall or None))
    elif d["overfit"] == "overfit":
        # Each stronger setting where the best model reads it (its override, else the shared section).
        candidates = []
        if not aug.get("cutout"):
            candidates.append(("augment", "cutout", 8))
        if not aug.get("mixup_alpha") and not aug.get("cutmix_alpha"):
            candidates.append(("augment", "cutmix_alpha", 1.0))
        if reg.get("label_smoothing", 0) < 0.1:
            candidates.append(("regularization", "label_smoothing", 0.1))
        where, decay = _setting(config, best["name"], "regularization", "weight_decay")
        candidates.append(("regularization", "weight_decay", 2 * float(decay or 5e-4)))
        change: dict = {}
        names = []
        for section, key, value in candidates:
            path = _setting(config, best["name"], section, key)[0]
            change = _merge(change, _nested(path, value))
            names.append(f"`{'.'.join(path)}: {number(value, 'g') if isinstance(value, float) else value}`")
        out.append(Step(fmt(_("Regularize more: the train-validation gap is {gap}."), gap=points(d["gap"])),
                        fmt(_("Set {options}."), options=", ".join(names)), "regularize", change, wall or None))
    elif np.isfinite(d["gap"]) and d["gap"] < 0.01 and not d["still_improving"]:
        out.append(Step(
            fmt(_("Add capacity: the train-validation gap is only {gap} and validation accuracy has flattened, so the model "
                  "underfits."), gap=points(d["gap"])),
            _("Widen it (`width`) or train it at a higher learning rate.")))
    if best["kind"] == "transfer":
        t = transfer
        if t.get("resolution", 224) < FEATURES_SATURATE_PX:
            where, res = _setting(config, best["name"], "transfer", "resolution")
            res = int(res or t["resolution"])
            larger = min(224, 2 * res)
            out.append(Step(
                fmt(_("Feed the pretrained backbone larger images: it ran at {resolution} px, far below the 224 px it was "
                      "trained at."), resolution=str(t.get("resolution"))),
                fmt(_("Raise `{setting}` from {now} to {larger} (on a GPU, `--preset full` uses 224); the backbone's cost "
                      "grows with the pixel count, {ratio:.1f}x."), setting=".".join(where), now=str(res), larger=str(larger),
                    ratio=(larger / res) ** 2),
                f"resolution-{larger}", _nested(where, larger),
                wall + best_seconds * ((larger / res) ** 2 - 1) if wall else None))
        if head_won:
            epochs, blocks = t.get("finetune_epochs", 0), t.get("finetune_blocks", 0)
            more = {"finetune_epochs": max(3, 2 * epochs), "finetune_blocks": blocks + 1}
            out.append(Step(
                fmt(_("Fine-tuning did not pay at this budget ({epochs} of the top {blocks})."),
                    epochs=fmt(ngettext("{n} epoch", "{n} epochs", epochs), n=epochs),
                    blocks=fmt(ngettext("{n} block", "{n} blocks", blocks), n=blocks)),
                fmt(_("Give it more, {more} (the command below), or drop it, {drop}, which keeps the same weights for less "
                      "time."),
                    more=f"`overrides: {{{best['name']}: {{transfer: {{finetune_epochs: {more['finetune_epochs']}, "
                         f"finetune_blocks: {more['finetune_blocks']}}}}}}}`",
                    drop=f"`overrides: {{{best['name']}: {{transfer: {{finetune_epochs: 0}}}}}}`"),
                "finetune-more", {"overrides": {best["name"]: {"transfer": more}}}, None))
        else:
            epochs, blocks = t.get("finetune_epochs", 0), t.get("finetune_blocks", 0)
            head_only = not epochs and d.get("finetune_best") is None
            if head_only:
                what = _("Fine-tune the backbone: only its head was trained, on frozen features.")
            elif d.get("finetune_best") is not None:
                what = fmt(_("Fine-tune more of the backbone: fine-tuning raised the best validation accuracy over the head "
                             "alone ({head} → {tuned}), so more of it may raise it further."),
                           head=percent(d["head_best"]), tuned=percent(d["finetune_best"]))
            else:
                what = fmt(_("Fine-tune more of the backbone: it was fine-tuned for {epochs} of its top {blocks} only."),
                           epochs=fmt(ngettext("{n} epoch", "{n} epochs", epochs), n=epochs),
                           blocks=fmt(ngettext("{n} block", "{n} blocks", blocks), n=blocks))
            more = {"finetune_epochs": max(2, 2 * epochs), "finetune_blocks": max(1, blocks) if head_only else blocks + 1}
            out.append(Step(what, fmt(_("Fine-tune {blocks} for {epochs}: {snippet}."),
                                      blocks=fmt(ngettext("{n} block", "{n} blocks", more["finetune_blocks"]),
                                                 n=more["finetune_blocks"]),
                                      epochs=fmt(ngettext("{n} epoch", "{n} epochs", more["finetune_epochs"]),
                                                 n=more["finetune_epochs"]),
                                      snippet=f"`overrides: {{{best['name']}: {{transfer: {{finetune_epochs: "
                                              f"{more['finetune_epochs']}, finetune_blocks: {more['finetune_blocks']}}}}}}}`"),
                            "finetune-more", {"overrides": {best["name"]: {"transfer": more}}}, None))
    tta = _tta_step(best, results)
    if tta:
        out.append(tta)
    for e in results.get("ablation_effects", []):
        factor = _(e["factor"])
        if e.get("verdict") == "hurt":
            out.append(Step(
                fmt(_("On {model}, {factor} hurt in the ablation ({without} → {with_}: {effect}, Holm p = {p:.2g}), which "
                      "suggests the model underfits at this budget."), model=e["model"], factor=factor, without=e["without"],
                    with_=e["with"], effect=points(e["diff"]), p=e["p_holm"]),
                fmt(_("Drop {factor} on {model}, or train longer before adding it back."), factor=factor, model=e["model"])))
        elif e.get("verdict") == "helped":
            out.append(Step("", fmt(_("Keep {factor} on {model}: it helped in the ablation ({effect}, Holm p = {p:.2g})."),
                                factor=factor, model=e["model"], effect=points(e["diff"]), p=e["p_holm"])))
    seeds = len(best.get("seeds", [0]))
    if seeds < 3:
        out.append(Step(
            _("Confirm the ranking with more seeds: it rests on one seed, and a paired test on one seed captures test-set "
              "sampling, not seed-to-seed variation.") if seeds == 1 else
            fmt(_("Confirm the ranking with more seeds: {n} seeds give only a rough estimate of the seed-to-seed variation."),
                n=seeds),
            fmt(_("Train every model with 3 seeds (now {n}): it gives a confidence interval for every model."), n=str(seeds)),
            "seeds-3", {"seeds": 3}, wall * 3 / seeds if wall else None))
    if not any(step.what for step in out):
        out.append(Step(_("The model has converged without overfitting at this budget."),
                        _("The next gains need a larger budget (`--preset full`).")))
    return out


def _table_header(cells: list[str]) -> list[str]:
    """A Markdown table's header and rule lines."""
    return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def render_markdown(results: dict, histories: dict[str, list[dict]], figures: dict[str, str], notice: str = "",
                    run_path: str = "") -> str:
    """The whole REPORT.md as text (pure: no files read or written), in the active language.

    Args:
        results: results.json content.
        histories: per-run histories.
        figures: figure key -> relative path (keys: curves, confusion, per_class, accuracy_flops).
        notice: a paragraph shown first (e.g. `coverage_notice`: a run still in progress).
        run_path: the run folder as commands name it; the suggestions' commands use it ("" leaves them out).
    """
    models = sorted(results["models"], key=lambda m: (-m["test_accuracy"], m["name"]))  # ties as stats.verdict breaks them
    data = results["data"]
    env = results["environment"]
    cfg = results["config"]
    out = [fmt(_("# convbench report: {models}"), models=", ".join(m["name"] for m in models)), ""]
    if notice:
        out += [notice, ""]
    stats_summary = results.get("statistics", {}).get("summary_markdown")
    if not stats_summary:
        if models:
            out.append(fmt(ngettext(
                "**Summary.** Best on the held-out test set: **{best}** with {accuracy}, out of {n} model trained on {images} "
                "images of `{source}` ({preset} preset). Details and the reasoning are below; conclusions are at the end.",
                "**Summary.** Best on the held-out test set: **{best}** with {accuracy}, out of {n} models trained on {images} "
                "images of `{source}` ({preset} preset). Details and the reasoning are below; conclusions are at the end.",
                len(models)), best=models[0]["name"], accuracy=percent(models[0]["test_accuracy"]), n=len(models),
                images=str(data["train_images"]), source=data["source"], preset=cfg["preset"]))
        else:
            out.append(_("**Summary.** No model finished training."))
    else:
        out += [stats_summary.rstrip(), "", fmt(_("Data: {images} training images of `{source}`, {preset} preset. Details "
                                                  "below; conclusions at the end."),
                                                images=str(data["train_images"]), source=data["source"], preset=cfg["preset"])]
    if results.get("diverged"):
        out += ["", fmt(_("**Diverged** (not ranked, see Diverged models below): {models}."),
                        models=", ".join(dict.fromkeys(_md_cell(r["name"]) for r in results["diverged"])))]
    out += ["", "## " + _("Setup"), ""]
    issues = data.get("issues", {})
    out += [
        fmt(_("- Data: `{source}`, {classes} classes, {train} train / {val} validation ({split}, seed {split_seed}) / {test} "
              "test images. The test split was used only for the final evaluation, never for early stopping or model "
              "selection."), source=data["source"], classes=str(data["num_classes"]), train=str(data["train_images"]),
            val=str(data["val_images"]), split=_split_text(data, cfg["data"]["val_fraction"]),
            split_seed=str(cfg["data"]["split_seed"]), test=str(data["test_images"])),
        fmt(_("- Data issues: {skipped} unreadable images skipped, {ignored} non-image files ignored, {converted} images "
              "converted to RGB, {resized} resized to 32x32."), skipped=str(issues.get("skipped", 0)),
            ignored=str(issues.get("ignored", 0)), converted=str(issues.get("converted", 0)), resized=str(issues.get("resized", 0))),
        fmt(_("- Hardware: {cpu} ({cpus} logical CPUs), GPUs: {gpus}; {platform}."), cpu=env["cpu"], cpus=str(env["cpu_count"]),
            gpus=", ".join(env["gpus"]) or _("none"), platform=env["platform"]),
        fmt(_("- Versions: {versions}, Python {python}."), versions=", ".join(f"{k} {v}" for k, v in env["versions"].items()),
            python=env["python"]),
        fmt(_("- Seeds: {seeds} per model (starting at {first}); precision: {precision}."), seeds=str(cfg["seeds"]),
            first=str(cfg["train"]["seed"]), precision=_precision_text(results["runs"])),
        _("- Full configuration: `config.yaml` beside this report; per-epoch histories in `history/`, best weights in `models/`."),
    ]
    out += ["", "## " + _("Comparison"), ""]
    out += _table_header([_("model"), _("kind"), _("test acc"), _("best val acc"), _("train acc at best"), _("params"),
                          _("MFLOPs/img"), _("train time"), _("epochs"), _("train img/s"), _("batch-1 latency"),
                          _("batch-256 img/s")])
    for m in models:
        acc = percent(m["test_accuracy"]) + (" ± " + number(100 * m["test_accuracy_std"], ".2f") if len(m.get("seeds", [])) > 1 else "")
        out.append(
            f"| {m['name']} | {_kind(m['kind'])} | {acc} | {percent(m['best_val_accuracy'])} | "
            f"{percent(m.get('train_accuracy_at_best', float('nan')))} | {number(m['params'] / 1e6, '.2f')} M | "
            f"{number(m['flops_per_image'] / 1e6, '.1f')} | {number(m['train_seconds'], '.0f')} s | {m['epochs_run']} | "
            f"{_training_speed(m)} | "
            f"{number(m.get('latency_ms_batch1', float('nan')), '.1f')} ms | "
            f"{number(m.get('throughput_images_per_s_batch256', float('nan')), ',.0f')} |"
        )
    out += ["", _("Train accuracy is measured on augmented batches during training; FLOPs count convolutions and dense layers "
                  "(2 x MACs). Train time is the wall time of the whole training call (for transfer models it includes computing "
                  "the frozen features once); train img/s is the end-to-end training throughput (for transfer models, of the "
                  "fine-tuning epochs; - when only the head trained). A transfer model's epochs are its fine-tuning epochs, "
                  "after its head's steps on cached features.")]
    diverged = diverged_markdown(results)
    if diverged:
        out += ["", diverged.rstrip()]
    out += ["", "## " + _("Training recipes (augmentation and regularization)"), ""]
    out += _table_header([_("model"), _("epochs"), _("batch"), _("optimizer"), _("peak lr"), _("schedule"), _("augmentation"),
                          _("label smoothing"), _("weight decay"), _("dropout"), _("early stop"), _("transfer")])
    seen = set()
    for r in results["runs"]:
        if r["name"] in seen:
            continue
        seen.add(r["name"])
        rc = r["recipe"]
        t, a, g = rc["train"], rc["augment"], rc["regularization"]
        augs = describe_augment(a)
        tr = rc["transfer"]
        if r["kind"] != "transfer":
            transfer = "-"
        elif not tr["finetune_epochs"]:
            transfer = fmt(_("{resolution}px, head {head}, {head_phase}, no fine-tuning"), resolution=str(tr["resolution"]),
                           head=tr["head"], head_phase=_head_phase(tr))
        else:
            transfer = fmt(_("{resolution}px, head {head}, {head_phase} + {finetune} (top {blocks})"),
                           resolution=str(tr["resolution"]), head=tr["head"], head_phase=_head_phase(tr),
                           finetune=fmt(ngettext("{n} fine-tune epoch", "{n} fine-tune epochs", tr["finetune_epochs"]),
                                        n=tr["finetune_epochs"]),
                           blocks=fmt(ngettext("{n} block", "{n} blocks", tr["finetune_blocks"]), n=tr["finetune_blocks"]))
        lr_per_1024 = t["lr_per_1024"] if r["kind"] == "custom" else tr["head_lr_per_1024"]
        peak = lr_per_1024 * t["global_batch_size"] / 1024
        optimizer = t["optimizer"] if r["kind"] == "custom" else "adamw"
        if r["kind"] == "custom" and t.get("lookahead_every"):
            optimizer += " + " + fmt(_("lookahead every {n} steps"), n=str(t["lookahead_every"]))
        if r["kind"] == "transfer":
            augs = [fmt(_("{augmentation} (fine-tuning only)"), augmentation=x) for x in augs]
        dropout = _("model default") if g["dropout"] < 0 else number(g["dropout"])
        early = number(g["early_stopping_patience"]) if g["early_stopping_patience"] else _("off")
        augmentation = ", ".join(augs) or pgettext("augmentation", "none")
        out.append(
            f"| {r['name']} | {training_epochs(r['kind'], rc)} | {t['global_batch_size']} | "
            f"{optimizer} | {number(peak, '.3g')} | {t['schedule'] if r['kind'] == 'custom' else 'cosine'} | "
            f"{augmentation} | {number(g['label_smoothing'])} | "
            f"{number(g['weight_decay'])} | {dropout} | {early} | {transfer} |"
        )
    notes = []
    for r in results["runs"]:
        stored = r.get("notes_i18n") or []
        for i, note in enumerate(r.get("notes", [])):
            text = render_stored(stored[i], fallback=note) if i < len(stored) and len(stored) == len(r["notes"]) else note
            notes.append(fmt(_("- {model} (seed {seed}): {note}"), model=r["name"], seed=str(r["seed"]), note=text))
    if notes:
        out += ["", *notes]
    curves = _("Train (dashed) against validation (solid) accuracy and loss per epoch.")
    if any(r.get("kind") == "transfer" for r in results["runs"]):
        curves += " " + _("A transfer model's first points are its head's evaluation rounds on cached features (each a fixed "
                          "number of optimizer steps, not an epoch); its fine-tuning epochs follow the dotted line.")
    for key, title, text in (
        ("curves", _("Learning curves"), curves),
        ("confusion", _("Confusion matrices"), _("Rows are true classes, normalised to 1; off-diagonal cells are the confusions.")),
        ("per_class", _("Per-class accuracy"), ""),
        ("accuracy_flops", _("Accuracy vs FLOPs"), _("Forward cost per image against test accuracy; up and left is better.")),
    ):
        if key in figures:
            out += ["", f"## {title}", "", *([text, ""] if text else []), f"![{title}]({figures[key]})"]
        if key == "per_class" and models:
            out += ["", _per_class_table(results)]
    for section in results.get("statistics", {}).get("sections_markdown", []):
        out += ["", section]
    out += ["", conclusions(results, histories, run_path)]
    body = "\n".join(out).rstrip() + "\n"
    glossary = glossary_markdown(body)
    return body + ("\n" + glossary if glossary else "")


def _per_class_table(results: dict) -> str:
    names = results["data"]["class_names"]
    first = {}
    for r in results["runs"]:
        first.setdefault(r["name"], r)
    rows = _table_header([_("class"), *first])
    for i, c in enumerate(names):
        rows.append(f"| {_md_cell(c)} | " + " | ".join(percent(r["per_class"]["recall"][i]) for r in first.values()) + " |")
    return "\n".join(rows)


def _ablation_effects(run_dir: Path) -> list[dict]:
    try:
        return json.loads(rundir.ablation_path(run_dir).read_text()).get("effects") or []
    except (OSError, json.JSONDecodeError):
        return []


def _ablation_markdown(run_dir: Path) -> str | None:
    """The ablation section (None without ablation.json); its figures are redrawn in the report's language."""
    try:
        ledger = load_ledger(run_dir)
    except ConvbenchError:
        ledger = None  # render_ablation_markdown says what is wrong with it
    if ledger:
        replot_ablation_curves(run_dir, ledger)
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
    missing = [fmt(_("{model} seed {seed}"), model=m, seed=str(s)) for m, s in expected if (m, s) not in done]
    if not missing:
        return ""
    counts = dict(done=str(len(expected) - len(missing)), total=str(len(expected)), missing=", ".join(missing))
    if owner:
        return fmt(_("**In progress.** A convbench run (pid {pid} on {host}, started {started}) is still training in this "
                     "folder: this report covers {done} of the {total} trainings the config asks for; not finished: {missing}. "
                     "Run `convbench report` again when it has finished."),
                   pid=str(owner.get("pid")), host=str(owner.get("host")), started=str(owner.get("started")), **counts)
    return fmt(_("**Incomplete.** This report covers {done} of the {total} trainings the config asks for; not finished: "
                 "{missing}. Run the same `convbench run` command again to finish them; finished models are kept."), **counts)


def report_language(results: dict, lang: str | None = None) -> str:
    """The language a report is rendered in: `lang` when given (`--lang`), else the one the run recorded, else English.

    Args:
        results: results.json content; `convbench run --lang` records its language in the config (`lang`).
        lang: the language asked for now, or None.

    Returns:
        A code of `i18n.LANGUAGES`.
    """
    if lang is not None:
        return check_language(lang)
    recorded = (results.get("config") or {}).get("lang")
    try:
        return check_language(recorded) if recorded else "en"
    except ConvbenchError:
        return "en"  # a run folder edited by hand must still render


def command_path(run_dir: Path) -> str:
    """The run folder as a command typed here names it: relative to the working directory when inside it."""
    resolved = run_dir.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def write_next_steps(run_dir: Path, results: dict, histories: dict[str, list[dict]]) -> str:
    """Write next/<slug>.yaml for each runnable suggestion; returns the run path their commands use.

    Each file is this run's config with one change (`next_step_configs`). Files of suggestions this
    render no longer makes are removed.
    """
    folder = rundir.next_dir(run_dir)
    configs = next_step_configs(results, advice_steps(results, histories))
    for old in folder.glob("*.yaml") if folder.is_dir() else []:
        if old.stem not in configs:
            old.unlink()
    for slug, config in configs.items():
        folder.mkdir(exist_ok=True)
        save_yaml(config, rundir.next_step_file(run_dir, slug))
    return command_path(run_dir) if configs else ""


def write_report(run_dir: str | Path, lang: str | None = None) -> Path:
    """Write figures/*.png and REPORT.md for a run directory from its saved results.

    Args:
        run_dir: a folder holding results.json.
        lang: the report's language ("en", "es"); None renders in the language the run recorded
            (`convbench run --lang`), English for runs that recorded none.

    Returns:
        The REPORT.md path.
    """
    run_dir = Path(run_dir)
    if lang is not None:
        lang = check_language(lang)  # a bad --lang fails before results.json is even read
    results = load_results(run_dir)
    with use_language(report_language(results, lang)):
        return _write_report(run_dir, results)


def _write_report(run_dir: Path, results: dict) -> Path:
    if not results.get("runs") and results.get("diverged"):
        names = ", ".join(dict.fromkeys(r["name"] for r in results["diverged"]))
        path = rundir.report_path(run_dir)
        atomic_write_text(path, fmt(_("# convbench report: {models}"), models=names) + "\n\n"
                          + _("No model finished training: every one diverged.") + "\n\n" + diverged_markdown(results))
        logger.info(f"report written: {path} (every model diverged)")
        return path
    if not results.get("runs"):
        raise ConvbenchError(f"{run_dir / 'results.json'} has no finished runs yet; wait for `convbench run` to finish a model")
    damaged = damaged_predictions(run_dir, results["runs"])
    for run, path, _problem in [d for d in damaged if not d[1].exists()]:
        logger.warning(f"warning: {path} is missing; the statistics leave out {run['name']} seed {run['seed']} (the same "
                       "`convbench run` command retrains it)")
    damaged = [d for d in damaged if d[1].exists()]
    if damaged:
        run, path, problem = damaged[0]
        raise ConvbenchError(f"{path} is damaged ({problem}); run the same `convbench run` command again: it sets the file "
                             f"aside and retrains {run['name']} seed {run['seed']} (the other models are kept)")
    histories = load_histories(run_dir, results)
    fig_dir = rundir.figures_dir(run_dir)
    figures = {}
    plot_learning_curves(histories, fig_dir / "learning_curves.png")
    figures["curves"] = f"{rundir.FIGURES_DIR}/learning_curves.png"
    plot_confusion_matrices(results["runs"], results["data"]["class_names"], fig_dir / "confusion_matrices.png")
    figures["confusion"] = f"{rundir.FIGURES_DIR}/confusion_matrices.png"
    per_class = {}
    for r in results["runs"]:
        per_class.setdefault(r["name"], r["per_class"]["recall"])
    plot_per_class(per_class, results["data"]["class_names"], fig_dir / "per_class_accuracy.png")
    figures["per_class"] = f"{rundir.FIGURES_DIR}/per_class_accuracy.png"
    plot_accuracy_vs_flops(results["models"], fig_dir / "accuracy_vs_flops.png")
    figures["accuracy_flops"] = f"{rundir.FIGURES_DIR}/accuracy_vs_flops.png"

    results["statistics"] = analyze_run(run_dir, results, histories)
    results["ablation_effects"] = _ablation_effects(run_dir)
    ablation = _ablation_markdown(run_dir)
    if ablation:
        results["statistics"]["sections_markdown"].append(ablation)
    results["data_efficiency"] = fraction_points(run_dir, results)
    efficiency = data_efficiency_markdown(run_dir, results["data_efficiency"])
    if efficiency:
        results["statistics"]["sections_markdown"].append(efficiency)
    atomic_write_json(rundir.statistics_path(run_dir), {k: v for k, v in results["statistics"].items() if k != "sections_markdown"})

    owner = live_owner(run_dir)
    notice = coverage_notice(results, owner if owner and owner.get("pid") != os.getpid() else None)
    if notice:
        logger.info(notice.replace("**", ""))
    run_path = write_next_steps(run_dir, results, histories)
    text = render_markdown(results, histories, figures, notice, run_path)
    path = rundir.report_path(run_dir)
    atomic_write_text(path, text)
    logger.info(f"report written: {path}")
    return path
