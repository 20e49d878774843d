"""SAE training: Adam with warm-up/decay, unit-norm decoder upkeep, one step per batch.

Each :class:`SAETrainer` owns one SAE and its optimizer, so several SAEs (one per site/layer) can be
trained side by side from one stream of activations (one frozen-model forward feeds them all).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from tti_ray.sae.models import SAE


def lr_factor(step: int, total: int, warmup_frac: float, decay_frac: float) -> float:
    """Linear warm-up over the first ``warmup_frac·total`` steps, constant, then linear decay to 0
    over the last ``decay_frac·total`` steps (Anthropic, April 2024 update; Gao et al. decay)."""
    warm = math.ceil(warmup_frac * total)
    decay = math.floor(decay_frac * total)
    if warm and step < warm:
        return (step + 1) / warm
    if decay and step >= total - decay:
        return max((total - step) / decay, 0.0)
    return 1.0


class SAETrainer:
    """Trains ``sae`` for ``total_steps`` steps; the first batch also initialises scale and b_dec."""

    def __init__(self, sae: SAE, total_steps: int) -> None:
        self.sae, self.total_steps, self.steps = sae, max(total_steps, 1), 0
        cfg = sae.cfg
        self.opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lambda s: lr_factor(s, self.total_steps, cfg.lr_warmup_frac, cfg.lr_decay_frac),
        )

    def step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on ``x`` [N, d_in]; returns the detached loss terms (no host sync)."""
        sae = self.sae
        if self.steps == 0:
            sae.init_from_batch(x)
        sae.train()
        terms = sae.loss(x)
        self.opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if sae.unit_decoder:
            sae.remove_parallel_grad()
        self.opt.step()
        self.sched.step()
        if sae.unit_decoder:
            sae.normalize_decoder()
        self.steps += 1
        return {k: v.detach() for k, v in terms.items()}


def train_sae(sae: SAE, batches: Iterable[torch.Tensor], total_steps: int) -> dict[str, float]:
    """Train on up to ``total_steps`` batches; returns the last step's loss terms."""
    trainer = SAETrainer(sae, total_steps)
    last: dict[str, torch.Tensor] = {}
    for x in batches:
        if trainer.steps >= total_steps:
            break
        last = trainer.step(x)
    sae.eval()
    return {k: float(v) for k, v in last.items()}
