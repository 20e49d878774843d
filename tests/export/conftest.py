"""A tiny gated run, trained once per session: 2 layers, d_model 32, d_ff 80 (≠ 4·d_model),
TopK 10% on every layer's ``mlp_hidden`` (8 of 80 units) and an L0 gate on layer 1's
``mlp_hidden`` (so both gate kinds travel), 8 steps on the bundled corpus (vocab 256)."""

from __future__ import annotations

import os

import pytest

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


@pytest.fixture(scope="session", autouse=True)
def _offline():
    """Nothing is fetched from a hub: every load here is from local files."""
    before = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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
