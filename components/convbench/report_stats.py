"""Markdown sections of REPORT.md that state statistical conclusions, rendered from the numbers.

Every sentence here is generated from plain dicts (what results.json stores: the outputs of
`convbench.stats.compare_models`, `convbench.stats.ablation_effects`, calibration and robustness
numbers); nothing is pre-written, and a conclusion is only worded as a conclusion when the
statistic backs it. Each renderer returns a Markdown string that starts with its heading.

Units in: fractions in [0, 1] (accuracy, ECE, gaps). Units out: percent for levels, percentage
points ("points") for differences.

Test: .venv/bin/pytest tests/test_report_stats.py -q
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convbench import corruptions as _corruptions
from convbench.errors import ConvbenchError
from convbench.stats import mean_std_ci

__all__ = [
    "render_executive_summary",
    "render_significance_section",
    "render_seed_table",
    "render_calibration_section",
    "render_robustness_section",
    "render_ablation_section",
]


# ----------------------------------------------------------------------------- formatting


def _pct(x: float | None, nd: int = 2) -> str:
    return "n/a" if x is None else f"{100.0 * x:.{nd}f}"


def _pts(x: float | None, nd: int = 2) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.{nd}f}"


def _pval(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p == 0.0:
        return "< 1e-300"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def _si(x: float | None) -> str:
    if x is None:
        return "n/a"
    for factor, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {suffix}"
    return f"{x:.3g}"


def _ratio(x: float) -> str:
    return f"{x:.2g}×" if x < 10 else f"{x:.0f}×"


def _names(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _heading(title: str, level: int) -> str:
    return "#" * max(1, int(level)) + " " + title


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _mean(value: Any) -> float | None:
    """A number, or the mean of per-seed numbers; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float, np.floating, np.integer)):
        return float(value)
    arr = np.asarray(value, dtype=np.float64)
    return float(arr.mean()) if arr.size else None


def _acc_cell(acc: Mapping[str, Any]) -> str:
    if acc.get("std") is None:
        return f"{_pct(acc['mean'])} (1 seed)"
    return f"{_pct(acc['mean'])} ± {_pct(acc['std'])}"


def _ci_cell(lo: float | None, hi: float | None, signed: bool = False) -> str:
    if lo is None or hi is None:
        return "n/a"
    f = _pts if signed else _pct
    return f"{f(lo)} to {f(hi)}"


def _require(d: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise ConvbenchError(f"{what} must be a dict, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ConvbenchError(f"{what} lacks {missing}; pass the dict produced by convbench.stats")


def _check_verdict(verdict: Mapping[str, Any]) -> None:
    _require(verdict, ["best", "winner", "decided", "comparisons", "accuracy", "alpha", "n_seeds",
                       "n_images"], "verdict")


# ----------------------------------------------------------------------------- cost


_COST_KEYS = (
    ("train_flops", "training FLOPs"),
    ("flops_per_image", "FLOPs per image"),
    ("train_time_s", "training time"),
    ("params", "parameters"),
)


def _cost_index(cost_rows: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if not cost_rows:
        return {}
    if isinstance(cost_rows, Mapping):
        return {str(k): v for k, v in cost_rows.items()}
    out = {}
    for row in cost_rows:
        _require(row, ["model"], "cost row")
        out[str(row["model"])] = row
    return out


def _cost_phrase(model: str, other: str, costs: Mapping[str, Mapping[str, Any]]) -> str | None:
    a, b = costs.get(model, {}), costs.get(other, {})
    for key, label in _COST_KEYS:
        va, vb = _mean(a.get(key)), _mean(b.get(key))
        if va is not None and vb is not None and va > 0 and vb > 0:
            return f"{_ratio(va / vb)} the {label} of {other}"
    return None


# ----------------------------------------------------------------------------- sections


def _needed_sentence(verdict: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]) -> str:
    n_seeds, n_images = verdict["n_seeds"], verdict["n_images"]
    power = verdict.get("power", 0.8)
    seeds = [c.get("seeds_needed") or {} for c in comps]
    images = [c.get("images_needed") or {} for c in comps]
    level = verdict["alpha"] / max(1, len(verdict["comparisons"]))
    parts = []
    if any(s.get("n") is None for s in seeds):
        reasons = sorted({s.get("reason") or "not estimated" for s in seeds if s.get("n") is None})
        seed_text = None
        parts.append("No seed count can be given (" + "; ".join(reasons) + ").")
    else:
        seed_text = max(s["n"] for s in seeds)
    img = None if any(i.get("n") is None for i in images) else max(i["n"] for i in images)
    intro = (f"To detect a difference as large as the one observed with {100 * power:.0f} % power "
             f"(at α/m = {level:.3g}, conservative for Holm), ")
    if seed_text is not None and seed_text > n_seeds:
        s = f"about {seed_text} seeds per model (paired t-test over seeds)"
        if img is not None:
            s += f" or about {img:,} test images per seed (McNemar)"
        parts.insert(0, intro + s + " would be needed.")
    elif img is not None:
        extra = ""
        if seed_text is not None:
            extra = (f" (the seed-level estimate, {seed_text} seeds, is no more than the {n_seeds} run: "
                     "the per-image test is what falls short)")
        parts.insert(0, intro + f"about {img:,} test images per seed (McNemar) would be needed{extra}.")
    if img is not None and img > n_images:
        parts.append(f"The test set has only {n_images:,} images, so more seeds, or a larger budget "
                     "that separates the models further, is the way to decide.")
    return " ".join(parts)


def render_executive_summary(
    verdict: Mapping[str, Any],
    summary_rows: Sequence[Mapping[str, Any]] | None = None,
    cost_rows: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    *,
    budget: str | None = None,
    level: int = 2,
) -> str:
    """The report's opening: winner or no winner, by how much, with what evidence, at what cost.

    Args:
        verdict: compare_models output (as stored in results.json).
        summary_rows: Optional per-model extras, each {"model": name, ...} with any of "ece",
            "ece_after", "mca", "relative_robustness", "tta_accuracy" (fractions), shown as
            extra columns.
        cost_rows: Optional per-model cost, a list of {"model", "params", "flops_per_image",
            "train_flops", "train_time_s"} (any subset) or a dict name -> such a dict.
        budget: Optional words for the compute each model got, e.g. "10 epochs each".
        level: Markdown heading level.

    Returns:
        Markdown text.
    """
    _check_verdict(verdict)
    best = verdict["best"]
    acc = verdict["accuracy"]
    comps = list(verdict["comparisons"])
    alpha = verdict["alpha"]
    costs = _cost_index(cost_rows)
    n_seeds, n_images = verdict["n_seeds"], verdict["n_images"]
    setting = f"{n_seeds} seed{'s' if n_seeds != 1 else ''} per model, {n_images:,} test images"
    if budget:
        setting += f", {budget}"
    a = acc[best]
    ci = "" if a.get("ci_low") is None else f" (95 % CI {_pct(a['ci_low'])} to {_pct(a['ci_high'])} %)"
    lines = [_heading("Executive summary", level), ""]

    if not comps:
        lines.append(f"**No comparison:** only one model ({best}) was evaluated ({setting}). "
                     f"It reaches {_pct(a['mean'])} % mean test accuracy{ci}.")
    elif verdict["decided"] and verdict["winner"]:
        runner = comps[0]
        boot = runner["bootstrap"]
        cost = _cost_phrase(best, runner["model_b"], costs)
        text = (
            f"**{best} wins** ({setting}). It reaches {_pct(a['mean'])} % mean test accuracy{ci}, "
            f"{_pts(runner['diff']).lstrip('+')} points ahead of the runner-up {runner['model_b']} "
            f"({_pct(acc[runner['model_b']]['mean'])} %): 95 % paired-bootstrap CI of the difference "
            f"{_pts(boot['ci_low'])} to {_pts(boot['ci_high'])} points, Holm-adjusted p = "
            f"{_pval(runner['p_holm'])} (α = {alpha}). It is significantly better than every other model "
            f"({len(comps)} comparison{'s' if len(comps) != 1 else ''}, Holm-corrected)."
        )
        text += f" It costs {cost}." if cost else " Its cost relative to the others was not recorded."
        lines.append(text)
    else:
        tied = [c for c in comps if not c.get("significant")]
        worse = [c for c in comps if c.get("significant")]
        closest = max(tied, key=lambda c: (c["p_holm"], -c["diff"]))
        boot = closest["bootstrap"]
        text = (
            f"**No winner: the models are not distinguishable at this budget** ({setting}). "
            f"{best} has the highest mean test accuracy ({_pct(a['mean'])} %), but its lead over "
            f"{_names([c['model_b'] for c in tied])} is not significant after Holm correction "
            f"(α = {alpha}): {closest['model_b']} trails by {_pts(closest['diff']).lstrip('+')} points "
            f"(95 % CI {_pts(boot['ci_low'])} to {_pts(boot['ci_high'])} points, Holm-adjusted "
            f"p = {_pval(closest['p_holm'])})."
        )
        if worse:
            text += (f" {best} is significantly better than {_names([c['model_b'] for c in worse])} "
                     f"(Holm-adjusted p ≤ {_pval(max(c['p_holm'] for c in worse))}).")
        cost = _cost_phrase(best, closest["model_b"], costs)
        if cost:
            text += f" {best} costs {cost}."
        needed = _needed_sentence(verdict, tied)
        lines.append(text + (" " + needed if needed else ""))

    # Compact table: every model, its accuracy, its distance from the best, and its cost.
    by_model = {c["model_b"]: c for c in comps}
    extras = _cost_index(summary_rows)
    extra_cols = [(k, h) for k, h in (("tta_accuracy", "Flip-TTA acc. (%)"), ("ece", "ECE (%)"),
                                      ("ece_after", "ECE after T (%)"), ("mca", "mCA (%)"),
                                      ("relative_robustness", "Rel. robustness"))
                  if any(k in row for row in extras.values())]
    cost_cols = [(k, h) for k, h in (("params", "Params"), ("flops_per_image", "FLOPs / image"),
                                     ("train_flops", "Train FLOPs"), ("train_time_s", "Train time (s)"))
                 if any(k in row for row in costs.values())]
    # With one seed per model there is no spread over seeds: one accuracy column, no empty CI column.
    one_seed = all(a.get("std") is None and a.get("ci_low") is None for a in acc.values())
    headers = ["Model", "Test acc. (%), 1 seed" if one_seed else "Test acc. (%) mean ± std"]
    headers += [] if one_seed else ["95 % CI (%)"]
    headers += ["Δ vs best (points)", "Holm p vs best"]
    headers += [h for _, h in extra_cols] + [h for _, h in cost_cols]
    rows = []
    for m in verdict.get("ranking") or sorted(acc, key=lambda k: -acc[k]["mean"]):
        am = acc[m]
        c = by_model.get(m)
        row = [f"**{m}**" if m == verdict.get("winner") else m, _pct(am["mean"]) if one_seed else _acc_cell(am)]
        row += [] if one_seed else [_ci_cell(am.get("ci_low"), am.get("ci_high"))]
        row += ["—" if c is None else _pts(-c["diff"]),
                "—" if c is None else _pval(c["p_holm"]) + ("" if c.get("significant") else " (n.s.)")]
        for k, _ in extra_cols:
            v = _mean(extras.get(m, {}).get(k))
            row.append("n/a" if v is None else (f"{v:.3f}" if k == "relative_robustness" else _pct(v)))
        for k, _ in cost_cols:
            v = _mean(costs.get(m, {}).get(k))
            row.append("n/a" if v is None else (f"{v:.0f}" if k == "train_time_s" else _si(v)))
        rows.append(row)
    lines += ["", _table(headers, rows), ""]
    lines.append(f"Method: {verdict.get('method', 'paired tests on the test images')}; "
                 f"n.s. = not significant at α = {alpha}.")
    return "\n".join(lines) + "\n"


def render_significance_section(verdict: Mapping[str, Any], *, level: int = 2) -> str:
    """Table of the pairwise tests between the best model and every other model.

    Args:
        verdict: compare_models output.
        level: Markdown heading level.

    Returns:
        Markdown text.
    """
    _check_verdict(verdict)
    best, comps, alpha = verdict["best"], list(verdict["comparisons"]), verdict["alpha"]
    lines = [_heading("Is the difference real? Paired significance tests", level), ""]
    if not comps:
        lines.append(f"Only one model ({best}) was evaluated; there is nothing to test.")
        return "\n".join(lines) + "\n"
    n_boot = comps[0]["bootstrap"].get("n_boot", "n/a")
    lines.append(
        f"Each row pairs the best model by mean accuracy, {best}, with another model on the same "
        f"{verdict['n_images']:,} test images over {verdict['n_seeds']} seed(s). b counts images "
        f"{best} gets right more often than the other model across seeds, c the reverse; the "
        "pooled p-value is the exact two-sided sign (McNemar) test on b and c, with images as the "
        "independent units (for one seed this is McNemar's exact test). Per-seed McNemar p-values "
        f"are shown for reference. Pooled p-values are Holm-corrected over {len(comps)} comparison(s) "
        f"at α = {alpha}. The CI of the difference is a paired bootstrap over test images "
        f"({n_boot} resamples)."
    )
    headers = ["Best vs", f"{best} acc. (%)", "Other acc. (%)", "Δ (points)", "95 % CI Δ (points)",
               "b / c", "p pooled", "p Holm", "per-seed p", "Significant"]
    rows = []
    for c in comps:
        boot = c["bootstrap"]
        per_seed = ", ".join(_pval(s["p_value"]) for s in c.get("per_seed", []))
        rows.append([
            c["model_b"], _pct(c["accuracy_a"]["mean"]), _pct(c["accuracy_b"]["mean"]), _pts(c["diff"]),
            _ci_cell(boot["ci_low"], boot["ci_high"], signed=True),
            f"{c['pooled']['b']} / {c['pooled']['c']}", _pval(c["p_value"]), _pval(c["p_holm"]),
            per_seed or "n/a", "yes" if c.get("significant") else "no",
        ])
    lines += ["", _table(headers, rows), ""]
    if verdict["decided"] and verdict["winner"]:
        lines.append(f"**Verdict:** {verdict['winner']} is significantly better than every other model "
                     f"after Holm correction.")
    else:
        tied = [c for c in comps if not c.get("significant")]
        lines.append(f"**Verdict:** no winner. {best} is not significantly better than "
                     f"{_names([c['model_b'] for c in tied])} at α = {alpha} after Holm correction. "
                     + _needed_sentence(verdict, tied))
    concat = [c for c in comps if "pooled_concat" in c]
    if concat:
        lines += ["", "For reference, McNemar's test on all seeds concatenated (treats the same image in "
                  "different seeds as independent, so it overstates significance): " + "; ".join(
                      f"{c['model_b']}: b/c = {c['pooled_concat']['b']}/{c['pooled_concat']['c']}, "
                      f"p = {_pval(c['pooled_concat']['p_value'])}" for c in concat) + "."]
    return "\n".join(lines) + "\n"


def render_seed_table(
    per_model_values: Mapping[str, Sequence[float]],
    *,
    metric: str = "Test accuracy",
    confidence: float = 0.95,
    as_percent: bool = True,
    level: int = 2,
) -> str:
    """Per-model table of a metric over seeds: mean ± std, t-interval, and the seeds themselves.

    Args:
        per_model_values: model name -> one value per seed (fractions when ``as_percent``).
        metric: Name of the metric for the heading and columns.
        confidence: Level of the t-interval.
        as_percent: Show values ×100 with a "(%)" unit.
        level: Markdown heading level.

    Returns:
        Markdown text.
    """
    if not isinstance(per_model_values, Mapping) or not per_model_values:
        raise ConvbenchError("per_model_values must map each model to its per-seed values")
    stats = {str(m): mean_std_ci(v, confidence) for m, v in per_model_values.items()}
    fmt = _pct if as_percent else (lambda x: "n/a" if x is None else f"{x:.4g}")
    unit = " (%)" if as_percent else ""
    headers = ["Model", "Seeds", f"{metric}{unit} mean ± std", f"{100 * confidence:.0f} % CI{unit}",
               f"Per seed{unit}"]
    rows = []
    for m in sorted(stats, key=lambda k: (-stats[k]["mean"], k)):
        s = stats[m]
        spread = "(1 seed: no spread)" if s["std"] is None else f"± {fmt(s['std'])}"
        ci = "n/a (1 seed)" if s["ci_low"] is None else f"{fmt(s['ci_low'])} to {fmt(s['ci_high'])}"
        rows.append([m, s["n"], f"{fmt(s['mean'])} {spread}", ci,
                     ", ".join(fmt(v) for v in per_model_values[m])])
    text = [_heading(f"{metric} over seeds", level), "",
            f"Mean, sample standard deviation and Student-t {100 * confidence:.0f} % interval over seeds.",
            "", _table(headers, rows)]
    return "\n".join(text) + "\n"


def render_calibration_section(
    calibration_rows: Sequence[Mapping[str, Any]],
    *,
    figures: Mapping[str, str] | None = None,
    n_bins: int = 15,
    level: int = 2,
) -> str:
    """Calibration table (ECE before/after temperature scaling) with generated conclusions.

    Args:
        calibration_rows: One dict per model: {"model", "ece_before", "ece_after", "temperature"}
            and optionally "nll_before", "nll_after" (nats). Values are numbers or per-seed lists
            (averaged). ECE as fractions.
        figures: Optional model -> relative path of its reliability diagram PNG.
        n_bins: Bins used for the ECE (stated in the text).
        level: Markdown heading level.

    Returns:
        Markdown text.
    """
    if not calibration_rows:
        raise ConvbenchError("calibration_rows is empty; compute ECE and temperature for at least one model")
    rows, data = [], []
    for r in calibration_rows:
        _require(r, ["model", "ece_before", "ece_after", "temperature"], "calibration row")
        d = {"model": str(r["model"]), "before": _mean(r["ece_before"]), "after": _mean(r["ece_after"]),
             "t": _mean(r["temperature"]), "nll_b": _mean(r.get("nll_before")), "nll_a": _mean(r.get("nll_after"))}
        data.append(d)
        rows.append([d["model"], _pct(d["before"]), _pct(d["after"]), _pts(d["after"] - d["before"]),
                     f"{d['t']:.3f}", "n/a" if d["nll_b"] is None else f"{d['nll_b']:.4f}",
                     "n/a" if d["nll_a"] is None else f"{d['nll_a']:.4f}"])
    lines = [_heading("Calibration", level), "",
             f"Expected calibration error over {n_bins} equal-width confidence bins on the test set, before "
             "and after temperature scaling (T fitted by minimising NLL on the validation split). "
             "NLL in nats per image.", "",
             _table(["Model", "ECE before (%)", "ECE after (%)", "Δ ECE (points)", "T", "NLL before",
                     "NLL after"], rows), ""]
    lowered = [d["model"] for d in data if d["after"] < d["before"]]
    raised = [d["model"] for d in data if d["after"] > d["before"]]
    facts = []
    if lowered:
        facts.append(f"Temperature scaling lowered ECE for {len(lowered)} of {len(data)} model(s)"
                     + (f" ({_names(lowered)})" if len(lowered) < len(data) else "") + ".")
    if raised:
        facts.append(f"It raised ECE for {_names(raised)}: the temperature fitted on validation data "
                     "did not transfer to the test set.")
    over = [d["model"] for d in data if d["t"] > 1.0]
    under = [d["model"] for d in data if d["t"] < 1.0]
    if over:
        facts.append(f"T > 1 (overconfident before scaling): {_names(over)}.")
    if under:
        facts.append(f"T < 1 (underconfident before scaling): {_names(under)}.")
    best = min(data, key=lambda d: d["after"])
    facts.append(f"Lowest ECE after scaling: {best['model']} ({_pct(best['after'])} %). "
                 "ECE values are point estimates, not significance-tested.")
    lines.append(" ".join(facts))
    if figures:
        lines.append("")
        for d in data:
            if d["model"] in figures:
                lines.append(f"![Reliability diagram of {d['model']}]({figures[d['model']]})")
    return "\n".join(lines) + "\n"


def render_robustness_section(
    robustness_rows: Sequence[Mapping[str, Any]],
    *,
    level: int = 2,
    subset_images: int | None = None,
    test_images: int | None = None,
) -> str:
    """Robustness to common corruptions (CIFAR-10-C style) and flip test-time augmentation.

    Args:
        robustness_rows: One dict per model: {"model", "clean_accuracy",
            "accuracy_by_corruption": {corruption: {severity: accuracy}}} and optionally
            "tta_accuracy" (flip TTA on clean images). Accuracies as fractions, numbers or
            per-seed lists (averaged). With "test_accuracy" (on the whole test set, where flip
            TTA is measured too) the TTA gain is taken against it, not against the subset.
        level: Markdown heading level.
        subset_images: images the corruptions were made from; the columns measured on them say so.
        test_images: images of the whole test set, named in the columns measured on it.

    Returns:
        Markdown text.
    """
    if not robustness_rows:
        raise ConvbenchError("robustness_rows is empty; evaluate at least one model under corruption")
    data = []
    for r in robustness_rows:
        _require(r, ["model", "clean_accuracy", "accuracy_by_corruption"], "robustness row")
        by_cs = {str(c): {str(s): _mean(a) for s, a in (sev.items() if isinstance(sev, Mapping)
                                                         else enumerate(sev, start=1))}
                 for c, sev in r["accuracy_by_corruption"].items()}
        clean = _mean(r["clean_accuracy"])
        mca = _corruptions.mean_corruption_accuracy(by_cs)
        data.append({"model": str(r["model"]), "clean": clean, "tta": _mean(r.get("tta_accuracy")),
                     "test": _mean(r.get("test_accuracy")),
                     "mca": mca, "rr": _corruptions.relative_robustness(clean, mca),
                     "per_c": _corruptions.per_corruption_accuracy(by_cs), "by_cs": by_cs})
    models = [d["model"] for d in data]
    lines = [_heading("Robustness to common corruptions", level), "",
             "Corruptions generated deterministically from the test set in the style of CIFAR-10-C "
             "(Hendrycks & Dietterich, 2019), 5 severities each. mCA = mean accuracy over corruptions "
             "and severities; relative robustness = mCA / clean accuracy. Flip TTA averages the "
             "predictions on each image and its horizontal mirror.", ""]
    on_subset = f", {subset_images:,} images" if subset_images else ""
    on_test = f", all {test_images:,}" if test_images else ""
    if any(d["test"] is not None for d in data):
        # Corruptions use a subset, flip TTA the whole test set: each gain compares like with like.
        rows = [[d["model"], _pct(d["clean"]), _pct(d["mca"]), f"{d['rr']:.3f}", _pct(d["test"]), _pct(d["tta"]),
                 "n/a" if d["tta"] is None or d["test"] is None else _pts(d["tta"] - d["test"])] for d in data]
        lines += [_table(["Model", f"Clean acc. (%){on_subset}", f"mCA (%){on_subset}", "Relative robustness",
                          f"Test acc. (%){on_test}", f"Flip-TTA acc. (%){on_test}", "TTA gain (points)"], rows), ""]
        for d in data:
            d["tta_base"] = d["test"]
    else:
        rows = [[d["model"], _pct(d["clean"]), _pct(d["tta"]),
                 "n/a" if d["tta"] is None else _pts(d["tta"] - d["clean"]), _pct(d["mca"]), f"{d['rr']:.3f}"]
                for d in data]
        lines += [_table(["Model", f"Clean acc. (%){on_subset}", "Flip-TTA acc. (%)", "TTA gain (points)",
                          f"mCA (%){on_subset}", "Relative robustness"], rows), ""]
        for d in data:
            d["tta_base"] = d["clean"]
    corr_names = sorted({c for d in data for c in d["per_c"]})
    rows = [[c] + [_pct(d["per_c"].get(c)) for d in data] for c in corr_names]
    lines += [f"Accuracy (%) per corruption, mean over severities{on_subset}:", "",
              _table(["Corruption"] + models, rows), ""]
    sev_names = sorted({s for d in data for sev in d["by_cs"].values() for s in sev}, key=lambda s: int(s))
    rows = []
    for s in sev_names:
        row = [s]
        for d in data:
            vals = [sev[s] for sev in d["by_cs"].values() if s in sev]
            row.append(_pct(float(np.mean(vals))) if vals else "n/a")
        rows.append(row)
    lines += [f"Accuracy (%) per severity, mean over corruptions{on_subset}:", "",
              _table(["Severity"] + models, rows), ""]
    top_mca = max(data, key=lambda d: d["mca"])
    top_rr = max(data, key=lambda d: d["rr"])
    hardest = min(corr_names, key=lambda c: np.mean([d["per_c"][c] for d in data if c in d["per_c"]]))
    hardest_acc = float(np.mean([d["per_c"][hardest] for d in data if hardest in d["per_c"]]))
    facts = [f"Highest mCA: {top_mca['model']} ({_pct(top_mca['mca'])} %)."]
    facts.append(f"Keeps the largest share of its clean accuracy: {top_rr['model']} "
                 f"(relative robustness {top_rr['rr']:.3f}).")
    facts.append(f"Hardest corruption on average: {hardest} ({_pct(hardest_acc)} % mean accuracy).")
    tta = [d for d in data if d["tta"] is not None and d["tta_base"] is not None]
    if tta:
        gains = [d["tta"] - d["tta_base"] for d in tta]
        span = (f"{_pts(gains[0])}" if len(gains) == 1 else f"{_pts(min(gains))} to {_pts(max(gains))}")
        facts.append(f"Flip TTA changed test accuracy by {span} points.")
    facts.append("These comparisons are descriptive (one evaluation per model); they are not significance-tested.")
    lines.append(" ".join(facts))
    return "\n".join(lines) + "\n"


def _gap_text(r: Mapping[str, Any]) -> str:
    if r.get("gap_with") is None or r.get("gap_without") is None:
        return "n/a"
    return f"{_pct(r['gap_without'])} → {_pct(r['gap_with'])}"


def render_ablation_section(
    ablation_results: Sequence[Mapping[str, Any]],
    *,
    curves: Mapping[str, str] | None = None,
    level: int = 2,
) -> str:
    """Which augmentation and regularisation choices helped or hurt, with effect size and CI.

    Args:
        ablation_results: stats.ablation_effects output (one dict per contrast: model, factor,
            with, without, diff, bootstrap, p_holm, verdict, gap_with, gap_without, ...).
        curves: Optional caption -> relative path of learning-curve figures to embed.
        level: Markdown heading level.

    Returns:
        Markdown text.
    """
    if not ablation_results:
        raise ConvbenchError("ablation_results is empty; run the ablation first")
    for r in ablation_results:
        _require(r, ["factor", "with", "without", "diff", "bootstrap", "p_holm", "verdict",
                     "accuracy_a", "accuracy_b"], "ablation result")
    first = ablation_results[0]
    n_seeds = first["accuracy_a"].get("n", "?")
    alpha = first.get("alpha", 0.05)
    lines = [_heading("Ablations: did augmentation and regularisation help?", level), "",
             "Each effect is accuracy(with) − accuracy(without) on the same test images, averaged over "
             f"{n_seeds} seed(s): 95 % paired-bootstrap CI over images, exact sign (McNemar) test pooled "
             f"over seeds, Holm-corrected over the {len(ablation_results)} effects at α = {alpha}. "
             "The train−validation gap is the final train accuracy minus validation accuracy.", ""]
    rows = []
    for r in ablation_results:
        boot = r["bootstrap"]
        rows.append([r.get("model") or "—", r["factor"], f"{r['without']} → {r['with']}",
                     _pct(r["accuracy_b"]["mean"]), _pct(r["accuracy_a"]["mean"]), _pts(r["diff"]),
                     _ci_cell(boot["ci_low"], boot["ci_high"], signed=True), _pval(r["p_holm"]),
                     _gap_text(r), f"**{r['verdict']}**" if r["verdict"] != "no detectable effect" else r["verdict"]])
    lines += [_table(["Model", "Factor", "Change", "Acc. without (%)", "Acc. with (%)", "Effect (points)",
                      "95 % CI (points)", "Holm p", "Train−val gap (%)", "Verdict"], rows), ""]
    for r in ablation_results:
        boot = r["bootstrap"]
        where = f" on {r['model']}" if r.get("model") else ""
        ev = (f"95 % CI {_pts(boot['ci_low'])} to {_pts(boot['ci_high'])} points, "
              f"Holm-adjusted p = {_pval(r['p_holm'])}")
        gap = ""
        if r.get("gap_with") is not None and r.get("gap_without") is not None:
            gap = (f" The train−validation gap went from {_pct(r['gap_without'])} to "
                   f"{_pct(r['gap_with'])} points.")
        change = f"{r['without']} → {r['with']}"
        factor = str(r["factor"])
        factor = factor[:1].upper() + factor[1:]
        if r["verdict"] == "hurt":
            lines.append(f"- **{factor} hurt**{where} ({change}): test accuracy fell by "
                         f"{_pts(-r['diff']).lstrip('+')} points ({ev}).{gap}")
        elif r["verdict"] == "helped":
            lines.append(f"- **{factor} helped**{where} ({change}): test accuracy rose by "
                         f"{_pts(r['diff']).lstrip('+')} points ({ev}).{gap}")
        else:
            lines.append(f"- {factor}{where} ({change}): no detectable effect, {_pts(r['diff'])} "
                         f"points ({ev}).{gap}")
    by = {v: [f"{r['factor']} ({r['without']} → {r['with']})" for r in ablation_results if r["verdict"] == v]
          for v in ("helped", "hurt", "no detectable effect")}
    summary = []
    for v in ("helped", "hurt", "no detectable effect"):
        if by[v]:
            summary.append(f"{v}: {'; '.join(by[v])}")
    lines += ["", "In short — " + ". ".join(s[0].upper() + s[1:] for s in summary) + "."]
    if curves:
        lines.append("")
        for caption, path in curves.items():
            lines.append(f"![{caption}]({path})")
    return "\n".join(lines) + "\n"
