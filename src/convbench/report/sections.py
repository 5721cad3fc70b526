"""Markdown sections of REPORT.md that state statistical conclusions, rendered from the numbers.

Every sentence here is generated from plain dicts (what results.json stores: the outputs of
`convbench.analysis.stats.compare_models`, `convbench.analysis.stats.ablation_effects`, calibration and robustness
numbers); nothing is pre-written, and a conclusion is only worded as a conclusion when the
statistic backs it. Each renderer returns a Markdown string that starts with its heading.

Units in: fractions in [0, 1] (accuracy, ECE, gaps). Units out: percent for levels, percentage
points ("points") for differences.

Test: .venv/bin/pytest tests/test_report_sections.py -q
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convbench.analysis.stats import mean_std_ci
from convbench.data import corruptions as _corruptions
from convbench.errors import ConvbenchError
from convbench.i18n import _, fmt, join_names, N_, ngettext, number, translate_text

__all__ = [
    "render_executive_summary",
    "render_significance_section",
    "render_seed_table",
    "render_calibration_section",
    "render_robustness_section",
    "render_ablation_section",
    "percent",
    "points",
]


# ----------------------------------------------------------------------------- formatting
# Numbers go through `i18n.number` (decimal comma in Spanish), words through `_`.


def percent(x: float) -> str:
    """An accuracy as a percentage with two decimals ("80.25 %"; "80,25 %" in Spanish)."""
    return fmt(_("{value:.2f} %"), value=100 * x)


def points(x: float) -> str:
    """A difference of accuracies in signed percentage points ("+1.20 points")."""
    return fmt(_("{value:+.2f} points"), value=100 * x)


def _na() -> str:
    return _("n/a")


def _pct(x: float | None, nd: int = 2) -> str:
    return _na() if x is None else number(100.0 * x, f".{nd}f")


def _pts(x: float | None, nd: int = 2) -> str:
    return _na() if x is None else number(100.0 * x, f"+.{nd}f")


def _pval(p: float | None) -> str:
    if p is None:
        return _na()
    if p == 0.0:
        return "< " + number(1e-300, ".0e")
    return number(p, ".3g") if p >= 1e-3 else number(p, ".1e")


def _si(x: float | None) -> str:
    if x is None:
        return _na()
    for factor, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{number(x / factor, '.3g')} {suffix}"
    return number(x, ".3g")


def _ratio(x: float) -> str:
    return number(x, ".2g") + "×" if x < 10 else number(x, ".0f") + "×"


def _names(names: Sequence[str]) -> str:
    return join_names(list(names))


def _heading(title: str, level: int) -> str:
    return "#" * max(1, int(level)) + " " + title


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _h in headers) + "|"]
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
        return fmt(_("{value} (1 seed)"), value=_pct(acc["mean"]))
    return f"{_pct(acc['mean'])} ± {_pct(acc['std'])}"


def _ci_cell(lo: float | None, hi: float | None, signed: bool = False) -> str:
    if lo is None or hi is None:
        return _na()
    f = _pts if signed else _pct
    return fmt(_("{low} to {high}"), low=f(lo), high=f(hi))


def _require(d: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise ConvbenchError(f"{what} must be a dict, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ConvbenchError(f"{what} lacks {missing}; pass the dict produced by convbench.analysis.stats")


def _check_verdict(verdict: Mapping[str, Any]) -> None:
    _require(verdict, ["best", "winner", "decided", "comparisons", "accuracy", "alpha", "n_seeds",
                       "n_images"], "verdict")


# ----------------------------------------------------------------------------- cost


# (cost key, the phrase comparing it: a whole phrase per cost, since its words agree with the noun)
_COST_KEYS = (
    ("train_flops", N_("{ratio} the training FLOPs of {other}")),
    ("flops_per_image", N_("{ratio} the FLOPs per image of {other}")),
    ("train_time_s", N_("{ratio} the training time of {other}")),
    ("params", N_("{ratio} the parameters of {other}")),
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
    for key, phrase in _COST_KEYS:
        va, vb = _mean(a.get(key)), _mean(b.get(key))
        if va is not None and vb is not None and va > 0 and vb > 0:
            return fmt(_(phrase), ratio=_ratio(va / vb), other=other)
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
        reasons = sorted({translate_text(s["reason"]) if s.get("reason") else _("not estimated")
                          for s in seeds if s.get("n") is None})
        seed_text = None
        parts.append(fmt(_("No seed count can be given ({reasons})."), reasons="; ".join(reasons)))
    else:
        seed_text = max(s["n"] for s in seeds)
    img = None if any(i.get("n") is None for i in images) else max(i["n"] for i in images)
    values = dict(power=100 * power, level=level, seeds=str(seed_text), images=img, n_seeds=str(n_seeds))
    if seed_text is not None and seed_text > n_seeds:
        if img is not None:
            parts.insert(0, fmt(_("To detect a difference as large as the one observed with {power:.0f} % power (at α/m = "
                                  "{level:.3g}, conservative for Holm), about {seeds} seeds per model (paired t-test over "
                                  "seeds) or about {images:,} test images per seed (McNemar) would be needed."), **values))
        else:
            parts.insert(0, fmt(_("To detect a difference as large as the one observed with {power:.0f} % power (at α/m = "
                                  "{level:.3g}, conservative for Holm), about {seeds} seeds per model (paired t-test over "
                                  "seeds) would be needed."), **values))
    elif img is not None:
        if seed_text is not None:
            parts.insert(0, fmt(_("To detect a difference as large as the one observed with {power:.0f} % power (at α/m = "
                                  "{level:.3g}, conservative for Holm), about {images:,} test images per seed (McNemar) "
                                  "would be needed (the seed-level estimate, {seeds} seeds, is no more than the {n_seeds} "
                                  "run: the per-image test is what falls short)."), **values))
        else:
            parts.insert(0, fmt(_("To detect a difference as large as the one observed with {power:.0f} % power (at α/m = "
                                  "{level:.3g}, conservative for Holm), about {images:,} test images per seed (McNemar) "
                                  "would be needed."), **values))
    if img is not None and img > n_images:
        parts.append(fmt(_("The test set has only {n_images:,} images, so more seeds, or a larger budget that separates the "
                           "models further, is the way to decide."), n_images=n_images))
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
    setting = fmt(ngettext("{n} seed per model, {images:,} test images", "{n} seeds per model, {images:,} test images",
                           n_seeds), n=n_seeds, images=n_images)
    if budget:
        setting += f", {budget}"
    a = acc[best]
    ci = "" if a.get("ci_low") is None else " " + fmt(_("(95 % CI {low} to {high} %)"), low=_pct(a["ci_low"]),
                                                       high=_pct(a["ci_high"]))
    lines = [_heading(_("Executive summary"), level), ""]

    if not comps:
        lines.append(fmt(_("**No comparison:** only one model ({best}) was evaluated ({setting}). It reaches {accuracy} % "
                           "mean test accuracy{ci}."), best=best, setting=setting, accuracy=_pct(a["mean"]), ci=ci))
    elif verdict["decided"] and verdict["winner"]:
        runner = comps[0]
        boot = runner["bootstrap"]
        cost = _cost_phrase(best, runner["model_b"], costs)
        text = fmt(ngettext(
            "**{best} wins** ({setting}). It reaches {accuracy} % mean test accuracy{ci}, {lead} points ahead of the runner-up "
            "{runner} ({runner_accuracy} %): 95 % paired-bootstrap CI of the difference {low} to {high} points, Holm-adjusted "
            "p = {p} (α = {alpha}). It is significantly better than every other model ({n} comparison, Holm-corrected).",
            "**{best} wins** ({setting}). It reaches {accuracy} % mean test accuracy{ci}, {lead} points ahead of the runner-up "
            "{runner} ({runner_accuracy} %): 95 % paired-bootstrap CI of the difference {low} to {high} points, Holm-adjusted "
            "p = {p} (α = {alpha}). It is significantly better than every other model ({n} comparisons, Holm-corrected).",
            len(comps)), best=best, setting=setting, accuracy=_pct(a["mean"]), ci=ci, lead=_pts(runner["diff"]).lstrip("+"),
            runner=runner["model_b"], runner_accuracy=_pct(acc[runner["model_b"]]["mean"]), low=_pts(boot["ci_low"]),
            high=_pts(boot["ci_high"]), p=_pval(runner["p_holm"]), alpha=alpha, n=len(comps))
        text += " " + (fmt(_("It costs {cost}."), cost=cost) if cost else _("Its cost relative to the others was not recorded."))
        lines.append(text)
    else:
        tied = [c for c in comps if not c.get("significant")]
        worse = [c for c in comps if c.get("significant")]
        closest = max(tied, key=lambda c: (c["p_holm"], -c["diff"]))
        boot = closest["bootstrap"]
        text = fmt(_(
            "**No winner: the models are not distinguishable at this budget** ({setting}). {best} has the highest mean test "
            "accuracy ({accuracy} %), but its lead over {tied} is not significant after Holm correction (α = {alpha}): "
            "{closest} trails by {lag} points (95 % CI {low} to {high} points, Holm-adjusted p = {p})."),
            setting=setting, best=best, accuracy=_pct(a["mean"]), tied=_names([c["model_b"] for c in tied]), alpha=alpha,
            closest=closest["model_b"], lag=_pts(closest["diff"]).lstrip("+"), low=_pts(boot["ci_low"]),
            high=_pts(boot["ci_high"]), p=_pval(closest["p_holm"]))
        if worse:
            text += " " + fmt(_("{best} is significantly better than {worse} (Holm-adjusted p ≤ {p})."), best=best,
                              worse=_names([c["model_b"] for c in worse]), p=_pval(max(c["p_holm"] for c in worse)))
        cost = _cost_phrase(best, closest["model_b"], costs)
        if cost:
            text += " " + fmt(_("{best} costs {cost}."), best=best, cost=cost)
        needed = _needed_sentence(verdict, tied)
        lines.append(text + (" " + needed if needed else ""))

    # Compact table: every model, its accuracy, its distance from the best, and its cost.
    by_model = {c["model_b"]: c for c in comps}
    extras = _cost_index(summary_rows)
    extra_cols = [(k, h) for k, h in (("tta_accuracy", _("Flip-TTA acc. (%)")), ("ece", _("ECE (%)")),
                                      ("ece_after", _("ECE after T (%)")), ("mca", _("mCA (%)")),
                                      ("relative_robustness", _("Rel. robustness")))
                  if any(k in row for row in extras.values())]
    cost_cols = [(k, h) for k, h in (("params", _("Params")), ("flops_per_image", _("FLOPs / image")),
                                     ("train_flops", _("Train FLOPs")), ("train_time_s", _("Train time (s)")))
                 if any(k in row for row in costs.values())]
    # With one seed per model there is no spread over seeds: one accuracy column, no empty CI column.
    one_seed = all(a.get("std") is None and a.get("ci_low") is None for a in acc.values())
    headers = [_("Model"), _("Test acc. (%), 1 seed") if one_seed else _("Test acc. (%) mean ± std")]
    headers += [] if one_seed else [_("95 % CI (%)")]
    headers += [_("Δ vs best (points)"), _("Holm p vs best")]
    headers += [h for _k, h in extra_cols] + [h for _k, h in cost_cols]
    rows = []
    for m in verdict.get("ranking") or sorted(acc, key=lambda k: -acc[k]["mean"]):
        am = acc[m]
        c = by_model.get(m)
        row = [f"**{m}**" if m == verdict.get("winner") else m, _pct(am["mean"]) if one_seed else _acc_cell(am)]
        row += [] if one_seed else [_ci_cell(am.get("ci_low"), am.get("ci_high"))]
        row += ["—" if c is None else _pts(-c["diff"]),
                "—" if c is None else _pval(c["p_holm"]) + ("" if c.get("significant") else " " + _("(n.s.)"))]
        for k, _h in extra_cols:
            v = _mean(extras.get(m, {}).get(k))
            row.append(_na() if v is None else (number(v, ".3f") if k == "relative_robustness" else _pct(v)))
        for k, _h in cost_cols:
            v = _mean(costs.get(m, {}).get(k))
            row.append(_na() if v is None else (number(v, ".0f") if k == "train_time_s" else _si(v)))
        rows.append(row)
    lines += ["", _table(headers, rows), ""]
    method = translate_text(verdict.get("method")) or _("paired tests on the test images")
    lines.append(fmt(_("Method: {method}; n.s. = not significant at α = {alpha}."), method=method, alpha=alpha))
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
    lines = [_heading(_("Is the difference real? Paired significance tests"), level), ""]
    if not comps:
        lines.append(fmt(_("Only one model ({best}) was evaluated; there is nothing to test."), best=best))
        return "\n".join(lines) + "\n"
    n_boot = comps[0]["bootstrap"].get("n_boot")
    lines.append(fmt(_(
        "Each row pairs the best model by mean accuracy, {best}, with another model on the same {images:,} test images over "
        "{seeds} seed(s). b counts images {best} gets right more often than the other model across seeds, c the reverse; the "
        "pooled p-value is the exact two-sided sign (McNemar) test on b and c, with images as the independent units (for one "
        "seed this is McNemar's exact test). Per-seed McNemar p-values are shown for reference. Pooled p-values are "
        "Holm-corrected over {comparisons} comparison(s) at α = {alpha}. The CI of the difference is a paired bootstrap over "
        "test images ({resamples} resamples)."), best=best, images=verdict["n_images"], seeds=str(verdict["n_seeds"]),
        comparisons=str(len(comps)), alpha=alpha, resamples=_na() if n_boot is None else str(n_boot)))
    headers = [_("Best vs"), fmt(_("{model} acc. (%)"), model=best), _("Other acc. (%)"), _("Δ (points)"),
               _("95 % CI Δ (points)"), "b / c", _("p pooled"), _("p Holm"), _("per-seed p"), _("Significant")]
    rows = []
    for c in comps:
        boot = c["bootstrap"]
        per_seed = ", ".join(_pval(s["p_value"]) for s in c.get("per_seed", []))
        rows.append([
            c["model_b"], _pct(c["accuracy_a"]["mean"]), _pct(c["accuracy_b"]["mean"]), _pts(c["diff"]),
            _ci_cell(boot["ci_low"], boot["ci_high"], signed=True),
            f"{c['pooled']['b']} / {c['pooled']['c']}", _pval(c["p_value"]), _pval(c["p_holm"]),
            per_seed or _na(), _("yes") if c.get("significant") else _("no"),
        ])
    lines += ["", _table(headers, rows), ""]
    if verdict["decided"] and verdict["winner"]:
        lines.append(fmt(_("**Verdict:** {winner} is significantly better than every other model after Holm correction."),
                         winner=verdict["winner"]))
    else:
        tied = [c for c in comps if not c.get("significant")]
        lines.append(fmt(_("**Verdict:** no winner. {best} is not significantly better than {tied} at α = {alpha} after Holm "
                           "correction."), best=best, tied=_names([c["model_b"] for c in tied]), alpha=alpha)
                     + " " + _needed_sentence(verdict, tied))
    concat = [c for c in comps if "pooled_concat" in c]
    if concat:
        lines += ["", fmt(_("For reference, McNemar's test on all seeds concatenated (treats the same image in different seeds "
                            "as independent, so it overstates significance): {tests}."), tests="; ".join(
                      fmt(_("{model}: b/c = {b}/{c}, p = {p}"), model=c["model_b"], b=str(c["pooled_concat"]["b"]),
                          c=str(c["pooled_concat"]["c"]), p=_pval(c["pooled_concat"]["p_value"])) for c in concat))]
    return "\n".join(lines) + "\n"


def render_seed_table(
    per_model_values: Mapping[str, Sequence[float]],
    *,
    metric: str | None = None,
    confidence: float = 0.95,
    as_percent: bool = True,
    level: int = 2,
) -> str:
    """Per-model table of a metric over seeds: mean ± std, t-interval, and the seeds themselves.

    Args:
        per_model_values: model name -> one value per seed (fractions when ``as_percent``).
        metric: Name of the metric for the heading and columns (default: test accuracy, in the
            report's language).
        confidence: Level of the t-interval.
        as_percent: Show values ×100 with a "(%)" unit.
        level: Markdown heading level.

    Returns:
        Markdown text.
    """
    if not isinstance(per_model_values, Mapping) or not per_model_values:
        raise ConvbenchError("per_model_values must map each model to its per-seed values")
    metric = metric or _("Test accuracy")
    stats = {str(m): mean_std_ci(v, confidence) for m, v in per_model_values.items()}
    fmt_value = _pct if as_percent else (lambda x: _na() if x is None else number(x, ".4g"))
    unit = " (%)" if as_percent else ""
    headers = [_("Model"), _("Seeds"), fmt(_("{metric}{unit} mean ± std"), metric=metric, unit=unit),
               fmt(_("{level:.0f} % CI{unit}"), level=100 * confidence, unit=unit), fmt(_("Per seed{unit}"), unit=unit)]
    rows = []
    for m in sorted(stats, key=lambda k: (-stats[k]["mean"], k)):
        st = stats[m]
        spread = _("(1 seed: no spread)") if st["std"] is None else f"± {fmt_value(st['std'])}"
        ci = _("n/a (1 seed)") if st["ci_low"] is None else fmt(_("{low} to {high}"), low=fmt_value(st["ci_low"]),
                                                                  high=fmt_value(st["ci_high"]))
        rows.append([m, st["n"], f"{fmt_value(st['mean'])} {spread}", ci,
                     ", ".join(fmt_value(v) for v in per_model_values[m])])
    text = [_heading(fmt(_("{metric} over seeds"), metric=metric), level), "",
            fmt(_("Mean, sample standard deviation and Student-t {level:.0f} % interval over seeds."), level=100 * confidence),
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
                     number(d["t"], ".3f"), _na() if d["nll_b"] is None else number(d["nll_b"], ".4f"),
                     _na() if d["nll_a"] is None else number(d["nll_a"], ".4f")])
    lines = [_heading(_("Calibration"), level), "",
             fmt(_("Expected calibration error over {bins} equal-width confidence bins on the test set, before and after "
                   "temperature scaling (T fitted by minimising NLL on the validation split). NLL in nats per image."),
                 bins=str(n_bins)), "",
             _table([_("Model"), _("ECE before (%)"), _("ECE after (%)"), _("Δ ECE (points)"), "T", _("NLL before"),
                     _("NLL after")], rows), ""]
    lowered = [d["model"] for d in data if d["after"] < d["before"]]
    raised = [d["model"] for d in data if d["after"] > d["before"]]
    facts = []
    if lowered:
        if len(lowered) < len(data):
            facts.append(fmt(_("Temperature scaling lowered ECE for {n} of {total} model(s) ({models})."), n=str(len(lowered)),
                             total=str(len(data)), models=_names(lowered)))
        else:
            facts.append(fmt(_("Temperature scaling lowered ECE for {n} of {total} model(s)."), n=str(len(lowered)),
                             total=str(len(data))))
    if raised:
        facts.append(fmt(_("It raised ECE for {models}: the temperature fitted on validation data did not transfer to the "
                           "test set."), models=_names(raised)))
    over = [d["model"] for d in data if d["t"] > 1.0]
    under = [d["model"] for d in data if d["t"] < 1.0]
    if over:
        facts.append(fmt(_("T > 1 (overconfident before scaling): {models}."), models=_names(over)))
    if under:
        facts.append(fmt(_("T < 1 (underconfident before scaling): {models}."), models=_names(under)))
    best = min(data, key=lambda d: d["after"])
    facts.append(fmt(_("Lowest ECE after scaling: {model} ({ece} %). ECE values are point estimates, not significance-tested."),
                     model=best["model"], ece=_pct(best["after"])))
    lines.append(" ".join(facts))
    if figures:
        lines.append("")
        for d in data:
            if d["model"] in figures:
                lines.append(fmt(_("![Reliability diagram of {model}]({path})"), model=d["model"], path=figures[d["model"]]))
    return "\n".join(lines) + "\n"


def _corruption(name: str) -> str:
    """A corruption's name as the tables show it (its identifier in English, translated in other languages)."""
    return _(name)


# The default corruptions' identifiers, marked for the catalogue: translators give them a name
# (the identifiers are the English report's names, as `convbench.data.corruptions` spells them).
_CORRUPTION_NAMES = (N_("gaussian_noise"), N_("shot_noise"), N_("defocus_blur"), N_("contrast"), N_("brightness"),
                     N_("jpeg_compression"), N_("pixelate"), N_("fog"))


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
    lines = [_heading(_("Robustness to common corruptions"), level), "",
             _("Corruptions generated deterministically from the test set in the style of CIFAR-10-C (Hendrycks & "
               "Dietterich, 2019), 5 severities each. mCA = mean accuracy over corruptions and severities; relative "
               "robustness = mCA / clean accuracy. Flip TTA averages the predictions on each image and its horizontal "
               "mirror."), ""]
    on_subset = fmt(_(", {n:,} images"), n=subset_images) if subset_images else ""
    on_test = fmt(_(", all {n:,}"), n=test_images) if test_images else ""
    if any(d["test"] is not None for d in data):
        # Corruptions use a subset, flip TTA the whole test set: each gain compares like with like.
        rows = [[d["model"], _pct(d["clean"]), _pct(d["mca"]), number(d["rr"], ".3f"), _pct(d["test"]), _pct(d["tta"]),
                 _na() if d["tta"] is None or d["test"] is None else _pts(d["tta"] - d["test"])] for d in data]
        lines += [_table([_("Model"), fmt(_("Clean acc. (%){images}"), images=on_subset),
                          fmt(_("mCA (%){images}"), images=on_subset), _("Relative robustness"),
                          fmt(_("Test acc. (%){images}"), images=on_test), fmt(_("Flip-TTA acc. (%){images}"), images=on_test),
                          _("TTA gain (points)")], rows), ""]
        for d in data:
            d["tta_base"] = d["test"]
    else:
        rows = [[d["model"], _pct(d["clean"]), _pct(d["tta"]),
                 _na() if d["tta"] is None else _pts(d["tta"] - d["clean"]), _pct(d["mca"]), number(d["rr"], ".3f")]
                for d in data]
        lines += [_table([_("Model"), fmt(_("Clean acc. (%){images}"), images=on_subset), _("Flip-TTA acc. (%)"),
                          _("TTA gain (points)"), fmt(_("mCA (%){images}"), images=on_subset), _("Relative robustness")],
                         rows), ""]
        for d in data:
            d["tta_base"] = d["clean"]
    corr_names = sorted({c for d in data for c in d["per_c"]})
    rows = [[_corruption(c)] + [_pct(d["per_c"].get(c)) for d in data] for c in corr_names]
    lines += [fmt(_("Accuracy (%) per corruption, mean over severities{images}:"), images=on_subset), "",
              _table([_("Corruption")] + models, rows), ""]
    sev_names = sorted({s for d in data for sev in d["by_cs"].values() for s in sev}, key=lambda s: int(s))
    rows = []
    for sv in sev_names:
        row = [sv]
        for d in data:
            vals = [sev[sv] for sev in d["by_cs"].values() if sv in sev]
            row.append(_pct(float(np.mean(vals))) if vals else _na())
        rows.append(row)
    lines += [fmt(_("Accuracy (%) per severity, mean over corruptions{images}:"), images=on_subset), "",
              _table([_("Severity")] + models, rows), ""]
    top_mca = max(data, key=lambda d: d["mca"])
    top_rr = max(data, key=lambda d: d["rr"])
    hardest = min(corr_names, key=lambda c: np.mean([d["per_c"][c] for d in data if c in d["per_c"]]))
    hardest_acc = float(np.mean([d["per_c"][hardest] for d in data if hardest in d["per_c"]]))
    facts = [fmt(_("Highest mCA: {model} ({mca} %)."), model=top_mca["model"], mca=_pct(top_mca["mca"]))]
    facts.append(fmt(_("Keeps the largest share of its clean accuracy: {model} (relative robustness {rr:.3f})."),
                     model=top_rr["model"], rr=top_rr["rr"]))
    facts.append(fmt(_("Hardest corruption on average: {corruption} ({accuracy} % mean accuracy)."),
                     corruption=_corruption(hardest), accuracy=_pct(hardest_acc)))
    tta = [d for d in data if d["tta"] is not None and d["tta_base"] is not None]
    if tta:
        gains = [d["tta"] - d["tta_base"] for d in tta]
        span = (_pts(gains[0]) if len(gains) == 1 else fmt(_("{low} to {high}"), low=_pts(min(gains)), high=_pts(max(gains))))
        facts.append(fmt(_("Flip TTA changed test accuracy by {change} points."), change=span))
    facts.append(_("These comparisons are descriptive (one evaluation per model); they are not significance-tested."))
    lines.append(" ".join(facts))
    return "\n".join(lines) + "\n"


def _gap_text(r: Mapping[str, Any]) -> str:
    if r.get("gap_with") is None or r.get("gap_without") is None:
        return _na()
    return f"{_pct(r['gap_without'])} → {_pct(r['gap_with'])}"


# stats.ablation_effects' verdicts (codes the logic compares) as the report shows them.
VERDICTS = {"helped": N_("helped"), "hurt": N_("hurt"), "no detectable effect": N_("no detectable effect")}


def verdict_text(verdict: str) -> str:
    """An ablation verdict ("helped", "hurt", "no detectable effect") in the report's language."""
    return _(VERDICTS[verdict]) if verdict in VERDICTS else str(verdict)


def render_ablation_section(
    ablation_results: Sequence[Mapping[str, Any]],
    *,
    curves: Mapping[str, str] | None = None,
    level: int = 2,
) -> str:
    """Which augmentation and regularisation choices helped or hurt, with effect size and CI.

    Args:
        ablation_results: stats.ablation_effects output (one dict per contrast: model, factor,
            with, without, diff, bootstrap, p_holm, verdict, gap_with, gap_without, ...); factor
            names are shown through the catalogue (`convbench.experiment.ablation` marks its own).
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
    lines = [_heading(_("Ablations: did augmentation and regularisation help?"), level), "",
             fmt(_("Each effect is accuracy(with) − accuracy(without) on the same test images, averaged over {seeds} seed(s): "
                   "95 % paired-bootstrap CI over images, exact sign (McNemar) test pooled over seeds, Holm-corrected over the "
                   "{n} effects at α = {alpha}. The train−validation gap is the final train accuracy minus validation "
                   "accuracy."), seeds=str(n_seeds), n=str(len(ablation_results)), alpha=alpha), ""]
    rows = []
    for r in ablation_results:
        boot = r["bootstrap"]
        verdict = verdict_text(r["verdict"])
        rows.append([r.get("model") or "—", _(str(r["factor"])), f"{r['without']} → {r['with']}",
                     _pct(r["accuracy_b"]["mean"]), _pct(r["accuracy_a"]["mean"]), _pts(r["diff"]),
                     _ci_cell(boot["ci_low"], boot["ci_high"], signed=True), _pval(r["p_holm"]),
                     _gap_text(r), f"**{verdict}**" if r["verdict"] != "no detectable effect" else verdict])
    lines += [_table([_("Model"), _("Factor"), _("Change"), _("Acc. without (%)"), _("Acc. with (%)"), _("Effect (points)"),
                      _("95 % CI (points)"), _("Holm p"), _("Train−val gap (%)"), _("Verdict")], rows), ""]
    for r in ablation_results:
        boot = r["bootstrap"]
        where = fmt(_(" on {model}"), model=r["model"]) if r.get("model") else ""
        ev = fmt(_("95 % CI {low} to {high} points, Holm-adjusted p = {p}"), low=_pts(boot["ci_low"]),
                 high=_pts(boot["ci_high"]), p=_pval(r["p_holm"]))
        gap = ""
        if r.get("gap_with") is not None and r.get("gap_without") is not None:
            gap = " " + fmt(_("The train−validation gap went from {before} to {after} points."),
                            before=_pct(r["gap_without"]), after=_pct(r["gap_with"]))
        change = f"{r['without']} → {r['with']}"
        factor = _(str(r["factor"]))
        factor = factor[:1].upper() + factor[1:]
        values = dict(factor=factor, where=where, change=change, evidence=ev, gap=gap)
        if r["verdict"] == "hurt":
            lines.append(fmt(_("- **{factor} hurt**{where} ({change}): test accuracy fell by {effect} points ({evidence})."
                               "{gap}"), effect=_pts(-r["diff"]).lstrip("+"), **values))
        elif r["verdict"] == "helped":
            lines.append(fmt(_("- **{factor} helped**{where} ({change}): test accuracy rose by {effect} points ({evidence})."
                               "{gap}"), effect=_pts(r["diff"]).lstrip("+"), **values))
        else:
            lines.append(fmt(_("- {factor}{where} ({change}): no detectable effect, {effect} points ({evidence}).{gap}"),
                             effect=_pts(r["diff"]), **values))
    by = {v: [f"{_(str(r['factor']))} ({r['without']} → {r['with']})" for r in ablation_results if r["verdict"] == v]
          for v in ("helped", "hurt", "no detectable effect")}
    labels = {"helped": N_("Helped: {items}"), "hurt": N_("Hurt: {items}"),
              "no detectable effect": N_("No detectable effect: {items}")}
    summary = [fmt(_(labels[v]), items="; ".join(by[v])) for v in ("helped", "hurt", "no detectable effect") if by[v]]
    lines += ["", fmt(_("In short — {summary}."), summary=". ".join(summary))]
    if curves:
        lines.append("")
        for caption, path in curves.items():
            lines.append(f"![{caption}]({path})")
    return "\n".join(lines) + "\n"
