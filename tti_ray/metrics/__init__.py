"""Interpretability and language-model metrics (pure functions; formulas in the docstrings)."""

from tti_ray.metrics.core import (
    activation_frequency,
    always_on_fraction,
    dead_fraction,
    entropy_of_mass,
    mean_abs_cosine,
    normalized_polysemanticity,
    participation_ratio,
    perplexity,
    polysemanticity,
    sparsity,
    token_mass,
)
from tti_ray.metrics.stats import METRICS, ActivationStats, site_metrics

__all__ = [
    "METRICS",
    "ActivationStats",
    "activation_frequency",
    "always_on_fraction",
    "dead_fraction",
    "entropy_of_mass",
    "mean_abs_cosine",
    "normalized_polysemanticity",
    "participation_ratio",
    "perplexity",
    "polysemanticity",
    "site_metrics",
    "sparsity",
    "token_mass",
]
