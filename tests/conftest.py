"""Shared fixtures: every RNG seeded, torch on few threads, a private token cache per session."""

from __future__ import annotations

import os
import random
import shutil
import tempfile

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


@pytest.fixture(scope="session", autouse=True)
def _own_ray():
    """Every Ray this session starts (in-process or in the CLIs it runs) lives in a temp dir of
    its own and never attaches to a Ray already running on the machine: ``RAY_ADDRESS`` is
    dropped, ``RAY_TMPDIR`` points here, and the sweep starts local Ray with
    ``address="local"``. Nothing here stops another Ray (no ``ray stop``)."""
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_TMPDIR")}
    os.environ.pop("RAY_ADDRESS", None)
    tmp = tempfile.mkdtemp(prefix="tti_rt_", dir="/tmp")  # short: Ray's socket paths
    os.environ["RAY_TMPDIR"] = tmp
    yield tmp
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def tiny_model_cfg():
    """The house-style test model: 2 layers, d_model 32, vocab 64."""
    from tti_ray.config import ModelConfig

    return ModelConfig(n_layer=2, d_model=32, n_head=2, d_ff=64, seq_len=16)
