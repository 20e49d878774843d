"""Stream activations of a frozen model over the training split, batch by batch.

Sequences come from :class:`~tti_ray.data.BlockSampler` (the training order, seeded), one forward
of ``seqs_per_forward`` blocks at a time, captured at every requested site at once so one forward
feeds every SAE. Tokens of one sequence are strongly correlated, so they pass through a shuffle
buffer (SAELens-style): when it holds ``buffer_tokens`` it is permuted and all but half of it is
handed out in batches. Memory stays bounded by the buffer plus one forward, whatever the budget;
each yielded batch has at most ``batch_size`` rows and the same rows (tokens) for every site.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from tti_ray.data import BlockSampler
from tti_ray.model import capture

SiteKey = tuple[str, int]  # (site, layer)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def stream_activations(
    model: nn.Module,
    stream: np.ndarray,
    keys: Sequence[SiteKey],
    *,
    seq_len: int,
    batch_size: int,
    total_tokens: int,
    seqs_per_forward: int = 8,
    buffer_tokens: int = 16384,
    seed: int = 0,
) -> Iterator[dict[SiteKey, torch.Tensor]]:
    """Yield ``{(site, layer): Tensor[n, D]}`` with n ≤ ``batch_size``, ``total_tokens`` in all.

    Activations stay on the model's device; the model is only run forward (no grad)."""
    keys = list(dict.fromkeys(keys))
    device = model_device(model)
    body = getattr(model, "transformer", model)  # the LM head is not needed for the sites
    sampler = BlockSampler(stream, seq_len, seed)
    gen = torch.Generator().manual_seed(seed)
    buf: dict[SiteKey, list[torch.Tensor]] = {k: [] for k in keys}
    buffered = produced = step = 0

    def drain(keep: int) -> Iterator[dict[SiteKey, torch.Tensor]]:
        nonlocal buffered
        cat = {k: torch.cat(v) for k, v in buf.items()}
        perm = torch.randperm(buffered, generator=gen).to(device)
        cat = {k: v[perm] for k, v in cat.items()}
        n_out = buffered - keep
        for i in range(0, n_out, batch_size):
            j = min(i + batch_size, n_out)
            yield {k: v[i:j] for k, v in cat.items()}
        for k in keys:
            buf[k] = [cat[k][n_out:]]
        buffered = keep

    while produced < total_tokens:
        x, _ = sampler.batch(sampler.indices(step, seqs_per_forward))  # [B, T]
        step += 1
        with capture(model, keys, detach=True) as store:
            body(input_ids=x.to(device))
        take = min(x.numel(), total_tokens - produced)
        for k in keys:
            a = store[k]
            buf[k].append(a.reshape(-1, a.shape[-1])[:take])
        produced += take
        buffered += take
        if buffered >= buffer_tokens:
            # hand out whole batches, keep at least half the buffer for mixing
            n_out = (buffered - buffer_tokens // 2) // batch_size * batch_size
            if n_out:
                yield from drain(buffered - n_out)
    if buffered:
        yield from drain(0)


def site_activations(
    model: nn.Module, stream: np.ndarray, site: str, layer: int, **kwargs: int
) -> Iterator[torch.Tensor]:
    """:func:`stream_activations` for one site: yields ``Tensor[n, D]``, n ≤ ``batch_size``."""
    for batch in stream_activations(model, stream, [(site, layer)], **kwargs):
        yield batch[(site, layer)]
