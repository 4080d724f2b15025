"""Judging a model: metrics, multi-label evaluation, Grad-CAM, comparisons, figures, the HTML report."""
