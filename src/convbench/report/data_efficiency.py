"""The data-efficiency section: test accuracy against training images, and where the curves cross.

It reads the runs under `data-fractions/<fraction>/` (`convbench.experiment.data_efficiency`) beside
the comparison itself (all the training images) and draws one line per model. The crossing point is
found between the best transfer model and the best from-scratch model of the full run: where the
difference of their test accuracies changes sign between two measured sizes, interpolated on a
log scale of images.

    .venv/bin/pytest tests/test_data_efficiency.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from convbench import rundir
from convbench.config import DATA_FRACTION_MAX_EPOCH_FACTOR
from convbench.i18n import _, fmt, ngettext
from convbench.report.figures import model_colour, pyplot, save_figure
from convbench.report.sections import percent, points

FIGURE = f"{rundir.FIGURES_DIR}/data_efficiency.png"


def fraction_points(run_dir: str | Path, results: dict) -> dict[str, list[dict]]:
    """Per model, its test accuracy at each training-set size, smallest first.

    Args:
        run_dir: the comparison's run directory.
        results: its results.json content (the point with all the training images).

    Returns:
        model name -> [{"fraction", "train_images", "test_accuracy", "kind", "epochs"}, ...]; {} when
        no fraction run has results.
    """
    found = rundir.fraction_dirs(run_dir)
    if not found:
        return {}
    out: dict[str, list[dict]] = {}
    for fraction, folder in found + [(1.0, None)]:
        try:
            res = results if folder is None else json.loads(rundir.results_path(folder).read_text())
            images = int(res["data"]["train_images"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a fraction still being written or damaged: its own run says so
        for m in res.get("models", []):
            out.setdefault(m["name"], []).append({"fraction": fraction, "train_images": images, "kind": m["kind"],
                                                  "test_accuracy": float(m["test_accuracy"]), "epochs": m.get("epochs_run")})
    for rows in out.values():
        rows.sort(key=lambda r: r["train_images"])
    return out


def crossing(a: list[dict], b: list[dict]) -> dict:
    """How two models' accuracy curves compare over the sizes both were trained at.

    Args:
        a, b: `fraction_points` rows of two models.

    Returns:
        {"sizes": the common sizes, "diffs": a minus b at each, "crossings": [images where the
        sign of a - b changes, interpolated on log(images)], "first_ahead": "a" or "b" (who leads at
        the smallest size; "" on a tie)}.
    """
    acc_a = {r["train_images"]: r["test_accuracy"] for r in a}
    acc_b = {r["train_images"]: r["test_accuracy"] for r in b}
    sizes = sorted(set(acc_a) & set(acc_b))
    diffs = [acc_a[n] - acc_b[n] for n in sizes]
    crossings = []
    for (n0, d0), (n1, d1) in zip(zip(sizes, diffs), zip(sizes[1:], diffs[1:])):
        if d0 * d1 < 0:
            t = d0 / (d0 - d1)
            crossings.append(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))))
    first = "" if not diffs or diffs[0] == 0 else ("a" if diffs[0] > 0 else "b")
    return {"sizes": sizes, "diffs": diffs, "crossings": crossings, "first_ahead": first}


def _contenders(points_by_model: dict[str, list[dict]]) -> tuple[str, str] | None:
    """(best transfer model, best from-scratch model) at the largest size, or None without both kinds."""
    best = {}
    for name, rows in points_by_model.items():
        kind = rows[-1]["kind"]
        if kind not in best or rows[-1]["test_accuracy"] > points_by_model[best[kind]][-1]["test_accuracy"]:
            best[kind] = name
    if "transfer" in best and "custom" in best:
        return best["transfer"], best["custom"]
    return None


def _images(n: float) -> str:
    return fmt("{images:,.0f}", images=n)


def _about(n: float) -> str:
    """An interpolated size to two significant figures (6,984 -> 7,000): three points give no more."""
    digits = max(int(math.floor(math.log10(n))) - 1, 0)
    return _images(round(n, -digits))


def crossing_sentence(points_by_model: dict[str, list[dict]]) -> str:
    """One sentence for the conclusions: where the best transfer and from-scratch models trade places.

    Args:
        points_by_model: `fraction_points`.

    Returns:
        The sentence, or "" when the run has no fractions or not both kinds of model.
    """
    pair = _contenders(points_by_model)
    if not pair:
        return ""
    transfer, custom = pair
    c = crossing(points_by_model[transfer], points_by_model[custom])
    if len(c["sizes"]) < 2:
        return ""
    sizes, diffs = c["sizes"], c["diffs"]
    values = dict(transfer=transfer, custom=custom, low=_images(sizes[0]), high=_images(sizes[-1]),
                  n=len(sizes), small=points(diffs[0]), large=points(diffs[-1]))
    if not c["crossings"]:
        leader, other = (transfer, custom) if diffs[0] > 0 else (custom, transfer)
        return fmt(_("With less data the ranking holds: {leader} is ahead of {other} at every training-set size measured, "
                     "from {low} to {high} training images ({transfer} minus {custom}: {small} at the smallest, {large} at "
                     "all the images)."), leader=leader, other=other, **values)
    first, second = (transfer, custom) if c["first_ahead"] == "a" else (custom, transfer)
    text = fmt(_("With less data the ranking changes: {first} is ahead below about {images} training images and {second} "
                 "above ({transfer} minus {custom}: {small} with {low} images, {large} with {high}). That is the size of "
                 "training set at which {second} starts to pay off."),
               first=first, second=second, images=_about(c["crossings"][0]), **values)
    if len(c["crossings"]) > 1:
        text += " " + fmt(ngettext("The curves cross {k} time; ", "The curves cross {k} times; ", len(c["crossings"])),
                          k=len(c["crossings"])) + _("with one training per point, treat the later crossings as noise.")
    return text


def plot_data_efficiency(points_by_model: dict[str, list[dict]], path: Path, cross_at: float | None = None) -> None:
    """Test accuracy against training images (log scale), one line per model; transfer models dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, rows in points_by_model.items():
        ax.plot([r["train_images"] for r in rows], [100 * r["test_accuracy"] for r in rows], marker="o",
                linestyle="--" if rows[-1]["kind"] == "transfer" else "-", color=model_colour(name), label=name)
    ax.set_xscale("log")
    if cross_at:
        ax.axvline(cross_at, color="grey", linestyle=":", linewidth=1)
        # The label goes on the side of the line with more room, so it stays inside the axes.
        low, high = (math.log(v) for v in ax.get_xlim())
        right_half = (math.log(cross_at) - low) / (high - low) > 0.5
        ax.annotate(fmt(_("curves cross at about {images} images"), images=_about(cross_at)), (cross_at, ax.get_ylim()[0]),
                    textcoords="offset points", xytext=(-4 if right_half else 4, 6), ha="right" if right_half else "left",
                    fontsize=8, color="grey")
    # Ticks at the measured sizes, written out: a log axis' default 10^k labels say little to a student.
    sizes = sorted({r["train_images"] for rows in points_by_model.values() for r in rows})
    from matplotlib.ticker import FixedFormatter, FixedLocator

    # A FixedFormatter, which localise_ticks leaves alone: the labels are written in the language already.
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_major_formatter(FixedFormatter([_images(n) for n in sizes]))
    ax.minorticks_off()
    ax.set(xlabel=_("training images (log scale)"), ylabel=_("test accuracy (%)"),
           title=_("Data efficiency: accuracy against training-set size"))
    ax.legend(fontsize=8)
    save_figure(fig, path)


def data_efficiency_markdown(run_dir: str | Path, points_by_model: dict[str, list[dict]]) -> str | None:
    """The report's data-efficiency section with its figure (drawn here), or None without fraction runs."""
    if not points_by_model:
        return None
    run_dir = Path(run_dir)
    pair = _contenders(points_by_model)
    c = crossing(points_by_model[pair[0]], points_by_model[pair[1]]) if pair else {"crossings": []}
    plot_data_efficiency(points_by_model, run_dir / FIGURE, c["crossings"][0] if c["crossings"] else None)
    sizes = sorted({r["train_images"] for rows in points_by_model.values() for r in rows})
    lines = ["## " + _("Data efficiency"), "",
             fmt(_("Every model trained again on stratified fractions of the training images, with the same recipe and test "
                   "images, one training per point. Fewer images get more epochs (1/fraction times, at most {factor}x), so "
                   "that small sets still get enough optimizer steps; each fraction is a whole run folder under `{folder}/`."),
                 factor=DATA_FRACTION_MAX_EPOCH_FACTOR, folder=rundir.FRACTIONS_DIR), "",
             "![" + _("Data efficiency") + f"]({FIGURE})", "",
             "| " + _("model") + " | " + " | ".join(fmt(_("{images} images"), images=_images(n)) for n in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for name, rows in points_by_model.items():
        by_size = {r["train_images"]: r for r in rows}
        lines.append(f"| {name} | " + " | ".join(percent(by_size[n]["test_accuracy"]) if n in by_size else "" for n in sizes) + " |")
    # What the curves say is in the conclusions (`crossing_sentence`), not repeated here.
    return "\n".join(lines) + "\n"
