"""Gated checkpoints load as trained through every documented loader, against the real libraries:
``tti_ray.train.load_model``, ``AutoModelForCausalLM(..., trust_remote_code=True)``,
TransformerLens and nnsight; the plain GPT-2 class refuses them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tti_ray.data import TokenData, eval_blocks
from tti_ray.export import to_hf, to_nnsight, to_transformer_lens
from tti_ray.model import capture
from tti_ray.train import load_model, save_checkpoint
from tti_ray.train.loop import read_final_metrics


def _val_blocks(run) -> torch.Tensor:
    """The blocks ``val/loss`` was measured on (val_batches × batch_size, seq_len + 1 tokens)."""
    n = run.cfg.eval.val_batches * run.cfg.train.batch_size
    return eval_blocks(run.tokens.valid, run.cfg.model.seq_len, n)


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return (out.logits if hasattr(out, "logits") else out).float()


def _ce(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)))


@pytest.fixture(scope="module")
def loaded(gated_run):
    return load_model(gated_run)


def test_config_json_records_the_gates(gated_run):
    ckpt = gated_run / "checkpoint"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "tti_gpt2" and cfg["auto_map"]["AutoModelForCausalLM"]
    assert (ckpt / "modeling_tti_gpt2.py").exists()
    assert [(g["type"], g["layer"]) for g in cfg["tti_ray_gates"]] == [
        ("topk", 0), ("topk", 1), ("fixed", 1),  # forward order: TopK, then the L0 gate
    ]
    assert cfg["tti_ray_gates"][0]["k_units"] == 8  # 10% of d_ff = 80
    assert set(cfg["tti_ray_interventions"]) == {"topk", "l0_gate"}
    assert cfg["tti_ray_unsupported"] == []


def test_validation_ce_is_equal_through_every_loader(gated_run, loaded):
    from transformers import AutoModelForCausalLM

    blocks = _val_blocks(loaded)
    x, y = blocks[:, :-1], blocks[:, 1:]
    ref = _logits(loaded.model, x)
    recorded = read_final_metrics(gated_run)["val/loss"]
    auto = AutoModelForCausalLM.from_pretrained(gated_run / "checkpoint", trust_remote_code=True)
    assert type(auto).__name__ == "TtiGPT2LMHeadModel"
    ces = {
        "load_model": _ce(ref, y),
        "auto_trust_remote_code": _ce(_logits(auto.eval(), x), y),
        "to_hf": _ce(_logits(to_hf(gated_run), x), y),
        "transformer_lens": _ce(_logits(to_transformer_lens(gated_run), x), y),
    }
    for name, ce in ces.items():
        assert ce == pytest.approx(recorded, abs=1e-4), (name, ces, recorded)
    # the gates are really applied: without them the logits are another model's
    ungated = load_model(gated_run).model
    for m in ungated.modules():
        if hasattr(m, "gates"):
            m.gates = torch.nn.ModuleList()
    assert (_logits(ungated, x) - ref).abs().max() > 0.05


def test_plain_gpt2_class_refuses_a_gated_checkpoint(gated_run):
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    with pytest.raises(KeyError, match="trust_remote_code=True"):
        GPT2LMHeadModel.from_pretrained(gated_run / "checkpoint")
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(gated_run / "checkpoint", trust_remote_code=False)


def test_hf_save_pretrained_of_the_gated_model_stays_gated(gated_run, tmp_path):
    """Re-saved by HF itself, the model keeps its gates, marker and shipped class."""
    from transformers import AutoModelForCausalLM

    auto = AutoModelForCausalLM.from_pretrained(gated_run / "checkpoint", trust_remote_code=True)
    auto.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "tti_gpt2" and len(cfg["tti_ray_gates"]) == 3
    assert (tmp_path / "modeling_tti_gpt2.py").exists()
    again = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    x = torch.randint(0, 256, (2, 16))
    assert torch.equal(_logits(again.eval(), x), _logits(auto.eval(), x))


def test_transformer_lens_logits_and_hook_post_match(gated_run, loaded):
    tl = to_transformer_lens(gated_run)
    assert tl.cfg.d_mlp == 80 != 4 * tl.cfg.d_model
    x = _val_blocks(loaded)[:, :-1]
    hf = to_hf(gated_run)
    assert (_logits(tl, x) - _logits(hf, x)).abs().max() <= 1e-4
    sites = [("mlp_hidden", i) for i in range(2)]
    with torch.no_grad(), capture(loaded.model, sites, detach=True) as acts:
        loaded.model(x)
    _, cache = tl.run_with_cache(x)
    for _, i in sites:
        post = cache[f"blocks.{i}.mlp.hook_post"]
        torch.testing.assert_close(post, acts[("mlp_hidden", i)], atol=1e-5, rtol=0)
        assert float((post == 0).float().mean()) == pytest.approx(0.9)
    tl.reset_hooks(including_permanent=True)  # the gates are not hooks: they stay
    again = tl.run_with_cache(x)[1]["blocks.0.mlp.hook_post"]
    assert torch.equal(again, cache["blocks.0.mlp.hook_post"])


def test_nnsight_reads_gated_activations_at_mlp_act(gated_run, loaded):
    x = _val_blocks(loaded)[:4, :-1]
    model = to_nnsight(gated_run)
    with model.trace(x):  # nnsight runs the block's source: plain statements, no comprehension
        h0 = model.transformer.h[0].mlp.act.output.save()
        h1 = model.transformer.h[1].mlp.act.output.save()
    saved = [h0, h1]
    with torch.no_grad(), capture(loaded.model, [("mlp_hidden", 0)], detach=True) as acts:
        loaded.model(x)
    for a in saved:
        assert float((a == 0).float().mean()) == pytest.approx(0.9)  # 8 of 80 units per token
    assert torch.equal(saved[0], acts[("mlp_hidden", 0)])
    # load_model's own model, traced directly, reads the same gated values
    from nnsight import NNsight

    wrapped = NNsight(loaded.model)
    with wrapped.trace(x):
        own = wrapped.transformer.h[0].mlp.act.output.save()
    assert torch.equal(own, acts[("mlp_hidden", 0)])


# -- checkpoints of other shapes, built without training ----------------------------------------
def _checkpoint(tmp_path, tiny_model_cfg, interventions):
    from tti_ray.config import RunConfig
    from tti_ray.interventions import build_interventions, parse_interventions
    from tti_ray.interventions.registry import attach_all
    from tti_ray.model import build_model

    cfg = RunConfig(model=tiny_model_cfg, interventions=interventions)
    torch.manual_seed(0)
    model = build_model(cfg.model, 64)
    ivs = build_interventions(parse_interventions(interventions), cfg.model)
    attach_all(ivs, model)
    opt = torch.optim.AdamW(model.parameters())
    tokens = TokenData.synthetic(64, 100, 100)
    save_checkpoint(tmp_path / "checkpoint", model=model, interventions=ivs, optimizer=opt,
                    step=0, cfg=cfg, tokens=tokens)
    return tmp_path, model.eval()


def test_mlp_out_gates_travel_to_hf_and_transformer_lens(tmp_path, tiny_model_cfg):
    run, model = _checkpoint(
        tmp_path, tiny_model_cfg, {"topk": {"k": 0.25, "sites": ["mlp_out"], "layers": [1]}}
    )
    x = torch.randint(0, 64, (2, 16))
    ref = _logits(model, x)
    assert torch.equal(_logits(to_hf(run), x), ref)
    tl = to_transformer_lens(run)
    assert (_logits(tl, x) - ref).abs().max() <= 1e-4
    out = tl.run_with_cache(x)[1]["blocks.1.hook_mlp_out"]
    assert ((out != 0).sum(-1) == 8).all()  # 25% of d_model 32


def test_unsupported_architectural_intervention_refuses_to_load(tmp_path, tiny_model_cfg):
    from transformers import AutoModelForCausalLM

    run, _ = _checkpoint(tmp_path, tiny_model_cfg, {"overcomplete": {"coef": 0.1, "layers": [0]}})
    cfg = json.loads((run / "checkpoint/config.json").read_text())
    assert cfg["tti_ray_unsupported"] == ["overcomplete"] and cfg["tti_ray_gates"] == []
    with pytest.raises(ValueError, match="overcomplete.*only tti_ray.train.load_model"):
        AutoModelForCausalLM.from_pretrained(run / "checkpoint", trust_remote_code=True)


def test_disabled_gates_leave_a_plain_gpt2_checkpoint(tmp_path, tiny_model_cfg):
    from transformers import GPT2LMHeadModel

    run, model = _checkpoint(tmp_path, tiny_model_cfg, {"topk": {"k": 1.0}})
    cfg = json.loads((run / "checkpoint/config.json").read_text())
    assert cfg["model_type"] == "gpt2" and "auto_map" not in cfg
    x = torch.randint(0, 64, (2, 16))
    plain = GPT2LMHeadModel.from_pretrained(run / "checkpoint")
    assert torch.equal(_logits(plain, x), _logits(model, x))
