"""Evaluation of a trained model on the held-out test split.

Test accuracy, per-class precision/recall/F1, confusion matrix, parameters, FLOPs, batch-1
latency and batch-256 throughput on this machine. The test split is only ever used here, after
training and model selection are finished.

    python -c "import convbench.training.evaluation as e; help(e.score_model)"
"""

from __future__ import annotations

import time
import weakref

import numpy as np
from convbench.models.flops import count_flops


_INFERENCE_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def inference_fn(model):
    """One traced inference function per model, reused across calls (tracing costs seconds)."""
    import tensorflow as tf

    fn = _INFERENCE_FNS.get(model)
    if fn is None:
        fn = tf.function(lambda x: tf.cast(model(tf.cast(x, tf.float32), training=False), tf.float32), reduce_retracing=True,
                         autograph=False)
        _INFERENCE_FNS[model] = fn
    return fn


def predict_logits(model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Float32 logits for uint8 images, in inference mode."""
    fn = inference_fn(model)
    out = [fn(images[i : i + batch_size]).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.output.shape[-1]), np.float32)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, predictions), 1)
    return cm


def per_class_metrics(cm: np.ndarray) -> dict[str, list[float]]:
    """Precision, recall (= per-class accuracy) and F1 per class from a confusion matrix."""
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    actual = cm.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist()}


def measure_speed(model, input_shape, repeats: int = 30, batch: int = 256) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-`batch` inference throughput (images/s)."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    one = tf.random.uniform((1, *input_shape), 0, 255)
    many = tf.random.uniform((batch, *input_shape), 0, 255)
    fn(one)
    fn(many)  # trace both shapes before timing
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.asarray(fn(one))
        times.append(time.perf_counter() - t)
    runs = max(3, repeats // 10)
    t = time.perf_counter()
    for _ in range(runs):
        np.asarray(fn(many))
    elapsed = time.perf_counter() - t
    return {"latency_ms_batch1": float(np.median(times) * 1000), f"throughput_images_per_s_batch{batch}": float(runs * batch / elapsed)}


def score_model(model, x_test: np.ndarray, y_test: np.ndarray, class_names: list[str], batch_size: int = 512,
                   measure_latency: bool = True) -> tuple[dict, np.ndarray]:
    """Score a model on the test split.

    Args:
        model: trained Keras model.
        x_test: uint8 images.
        y_test: int labels.
        class_names: names in label order.
        batch_size: evaluation batch (no effect on results).
        measure_latency: also time batch-1 latency and batch-256 throughput.

    Returns:
        (metrics dict, test logits (N, K) float32)
    """

    logits = predict_logits(model, x_test, batch_size)
    pred = logits.argmax(axis=1)
    cm = confusion_matrix(y_test, pred, len(class_names))
    metrics = {
        "test_accuracy": float((pred == y_test).mean()),
        "test_images": int(len(y_test)),
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "flops_per_image": int(count_flops(model)),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class_metrics(cm),
    }
    if measure_latency:
        metrics.update(measure_speed(model, x_test.shape[1:]))
    return metrics, logits
