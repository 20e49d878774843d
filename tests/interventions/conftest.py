"""Fixtures for the intervention tests: the tiny model, a batch, fake token data, and a step
function that follows the trainer's protocol (capture -> CE -> Σ coef · term)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tti_ray.interventions import StepContext, build_interventions, parse_interventions
from tti_ray.model import build_model, capture

VOCAB = 64
SAMPLE_WORDS = [" dog", " the", ",", " Lily", " 3", "\n", " happy", " red", " ran", " Mom"]


@pytest.fixture
def model(tiny_model_cfg):
    torch.manual_seed(0)
    return build_model(tiny_model_cfg, VOCAB)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, VOCAB, (2, 16), generator=g)  # [B, T]
    return x, torch.roll(x, -1, dims=1)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from tti_ray.data.tokens import TextTokenizer

    return TextTokenizer("gpt2")


@pytest.fixture
def fake_tokens(gpt2_tokenizer, tmp_path):
    """TokenData whose first model ids are SAMPLE_WORDS, then other GPT-2 ids, last = UNK; the
    validation stream is 2 blocks of seq_len 16 over every id (moe's ablation sample)."""
    from tti_ray.data.tokens import TokenData

    words = [gpt2_tokenizer.encode_batch([w])[0] for w in SAMPLE_WORDS]
    assert all(len(w) == 1 for w in words), "sample words must be single GPT-2 tokens"
    head = [w[0] for w in words]
    rest = [i for i in range(1000, 1000 + VOCAB) if i not in head][: VOCAB - 1 - len(head)]
    keep = np.asarray([*head, *rest, -1], dtype=np.int64)
    z = np.zeros(8, dtype=np.uint16)
    valid = (np.arange(2 * 16 + 1) * 7 % VOCAB).astype(np.uint16)
    return TokenData(z, valid, VOCAB, VOCAB - 1, keep, tmp_path)


@pytest.fixture
def make_iv(tiny_model_cfg):
    """``make_iv(name, **overrides)``: a ModuleDict with one intervention of registered type
    ``name`` built from its example config (plus overrides), validated like a config file."""
    from tti_ray.interventions import registered

    def make(name: str, **overrides: Any) -> nn.ModuleDict:
        raw = {name: {**registered()[name].example_config(), **overrides}}
        return build_interventions(parse_interventions(raw), tiny_model_cfg)

    return make


@pytest.fixture
def run_step():
    return step_loss


def step_loss(
    model: nn.Module, ivs: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor, step: int = 0
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """What ``tti_ray.train.loop`` does per micro-batch: (total, ce, {name/term: term})."""
    sites = sorted({s for iv in ivs.values() for s in iv.capture_sites()})
    ctx = capture(model, sites) if sites else nullcontext({})
    with ctx as acts:
        logits = model(input_ids=x).logits
    ce = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
    total, terms = ce, {}
    sctx = StepContext(token_ids=x, step=step)
    for name, iv in ivs.items():
        c = iv.coef_at(step)
        if c == 0.0:
            continue
        for tname, t in iv.loss_terms(acts, sctx).items():
            terms[f"{name}/{tname}"] = t
            total = total + c * t.float()
    return total, ce, terms
