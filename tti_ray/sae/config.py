"""SAE evaluation config: one typed section per SAE kind, validated at load time.

The shared fields live in :class:`SAEConfig`; each registered kind extends it with its own
(``TopKSAEConfig.k``, ``ReLUSAEConfig.l1_coef``), so a key that does not apply to the chosen kind
is an *unknown key* error, never a silent no-op. :func:`parse_sae_config` picks the class from
``kind`` in :data:`SAE_KINDS` (the registry :mod:`tti_ray.sae.models` registers its SAE classes
into) and raises :class:`~tti_ray.config.base.KeyPathError` naming ``sae.<key>``.

The default is a TopK SAE with a fixed ``k`` (32): every model is then read at the same L0, so
reconstruction and CE-loss scores are comparable across models (the issue-6 requirement).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from tti_ray.config.base import KeyPathError, Registry
from tti_ray.config.schema import SiteSelection

DEFAULT_KIND = "topk"

#: SAE kind -> ``(SAE class, config class)``; :mod:`tti_ray.sae.models` registers the built-ins
#: (importing any ``tti_ray.sae`` module loads the package, and with it the models).
SAE_KINDS: Registry[tuple[Any, Any]] = Registry(
    "SAE kind",
    config_of=lambda entry: entry[1],
    unknown="unknown SAE kind {kind!r} (registered: {names})",
    key="kind",
)


class SAEConfig(SiteSelection):
    """Fields every SAE kind has.

    * ``expansion``: d_sae = expansion × d_in (seed configs: 4, 8, 16).
    * ``tokens``: training-token budget per SAE (streamed from the train split).
    * ``batch_size``: tokens per SAE optimizer step; ``lr`` Adam learning rate, linear warm-up over
      the first ``lr_warmup_frac`` of steps and linear decay to 0 over the last ``lr_decay_frac``.
    * ``sites`` / ``layers``: where SAEs are trained (one SAE per (site, layer)).
    * ``eval_tokens``: validation tokens for the metrics (whole blocks, rounded up).
    * ``model_batch``: sequences per frozen-model forward; ``shuffle_buffer``: tokens mixed before
      batching (bounded memory: at most ``shuffle_buffer`` + one forward of activations per site).
    * ``normalize_input``: scale inputs by a constant so that E‖x‖₂ = √d_in on the first batch
      (Gao et al. 2024 / SAELens ``expected_average_only_in``); makes ``lr`` and ``l1_coef``
      transfer across models. Metrics are always reported in the model's own units.
    """

    kind: str = DEFAULT_KIND
    expansion: int = Field(8, ge=1, le=256)
    tokens: int = Field(200_000, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    lr_warmup_frac: float = Field(0.05, ge=0.0, le=1.0)
    lr_decay_frac: float = Field(0.2, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0)
    eval_tokens: int = Field(8192, ge=1)
    model_batch: int = Field(8, ge=1)
    shuffle_buffer: int = Field(16384, ge=1)
    normalize_input: bool = True


    def layer_indices(self, n_layer: int) -> list[int]:
        """Resolved layer list; a layer the model lacks is an error naming ``sae.layers``."""
        if self.layers == "all":
            return list(range(n_layer))
        if max(self.layers) >= n_layer:
            raise KeyPathError(
                "sae.layers", f"layer {max(self.layers)} does not exist (model has {n_layer})"
            )
        return list(self.layers)


class TopKSAEConfig(SAEConfig):
    """TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", §2.3, §A.2).

    * ``k``: latents kept per token (L0 ≤ k; fixed k = equal L0 across models).
    * ``k_aux``: latents used by the AuxK loss (``None``: d_in // 2, as in EleutherAI/sparsify).
    * ``aux_coef``: α of L = ‖e‖² + α‖e − ê‖² (paper: 1/32).
    * ``dead_tokens``: a latent is *dead* for AuxK when it has not fired in this many training
      tokens (paper: 10M; scaled down to the tiny default budget).
    """

    kind: Literal["topk"] = "topk"
    k: int = Field(32, ge=1)
    k_aux: int | None = Field(None, ge=1)
    aux_coef: float = Field(1 / 32, ge=0.0)
    dead_tokens: int = Field(20_000, ge=1)


class ReLUSAEConfig(SAEConfig):
    """ReLU + L1 SAE (the seed repo's ``src/sae.py``; Bricken et al. 2023).

    * ``l1_coef``: λ of L = mean_n ‖x − x̂‖² + λ mean_n Σ_j f_j · w_j, with w_j = ‖W_dec,j‖ when
      ``l1_decoder_norm`` (Anthropic, April 2024 update) else 1. Both sums run over dimensions
      / latents, not means, on normalized inputs, so λ ≈ 1-10 is the useful range (the seed's
      λ = 1e-3 was on per-element means: λ_here = λ_seed / expansion). The useful λ grows with
      the typical latent magnitude, i.e. with √d_in.
    * ``normalize_decoder``: keep decoder directions unit-norm (the seed's choice). Weighting the
      L1 by decoder norms only means something without it, so ``l1_decoder_norm`` requires
      ``normalize_decoder: false`` (otherwise it would be a silent no-op).
    """

    kind: Literal["relu"] = "relu"
    l1_coef: float = Field(5.0, ge=0.0)
    l1_decoder_norm: bool = False
    normalize_decoder: bool = True

    @model_validator(mode="after")
    def _decoder_norm_weighting_needs_free_norms(self) -> ReLUSAEConfig:
        if self.l1_decoder_norm and self.normalize_decoder:
            raise ValueError(
                "l1_decoder_norm: needs normalize_decoder: false (unit-norm decoder directions "
                "make the weighting a no-op)"
            )
        return self


def parse_sae_config(
    raw: Mapping[str, Any] | SAEConfig | None = None, *, prefix: str = "sae"
) -> SAEConfig:
    """Validate a mapping as the config class of its ``kind`` (default ``topk``).

    Errors are :class:`KeyPathError` with path ``<prefix>.<key>``."""
    if isinstance(raw, SAEConfig):
        return raw
    raw = dict(raw or {})
    return SAE_KINDS.parse(raw.get("kind", DEFAULT_KIND), raw, prefix, f"{prefix}.kind")
