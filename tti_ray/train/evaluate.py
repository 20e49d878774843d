"""Periodic evaluation: validation loss/perplexity and the interpretability metrics.

* ``val/loss``, ``val/perplexity``: mean token cross-entropy on the first
  ``eval.val_batches × train.batch_size`` validation blocks (sharded over ranks, all-reduced).
* ``val/<metric>/<site>/layer_<i>`` etc. (see :mod:`tti_ray.metrics.stats`): on the first
  ``ceil(eval.metric_tokens / seq_len)`` validation blocks, rank 0 only.
* ``val/<intervention>/<key>``: each intervention's readouts.

The sample is fixed (no RNG is consumed), so evaluation never perturbs training or exact resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tti_ray.config import RunConfig
from tti_ray.data import TokenData, eval_blocks
from tti_ray.interventions import category_map
from tti_ray.metrics import ActivationStats, perplexity, position_permutations, site_metrics
from tti_ray.model import capture
from tti_ray.train.dist import DistInfo, maybe_all_reduce


def metric_sample(tokens: TokenData, cfg: RunConfig) -> torch.Tensor:
    n = math.ceil(cfg.eval.metric_tokens / cfg.model.seq_len)
    return eval_blocks(tokens.valid, cfg.model.seq_len, n)


@torch.no_grad()
def val_loss(
    model: nn.Module,
    tokens: TokenData,
    cfg: RunConfig,
    device: torch.device,
    di: DistInfo,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> float:
    bs = max(cfg.train.batch_size // cfg.train.grad_accum, 1)
    blocks = eval_blocks(tokens.valid, cfg.model.seq_len, cfg.eval.val_batches * bs)
    mine = blocks[di.rank :: di.world]
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for i in range(0, len(mine), bs):
        b = mine[i : i + bs].to(device)
        with autocast():
            logits = model(input_ids=b[:, :-1]).logits
        ce = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum"
        )
        total[0] += ce.double()
        total[1] += b[:, 1:].numel()
    maybe_all_reduce(total)
    return float(total[0] / total[1].clamp_min(1))


def category_kind(cfg: RunConfig) -> str | None:
    """The token categories the category metrics use: ``eval.categories``, else those of the
    first ``anti_poly``-style intervention that works over categories, else none."""
    if cfg.eval.categories is not None:
        return cfg.eval.categories
    for iv in cfg.interventions.values():
        if getattr(iv, "over", None) == "category":
            return str(iv.categories)
    return None


_CATEGORY_CACHE: dict[tuple[str, str], torch.Tensor] = {}


def _id_categories(kind: str, tokens: TokenData) -> torch.Tensor:
    """Category of every model id (``LongTensor[vocab]``), built once per process and corpus."""
    key = (kind, str(tokens.directory))
    if key not in _CATEGORY_CACHE:
        _CATEGORY_CACHE[key] = category_map(kind, tokens).ids
    return _CATEGORY_CACHE[key]


@torch.no_grad()
def interpretability_metrics(
    model: nn.Module,
    tokens: TokenData,
    cfg: RunConfig,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
    return_raw: bool = False,
) -> dict[str, Any]:
    blocks = metric_sample(tokens, cfg)
    ids = blocks[:, :-1]
    uniq, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
    ev = cfg.eval
    # the calibration null: the sample's id indices under fixed permutations of its positions
    perms = position_permutations(inverse.numel(), ev.permutations, ev.permutation_seed)
    null_all = inverse[perms].view(len(perms), *ids.shape).to(device)  # [P, blocks, T]
    inverse = inverse.view_as(ids).to(device)
    kind = category_kind(cfg)
    id_cats = _id_categories(kind, tokens)[uniq] if kind is not None else None
    sites = [(s, i) for s in ev.sites for i in range(cfg.model.n_layer)]
    stats: dict[tuple[str, int], ActivationStats] = {}
    bs = max(cfg.train.batch_size // cfg.train.grad_accum, 1)
    with capture(model, sites, detach=True) as acts:
        for i in range(0, len(ids), bs):
            x = ids[i : i + bs].to(device)
            with autocast():
                model(input_ids=x)
            null = null_all[:, i : i + bs].reshape(len(perms), x.numel())
            for key, a in acts.items():
                if key not in stats:
                    stats[key] = ActivationStats(
                        len(uniq), a.shape[-1], ev.active_threshold, device,
                        permutations=ev.permutations, min_freq=ev.live_min_freq,
                        id_categories=id_cats, monosemantic_threshold=ev.monosemantic_threshold,
                    )
                stats[key].update(
                    a.reshape(-1, a.shape[-1]), inverse[i : i + bs].reshape(-1), null
                )
    results = {k: s.finalize(len(uniq)) for k, s in stats.items()}
    out: dict[str, Any] = site_metrics(results, prefix="val")
    if return_raw:
        out["_raw"] = results
    return out


def evaluate(
    model: nn.Module,
    interventions: nn.ModuleDict,
    tokens: TokenData,
    cfg: RunConfig,
    device: torch.device,
    di: DistInfo,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> dict[str, float]:
    model.eval()
    interventions.eval()
    loss = val_loss(model, tokens, cfg, device, di, autocast)
    out: dict[str, float] = {"val/loss": loss, "val/perplexity": perplexity(loss)}
    if di.rank == 0:
        out.update(interpretability_metrics(model, tokens, cfg, device, autocast))
        for name, iv in interventions.items():
            out.update({f"val/{name}/{k}": float(v) for k, v in iv.readouts().items()})
    return out
