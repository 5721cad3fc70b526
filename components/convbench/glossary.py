"""The report's glossary: a plain explanation of each technical term a REPORT.md actually uses.

    .venv/bin/pytest tests/test_report.py -k glossary

`glossary_markdown(text)` looks for each term's spellings in the rendered report and explains only
those that occur, in the order of this list (statistics first, then training, then measurements).
"""

from __future__ import annotations

import re

# (term as the glossary shows it, regex of the spellings that trigger it, one or two plain sentences)
TERMS: tuple[tuple[str, str, str], ...] = (
    ("p-value, α", r"\bp = |Holm p|\bp\b vs|α",
     "The probability of a difference at least this large if the two models were in truth equally accurate. "
     "A difference counts as significant when p is below α, the threshold the report states (analysis.alpha)."),
    ("Holm correction", r"\bHolm\b",
     "Comparing the best model with several others gives several chances of a false alarm; Holm's method "
     "raises each p-value so that the chance of any false alarm stays below α."),
    ("McNemar test (b, c)", r"McNemar",
     "A test on the same test images for both models: it looks only at the images one model gets right "
     "and the other wrong (b one way, c the other). If b and c are close, the models are not distinguishable."),
    ("confidence interval (CI)", r"\bCI\b|confidence interval",
     "A range that holds the true value in 95 % of repeated experiments. A difference whose interval "
     "excludes 0 is unlikely to be chance."),
    ("paired bootstrap", r"bootstrap",
     "Resampling the test images with replacement many times, scoring both models on each resample: "
     "the spread of the differences gives the confidence interval without assuming a distribution."),
    ("seed", r"\bseeds?\b",
     "The number that fixes a training's random choices (initial weights, data order, augmentation). "
     "Several seeds show how much a result moves by chance alone."),
    ("validation split", r"validation",
     "Training images held back to choose the best epoch and to stop early; the test images are used "
     "only once, at the end, so the test accuracy is not tuned to them."),
    ("FLOPs, MACs", r"FLOPs|\bMACs?\b",
     "Floating-point operations: the arithmetic a network does per image (one multiply-add, a MAC, is 2 FLOPs). "
     "A measure of cost that does not depend on the machine."),
    ("augmentation", r"augment",
     "Random changes to training images (crops, flips, cut-out patches, mixing images) so that the network "
     "learns what an object looks like rather than memorising the exact pixels."),
    ("label smoothing", r"label smoothing",
     "Training towards 90 % (say) on the right class instead of 100 %: it keeps the network from becoming "
     "over-confident."),
    ("weight decay", r"weight decay",
     "A pull of every weight towards zero at each step, which keeps the network simple and reduces overfitting."),
    ("dropout", r"dropout",
     "Switching off a random fraction of a layer's units at each training step, so that no unit can be relied "
     "on alone; off at test time."),
    ("early stopping", r"early stop",
     "Stopping a training when the validation loss has not improved for a set number of epochs."),
    ("learning-rate schedule (onecycle, cosine)", r"onecycle|one-cycle|cosine",
     "How the step size changes over training: onecycle rises to a peak and falls back to zero; cosine falls "
     "along a half cosine. A falling learning rate makes validation accuracy rise late in training by itself."),
    ("overfitting, underfitting", r"overfit|underfit",
     "Overfitting: training accuracy well above validation accuracy, the model memorises. Underfitting: both "
     "low, the model or its training is too weak to learn the task."),
    ("transfer learning (frozen, fine-tune)", r"fine-tun|frozen",
     "Starting from a network trained on ImageNet: first its layers are frozen and only a new head is trained "
     "on their features, then the top blocks are fine-tuned (trained on) at a small learning rate."),
    ("GAP head", r"\bGAP\b|gap_",
     "Global average pooling: each feature map is averaged to one number before the final classifier."),
    ("mixed precision (bf16, fp16)", r"bfloat16|\bbf16\b|float16|\bfp16\b",
     "Computing in 16-bit numbers where that is safe and faster, keeping 32-bit where accuracy needs it."),
    ("logits", r"logit",
     "A network's raw scores per class before they are turned into probabilities."),
    ("calibration, ECE", r"\bECE\b|calibrat",
     "A model is calibrated when its confidence matches how often it is right (80 % confident, right 80 % of "
     "the time). The expected calibration error (ECE) is the average gap between the two."),
    ("NLL", r"\bNLL\b",
     "Negative log-likelihood: the average penalty for the probability given to the right class; lower is better, "
     "and it punishes confident mistakes hard."),
    ("temperature scaling", r"emperature",
     "Dividing the logits by one number fitted on the validation images, which fixes over- or under-confidence "
     "without changing any prediction."),
    ("reliability diagram", r"reliability",
     "A plot of accuracy against confidence, bin by bin; a calibrated model lies on the diagonal."),
    ("robustness, mCA, relative robustness", r"\bmCA\b|robustness",
     "Accuracy on test images with noise, blur, fog, JPEG and other corruptions added at 5 severities. "
     "mCA is the mean over all of them; relative robustness is mCA divided by the clean accuracy."),
    ("test-time augmentation (TTA)", r"\bTTA\b|test-time augmentation",
     "Predicting each test image and its mirror image and averaging the two; it often adds accuracy at twice "
     "the inference cost."),
    ("saliency", r"saliency",
     "How much each pixel changes the score of the true class: bright areas are what the network looked at."),
)


def glossary_markdown(report_text: str) -> str:
    """The "## Glossary" section for the terms `report_text` uses ("" when it uses none).

    Args:
        report_text: the report's Markdown without its glossary.

    Returns:
        Markdown text.
    """
    used = [(term, text) for term, pattern, text in TERMS if re.search(pattern, report_text)]
    if not used:
        return ""
    return "\n".join(["## Glossary", "", *(f"- **{term}**: {text}" for term, text in used)]) + "\n"
