"""Hook sites: shapes, opt-in capture that leaves no hooks; HF-loadable checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from tti_ray.config import load_config
from tti_ray.data import load_tokens
from tti_ray.interventions import build_interventions
from tti_ray.model import HOOK_SITES, add_site_transform, build_model, capture, count_params
from tti_ray.train import load_model, save_checkpoint

VOCAB = 64


def _all_hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.fixture
def model(tiny_model_cfg):
    return build_model(tiny_model_cfg, VOCAB).eval()


def test_build_model_matches_config(model, tiny_model_cfg):
    c = model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_inner, c.n_positions, c.vocab_size) == (
        2, 32, 2, 64, 16, VOCAB,
    )
    assert c._attn_implementation == "sdpa"
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    assert count_params(model) == count_params(model, non_embedding=False) - (64 + 16) * 32


def test_capture_shapes_every_site_and_layer(model, tiny_model_cfg):
    x = torch.randint(0, VOCAB, (3, 16))  # [B, T]
    sites = [(s, i) for s in HOOK_SITES for i in range(2)]
    with capture(model, sites, detach=True) as acts:
        logits = model(input_ids=x).logits
    assert logits.shape == (3, 16, VOCAB)
    assert set(acts) == set(sites)
    for i in range(2):
        assert acts[("mlp_hidden", i)].shape == (3, 16, tiny_model_cfg.ff_dim)
        assert acts[("mlp_out", i)].shape == (3, 16, 32)
        assert acts[("resid_post", i)].shape == (3, 16, 32)
        assert not acts[("mlp_hidden", i)].requires_grad


def test_captured_values_are_the_site_outputs(model):
    x = torch.randint(0, VOCAB, (2, 16))
    with capture(model, [("mlp_hidden", 1), ("mlp_out", 1), ("resid_post", 0)]) as acts:
        out = model(input_ids=x, output_hidden_states=True)
    # block 0's output is hidden_states[1]; mlp_out = c_proj(mlp_hidden) (dropout 0, eval mode)
    assert torch.equal(acts[("resid_post", 0)], out.hidden_states[1])
    mlp = model.transformer.h[1].mlp
    assert torch.allclose(mlp.c_proj(acts[("mlp_hidden", 1)]), acts[("mlp_out", 1)], atol=1e-6)
    # not detached: a loss term can backpropagate through the captured activations
    acts[("mlp_hidden", 1)].abs().sum().backward()
    assert model.transformer.h[1].mlp.c_fc.weight.grad is not None


def test_no_hooks_before_or_after_capture(model):
    assert _all_hooks(model) == 0  # an uninstrumented forward pays nothing
    with capture(model, [("mlp_hidden", 0), ("mlp_out", 1), ("mlp_hidden", 0)]) as acts:
        assert _all_hooks(model) == 2  # duplicates collapse
        model(input_ids=torch.zeros(1, 4, dtype=torch.long))
    assert _all_hooks(model) == 0
    assert set(acts) == {("mlp_hidden", 0), ("mlp_out", 1)}
    with pytest.raises(RuntimeError), capture(model, [("mlp_out", 0)]):
        raise RuntimeError("forward failed")
    assert _all_hooks(model) == 0  # removed on error too
    with pytest.raises(KeyError), capture(model, [("attn_out", 0)]):
        pass


def test_capture_sees_site_transforms(model):
    handle = add_site_transform(model, "mlp_hidden", 0, lambda a: a * 0)
    with capture(model, [("mlp_hidden", 0)]) as acts:
        model(input_ids=torch.zeros(1, 4, dtype=torch.long))
    assert torch.count_nonzero(acts[("mlp_hidden", 0)]) == 0
    handle.remove()
    assert _all_hooks(model) == 0


@pytest.mark.parametrize("tie", [True, False])
def test_checkpoint_loads_with_plain_hf_and_gives_identical_logits(tmp_path, tie):
    cfg = load_config(
        raw={
            "model": {"n_layer": 2, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 16,
                      "tie_embeddings": tie},
            "data": {"vocab_size": 256, "max_train_stories": 1000},  # = tests/train SMALL
        }
    )
    tokens = load_tokens(cfg.data)
    model = build_model(cfg.model, tokens.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.from_numpy(np.asarray(tokens.train[:64], dtype=np.int64)).view(4, 16)
    for _ in range(3):  # move the weights away from their init
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    ckpt = save_checkpoint(
        tmp_path / "checkpoint", model=model, interventions=build_interventions({}, cfg.model),
        optimizer=opt, step=3, cfg=cfg, tokens=tokens,
    )
    assert json.loads((ckpt / "train_state.json").read_text())["step"] == 3
    assert not list(tmp_path.glob("checkpoint.*"))  # no tmp/old directories left behind

    hf = GPT2LMHeadModel.from_pretrained(ckpt).eval()
    ours = load_model(tmp_path).model  # a run dir works as well as the checkpoint dir
    with torch.no_grad():
        ref = model(input_ids=x).logits
        assert torch.equal(hf(input_ids=x).logits, ref)
        assert torch.equal(ours(input_ids=x).logits, ref)
    for k, v in model.state_dict().items():
        assert torch.equal(hf.state_dict()[k], v), k
