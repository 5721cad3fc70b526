"""Known-answer tests for convbench.analysis.stats (seed intervals, McNemar, Holm, bootstrap, power, verdicts).

Run: .venv/bin/pytest tests/test_stats.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from convbench.errors import ConvbenchError
from convbench.analysis.stats import (
    ablation_effects,
    bootstrap_diff_ci,
    compare_models,
    holm,
    images_needed,
    mcnemar_by_image,
    mcnemar_exact,
    mean_std_ci,
    seeds_needed,
)


def _pairs(b: int, c: int, both_right: int = 5, both_wrong: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Hand-made prediction pairs with exactly b (A right, B wrong) and c (A wrong, B right)."""
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    bb = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(bb)


# ----------------------------------------------------------------------------- mean_std_ci


def test_mean_std_ci_matches_t_interval():
    r = mean_std_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert r["mean"] == pytest.approx(3.0)
    assert r["std"] == pytest.approx(math.sqrt(2.5))
    lo, hi = sps.t.interval(0.95, 4, loc=3.0, scale=math.sqrt(2.5) / math.sqrt(5))
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert r["n"] == 5
    # Half-width by hand: t_{0.975, 4} = 2.7764
    assert r["ci_high"] - 3.0 == pytest.approx(2.7764 * math.sqrt(2.5) / math.sqrt(5), abs=1e-3)


def test_mean_std_ci_single_seed_has_no_interval():
    r = mean_std_ci([0.91])
    assert r["mean"] == pytest.approx(0.91)
    assert r["std"] is None and r["ci_low"] is None and r["ci_high"] is None
    assert "2 seeds" in r["note"]


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], "abc"])
def test_mean_std_ci_rejects_bad_input(bad):
    with pytest.raises(ConvbenchError):
        mean_std_ci(bad)


# ----------------------------------------------------------------------------- McNemar


def test_mcnemar_all_discordant_one_way():
    a, b = _pairs(10, 0)
    r = mcnemar_exact(a, b)
    assert (r["b"], r["c"], r["n"]) == (10, 0, 10)
    assert r["p_value"] == pytest.approx(2 * 0.5**10)
    assert r["n_images"] == 20
    assert r["accuracy_a"] == pytest.approx(15 / 20) and r["accuracy_b"] == pytest.approx(5 / 20)


def test_mcnemar_hand_computed_small_case():
    # b=3, c=1: p = 2 * P(X <= 1 | n=4, 1/2) = 2 * (1 + 4) / 16 = 0.625
    r = mcnemar_exact(*_pairs(3, 1))
    assert r["p_value"] == pytest.approx(0.625)


def test_mcnemar_balanced_and_no_discordance_give_one():
    assert mcnemar_exact(*_pairs(7, 7))["p_value"] == pytest.approx(1.0)
    assert mcnemar_exact(*_pairs(0, 0))["p_value"] == 1.0


@pytest.mark.parametrize("b,c", [(0, 5), (12, 3), (40, 25), (101, 80), (2, 30)])
def test_mcnemar_agrees_with_scipy_binomtest(b, c):
    r = mcnemar_exact(*_pairs(b, c))
    assert r["p_value"] == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)
    # Symmetric in the roles of A and B.
    assert mcnemar_exact(*_pairs(b, c)[::-1])["p_value"] == pytest.approx(r["p_value"])


def test_mcnemar_accepts_zero_one_and_rejects_other_values():
    a, b = _pairs(4, 1)
    assert mcnemar_exact(a.astype(int), b.astype(int))["b"] == 4
    with pytest.raises(ConvbenchError):
        mcnemar_exact(np.array([0, 2, 1]), np.array([1, 1, 0]))
    with pytest.raises(ConvbenchError):
        mcnemar_exact(a, b[:-1])


def test_mcnemar_by_image_equals_mcnemar_for_one_seed():
    a, b = _pairs(9, 2)
    assert mcnemar_by_image([a], [b])["p_value"] == pytest.approx(mcnemar_exact(a, b)["p_value"])


def test_mcnemar_by_image_counts_images_not_seed_pairs():
    # Image 0: A right in both seeds, B in none (+2); image 1: A right in seed 0, B in seed 1 (tie);
    # image 2: B right in one seed only (-1); image 3: both right everywhere (tie).
    a = np.array([[1, 1, 0, 1], [1, 0, 0, 1]], dtype=bool)
    b = np.array([[0, 0, 1, 1], [0, 1, 0, 1]], dtype=bool)
    r = mcnemar_by_image(a, b)
    assert (r["b"], r["c"], r["n_images"], r["n_seeds"]) == (1, 1, 4, 2)
    assert r["p_value"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- Holm


def test_holm_textbook_example():
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06,
    # 0.04*1=0.04 -> raised to 0.06 by monotonicity. At alpha 0.05 the first two are rejected.
    out = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert [r["adjusted_p"] for r in out] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [r["reject"] for r in out] == [True, False, False, True]
    assert [r["p_value"] for r in out] == pytest.approx([0.01, 0.04, 0.03, 0.005])


def test_holm_mapping_and_cap_at_one():
    out = holm({"vgg": 0.2, "resnet": 0.6, "mobilenet": 0.001}, alpha=0.05)
    assert out["mobilenet"]["adjusted_p"] == pytest.approx(0.003) and out["mobilenet"]["reject"]
    assert out["vgg"]["adjusted_p"] == pytest.approx(0.4) and not out["vgg"]["reject"]
    assert out["resnet"]["adjusted_p"] == pytest.approx(0.6)
    assert holm([0.9, 0.8])[0]["adjusted_p"] == 1.0  # 0.8 * 2 capped, then carried up
    assert holm([]) == [] and holm({}) == {}


def test_holm_adjusted_values_are_monotone_and_at_least_raw():
    rng = np.random.default_rng(3)
    for _ in range(50):
        ps = rng.random(rng.integers(1, 12)) ** 3
        out = holm(list(ps))
        adj = np.array([r["adjusted_p"] for r in out])
        order = np.argsort(ps, kind="stable")
        assert np.all(np.diff(adj[order]) >= -1e-15)
        assert np.all(adj >= ps - 1e-15) and np.all(adj <= 1.0)
        # Step-down rule by hand: reject the sorted prefix with p_(k) <= alpha / (m - k).
        m = len(ps)
        expected = np.zeros(m, bool)
        for k, i in enumerate(order):
            if ps[i] > 0.05 / (m - k):
                break
            expected[i] = True
        assert [r["reject"] for r in out] == list(expected)


def test_holm_rejects_bad_p_value():
    with pytest.raises(ConvbenchError):
        holm([0.5, 1.5])


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_matches_index_resampling_and_is_reproducible():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.8
    b = rng.random(400) < 0.7
    r = bootstrap_diff_ci(a, b, n_boot=4000, seed=1)
    assert r == bootstrap_diff_ci(a, b, n_boot=4000, seed=1)
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    assert r["ci_low"] < r["diff"] < r["ci_high"]
    # The same interval by the textbook method: resample image indices.
    idx = np.random.default_rng(2).integers(0, 400, size=(4000, 400))
    naive = (a[idx].mean(axis=1) - b[idx].mean(axis=1))
    lo, hi = np.quantile(naive, [0.025, 0.975])
    assert r["ci_low"] == pytest.approx(lo, abs=0.01)
    assert r["ci_high"] == pytest.approx(hi, abs=0.01)


def test_bootstrap_keeps_seeds_of_an_image_together():
    rng = np.random.default_rng(5)
    a = rng.random((3, 500)) < 0.75
    b = rng.random((3, 500)) < 0.75
    r = bootstrap_diff_ci(list(a), list(b), n_boot=500, seed=0)
    assert r["n_seeds"] == 3 and r["n_images"] == 500
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    with pytest.raises(ConvbenchError):
        bootstrap_diff_ci(a, b[:2])


# ----------------------------------------------------------------------------- power


def test_seeds_needed_is_the_smallest_n_with_enough_power():
    diffs = [0.004, 0.010, 0.001, 0.007]  # mean 0.0055, sd about 0.0039
    r = seeds_needed(diffs, alpha=0.05, power=0.8)
    n = r["n"]
    es = abs(np.mean(diffs)) / np.std(diffs, ddof=1)

    def power(k: int) -> float:
        tc = sps.t.ppf(0.975, k - 1)
        return sps.nct.sf(tc, k - 1, es * math.sqrt(k)) + sps.nct.cdf(-tc, k - 1, es * math.sqrt(k))

    assert power(n) >= 0.8 > power(n - 1)
    # Close to the normal-approximation answer ((z_a + z_b) / es)^2 plus a small t correction.
    assert ((1.96 + 0.8416) / es) ** 2 <= n <= ((1.96 + 0.8416) / es) ** 2 + 4


def test_seeds_needed_explains_when_it_cannot_answer():
    one = seeds_needed([0.01])
    assert one["n"] is None and "one seed" in one["reason"]
    zero = seeds_needed([0.01, -0.01])
    assert zero["n"] is None and "zero" in zero["reason"]


def test_images_needed_formula_and_simulated_power():
    r = images_needed(60, 40, 1000, alpha=0.05, power=0.8)
    # psi = 0.1, delta = 0.02: (1.95996*sqrt(0.1) + 0.84162*sqrt(0.0996))^2 / 0.0004 = 1959.9
    assert r["n"] == 1960
    # Simulate McNemar's exact test at that size: its power should be close to 80 %.
    rng = np.random.default_rng(0)
    counts = rng.multinomial(r["n"], [0.06, 0.04, 0.90], size=2000)
    b, c = counts[:, 0], counts[:, 1]
    p = np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(b, c), b + c, 0.5))
    assert 0.74 <= np.mean(p <= 0.05) <= 0.86
    assert images_needed(5, 5, 100)["n"] is None


# ----------------------------------------------------------------------------- compare_models


def _model(rng: np.random.Generator, acc: float, seeds: int, n: int, easy: np.ndarray) -> list[np.ndarray]:
    """Per-seed correctness; `easy` images are right more often, as for real models."""
    p = np.clip(acc + 0.15 * (easy - 0.5), 0, 1)
    return [rng.random(n) < p for _ in range(seeds)]


def test_compare_models_names_a_clear_winner():
    rng = np.random.default_rng(0)
    n = 2000
    easy = rng.random(n)
    preds = {"resnet": _model(rng, 0.90, 2, n, easy), "vgg": _model(rng, 0.80, 2, n, easy),
             "tiny": _model(rng, 0.70, 2, n, easy)}
    v = compare_models(preds, alpha=0.05, n_boot=500)
    assert v["best"] == "resnet" and v["winner"] == "resnet" and v["decided"]
    assert v["ranking"] == ["resnet", "vgg", "tiny"]
    assert [c["model_b"] for c in v["comparisons"]] == ["vgg", "tiny"]
    for c in v["comparisons"]:
        assert c["significant"] and c["p_holm"] >= c["p_value"]
        assert c["bootstrap"]["ci_low"] > 0
        assert len(c["per_seed"]) == 2
    assert v["n_seeds"] == 2 and v["n_images"] == n
    assert v["accuracy"]["resnet"]["mean"] == pytest.approx(np.mean([s.mean() for s in preds["resnet"]]))


def test_compare_models_refuses_a_winner_when_the_difference_is_noise():
    rng = np.random.default_rng(1)
    n = 1000
    easy = rng.random(n)
    preds = {"a": _model(rng, 0.80, 3, n, easy), "b": _model(rng, 0.80, 3, n, easy),
             "weak": _model(rng, 0.55, 3, n, easy)}
    v = compare_models(preds, alpha=0.05, n_boot=500)
    assert v["winner"] is None and not v["decided"]
    assert v["significantly_worse"] == ["weak"]
    (tied,) = [c for c in v["comparisons"] if not c["significant"]]
    assert tied["bootstrap"]["ci_low"] < 0 < tied["bootstrap"]["ci_high"]
    assert "not significantly better" in v["reason"]
    assert tied["images_needed"]["alpha"] == pytest.approx(0.025)  # alpha / 2 comparisons


def test_compare_models_input_errors_and_single_model():
    a = [np.ones(10, bool)]
    with pytest.raises(ConvbenchError):
        compare_models({"a": a, "b": [np.ones(9, bool)]})
    with pytest.raises(ConvbenchError):
        compare_models({"a": a, "b": a * 2})
    with pytest.raises(ConvbenchError):
        compare_models({})
    v = compare_models({"only": a})
    assert v["winner"] is None and not v["decided"] and "only one model" in v["reason"]


def test_ablation_effects_says_hurt_helped_and_none():
    rng = np.random.default_rng(2)
    n = 3000
    easy = rng.random(n)
    runs = {"aug=none": _model(rng, 0.80, 2, n, easy), "aug=full": _model(rng, 0.72, 2, n, easy),
            "wd=off": _model(rng, 0.80, 2, n, easy), "wd=on": _model(rng, 0.86, 2, n, easy),
            "ls=off": _model(rng, 0.80, 2, n, easy), "ls=on": _model(rng, 0.80, 2, n, easy)}
    out = ablation_effects(
        runs,
        [{"factor": "augmentation", "without": "aug=none", "with": "aug=full"},
         {"factor": "weight decay", "without": "wd=off", "with": "wd=on"},
         {"factor": "label smoothing", "without": "ls=off", "with": "ls=on"}],
        gaps={"aug=none": [0.20, 0.22], "aug=full": [0.05, 0.07]}, model="resnet", n_boot=300,
    )
    assert [r["verdict"] for r in out] == ["hurt", "helped", "no detectable effect"]
    assert out[0]["diff"] < 0 and out[0]["gap_with"] == pytest.approx(0.06)
    assert out[1]["gap_with"] is None
    with pytest.raises(ConvbenchError):
        ablation_effects(runs, [{"factor": "x", "without": "missing", "with": "aug=full"}])
