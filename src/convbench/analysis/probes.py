"""Beyond test accuracy, the numbers: test-time probes and significance (no figures, no Markdown).

- `measure_extras(model, data, config)` runs right after a model is evaluated (it needs the model):
  flip-TTA accuracy, accuracy under CIFAR-10-C-style corruptions generated here, the most confident
  mistakes and input-gradient saliency maps for a fixed set of test images. Arrays go into the run's
  predictions file, numbers into its results entry.
- `significance(preds, alpha)` compares the models on saved predictions; `report.analysis_sections`
  turns it, with calibration, robustness and budgets, into the report's sections and figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convbench import rundir
from convbench.analysis.stats import compare_models
from convbench.config import AnalysisConfig
from convbench.data.corruptions import corrupt, DEFAULT_CORRUPTIONS
from convbench.data.datasets import stratified_subset
from convbench.i18n import _, fmt, number
from convbench.training.evaluation import predict_logits


# ---------------------------------------------------------------------------------------------
# In-run measurements (need the trained model)


def fixed_indices(labels: np.ndarray, n: int, seed: int = 1234) -> np.ndarray:
    """The same stratified test images for every model of a run."""

    n = min(n, len(labels))
    return stratified_subset(labels, n, np.random.default_rng(seed)) if n else np.zeros(0, dtype=np.int64)


def corrupted_sets(images: np.ndarray, severities: int) -> dict[tuple[str, int], np.ndarray]:
    """Every default corruption at severities 1..N of `images` (deterministic: seed 0)."""

    return {(c, s): corrupt(images, c, s, seed=0) for c in DEFAULT_CORRUPTIONS for s in range(1, severities + 1)}


def saliency_maps(model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """|d logit_true / d input|, max over colour channels, normalised per image to [0, 1]."""
    import tensorflow as tf

    x = tf.convert_to_tensor(images.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model(x, training=False), tf.float32)
        picked = tf.reduce_sum(logits * tf.one_hot(labels, logits.shape[-1]))
    grads = tf.reduce_max(tf.abs(tape.gradient(picked, x)), axis=-1).numpy()
    return grads / np.maximum(grads.reshape(len(grads), -1).max(axis=1)[:, None, None], 1e-12)


def measure_extras(model, data, analysis: AnalysisConfig, test_logits: np.ndarray, batch_size: int = 512,
                   corrupted: dict | None = None) -> tuple[dict, dict]:
    """Robustness, TTA, confident mistakes and saliency of one trained model.

    Args:
        model: the trained model (best weights).
        data: the Dataset.
        analysis: what to measure.
        test_logits: the model's logits on data.x_test.
        batch_size: inference batch.
        corrupted: precomputed `corrupted_sets` of the robustness images (shared across models).

    Returns:
        (JSON-ready numbers for the results entry, arrays to store in the predictions file)
    """

    numbers: dict = {}
    arrays: dict = {}
    if analysis.tta_flip:
        flipped = predict_logits(model, data.x_test[:, :, ::-1], batch_size)
        numbers["tta_accuracy"] = float(((test_logits + flipped).argmax(1) == data.y_test).mean())
    if analysis.robustness_images:
        idx = fixed_indices(data.y_test, analysis.robustness_images)
        if corrupted is None:
            corrupted = corrupted_sets(data.x_test[idx], analysis.corruption_severities)
        labels = data.y_test[idx]
        by = {}
        for (c, s), images in corrupted.items():
            by.setdefault(c, {})[str(s)] = float((predict_logits(model, images, batch_size).argmax(1) == labels).mean())
        numbers["robustness"] = {
            "images": int(len(idx)),
            "clean_accuracy": float((test_logits[idx].argmax(1) == labels).mean()),
            "accuracy_by_corruption": by,
        }
    if analysis.mistakes:
        pred = test_logits.argmax(1)
        conf = _softmax(test_logits).max(1)
        wrong = np.flatnonzero(pred != data.y_test)
        top = wrong[np.argsort(-conf[wrong])][: analysis.mistakes]
        arrays.update(mistake_images=data.x_test[top], mistake_true=data.y_test[top], mistake_pred=pred[top],
                      mistake_confidence=conf[top])
    if analysis.saliency_images:
        idx = fixed_indices(data.y_test, analysis.saliency_images, seed=99)
        arrays.update(saliency_images=data.x_test[idx], saliency_labels=data.y_test[idx],
                      saliency=saliency_maps(model, data.x_test[idx], data.y_test[idx]).astype(np.float16))
    return numbers, arrays


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Report-time analysis (saved files only)


def _load_predictions(run_dir: Path, results: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in results["runs"]:
        path = run_dir / r.get("predictions", rundir.predictions_file(r["name"], r["seed"]))
        if not path.exists():
            continue
        with np.load(path, allow_pickle=False) as z:
            out.setdefault(r["name"], []).append({k: z[k] for k in z.files})
    return out


def significance(preds: dict[str, list[dict]], alpha: float) -> dict | None:
    """compare_models over the models whose seeds all predicted the same test images."""

    if len(preds) < 2:
        return None
    seeds = min(len(v) for v in preds.values())
    correct = {name: [p["test_logits"].argmax(1) == p["test_labels"] for p in runs[:seeds]] for name, runs in preds.items()}
    return compare_models(correct, alpha=alpha)


