"""Toy-workload configs: one strict pydantic model per workload, selected by ``kind``.

Both register into :data:`tti_ray.config.schema.TOY_WORKLOADS` by ``kind``. ``RunConfig.toy`` is
validated by :func:`parse_toy_config` (a ``mode="before"`` field validator), so every problem
surfaces as a :class:`~tti_ray.config.base.KeyPathError` whose path starts with ``toy.`` (``toy.feature_prob: Input should be less than or equal to 1``). The run's
``workload`` and the section's ``kind`` must agree (:func:`check_workload`).

:data:`SEED001_CONFIGS` and :func:`full_factorial` list the ablation factor settings of seed 001
(stanleyngugi/taming_polysemanticity) for the search spaces.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import Field, model_validator

from tti_ray.config.base import KeyPathError, Section
from tti_ray.config.schema import (  # noqa: F401 - the toy section's parsing, re-exported
    TOY_WORKLOADS,
    WORKLOAD_KIND,
    check_workload,
    parse_toy_config,
)


class SuperpositionConfig(Section):
    """Toy Models of Superposition (Elhage et al. 2022, §2): ``x̂ = ReLU(WᵀW x + b)``.

    ``n_features`` sparse features, each active with probability ``feature_prob`` (= 1 − S, the
    paper's sparsity S) with a value ~ U[0, 1]; ``n_hidden`` < ``n_features`` hidden units;
    importance ``I_i = importance_decay**i`` weights the reconstruction MSE (for two features it is
    the paper's "relative importance" of the second one, so values above 1 are allowed);
    ``l1_penalty`` adds ``λ·E[Σ_k |h_k|]`` on the hidden ``h = Wx`` (seed 004's sparsity knob).
    ``restarts`` independently initialised copies train side by side and the lowest-loss one is
    kept (the paper's remedy for local minima). Runs on CPU: the model is a few dozen weights.
    """

    kind: Literal["superposition"] = "superposition"
    n_features: int = Field(5, ge=2, le=512)
    n_hidden: int = Field(2, ge=1)
    feature_prob: float = Field(0.1, gt=0.0, le=1.0)
    importance_decay: float = Field(0.9, gt=0.0, le=100.0)
    l1_penalty: float = Field(0.0, ge=0.0)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-2, gt=0.0, le=1.0)
    restarts: int = Field(1, ge=1, le=64)
    eval_every: int = Field(500, ge=1)
    eval_samples: int = Field(8192, ge=16)

    @model_validator(mode="after")
    def _fewer_hidden(self) -> SuperpositionConfig:
        if self.n_hidden >= self.n_features:
            raise ValueError(f"n_hidden ({self.n_hidden}) must be < n_features ({self.n_features})")
        return self


class AblationConfig(Section):
    """Seed 001's training-factor ablation: a 5-layer MLP 8→d→d→d→8 on grouped, correlated sparse
    features with non-linear targets, then a LeakyReLU SAE on its last hidden layer.

    Factors: ``init`` (gaussian: N(0, 1/fan_in); orthogonal: gain 1, the same scale), ``noise``
    added to the last hidden layer while training (bipolar: ±``noise_scale`` with a random sign, as
    in the seed repo; student_t: ``noise_scale``·t₃/√3, heavy tails at the same variance), ``reg``
    on the weight matrices (l1: λΣ|w|, l2: λΣw²), ``activation`` (relu | gelu).

    Data (:func:`tti_ray.toy.ablation.grouped_features`): groups [0-2], [3-4], [5-7]; each feature
    is active with probability ``feature_prob``; with probability ``coactivation`` a group's
    members share one on/off draw; co-active members' magnitudes have Pearson correlation
    ``correlation`` (group g uses ``correlation ± correlation_spread`` spread linearly over the
    three groups, so the default gives the seed's 0.5 / 0.75 / 1.0). The SAE (``d_sae`` latents,
    L1 ``sae_l1`` on latents, unit-norm decoder columns) is fitted after the network, on z-scored
    activations; ``sae_l1 = 0.1`` puts L0 near seed 001's reported 0.44 (its 1e-4 with free
    decoder norms gives L0 ≈ 0.75 here - barely sparse).
    """

    kind: Literal["ablation"] = "ablation"
    init: Literal["gaussian", "orthogonal"] = "gaussian"
    noise: Literal["bipolar", "student_t"] = "bipolar"
    reg: Literal["l1", "l2"] = "l1"
    activation: Literal["relu", "gelu"] = "relu"
    reg_lambda: float = Field(1e-4, ge=0.0)
    noise_scale: float = Field(0.1, ge=0.0)
    feature_prob: float = Field(0.5, gt=0.0, le=1.0)
    coactivation: float = Field(0.6, ge=0.0, le=1.0)
    correlation: float = Field(0.75, ge=0.0, le=1.0)
    correlation_spread: float = Field(0.25, ge=0.0, le=0.5)
    importance_decay: float = Field(0.9, gt=0.0, le=1.0)
    d_hidden: int = Field(12, ge=2, le=256)
    n_train: int = Field(1024, ge=16)
    n_val: int = Field(256, ge=16)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    d_sae: int = Field(16, ge=2, le=1024)
    sae_steps: int = Field(500, ge=1)
    sae_lr: float = Field(1e-2, gt=0.0, le=1.0)
    sae_l1: float = Field(0.1, ge=0.0)
    null_draws: int = Field(200, ge=2, le=100_000)
    eval_every: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _spread_fits(self) -> AblationConfig:
        lo, hi = (
            self.correlation - self.correlation_spread,
            self.correlation + self.correlation_spread,
        )
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"correlation ± correlation_spread = [{lo:g}, {hi:g}] must lie within [0, 1]"
            )
        return self


ToyConfig = Annotated[SuperpositionConfig | AblationConfig, Field(discriminator="kind")]
TOY_WORKLOADS.register("superposition", SuperpositionConfig)
TOY_WORKLOADS.register("ablation", AblationConfig)


def resolve_toy(
    workload: str, toy_cfg: SuperpositionConfig | AblationConfig | None
) -> SuperpositionConfig | AblationConfig:
    """The toy config a run uses: ``toy_cfg``, or the defaults of the workload's kind."""
    if workload not in WORKLOAD_KIND:
        raise KeyPathError("workload", f"{workload!r} is not a toy workload")
    check_workload(workload, toy_cfg)
    return toy_cfg if toy_cfg is not None else TOY_WORKLOADS[WORKLOAD_KIND[workload]]()


# -- seed 001's factor grid ------------------------------------------------------------------

FACTORS: dict[str, tuple[str, str]] = {
    "init": ("gaussian", "orthogonal"),
    "noise": ("bipolar", "student_t"),
    "reg": ("l1", "l2"),
    "activation": ("relu", "gelu"),
}


def _cfg(init: str, noise: str, reg: str, activation: str) -> dict[str, str]:
    return {"init": init, "noise": noise, "reg": reg, "activation": activation}


#: The 8 configurations of seed 001's results table, in its order (1 = baseline, 8 = maximum
#: mitigation); values are ``toy.*`` settings of an :class:`AblationConfig`.
SEED001_CONFIGS: dict[str, dict[str, str]] = {
    "c1_baseline": _cfg("gaussian", "bipolar", "l1", "relu"),
    "c2_orth": _cfg("orthogonal", "bipolar", "l1", "relu"),
    "c3_heavy": _cfg("gaussian", "student_t", "l1", "relu"),
    "c4_l2_gelu": _cfg("gaussian", "bipolar", "l2", "gelu"),
    "c5_orth_l2_gelu": _cfg("orthogonal", "bipolar", "l2", "gelu"),
    "c6_orth_heavy": _cfg("orthogonal", "student_t", "l1", "relu"),
    "c7_heavy_l2": _cfg("gaussian", "student_t", "l2", "relu"),
    "c8_max": _cfg("orthogonal", "student_t", "l2", "gelu"),
}
SEED001_BASELINE = "c1_baseline"

#: Seed 001's reported 10-seed means (MACS, interference) per configuration, for comparison.
#: Its interference attached 0.9^(k mod 8) to SAE latent k by index and summed unordered pairs,
#: so only ratios between configurations compare with :func:`tti_ray.toy.metrics.interference`.
SEED001_REPORTED: dict[str, dict[str, float]] = {
    "c1_baseline": {"macs": 0.295, "interference": 8.70},
    "c2_orth": {"macs": 0.284, "interference": 8.11},
    "c3_heavy": {"macs": 0.306, "interference": 9.11},
    "c4_l2_gelu": {"macs": 0.263, "interference": 7.14},
    "c5_orth_l2_gelu": {"macs": 0.252, "interference": 6.49},
    "c6_orth_heavy": {"macs": 0.285, "interference": 8.30},
    "c7_heavy_l2": {"macs": 0.284, "interference": 8.35},
    "c8_max": {"macs": 0.249, "interference": 6.37},
}


def full_factorial() -> list[dict[str, str]]:
    """All 2⁴ = 16 factor combinations, first factor slowest (baseline first)."""
    names = list(FACTORS)
    return [dict(zip(names, combo)) for combo in itertools.product(*FACTORS.values())]
