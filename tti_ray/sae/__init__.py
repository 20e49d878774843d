"""Post-hoc sparse-autoencoder evaluation of frozen checkpoints (issue 6).

Pipeline: :mod:`~tti_ray.sae.config` (typed SAE config per kind) → :mod:`~tti_ray.sae.models`
(ReLU + L1, TopK + AuxK; registry) → :mod:`~tti_ray.sae.activations` (streamed train-split
activations) → :mod:`~tti_ray.sae.train` → :mod:`~tti_ray.sae.metrics` (pure functions) →
:mod:`~tti_ray.sae.evaluate` (``evaluate_checkpoint``). CLI: ``python -m tti_ray.sae_eval``.
"""

from tti_ray.sae.activations import site_activations, stream_activations
from tti_ray.sae.config import ReLUSAEConfig, SAEConfig, TopKSAEConfig, parse_sae_config
from tti_ray.sae.evaluate import METRICS, METRICS_FILE, evaluate_checkpoint
from tti_ray.sae.models import (
    SAE,
    ReLUSAE,
    TopKSAE,
    build_sae,
    load_sae,
    register_sae,
    registered_saes,
    save_sae,
)
from tti_ray.sae.train import SAETrainer, train_sae

__all__ = [
    "METRICS",
    "METRICS_FILE",
    "SAE",
    "ReLUSAE",
    "ReLUSAEConfig",
    "SAEConfig",
    "SAETrainer",
    "TopKSAE",
    "TopKSAEConfig",
    "build_sae",
    "evaluate_checkpoint",
    "load_sae",
    "parse_sae_config",
    "register_sae",
    "registered_saes",
    "save_sae",
    "site_activations",
    "stream_activations",
    "train_sae",
]
