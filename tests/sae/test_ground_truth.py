"""The sanity check the seeds lacked: on data built from known sparse feature directions, the SAE
recovers them (mean over true features of the max cosine to a learned decoder direction ≥ 0.9)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tti_ray.sae import build_sae, parse_sae_config, train_sae

N_FEAT, D = 64, 32  # 64 unit directions in 32-D: overcomplete, recoverable only through sparsity


def feature_batches(feats, n_steps, batch=256, p=0.05, seed=1):
    """Each token: every feature on with probability p, magnitude U[0.5, 1.5], summed."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        on = torch.rand(batch, N_FEAT, generator=g) < p
        yield (on * (torch.rand(batch, N_FEAT, generator=g) + 0.5)) @ feats


def mean_max_cosine(true, learned):
    cos = F.normalize(true, dim=-1) @ F.normalize(learned, dim=-1).T  # [n_true, d_sae]
    return float(cos.max(1).values.mean())


@pytest.mark.parametrize(
    ("raw", "steps"),
    [
        ({"kind": "topk", "k": 4, "lr": 3e-3, "dead_tokens": 2000}, 400),
        ({"kind": "relu", "l1_coef": 2.0, "lr": 1e-2}, 600),
    ],
    ids=["topk", "relu"],
)
def test_sae_recovers_known_feature_directions(raw, steps):
    g = torch.Generator().manual_seed(1234)  # not the SAE's init seed
    feats = F.normalize(torch.randn(N_FEAT, D, generator=g), dim=-1)  # [64, 32]
    sae = build_sae(parse_sae_config({"expansion": 4, **raw}), D)
    before = mean_max_cosine(feats, sae.W_dec.detach())
    train_sae(sae, feature_batches(feats, steps), steps)
    after = mean_max_cosine(feats, sae.W_dec.detach())
    assert before < 0.7, before  # random init is far from the features
    assert after >= 0.9, after
