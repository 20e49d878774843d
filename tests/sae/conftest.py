"""SAE test fixtures: a fake TokenData (random ids, no tokenizer) and a tiny random model.

Tests here run torch on one thread: these shapes are far too small to gain from two, and on a
shared, busy machine OpenMP spin-waiting made two threads ~10x slower."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tti_ray.config import RunConfig
from tti_ray.data import TokenData
from tti_ray.model import build_model

VOCAB = 64


def fake_tokens(n_train: int = 20_000, n_valid: int = 2_000, vocab: int = VOCAB) -> TokenData:
    return TokenData.synthetic(vocab, n_train, n_valid)


@pytest.fixture
def tiny_run(tiny_model_cfg):
    """A LoadedRun look-alike: random 2-layer model (d_model 32, d_ff 64), fake token streams."""
    cfg = RunConfig(model=tiny_model_cfg)
    model = build_model(cfg.model, VOCAB).eval()
    return SimpleNamespace(model=model, cfg=cfg, tokens=fake_tokens())
