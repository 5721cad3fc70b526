"""L4a analysis: numbers only (statistics, calibration, robustness/TTA/saliency measurements); no
matplotlib, no Markdown."""
