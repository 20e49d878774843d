"""BlockSampler: stateless (seed, step) order, rank sharding, and training reads train only."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tti_ray.data import BlockSampler, eval_blocks, n_blocks

SEQ = 8


@pytest.fixture
def stream() -> np.ndarray:
    return np.arange(8 * 50 + 1, dtype=np.uint16)  # 50 blocks of 8 (+1 target)


def test_blocks_and_shifted_targets(stream):
    assert n_blocks(stream, SEQ) == 50 and n_blocks(stream[:8], SEQ) == 0
    s = BlockSampler(stream, SEQ, seed=0)
    x, y = s.batch([0, 3])
    assert x.dtype == torch.int64 and x.shape == y.shape == (2, SEQ)
    assert x[1].tolist() == list(range(24, 32)) and y[1].tolist() == list(range(25, 33))
    e = eval_blocks(stream, SEQ, 3)
    assert e.shape == (3, SEQ + 1) and e[2, 0] == 16
    assert eval_blocks(stream, SEQ, 999).shape[0] == 50


def test_same_seed_and_step_same_indices(stream):
    a, b = BlockSampler(stream, SEQ, seed=3), BlockSampler(stream, SEQ, seed=3)
    for step in (0, 5, 17, 4, 0):  # any order: no hidden sampler state
        assert a.indices(step, 12) == b.indices(step, 12)
    assert a.indices(1, 12) != a.indices(2, 12)
    assert a.indices(0, 12) != BlockSampler(stream, SEQ, seed=4).indices(0, 12)


def test_each_epoch_is_a_permutation(stream):
    s = BlockSampler(stream, SEQ, seed=1)
    seen = [i for step in range(10) for i in s.indices(step, 10)]  # 100 samples = 2 epochs
    assert sorted(seen[:50]) == list(range(50)) and sorted(seen[50:]) == list(range(50))
    assert seen[:50] != seen[50:]


@pytest.mark.parametrize("step", [0, 4, 7])  # step 4 crosses the epoch boundary (batch 12)
def test_ranks_are_disjoint_and_their_union_is_the_single_worker_batch(stream, step):
    s = BlockSampler(stream, SEQ, seed=0)
    full = s.indices(step, 12)
    r0, r1 = s.indices(step, 12, rank=0, world=2), s.indices(step, 12, rank=1, world=2)
    assert len(r0) == len(r1) == 6
    assert Counter(r0) + Counter(r1) == Counter(full)
    # disjoint as sample positions; as block ids too whenever the batch is inside one epoch
    assert r0 == full[0::2] and r1 == full[1::2]
    if (step * 12) // 50 == (step * 12 + 11) // 50:
        assert not set(r0) & set(r1)


def test_training_reads_only_the_train_stream(monkeypatch, tmp_path):
    """Every batch train_run draws comes from the train memmap, never the valid one."""
    from tti_ray.config import load_config
    from tti_ray.train import loop

    used: list[tuple[str, list[int], int]] = []

    class SpySampler(BlockSampler):
        def indices(self, step, batch_size, rank=0, world=1):
            out = super().indices(step, batch_size, rank, world)
            used.append((self.stream.filename, out, self.n))
            return out

    monkeypatch.setattr(loop, "BlockSampler", SpySampler)
    cfg = load_config(
        raw={
            "data": {"vocab_size": 256, "max_train_stories": 1000},  # = tests/train SMALL
            "model": {"n_layer": 1, "d_model": 16, "n_head": 2, "d_ff": 32, "seq_len": 16},
            "train": {"steps": 3, "batch_size": 4, "warmup_steps": 0, "threads": 1},
            "eval": {"val_batches": 1, "metric_tokens": 64},
        }
    )
    loop.train_run(cfg, None, tmp_path / "run")
    assert len(used) == 3
    for filename, idx, n in used:
        assert str(filename).endswith("train.bin")
        assert all(0 <= i < n for i in idx)
