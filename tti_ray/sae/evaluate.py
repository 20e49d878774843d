"""Post-hoc SAE evaluation of a frozen checkpoint: train one SAE per (site, layer), then score it.

1. Train: activations streamed from the *training* split (:mod:`tti_ray.sae.activations`), one
   frozen forward feeding every SAE, ``sae.tokens`` tokens each.
2. Evaluate on the first ``ceil(sae.eval_tokens / seq_len)`` *validation* blocks (fixed sample):
   reconstruction metrics (:class:`~tti_ray.sae.metrics.ReconstructionStats`) and, by splicing
   into the model at the site (:func:`tti_ray.model.add_site_transform`), the clean, SAE-spliced
   and zero-ablated cross-entropies and KL(clean ‖ spliced) per token.

Output keys: ``sae/<site>/layer_<i>/<metric>`` and their unweighted means over every evaluated
(site, layer), ``sae/<metric>``, for the metrics in :data:`METRICS`. CE-based metrics are formed
from token-mean CEs over the whole sample (not averaged per batch). With ``out_dir``, weights go
to ``out_dir/saes/<site>_layer_<i>.safetensors`` (tti-ray's format, :func:`~tti_ray.sae.load_sae`),
each SAE also as a SAELens directory ``out_dir/saelens/<site>_layer_<i>/`` (:mod:`.saelens`), and
the numbers to ``out_dir/sae_metrics.json``.

CE-token convention: each validation block holds seq_len + 1 tokens; the model reads the first
seq_len and every one of them is scored against its successor, so CE (clean, spliced, zero-ablated)
averages seq_len targets per block (128 for seq_len 128). SAELens's ``get_recons_loss`` runs the
model on seq_len-token batches and scores seq_len − 1 targets (the last position has none). Fed the
same seq_len-token inputs, every other metric here (L0, MSE, FVU/EV, KL over all seq_len
positions, dead/dense fractions) is computed on the same tokens as SAELens's; ``ce_loss_score`` and
``delta_ce`` differ by the one extra target per block (tests/sae/test_saelens.py measures it).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tti_ray.config import RunConfig
from tti_ray.data import TokenData, eval_blocks
from tti_ray.model import add_site_transform, capture
from tti_ray.sae.activations import SiteKey, model_device, stream_activations
from tti_ray.sae.config import SAEConfig, parse_sae_config
from tti_ray.sae.metrics import ReconstructionStats, ce_loss_score, delta_ce, kl_div
from tti_ray.sae.models import SAE, build_sae, check_sae, save_sae
from tti_ray.sae.saelens import provenance, save_saelens
from tti_ray.sae.train import SAETrainer

METRICS = (
    "l0",
    "mse",
    "fvu",
    "explained_variance",
    "dead_fraction",
    "dense_fraction",
    "ce_loss_score",
    "delta_ce",
    "kl",
)
METRICS_FILE = "sae_metrics.json"


class RunLike(Protocol):
    """What :func:`evaluate_checkpoint` needs of :class:`tti_ray.train.checkpoint.LoadedRun`."""

    model: nn.Module
    cfg: RunConfig
    tokens: TokenData


def site_dim(cfg: RunConfig, site: str) -> int:
    return cfg.model.ff_dim if site == "mlp_hidden" else cfg.model.d_model


def site_keys(run_cfg: RunConfig, sae_cfg: SAEConfig) -> list[SiteKey]:
    layers = sae_cfg.layer_indices(run_cfg.model.n_layer)
    return [(s, i) for s in sae_cfg.sites for i in layers]


def metric_name(key: SiteKey, metric: str) -> str:
    return f"sae/{key[0]}/layer_{key[1]}/{metric}"


def check_config(run_cfg: RunConfig, sae_cfg: SAEConfig) -> list[SiteKey]:
    """The (site, layer) keys to evaluate; :class:`KeyPathError` for a layer the model lacks or a
    setting that cannot fit a site (e.g. ``k`` > d_sae). Builds nothing."""
    keys = site_keys(run_cfg, sae_cfg)
    for site in sae_cfg.sites:
        check_sae(sae_cfg, site_dim(run_cfg, site))
    return keys


def build_saes(run_cfg: RunConfig, sae_cfg: SAEConfig, device: torch.device) -> dict[SiteKey, SAE]:
    """One fresh SAE per (site, layer); config errors (bad layer, k > d_sae) surface here."""
    return {
        key: build_sae(sae_cfg, site_dim(run_cfg, key[0])).to(device)
        for key in check_config(run_cfg, sae_cfg)
    }


def train_saes(
    model: nn.Module,
    tokens: TokenData,
    run_cfg: RunConfig,
    saes: Mapping[SiteKey, SAE],
    *,
    progress: bool = False,
) -> dict[SiteKey, dict[str, float]]:
    """Train every SAE in ``saes`` on ``sae.tokens`` streamed train tokens; returns each SAE's
    mean loss terms over the last 10% of steps."""
    cfg = next(iter(saes.values())).cfg
    total_steps = math.ceil(cfg.tokens / cfg.batch_size)
    trainers = {k: SAETrainer(sae, total_steps) for k, sae in saes.items()}
    tail = max(total_steps // 10, 1)
    sums: dict[SiteKey, dict[str, torch.Tensor]] = {k: {} for k in saes}
    batches = stream_activations(
        model,
        tokens.train,
        list(saes),
        seq_len=run_cfg.model.seq_len,
        batch_size=cfg.batch_size,
        total_tokens=cfg.tokens,
        seqs_per_forward=cfg.model_batch,
        buffer_tokens=cfg.shuffle_buffer,
        seed=cfg.seed,
    )
    with tqdm(total=cfg.tokens, desc="sae train", unit="tok", disable=not progress) as bar:
        for batch in batches:
            for key, trainer in trainers.items():
                terms = trainer.step(batch[key])
                if trainer.steps > total_steps - tail:
                    for name, v in terms.items():
                        sums[key][name] = sums[key].get(name, 0) + v
            bar.update(next(iter(batch.values())).shape[0])
    for sae in saes.values():
        sae.eval()
    return {
        k: {name: float(v) / min(tail, trainers[k].steps) for name, v in s.items()}
        for k, s in sums.items()
    }


def _ce_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
    ).double()


@torch.no_grad()
def evaluate_saes(
    model: nn.Module,
    tokens: TokenData,
    run_cfg: RunConfig,
    saes: Mapping[SiteKey, SAE],
    *,
    progress: bool = False,
) -> dict[SiteKey, dict[str, float]]:
    """Metrics of each trained SAE on the fixed validation sample (see module docstring)."""
    cfg = next(iter(saes.values())).cfg
    device = model_device(model)
    seq_len = run_cfg.model.seq_len
    blocks = eval_blocks(tokens.valid, seq_len, math.ceil(cfg.eval_tokens / seq_len))
    if len(blocks) == 0:
        raise ValueError(f"validation split has fewer than {seq_len + 1} tokens")
    stats = {k: ReconstructionStats(sae.d_in, sae.d_sae, device) for k, sae in saes.items()}
    zero = torch.zeros((), dtype=torch.float64, device=device)
    ce_clean = zero.clone()
    ce_sae = {k: zero.clone() for k in saes}
    ce_zero = {k: zero.clone() for k in saes}
    kl_sum = {k: zero.clone() for k in saes}
    n_tok = 0
    for i in tqdm(
        range(0, len(blocks), cfg.model_batch), desc="sae eval", unit="batch", disable=not progress
    ):
        b = blocks[i : i + cfg.model_batch].to(device)
        x, y = b[:, :-1], b[:, 1:]
        with capture(model, list(saes), detach=True) as store:
            clean = model(input_ids=x).logits
        ce_clean += _ce_sum(clean, y)
        n_tok += y.numel()
        for key, sae in saes.items():
            a = store[key].reshape(-1, store[key].shape[-1])
            f = sae.encode(a)  # [N, d_sae]
            stats[key].update(a, sae.decode(f), f)
            for fn, acc in (
                (lambda t, sae=sae: sae(t).to(t.dtype), ce_sae),
                (torch.zeros_like, ce_zero),
            ):
                handle = add_site_transform(model, key[0], key[1], fn)
                try:
                    logits = model(input_ids=x).logits
                finally:
                    handle.remove()
                acc[key] += _ce_sum(logits, y)
                if acc is ce_sae:
                    kl_sum[key] += kl_div(clean, logits).sum()
    out: dict[SiteKey, dict[str, float]] = {}
    clean_mean = float(ce_clean) / n_tok
    for key in saes:
        sae_mean, zero_mean = float(ce_sae[key]) / n_tok, float(ce_zero[key]) / n_tok
        out[key] = {
            **stats[key].compute(),
            "ce_loss_score": ce_loss_score(clean_mean, sae_mean, zero_mean),
            "delta_ce": delta_ce(clean_mean, sae_mean),
            "kl": float(kl_sum[key]) / n_tok,
        }
    return out


def flatten_metrics(per_key: Mapping[SiteKey, Mapping[str, float]]) -> dict[str, float]:
    """``sae/<site>/layer_<i>/<metric>`` for every key, then the means ``sae/<metric>``."""
    out = {metric_name(k, m): float(v[m]) for k, v in per_key.items() for m in METRICS}
    for m in METRICS:
        vals = [float(v[m]) for v in per_key.values()]
        out[f"sae/{m}"] = sum(vals) / len(vals)
    return out


def evaluate_checkpoint(
    loaded_run: RunLike,
    sae_cfg: SAEConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    *,
    progress: bool | None = None,
) -> dict[str, float]:
    """Train and evaluate one SAE per (site, layer) of a loaded checkpoint.

    ``loaded_run``: a :class:`tti_ray.train.checkpoint.LoadedRun` (model, cfg, tokens). The SAEs
    live on the model's device. ``progress=None`` shows tqdm bars only on a terminal. Returns the
    flat metric dict (see module docstring); with ``out_dir`` also writes weights and
    ``sae_metrics.json`` there."""
    cfg = parse_sae_config(sae_cfg)
    model, run_cfg = loaded_run.model, loaded_run.cfg
    if progress is None:
        progress = sys.stderr.isatty()
    was_training = model.training
    model.eval()
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        saes = build_saes(run_cfg, cfg, model_device(model))
        train_saes(model, loaded_run.tokens, run_cfg, saes, progress=progress)
        per_key = evaluate_saes(model, loaded_run.tokens, run_cfg, saes, progress=progress)
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
        model.train(was_training)
    metrics = flatten_metrics(per_key)
    if out_dir is not None:
        out = Path(out_dir)
        prov = provenance(loaded_run)
        for (site, layer), sae in saes.items():
            save_sae(
                sae,
                out / "saes" / f"{site}_layer_{layer}.safetensors",
                {"site": site, "layer": str(layer)},
            )
            save_saelens(
                sae, out / "saelens" / f"{site}_layer_{layer}", site=site, layer=layer,
                context_size=run_cfg.model.seq_len, provenance=prov,
            )
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1, sort_keys=True))
    return metrics
