"""Shared fixtures: every RNG seeded, torch on few threads, a private token cache per session."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test: the tensors are tiny, and on a shared 2-core machine a second
    OpenMP thread spin-waiting against other processes makes them up to ~30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _token_cache(tmp_path_factory):
    """Tests tokenize into their own cache (the first test pays ~1 s, the rest reuse it)."""
    if "TTI_RAY_CACHE" not in os.environ:
        os.environ["TTI_RAY_CACHE"] = str(tmp_path_factory.mktemp("tti_cache"))
    yield


@pytest.fixture
def tiny_model_cfg():
    """The house-style test model: 2 layers, d_model 32, vocab 64."""
    from tti_ray.config import ModelConfig

    return ModelConfig(n_layer=2, d_model=32, n_head=2, d_ff=64, seq_len=16)
