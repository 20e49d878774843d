"""Training-test fixtures: one torch thread, and :data:`SMALL`, the run every test here shrinks.

One thread because on a shared 2-core machine 2 OpenMP threads competing with other processes make
tiny models up to ~30x slower (spin-waiting); 1 thread is steady."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: The smallest LM run that still learns: 1 layer, d_model 32, a 256-id vocabulary over the first
#: 1,000 bundled stories (tokenized once per session into the session cache).
SMALL = {
    "name": "small",
    "data": {"vocab_size": 256, "max_train_stories": 1000},
    "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
    "train": {"steps": 8, "batch_size": 4, "warmup_steps": 0, "eval_every": 4, "ckpt_every": 4,
              "threads": 1},
    "eval": {"val_batches": 2, "metric_tokens": 128},
}


@pytest.fixture
def small_sets() -> list[str]:
    """:data:`SMALL` as ``--set`` values for the CLI."""
    return [
        f"{section}.{k}={v}"
        for section, vals in SMALL.items()
        if isinstance(vals, dict)
        for k, v in vals.items()
    ]


@pytest.fixture
def small_cfg():
    """``small_cfg(**{"train.steps": 4})`` -> RunConfig of :data:`SMALL` with dotted overrides."""
    from tti_ray.config import load_config

    def make(**dotted):
        return load_config(raw=SMALL, overrides=dotted)

    return make
