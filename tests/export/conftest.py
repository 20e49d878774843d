"""Export tests load only local files (checkpoints written by the tests themselves); the gated run
fixture is in tests/conftest.py.

``HF_HUB_OFFLINE=1`` is set by tests/conftest.py before anything imports huggingface_hub, so a
load that would reach for the hub fails instead."""

from __future__ import annotations

import pytest

#: Runs on the tiny preset's tokenizer at its full size (the model's ids are the tokenizer's, so
#: the checkpoint ships it): 2 layers, d_model 32, 4 steps; one plain, one with TopK 25%.
BPE_RUN = {
    "name": "bpe",
    "data": {"max_train_stories": 300},
    "model": {"n_layer": 2, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 0, "eval_every": 4, "ckpt_every": 4,
              "threads": 1},
    "eval": {"val_batches": 2, "metric_tokens": 128},
}


def _train(tmp_path_factory, name: str, raw: dict):
    from tti_ray.config import load_config
    from tti_ray.train import train_run

    out = tmp_path_factory.mktemp(name)
    train_run(load_config(raw=raw), None, out)
    return out


@pytest.fixture(scope="session")
def bpe_run(tmp_path_factory, _token_cache):
    return _train(tmp_path_factory, "bpe_run", BPE_RUN)


@pytest.fixture(scope="session")
def bpe_gated_run(tmp_path_factory, _token_cache):
    return _train(
        tmp_path_factory, "bpe_gated_run", {**BPE_RUN, "interventions": {"topk": {"k": 0.25}}}
    )
