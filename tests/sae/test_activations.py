from __future__ import annotations

import pytest
import torch

from tti_ray.model import capture
from tti_ray.sae.activations import site_activations, stream_activations


def _stream(run, **kw):
    args = {
        "seq_len": 16,
        "batch_size": 48,
        "total_tokens": 1000,
        "seqs_per_forward": 4,
        "buffer_tokens": 160,
        "seed": 0,
    }
    return stream_activations(
        run.model, run.tokens.train, [("mlp_hidden", 0), ("mlp_out", 0)], **{**args, **kw}
    )


def test_never_more_than_a_batch_and_exactly_the_budget(tiny_run):
    sizes = [b[("mlp_hidden", 0)].shape[0] for b in _stream(tiny_run)]
    assert max(sizes) <= 48 and sum(sizes) == 1000
    assert all(s == 48 for s in sizes[:-1])  # only the last batch may be short


@pytest.mark.parametrize("buffer_tokens", [1, 10_000])  # smaller than a batch / than the budget
def test_buffer_extremes(tiny_run, buffer_tokens):
    sizes = [b[("mlp_out", 0)].shape[0] for b in _stream(tiny_run, buffer_tokens=buffer_tokens)]
    assert max(sizes) <= 48 and sum(sizes) == 1000


def test_rows_are_the_same_tokens_at_every_site(tiny_run):
    """mlp_out = c_proj(mlp_hidden) (no dropout), so row-aligned batches must satisfy it."""
    c_proj = tiny_run.model.transformer.h[0].mlp.c_proj
    for b in _stream(tiny_run, total_tokens=300):
        with torch.no_grad():
            torch.testing.assert_close(c_proj(b[("mlp_hidden", 0)]), b[("mlp_out", 0)])


def test_activations_are_those_of_the_training_blocks(tiny_run):
    """With no shuffling left to do (one forward), the rows are a permutation of the captured
    activations of the sampler's first blocks."""
    from tti_ray.data import BlockSampler

    got = torch.cat(
        list(
            site_activations(
                tiny_run.model,
                tiny_run.tokens.train,
                "mlp_out",
                1,
                seq_len=16,
                batch_size=64,
                total_tokens=64,
                seqs_per_forward=4,
                buffer_tokens=10_000,
                seed=3,
            )
        )
    )
    sampler = BlockSampler(tiny_run.tokens.train, 16, 3)
    x, _ = sampler.batch(sampler.indices(0, 4))
    with capture(tiny_run.model, [("mlp_out", 1)], detach=True) as store, torch.no_grad():
        tiny_run.model(input_ids=x)
    want = store[("mlp_out", 1)].reshape(-1, 32)
    assert got.shape == want.shape
    torch.testing.assert_close(got.sum(0), want.sum(0))
    torch.testing.assert_close(got[got[:, 0].argsort()], want[want[:, 0].argsort()])


def test_deterministic_for_a_seed(tiny_run):
    a = torch.cat([b[("mlp_out", 0)] for b in _stream(tiny_run, total_tokens=200)])
    b = torch.cat([b[("mlp_out", 0)] for b in _stream(tiny_run, total_tokens=200)])
    torch.testing.assert_close(a, b)
