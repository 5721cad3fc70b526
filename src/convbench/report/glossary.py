"""The report's glossary: a plain explanation of each technical term a REPORT.md actually uses.

    .venv/bin/pytest tests/test_report.py -k glossary

`glossary_markdown(text)` looks for each term's spellings in the rendered report and explains only
those that occur, in the order of this list (statistics first, then training, then measurements).
"""

from __future__ import annotations

import re

from convbench.i18n import _, N_

# (term as the glossary shows it, regex of the spellings that trigger it, one or two plain sentences),
# in English; each is translated where it is used, the regex too (it must match the report's wording
# in that language).
TERMS: tuple[tuple[str, str, str], ...] = (
    (N_("p-value, α"), N_(r"\bp = |Holm p|\bp\b vs|α"),
     N_("The probability of a difference at least this large if the two models were in truth equally accurate. "
        "A difference counts as significant when p is below α, the threshold the report states (analysis.alpha).")),
    (N_("Holm correction"), N_(r"\bHolm\b"),
     N_("Comparing the best model with several others gives several chances of a false alarm; Holm's method "
        "raises each p-value so that the chance of any false alarm stays below α.")),
    (N_("McNemar test (b, c)"), N_(r"McNemar"),
     N_("A test on the same test images for both models: it looks only at the images one model gets right "
        "and the other wrong (b one way, c the other). If b and c are close, the models are not distinguishable.")),
    (N_("confidence interval (CI)"), N_(r"\bCI\b|confidence interval"),
     N_("A range that holds the true value in 95 % of repeated experiments. A difference whose interval "
        "excludes 0 is unlikely to be chance.")),
    (N_("paired bootstrap"), N_(r"bootstrap"),
     N_("Resampling the test images with replacement many times, scoring both models on each resample: "
        "the spread of the differences gives the confidence interval without assuming a distribution.")),
    (N_("seed"), N_(r"\bseeds?\b"),
     N_("The number that fixes a training's random choices (initial weights, data order, augmentation). "
        "Several seeds show how much a result moves by chance alone.")),
    (N_("validation split"), N_(r"validation"),
     N_("Training images held back to choose the best epoch and to stop early; the test images are used "
        "only once, at the end, so the test accuracy is not tuned to them.")),
    (N_("FLOPs, MACs"), N_(r"FLOPs|\bMACs?\b"),
     N_("Floating-point operations: the arithmetic a network does per image (one multiply-add, a MAC, is 2 FLOPs). "
        "A measure of cost that does not depend on the machine.")),
    (N_("augmentation"), N_(r"augment"),
     N_("Random changes to training images (crops, flips, cut-out patches, mixing images) so that the network "
        "learns what an object looks like rather than memorising the exact pixels.")),
    (N_("label smoothing"), N_(r"label smoothing"),
     N_("Training towards 90 % (say) on the right class instead of 100 %: it keeps the network from becoming "
        "over-confident.")),
    (N_("weight decay"), N_(r"weight decay"),
     N_("A pull of every weight towards zero at each step, which keeps the network simple and reduces overfitting.")),
    (N_("dropout"), N_(r"dropout"),
     N_("Switching off a random fraction of a layer's units at each training step, so that no unit can be relied "
        "on alone; off at test time.")),
    (N_("early stopping"), N_(r"early stop"),
     N_("Stopping a training when the validation loss has not improved for a set number of epochs.")),
    (N_("learning-rate schedule (onecycle, cosine)"), N_(r"onecycle|one-cycle|cosine"),
     N_("How the step size changes over training: onecycle rises to a peak and falls back to zero; cosine falls "
        "along a half cosine. A falling learning rate makes validation accuracy rise late in training by itself.")),
    (N_("overfitting, underfitting"), N_(r"overfit|underfit"),
     N_("Overfitting: training accuracy well above validation accuracy, the model memorises. Underfitting: both "
        "low, the model or its training is too weak to learn the task.")),
    (N_("transfer learning (frozen, fine-tune)"), N_(r"fine-tun|frozen"),
     N_("Starting from a network trained on ImageNet: first its layers are frozen and only a new head is trained "
        "on their features, then the top blocks are fine-tuned (trained on) at a small learning rate.")),
    (N_("GAP head"), N_(r"\bGAP\b|gap_"),
     N_("Global average pooling: each feature map is averaged to one number before the final classifier.")),
    (N_("mixed precision (bf16, fp16)"), N_(r"bfloat16|\bbf16\b|float16|\bfp16\b"),
     N_("Computing in 16-bit numbers where that is safe and faster, keeping 32-bit where accuracy needs it.")),
    (N_("logits"), N_(r"logit"),
     N_("A network's raw scores per class before they are turned into probabilities.")),
    (N_("calibration, ECE"), N_(r"\bECE\b|calibrat"),
     N_("A model is calibrated when its confidence matches how often it is right (80 % confident, right 80 % of "
        "the time). The expected calibration error (ECE) is the average gap between the two.")),
    (N_("NLL"), N_(r"\bNLL\b"),
     N_("Negative log-likelihood: the average penalty for the probability given to the right class; lower is better, "
        "and it punishes confident mistakes hard.")),
    (N_("temperature scaling"), N_(r"emperature"),
     N_("Dividing the logits by one number fitted on the validation images, which fixes over- or under-confidence "
        "without changing any prediction.")),
    (N_("reliability diagram"), N_(r"reliability"),
     N_("A plot of accuracy against confidence, bin by bin; a calibrated model lies on the diagonal.")),
    (N_("robustness, mCA, relative robustness"), N_(r"\bmCA\b|robustness"),
     N_("Accuracy on test images with noise, blur, fog, JPEG and other corruptions added at 5 severities. "
        "mCA is the mean over all of them; relative robustness is mCA divided by the clean accuracy.")),
    (N_("test-time augmentation (TTA)"), N_(r"\bTTA\b|test-time augmentation"),
     N_("Predicting each test image and its mirror image and averaging the two; it often adds accuracy at twice "
        "the inference cost.")),
    (N_("saliency"), N_(r"saliency"),
     N_("How much each pixel changes the score of the true class: bright areas are what the network looked at.")),
)


def used_terms(report_text: str) -> list[int]:
    """Indices into TERMS of the terms `report_text` uses, by their spellings in the active language."""
    return [i for i, (_term, pattern, _text) in enumerate(TERMS) if re.search(_(pattern), report_text)]


def glossary_markdown(report_text: str) -> str:
    """The "## Glossary" section for the terms `report_text` uses ("" when it uses none), in the active language.

    Args:
        report_text: the report's Markdown without its glossary.

    Returns:
        Markdown text.
    """
    used = used_terms(report_text)
    if not used:
        return ""
    return "\n".join(["## " + _("Glossary"), "", *(f"- **{_(TERMS[i][0])}**: {_(TERMS[i][2])}" for i in used)]) + "\n"
