"""Report logic: conclusions in the Markdown sections follow the statistics.

Fixed synthetic per-image results go through convbench.analysis.stats and a JSON round trip (as via
results.json), then through the renderers.

Run: .venv/bin/pytest tests/test_report_sections.py -q
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from convbench.errors import ConvbenchError
from convbench.report.sections import (
    render_ablation_section,
    render_calibration_section,
    render_executive_summary,
    render_robustness_section,
    render_seed_table,
    render_significance_section,
)
from convbench.analysis.stats import ablation_effects, compare_models

N_IMAGES = 2000


def _roundtrip(obj):
    return json.loads(json.dumps(obj))


def _predictions(accuracies: dict[str, float], seeds: int, seed: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    easy = rng.random(N_IMAGES)
    return {
        name: [rng.random(N_IMAGES) < np.clip(acc + 0.15 * (easy - 0.5), 0, 1) for _ in range(seeds)]
        for name, acc in accuracies.items()
    }


@pytest.fixture(scope="module")
def decided():
    return _roundtrip(compare_models(_predictions({"resnet": 0.90, "vgg": 0.80, "tiny": 0.70}, 2, 0), n_boot=400))


@pytest.fixture(scope="module")
def undecided():
    return _roundtrip(compare_models(_predictions({"a_net": 0.80, "b_net": 0.80, "weak": 0.55}, 3, 1), n_boot=400))


COSTS = [
    {"model": "resnet", "params": 2.7e5, "train_flops": 3.0e14, "train_time_s": 600.0},
    {"model": "vgg", "params": 9.0e6, "train_flops": 1.2e14, "train_time_s": 300.0},
    {"model": "tiny", "params": 1.2e5, "train_flops": 2.0e13, "train_time_s": 100.0},
]


def test_significant_winner_is_named(decided):
    assert decided["winner"] == "resnet"
    text = render_executive_summary(decided, None, COSTS, budget="10 epochs each")
    assert text.startswith("## Executive summary")
    assert "**resnet wins**" in text and "No winner" not in text
    runner = decided["comparisons"][0]
    assert runner["model_b"] == "vgg"
    # Every number in the headline comes from the verdict.
    assert f"{100 * runner['diff']:.2f} points ahead of the runner-up vgg" in text
    assert f"{100 * runner['bootstrap']['ci_low']:+.2f} to {100 * runner['bootstrap']['ci_high']:+.2f}" in text
    assert "2.5× the training FLOPs of vgg" in text  # 3.0e14 / 1.2e14
    assert "10 epochs each" in text
    assert "| **resnet** |" in text
    sig = render_significance_section(decided)
    assert "**Verdict:** resnet is significantly better than every other model" in sig
    assert sig.count("| yes |") == 2


def test_non_significant_result_says_not_distinguishable(undecided):
    assert undecided["winner"] is None
    text = render_executive_summary(undecided)
    assert "not distinguishable at this budget" in text
    assert "wins" not in text
    best = undecided["best"]
    tied = [c for c in undecided["comparisons"] if not c["significant"]]
    assert len(tied) == 1
    assert f"{best} is significantly better than weak" in text
    seeds = tied[0]["seeds_needed"]["n"]
    assert seeds is not None and f"about {seeds} seeds per model" in text
    assert f"about {tied[0]['images_needed']['n']:,} test images per seed" in text
    sig = render_significance_section(undecided)
    assert "**Verdict:** no winner" in sig and "(n.s.)" in text


def test_one_seed_says_seed_spread_is_unknown():
    v = _roundtrip(compare_models(_predictions({"x": 0.80, "y": 0.795}, 1, 2), n_boot=200))
    text = render_executive_summary(v)
    assert "not distinguishable" in text
    assert "one seed" in text
    # No empty spread or CI columns with one seed (issue 16): one accuracy column that says so.
    header = next(line for line in text.splitlines() if line.startswith("| Model |"))
    assert "Test acc. (%), 1 seed" in header and "mean ± std" not in header and "95 % CI (%)" not in header
    assert "n/a" not in next(line for line in text.splitlines() if line.startswith("| **x**") or line.startswith("| x"))


def test_same_renderer_follows_the_numbers_not_the_names(decided):
    # Flip the decision in the stored result: the text must follow it.
    flipped = json.loads(json.dumps(decided))
    flipped["decided"], flipped["winner"] = False, None
    for c in flipped["comparisons"][:1]:
        c["significant"], c["p_holm"] = False, 0.2
    text = render_executive_summary(flipped)
    assert "No winner" in text and "Holm-adjusted p = 0.2" in text


@pytest.fixture(scope="module")
def ablation():
    runs = _predictions({"aug=none": 0.80, "aug=crop+flip": 0.72, "wd=off": 0.80, "wd=on": 0.86,
                         "ls=off": 0.80, "ls=on": 0.80}, 2, 3)
    contrasts = [{"factor": "augmentation", "without": "aug=none", "with": "aug=crop+flip"},
                 {"factor": "weight decay", "without": "wd=off", "with": "wd=on"},
                 {"factor": "label smoothing", "without": "ls=off", "with": "ls=on"}]
    gaps = {"aug=none": [0.20, 0.22], "aug=crop+flip": [0.05, 0.07]}
    return _roundtrip(ablation_effects(runs, contrasts, gaps=gaps, model="resnet", n_boot=300))


def test_ablation_says_augmentation_hurt(ablation):
    text = render_ablation_section(ablation)
    aug = ablation[0]
    assert aug["verdict"] == "hurt"
    assert "**Augmentation hurt** on resnet (aug=none → aug=crop+flip)" in text
    assert f"fell by {-100 * aug['diff']:.2f} points" in text
    assert "gap went from 21.00 to 6.00 points" in text
    assert "**Weight decay helped**" in text
    assert "Label smoothing on resnet (ls=off → ls=on): no detectable effect" in text
    assert re.search(r"Hurt: augmentation", text)


def test_seed_table_handles_one_and_many_seeds():
    text = render_seed_table({"small": [0.70], "big": [0.81, 0.83, 0.82]})
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| big | 3 | 82.00 ± 1.00 |")  # sorted by mean
    assert "n/a (1 seed)" in lines[2]
    with pytest.raises(ConvbenchError):
        render_seed_table({})


def test_calibration_section_states_what_scaling_did():
    rows = [{"model": "a", "ece_before": 0.08, "ece_after": 0.02, "temperature": 1.6},
            {"model": "b", "ece_before": [0.01, 0.02], "ece_after": [0.02, 0.03], "temperature": [0.9, 0.8]}]
    text = render_calibration_section(rows, figures={"a": "figures/a.png"})
    assert "lowered ECE for 1 of 2 model(s) (a)" in text
    assert "raised ECE for b" in text
    assert "T > 1 (overconfident before scaling): a." in text
    assert "T < 1 (underconfident before scaling): b." in text
    assert "| b | 1.50 | 2.50 | +1.00 | 0.850 |" in text
    assert "![Reliability diagram of a](figures/a.png)" in text
    with pytest.raises(ConvbenchError):
        render_calibration_section([{"model": "a"}])


def test_robustness_section_computes_mca_and_relative_robustness():
    acc_a = {"gaussian_noise": {"1": 0.75, "2": 0.7, "3": 0.65, "4": 0.6, "5": 0.55}, "fog": [0.7] * 5}
    acc_b = {"gaussian_noise": [0.5] * 5, "fog": [0.8] * 5}
    text = render_robustness_section([
        {"model": "a", "clean_accuracy": 0.85, "tta_accuracy": 0.86, "accuracy_by_corruption": acc_a},
        {"model": "b", "clean_accuracy": 0.80, "accuracy_by_corruption": acc_b},
    ])
    assert "| a | 85.00 | 86.00 | +1.00 | 67.50 | 0.794 |" in text
    assert "| b | 80.00 | n/a | n/a | 65.00 | 0.812 |" in text
    assert "Highest mCA: a (67.50 %)" in text
    assert "Keeps the largest share of its clean accuracy: b" in text
    assert "Hardest corruption on average: gaussian_noise" in text
    assert "not significance-tested" in text


def test_robustness_columns_name_their_images_and_tta_gain_compares_the_whole_test_set():
    """Issue 16: corruptions use a subset and flip TTA the whole test set; every column says which,
    and the TTA gain is TTA minus the whole-set accuracy, never minus the subset's."""
    acc = {"fog": [0.7] * 5}
    text = render_robustness_section(
        [{"model": "a", "clean_accuracy": 0.85, "test_accuracy": 0.80, "tta_accuracy": 0.81, "accuracy_by_corruption": acc}],
        subset_images=1000, test_images=10000)
    header = next(line for line in text.splitlines() if line.startswith("| Model |"))
    assert ("Clean acc. (%), 1,000 images | mCA (%), 1,000 images | Relative robustness | Test acc. (%), all 10,000 | "
            "Flip-TTA acc. (%), all 10,000 | TTA gain (points)") in header
    assert "| a | 85.00 | 70.00 | 0.824 | 80.00 | 81.00 | +1.00 |" in text
    assert "mean over severities, 1,000 images" in text and "Flip TTA changed test accuracy by +1.00 points" in text


def test_renderers_reject_malformed_results():
    with pytest.raises(ConvbenchError):
        render_executive_summary({"best": "x"})
    with pytest.raises(ConvbenchError):
        render_ablation_section([{"factor": "augmentation"}])
    with pytest.raises(ConvbenchError):
        render_robustness_section([])
