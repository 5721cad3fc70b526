"""Statistics for a comparison you can trust: seed intervals, paired tests on the test images,
multiple-testing correction, bootstrap intervals and power estimates.

Every function is pure (numpy + scipy only) and returns plain dicts of Python floats, ints, bools,
strings and None, so results go straight into results.json and the report renderers
(`convbench.report.sections`) work from those numbers alone.

Units: accuracies and accuracy differences are fractions in [0, 1] (the report turns them into
percent and percentage points); p-values and confidence levels are probabilities.

Pooling over seeds: the test images are the same in every seed, so the correctness of one image
in two seeds is not independent. Concatenating seeds and running McNemar's test treats them as
independent and overstates significance. The pooled test that decides a verdict therefore counts,
per image, how many seeds each model got it right and runs the exact two-sided sign (McNemar) test
on images, not on (seed, image) pairs; with one seed it is exactly McNemar's test. The
concatenated McNemar test is also returned, for reference. The bootstrap resamples images, keeping
all seeds of an image together, for the same reason.

Test: .venv/bin/pytest tests/test_stats.py -q
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convbench.errors import ConvbenchError
from convbench.i18n import Message, N_

__all__ = [
    "mean_std_ci",
    "mcnemar_exact",
    "mcnemar_by_image",
    "holm",
    "bootstrap_diff_ci",
    "seeds_needed",
    "images_needed",
    "paired_comparison",
    "compare_models",
    "ablation_effects",
]


# ----------------------------------------------------------------------------- input checks


def _scipy_stats():
    """scipy.stats, imported on first use: it costs about 2 s, and `convbench runs`/`--help` never need it."""
    from scipy import stats

    return stats


def _check_probability(value: float, name: str, *, open_interval: bool = True) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConvbenchError(f"{name} must be a number, got {value!r}; pass e.g. 0.95") from None
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok or math.isnan(value):
        bounds = "strictly between 0 and 1" if open_interval else "between 0 and 1"
        raise ConvbenchError(f"{name} must be {bounds}, got {value}; pass e.g. 0.95 or 0.05")
    return value


def _finite_1d(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConvbenchError(f"{name} must be a list of numbers, got {values!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ConvbenchError(f"{name} must be a non-empty 1-D list of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConvbenchError(f"{name} contains NaN or infinity; drop failed runs before computing statistics")
    return arr


def _bool_array(values: Any, name: str) -> np.ndarray:
    """Per-image correctness as a bool array; accepts bools or 0/1 numbers."""
    arr = np.asarray(values)
    if arr.size == 0:
        raise ConvbenchError(f"{name} is empty; pass one True/False per test image")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.number) or not np.all((arr == 0) | (arr == 1)):
            raise ConvbenchError(
                f"{name} must hold per-image correctness as True/False (or 1/0); "
                "compute it as predicted_label == true_label"
            )
        arr = arr.astype(bool)
    return arr


def _paired_1d(correct_a: Any, correct_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = _bool_array(correct_a, "correct_a")
    b = _bool_array(correct_b, "correct_b")
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ConvbenchError(
            f"correct_a and correct_b must be 1-D and cover the same test images, got shapes "
            f"{a.shape} and {b.shape}; evaluate both models on the same test set in the same order"
        )
    return a, b


def _seed_matrix(per_seed: Any, name: str) -> np.ndarray:
    """(seeds, images) bool matrix from a list of per-seed arrays, a 2-D array or one 1-D array."""
    if isinstance(per_seed, np.ndarray) and per_seed.ndim in (1, 2):
        mat = _bool_array(per_seed, name)
        return mat[None, :] if mat.ndim == 1 else mat
    if not isinstance(per_seed, Sequence) or isinstance(per_seed, (str, bytes)) or len(per_seed) == 0:
        raise ConvbenchError(f"{name} must be a non-empty list of per-seed correctness arrays")
    rows = [_bool_array(r, f"{name}[{i}]") for i, r in enumerate(per_seed)]
    if rows[0].ndim == 0:
        # A flat list of bools is one seed.
        return _bool_array(per_seed, name)[None, :]
    shapes = {r.shape for r in rows}
    if len(shapes) != 1 or rows[0].ndim != 1:
        raise ConvbenchError(
            f"{name}: every seed must be a 1-D array over the same test images, got shapes {sorted(shapes)}"
        )
    return np.stack(rows)


def _paired_matrices(a: Any, b: Any, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    ma, mb = _seed_matrix(a, name_a), _seed_matrix(b, name_b)
    if ma.shape != mb.shape:
        raise ConvbenchError(
            f"{name_a} and {name_b} must have the same number of seeds and test images, got "
            f"{ma.shape} and {mb.shape} (seeds, images); rerun the missing seeds or drop them from both"
        )
    return ma, mb


# ----------------------------------------------------------------------------- basic statistics


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and a t-interval for the mean over seeds.

    Args:
        values: One number per seed (e.g. test accuracy as a fraction in [0, 1]).
        confidence: Confidence level of the interval, e.g. 0.95.

    Returns:
        Dict with ``mean``, ``std`` (ddof=1), ``ci_low``, ``ci_high`` (Student-t interval with
        n-1 degrees of freedom, same units as ``values``), ``n`` and ``confidence``. With a single
        value the spread cannot be estimated: ``std``, ``ci_low`` and ``ci_high`` are None and
        ``note`` says why.
    """
    confidence = _check_probability(confidence, "confidence")
    arr = _finite_1d(values, "values")
    n = int(arr.size)
    mean = float(arr.mean())
    if n < 2:
        return {
            "mean": mean, "std": None, "ci_low": None, "ci_high": None, "n": n,
            "confidence": confidence,
            "note": "one value: no spread or confidence interval can be estimated; run at least 2 seeds",
        }
    std = float(arr.std(ddof=1))
    half = float(_scipy_stats().t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return {
        "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n,
        "confidence": confidence,
    }


def _two_sided_binomial_half(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    # Binomial(n, 1/2) is symmetric, so the two-sided exact p-value is twice the smaller tail.
    return float(min(1.0, 2.0 * _scipy_stats().binom.cdf(min(b, c), n, 0.5)))


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """Exact two-sided McNemar test of two models on the same test images.

    Only discordant images carry information: ``b`` = A right and B wrong, ``c`` = A wrong and
    B right. Under the null hypothesis (equal accuracy) b ~ Binomial(b + c, 1/2).

    Args:
        correct_a: Per-image correctness of model A (bools or 0/1), one entry per test image.
        correct_b: Per-image correctness of model B on the same images in the same order.

    Returns:
        Dict with ``b``, ``c``, ``n`` (= b + c, the discordant images), ``p_value`` (exact
        two-sided; 1.0 when there are no discordant images), ``n_images``, ``accuracy_a`` and
        ``accuracy_b`` (fractions).
    """
    a, b_ = _paired_1d(correct_a, correct_b)
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    return {
        "b": b, "c": c, "n": b + c, "p_value": _two_sided_binomial_half(b, c),
        "n_images": int(a.size), "accuracy_a": float(a.mean()), "accuracy_b": float(b_.mean()),
    }


def mcnemar_by_image(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """Exact sign test over images, pooling seeds per image (McNemar's test for one seed).

    For each image, D = (seeds where A is right) - (seeds where B is right). ``b`` counts images
    with D > 0, ``c`` images with D < 0; images with D = 0 are ties and drop out. Under the null
    hypothesis that the two models are exchangeable on every image, b ~ Binomial(b + c, 1/2). This
    keeps the images as the independent units, which concatenating seeds does not.

    Args:
        correct_a: Per-seed correctness of model A: a list of 1-D bool arrays (one per seed, same
            images), a (seeds, images) array, or one 1-D array.
        correct_b: The same for model B, with the same seeds and images.

    Returns:
        Dict with ``b``, ``c``, ``n`` (= b + c), ``p_value`` (exact two-sided), ``n_images`` and
        ``n_seeds``.
    """
    ma, mb = _paired_matrices(correct_a, correct_b, "correct_a", "correct_b")
    d = ma.sum(axis=0, dtype=np.int64) - mb.sum(axis=0, dtype=np.int64)
    b = int(np.count_nonzero(d > 0))
    c = int(np.count_nonzero(d < 0))
    return {
        "b": b, "c": c, "n": b + c, "p_value": _two_sided_binomial_half(b, c),
        "n_images": int(ma.shape[1]), "n_seeds": int(ma.shape[0]),
    }


def holm(p_values: Mapping[str, float] | Sequence[float], alpha: float = 0.05) -> Any:
    """Holm-Bonferroni step-down correction with monotone adjusted p-values.

    Sorted ascending, the k-th smallest p-value (k = 0, 1, ...) of m is multiplied by (m - k);
    the adjusted values are made non-decreasing with a running maximum and capped at 1. A
    hypothesis is rejected when its adjusted p-value is <= alpha, which is the step-down rule.

    Args:
        p_values: Raw p-values, either a mapping name -> p or a list.
        alpha: Family-wise error rate, e.g. 0.05.

    Returns:
        For a mapping, a dict name -> {"p_value", "adjusted_p", "reject"}; for a list, a list of
        those dicts in the input order.
    """
    alpha = _check_probability(alpha, "alpha")
    if isinstance(p_values, Mapping):
        names: list[Any] | None = list(p_values.keys())
        raw = list(p_values.values())
    else:
        names, raw = None, list(p_values)
    if not raw:
        return {} if names is not None else []
    ps = np.asarray([_check_probability(p, "p-value", open_interval=False) for p in raw])
    m = ps.size
    order = np.argsort(ps, kind="stable")
    scaled = (m - np.arange(m)) * ps[order]
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adjusted = np.empty(m)
    adjusted[order] = adj_sorted
    rows = [
        {"p_value": float(p), "adjusted_p": float(q), "reject": bool(q <= alpha)}
        for p, q in zip(ps, adjusted)
    ]
    return dict(zip(names, rows)) if names is not None else rows


def bootstrap_diff_ci(
    correct_a: Any,
    correct_b: Any,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap interval for accuracy(A) - accuracy(B) over the test images.

    Images are resampled with replacement; all seeds of a resampled image come along, so the
    interval reflects test-set sampling with seeds paired. The resampled mean depends only on how
    many draws land on each distinct per-image difference, so the draws are taken from the
    equivalent multinomial distribution (exactly the same distribution as resampling indices,
    without an n_boot x n_images index array). Percentile interval.

    Args:
        correct_a: Per-image correctness of A: 1-D bools, or per-seed list / (seeds, images) array.
        correct_b: The same for B, same seeds and images.
        n_boot: Bootstrap resamples (>= 100).
        confidence: Interval level, e.g. 0.95.
        seed: Random seed; the same inputs and seed give the same interval.

    Returns:
        Dict with ``diff`` (observed accuracy difference, fraction), ``ci_low``, ``ci_high``
        (fractions), ``confidence``, ``n_boot``, ``n_images``, ``n_seeds``.
    """
    confidence = _check_probability(confidence, "confidence")
    if int(n_boot) < 100:
        raise ConvbenchError(f"n_boot must be at least 100, got {n_boot}; 2000 is a good default")
    ma, mb = _paired_matrices(correct_a, correct_b, "correct_a", "correct_b")
    n_seeds, n_images = ma.shape
    per_image = ma.sum(axis=0, dtype=np.int64) - mb.sum(axis=0, dtype=np.int64)
    values, counts = np.unique(per_image, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_images, counts / n_images, size=int(n_boot))
    boot = draws @ values.astype(np.float64) / (n_seeds * n_images)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [tail, 1.0 - tail])
    return {
        "diff": float(per_image.sum() / (n_seeds * n_images)),
        "ci_low": float(lo), "ci_high": float(hi), "confidence": confidence,
        "n_boot": int(n_boot), "n_images": int(n_images), "n_seeds": int(n_seeds),
    }


# ----------------------------------------------------------------------------- power


def _paired_t_power(n: int, effect_over_sd: float, alpha: float) -> float:
    df = n - 1
    tcrit = _scipy_stats().t.ppf(1.0 - alpha / 2.0, df)
    ncp = effect_over_sd * math.sqrt(n)
    return float(_scipy_stats().nct.sf(tcrit, df, ncp) + _scipy_stats().nct.cdf(-tcrit, df, ncp))


def seeds_needed(
    per_seed_diffs: Sequence[float],
    alpha: float = 0.05,
    power: float = 0.8,
    max_n: int = 100_000,
) -> dict[str, Any]:
    """Seeds per model that a paired t-test over seeds needs to detect the observed difference.

    A planning estimate: it assumes the true mean difference and its seed-to-seed standard
    deviation equal the observed ones, and finds the smallest n with the requested power for a
    two-sided paired t-test (exact noncentral-t power).

    Args:
        per_seed_diffs: accuracy(A) - accuracy(B) in each seed (fractions), seeds paired.
        alpha: Significance level of the planned test (use alpha / m for m comparisons).
        power: Desired power, e.g. 0.8.
        max_n: Give up above this many seeds.

    Returns:
        Dict with ``n`` (int, or None when no finite number can be given), ``effect`` (mean
        difference), ``sd`` (its seed-to-seed standard deviation or None), ``alpha``, ``power``,
        ``method`` and ``reason`` (why ``n`` is None, else None).
    """
    alpha = _check_probability(alpha, "alpha")
    power = _check_probability(power, "power")
    d = _finite_1d(per_seed_diffs, "per_seed_diffs")
    out: dict[str, Any] = {
        "n": None, "effect": float(d.mean()), "sd": None, "alpha": alpha, "power": power,
        "method": "two-sided paired t-test over seeds, noncentral t", "reason": None,
    }
    if d.size < 2:
        out["reason"] = N_("one seed: the seed-to-seed spread is unknown; run at least 2 seeds")
        return out
    sd = float(d.std(ddof=1))
    out["sd"] = sd
    effect = abs(float(d.mean()))
    if effect == 0.0:
        out["reason"] = N_("the observed mean difference is zero; no number of seeds would detect it")
        return out
    if sd == 0.0:
        out["n"] = 2
        out["reason"] = None
        return out
    es = effect / sd
    if _paired_t_power(int(max_n), es, alpha) < power:
        out["reason"] = Message(N_("more than {max_n} seeds would be needed"), max_n=int(max_n))
        return out
    lo, hi = 2, 2
    while _paired_t_power(hi, es, alpha) < power:
        lo, hi = hi, min(hi * 2, int(max_n))
    while lo < hi:  # smallest n in [lo, hi] with enough power; power grows with n
        mid = (lo + hi) // 2
        if _paired_t_power(mid, es, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    out["n"] = int(hi)
    return out


def images_needed(b: float, c: float, n_images: int, alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:
    """Test images a McNemar test needs to detect the observed discordance (Connor, 1987).

    With discordant proportions p_b = b / N and p_c = c / N, psi = p_b + p_c and
    delta = p_b - p_c, the normal-approximation sample size for a two-sided test is
    n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2.

    Args:
        b: Images (or mean per seed) where A is right and B wrong.
        c: Images (or mean per seed) where A is wrong and B right.
        n_images: Test images the counts come from.
        alpha: Significance level of the planned test (use alpha / m for m comparisons).
        power: Desired power, e.g. 0.8.

    Returns:
        Dict with ``n`` (images, or None when the observed difference is zero), ``psi``,
        ``delta``, ``alpha``, ``power``, ``method`` and ``reason``.
    """
    alpha = _check_probability(alpha, "alpha")
    power = _check_probability(power, "power")
    if int(n_images) <= 0 or b < 0 or c < 0 or b + c > n_images:
        raise ConvbenchError(
            f"images_needed needs 0 <= b, c and b + c <= n_images, got b={b}, c={c}, n_images={n_images}"
        )
    psi = (b + c) / n_images
    delta = (b - c) / n_images
    out: dict[str, Any] = {
        "n": None, "psi": float(psi), "delta": float(delta), "alpha": alpha, "power": power,
        "method": "McNemar sample size, normal approximation (Connor 1987)", "reason": None,
    }
    if delta == 0.0:
        out["reason"] = N_("no observed difference between the models; no number of images would detect it")
        return out
    za = _scipy_stats().norm.ppf(1.0 - alpha / 2.0)
    zb = _scipy_stats().norm.ppf(power)
    n = (za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta**2, 0.0))) ** 2 / delta**2
    out["n"] = int(math.ceil(n))
    return out


# ----------------------------------------------------------------------------- comparisons


def paired_comparison(
    correct_a: Any,
    correct_b: Any,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    power_alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any]:
    """Every paired statistic between two models (or two configurations) on the same test images.

    Args:
        correct_a: Per-seed correctness of A: list of 1-D bool arrays (seed i of A is paired with
            seed i of B), a (seeds, images) array, or one 1-D array.
        correct_b: The same for B.
        confidence: Level of the t-interval and bootstrap interval.
        n_boot: Bootstrap resamples.
        seed: Bootstrap random seed.
        power_alpha: Significance level the power estimates plan for.
        power: Power the estimates plan for.

    Returns:
        Dict with ``accuracy_a`` / ``accuracy_b`` (mean_std_ci over seeds), ``diff`` (mean
        accuracy difference A - B, fraction), ``seed_diff`` (mean_std_ci of per-seed
        differences), ``per_seed`` (mcnemar_exact per seed), ``pooled_concat`` (McNemar on the
        concatenated seeds, for reference), ``pooled`` (mcnemar_by_image, the test that decides),
        ``p_value`` (= pooled p), ``bootstrap`` (bootstrap_diff_ci), ``seeds_needed`` and
        ``images_needed`` (per seed, from the mean discordant counts).
    """
    ma, mb = _paired_matrices(correct_a, correct_b, "correct_a", "correct_b")
    acc_a, acc_b = ma.mean(axis=1), mb.mean(axis=1)
    per_seed = [mcnemar_exact(ma[s], mb[s]) for s in range(ma.shape[0])]
    pooled = mcnemar_by_image(ma, mb)
    mean_b = float(np.mean([r["b"] for r in per_seed]))
    mean_c = float(np.mean([r["c"] for r in per_seed]))
    return {
        "accuracy_a": mean_std_ci(acc_a, confidence),
        "accuracy_b": mean_std_ci(acc_b, confidence),
        "diff": float(acc_a.mean() - acc_b.mean()),
        "seed_diff": mean_std_ci(acc_a - acc_b, confidence),
        "per_seed": per_seed,
        "pooled_concat": mcnemar_exact(ma.ravel(), mb.ravel()),
        "pooled": pooled,
        "p_value": pooled["p_value"],
        "bootstrap": bootstrap_diff_ci(ma, mb, n_boot=n_boot, confidence=confidence, seed=seed),
        "seeds_needed": seeds_needed(acc_a - acc_b, alpha=power_alpha, power=power),
        "images_needed": images_needed(mean_b, mean_c, ma.shape[1], alpha=power_alpha, power=power),
    }


# Shown in the report (translated there): the texts of "method" and "reason" are msgids.
_METHOD = N_(
    "exact two-sided sign (McNemar) test over test images, seeds pooled per image; "
    "Holm-corrected; paired bootstrap CI over images"
)


def compare_models(
    predictions: Mapping[str, Any],
    alpha: float = 0.05,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    power: float = 0.8,
) -> dict[str, Any]:
    """Pick the best model by mean accuracy and test it against every other model.

    The best model is compared with each other model (paired_comparison); the pooled p-values are
    Holm-corrected over those comparisons. A winner is named only when the best model is
    significantly better than every other model after the correction. Power estimates plan at
    alpha / m (Bonferroni, conservative for Holm) for m comparisons.

    Args:
        predictions: model name -> list of per-seed 1-D bool arrays of per-image correctness, all
            on the SAME test images in the same order, and the same number of seeds per model.
        alpha: Family-wise significance level.
        confidence: Level of the confidence intervals.
        n_boot: Bootstrap resamples per comparison.
        seed: Bootstrap seed.
        power: Power the "needed" estimates plan for.

    Returns:
        Dict with ``best``, ``winner`` (name or None), ``decided`` (bool), ``reason`` (one
        sentence), ``alpha``, ``confidence``, ``power``, ``method``, ``n_models``, ``n_seeds``,
        ``n_images``, ``accuracy`` (name -> mean_std_ci of per-seed accuracy), ``ranking``
        (names by mean accuracy), ``comparisons`` (one dict per other model, ranked: ``model_a``
        = best, ``model_b``, the paired_comparison fields, ``p_holm``, ``significant``),
        ``significantly_worse`` and ``indistinguishable_from_best`` (names).
    """
    alpha = _check_probability(alpha, "alpha")
    if not isinstance(predictions, Mapping) or not predictions:
        raise ConvbenchError("predictions must map each model name to its per-seed correctness arrays")
    mats = {str(k): _seed_matrix(v, f"predictions[{k!r}]") for k, v in predictions.items()}
    shapes = {k: m.shape for k, m in mats.items()}
    if len(set(shapes.values())) != 1:
        raise ConvbenchError(
            f"every model needs the same number of seeds and test images, got (seeds, images) {shapes}; "
            "rerun the missing seeds or compare on the seeds all models have"
        )
    n_seeds, n_images = next(iter(shapes.values()))
    accuracy = {k: mean_std_ci(m.mean(axis=1), confidence) for k, m in mats.items()}
    # Ties in mean accuracy go to the alphabetically first name so the choice is reproducible.
    ranking = sorted(mats, key=lambda k: (-accuracy[k]["mean"], k))
    best = ranking[0]
    others = ranking[1:]
    out: dict[str, Any] = {
        "best": best, "winner": None, "decided": False, "reason": "",
        "alpha": alpha, "confidence": confidence, "power": power, "method": _METHOD,
        "n_models": len(mats), "n_seeds": int(n_seeds), "n_images": int(n_images),
        "accuracy": accuracy, "ranking": ranking, "comparisons": [],
        "significantly_worse": [], "indistinguishable_from_best": [],
    }
    if not others:
        out["reason"] = f"only one model ({best}); there is nothing to compare it with"
        return out
    power_alpha = alpha / len(others)
    comps = []
    for other in others:
        comp = paired_comparison(
            mats[best], mats[other], confidence=confidence, n_boot=n_boot, seed=seed,
            power_alpha=power_alpha, power=power,
        )
        comps.append({"model_a": best, "model_b": other, **comp})
    adjusted = holm({c["model_b"]: c["p_value"] for c in comps}, alpha)
    for comp in comps:
        h = adjusted[comp["model_b"]]
        comp["p_holm"] = h["adjusted_p"]
        # The best model has the highest mean, so a rejection here means "best is better".
        # With several seeds the image counts (b, c) and the mean difference could in principle
        # point different ways; only call it significant when both favour the best model.
        comp["significant"] = bool(h["reject"] and comp["diff"] > 0 and comp["pooled"]["b"] > comp["pooled"]["c"])
    out["comparisons"] = comps
    out["significantly_worse"] = [c["model_b"] for c in comps if c["significant"]]
    out["indistinguishable_from_best"] = [c["model_b"] for c in comps if not c["significant"]]
    if not out["indistinguishable_from_best"]:
        out["winner"] = best
        out["decided"] = True
        out["reason"] = (
            f"{best} is significantly better than all {len(others)} other model(s) "
            f"(largest Holm-adjusted p = {max(c['p_holm'] for c in comps):.3g} <= alpha = {alpha})"
        )
    else:
        tied = out["indistinguishable_from_best"]
        worst_p = max(c["p_holm"] for c in comps if not c["significant"])
        out["reason"] = (
            f"{best} has the highest mean accuracy but is not significantly better than "
            f"{', '.join(tied)} (Holm-adjusted p up to {worst_p:.3g} > alpha = {alpha})"
        )
    return out


def ablation_effects(
    runs: Mapping[str, Any],
    contrasts: Sequence[Mapping[str, str]],
    alpha: float = 0.05,
    *,
    gaps: Mapping[str, Sequence[float]] | None = None,
    model: str | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    power: float = 0.8,
) -> list[dict[str, Any]]:
    """Effect of each ablated choice (with - without) on test accuracy, Holm-corrected together.

    Args:
        runs: configuration name (e.g. "aug=none", "aug=crop+flip") -> per-seed correctness
            arrays on the same test images (as in compare_models).
        contrasts: One mapping per effect to measure: {"factor": "augmentation", "without":
            "aug=none", "with": "aug=crop+flip"}; names refer to keys of ``runs``.
        alpha: Family-wise significance level over all contrasts.
        gaps: Optional configuration name -> per-seed train-validation accuracy gap (fraction).
        model: Architecture name, copied into each result for the report.
        confidence: Interval level.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.
        power: Power the "needed" estimates plan for.

    Returns:
        One dict per contrast with ``model``, ``factor``, ``with``, ``without``, the
        paired_comparison fields (A = with, B = without, so ``diff`` > 0 means the choice
        helped), ``p_holm``, ``significant``, ``verdict`` ("helped", "hurt" or "no detectable
        effect"), ``alpha``, and ``gap_with`` / ``gap_without`` (mean gap, or None).
    """
    alpha = _check_probability(alpha, "alpha")
    if not contrasts:
        raise ConvbenchError("ablation_effects needs at least one contrast {'factor', 'without', 'with'}")
    results = []
    for i, con in enumerate(contrasts):
        missing = [k for k in ("factor", "without", "with") if k not in con]
        if missing:
            raise ConvbenchError(f"contrast {i} lacks {missing}; give factor, without and with")
        for key in ("without", "with"):
            if con[key] not in runs:
                raise ConvbenchError(
                    f"contrast {i} names configuration {con[key]!r}, which is not among the runs "
                    f"{sorted(runs)}; check the ablation config"
                )
        comp = paired_comparison(
            runs[con["with"]], runs[con["without"]], confidence=confidence, n_boot=n_boot,
            seed=seed, power_alpha=alpha / len(contrasts), power=power,
        )

        def _gap(name: str) -> float | None:
            if gaps is None or name not in gaps:
                return None
            return float(_finite_1d(gaps[name], f"gaps[{name!r}]").mean())

        results.append({
            "model": model, "factor": con["factor"], "with": con["with"], "without": con["without"],
            **comp, "gap_with": _gap(con["with"]), "gap_without": _gap(con["without"]), "alpha": alpha,
        })
    adjusted = holm([r["p_value"] for r in results], alpha)
    for r, h in zip(results, adjusted):
        r["p_holm"] = h["adjusted_p"]
        same_sign = (r["diff"] > 0) == (r["pooled"]["b"] > r["pooled"]["c"])
        r["significant"] = bool(h["reject"] and r["diff"] != 0 and same_sign)
        if not r["significant"]:
            r["verdict"] = "no detectable effect"
        else:
            r["verdict"] = "helped" if r["diff"] > 0 else "hurt"
    return results
