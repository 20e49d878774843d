"""Toy-model workloads with known ground truth: fast (seconds on one CPU core) sweep targets.

Two workloads, selected by ``workload:`` in the run config and configured by its ``toy:`` section
(``kind:`` superposition | ablation, see :mod:`tti_ray.toy.config`):

* ``toy_superposition`` - Toy Models of Superposition (Elhage et al. 2022; seed 004's sparsity
  knob): :mod:`tti_ray.toy.superposition`, plus :func:`phase_grid` / :func:`phase_diagram`.
* ``toy_ablation`` - seed 001's training-factor ablation with an SAE on the hidden layer:
  :mod:`tti_ray.toy.ablation`; :data:`SEED001_CONFIGS` and :func:`full_factorial` list its grid.

:func:`run_toy` runs either one and writes ``checkpoint/model.safetensors`` and ``metrics.json``.

Metrics (formulas in :mod:`tti_ray.toy.metrics`)
------------------------------------------------
superposition:
  ``toy/loss``                 importance-weighted reconstruction MSE (eval batch)
  ``toy/hidden_l1``            E[Σ_k |h_k|] of the hidden layer h = Wx
  ``toy/objective``            loss + l1_penalty · hidden_l1 (what was minimised)
  ``toy/features_represented`` #features with ‖W_i‖ > 0.5
  ``toy/superposition/mean``   mean over represented features of Σ_{j≠i}(Ŵ_i·W_j)² (0 if none)
  ``toy/dims_per_feature``     m / ‖W‖_F²
  ``toy/phase``                phase of the last feature: 0 not represented, 1 dedicated,
                               2 superposition (the paper's phase-diagram colour)
  ``toy/norm/<i>``, ``toy/superposition/<i>``, ``toy/bias/<i>``  per feature (n ≤ 16)
ablation:
  ``toy/loss``, ``toy/reg``    training objective (task + λ·reg) and the weight penalty Σ|w| or Σw²
  ``toy/task_mse``, ``toy/val_mse``  importance-weighted task MSE on the train / val sets
  ``toy/macs``                 mean |off-diagonal cosine| of the SAE decoder directions
  ``toy/calibrated_macs``      sigmoid of MACS z-scored against random directions of the same
                               shape (0.5 = chance; seed 001's column-permutation null is
                               degenerate because MACS is permutation invariant)
  ``toy/interference``         Σ_{i≠j} cos²(d_i, d_j) I_i I_j, each SAE direction carrying the
                               importance of its closest ground-truth feature
  ``toy/feature_recovery``     mean over true features of the best cosine to an SAE direction
  ``toy/l0``                   fraction of SAE latents active (> 0), val set
  ``toy/sae_mse``              SAE reconstruction MSE on z-scored val activations
  ``toy/w4_sparsity``          seed 001's ‖W‖₄⁴ / N over the MLP weights
  ``toy/w4_kurtosis``          scale-free N·Σw⁴/(Σw²)² (≈3 Gaussian, larger = peakier)
  ``toy/dead_hidden``          fraction of SAE-layer units constant on the training data
both: the returned dict (and ``metrics.json``) also has ``step`` and ``status``.
"""

from tti_ray.toy.config import (
    FACTORS,
    SEED001_BASELINE,
    SEED001_CONFIGS,
    SEED001_REPORTED,
    WORKLOAD_KIND,
    AblationConfig,
    SuperpositionConfig,
    ToyConfig,
    check_workload,
    full_factorial,
    parse_toy_config,
    resolve_toy,
)
from tti_ray.toy.run import load_checkpoint, run_toy
from tti_ray.toy.superposition import phase_diagram, phase_grid

__all__ = [
    "FACTORS",
    "SEED001_BASELINE",
    "SEED001_CONFIGS",
    "SEED001_REPORTED",
    "WORKLOAD_KIND",
    "AblationConfig",
    "SuperpositionConfig",
    "ToyConfig",
    "check_workload",
    "full_factorial",
    "load_checkpoint",
    "parse_toy_config",
    "phase_diagram",
    "phase_grid",
    "resolve_toy",
    "run_toy",
]
