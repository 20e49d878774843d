"""Shared fixtures: every RNG seeded, torch on few threads, a private token cache per session.

The suite runs offline: ``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE``) are set before
anything imports huggingface_hub, so a load that would reach for the hub fails at once instead
of waiting on a network this machine does not have."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


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


#: A tiny gated run (tests/export, tests/sae): 2 layers, d_model 32, d_ff 80 (≠ 4·d_model),
#: TopK 10% on every layer's ``mlp_hidden`` (8 of 80 units) and an L0 gate on layer 1's
#: ``mlp_hidden`` (both gate kinds travel), 8 steps on the bundled corpus (vocab 256).
GATED = {
    "name": "gated",
    "data": {"vocab_size": 256, "max_train_stories": 1000},
    "model": {"n_layer": 2, "d_model": 32, "n_head": 2, "d_ff": 80, "seq_len": 32},
    "train": {"steps": 8, "batch_size": 4, "warmup_steps": 0, "eval_every": 8, "ckpt_every": 8,
              "threads": 1},
    "eval": {"val_batches": 2, "metric_tokens": 128},
    "interventions": {
        "topk": {"k": 0.1},
        "l0_gate": {"coef": 0.1, "layers": [1], "init_log_alpha": 0.0},
    },
}


@pytest.fixture(scope="session")
def gated_run(tmp_path_factory, _token_cache):
    """Run directory of :data:`GATED` (its checkpoint is ``<run>/checkpoint``)."""
    import torch

    from tti_ray.config import load_config
    from tti_ray.train import train_run

    out = tmp_path_factory.mktemp("gated_run")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_run(load_config(raw=GATED), None, out)
    finally:
        torch.set_num_threads(before)
    return out
