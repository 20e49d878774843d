"""Every checkpoint whose ids are its tokenizer's ships that tokenizer in HF's layout (issue 19):
``AutoTokenizer.from_pretrained(checkpoint)`` encodes exactly the token cache the model was
trained and evaluated on, and TransformerLens, its TransformerBridge and nnsight read text through
it. Against the real libraries, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tti_ray.config import DataConfig, RunConfig
from tti_ray.data import TokenData, load_tokens, stories
from tti_ray.export import to_hf, to_nnsight, to_transformer_lens
from tti_ray.export.hf import checkpoint_tokenizer
from tti_ray.model import build_model, capture
from tti_ray.train import load_model, save_checkpoint

TEXT = "Once upon a time, a little dog named Spot found a shiny red ball."


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return (out.logits if hasattr(out, "logits") else out).float()


def test_autotokenizer_round_trip_equals_the_token_cache(bpe_run):
    from transformers import AutoTokenizer

    ckpt = bpe_run / "checkpoint"
    tok = AutoTokenizer.from_pretrained(ckpt)  # no flag: an ungated checkpoint is plain GPT-2
    run = load_model(bpe_run)
    valid = stories(run.cfg.data, "valid")
    enc = tok(valid, add_special_tokens=False)["input_ids"]
    # the model's validation stream is exactly the tokenizer's ids, one end-of-text per story
    assert [i for ids in enc for i in (*ids, tok.eos_token_id)] == np.asarray(
        run.tokens.valid
    ).tolist()
    assert [tok.decode(ids) for ids in enc] == valid  # byte-level: lossless
    cfg = json.loads((ckpt / "config.json").read_text())
    assert tok.eos_token_id == run.tokens.eot_id == cfg["eos_token_id"] == 8191
    assert len(tok) == cfg["vocab_size"] == 8192
    # the id map has its own name: nothing of ours is called vocab.json any more
    assert not (ckpt / "vocab.json").exists()
    meta = json.loads((ckpt / "token_map.json").read_text())
    assert meta["tokenizer"] == "tinystories-bpe" and meta["hf_tokenizer"] is True
    assert meta["keep_ids"] == list(range(8192)) and meta["eot_id"] == 8191


def test_gated_checkpoint_tokenizer_and_model_with_trust_remote_code(bpe_run, bpe_gated_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = bpe_gated_run / "checkpoint"
    tok = AutoTokenizer.from_pretrained(ckpt, trust_remote_code=True)
    plain = AutoTokenizer.from_pretrained(bpe_run / "checkpoint")
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    assert ids.tolist() == plain(TEXT, return_tensors="pt")["input_ids"].tolist()
    model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True).eval()
    ref = _logits(load_model(bpe_gated_run).model, ids)
    assert torch.equal(_logits(model, ids), ref)


def test_gpt2_checkpoint_ships_gpt2s_bpe(tmp_path, tiny_model_cfg):
    """The paper preset's tokenizer (full GPT-2 BPE, no remap) travels the same way."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    from tti_ray.data.text_tokenizer import ASSETS
    from tti_ray.interventions import build_interventions

    data = DataConfig(tokenizer="gpt2", vocab_size=None, max_train_stories=20)
    cfg = RunConfig(model=tiny_model_cfg, data=data)
    tokens = load_tokens(data)
    model = build_model(cfg.model, tokens.vocab_size)
    ivs = build_interventions({}, cfg.model)
    save_checkpoint(tmp_path / "checkpoint", model=model, interventions=ivs,
                    optimizer=torch.optim.AdamW(model.parameters()), step=0, cfg=cfg,
                    tokens=tokens)
    tok = AutoTokenizer.from_pretrained(tmp_path / "checkpoint")
    ref = GPT2TokenizerFast(str(ASSETS / "gpt2/vocab.json"), str(ASSETS / "gpt2/merges.txt"))
    first = stories(data, "train")[0]
    ids = tok(first, add_special_tokens=False)["input_ids"]
    assert ids == ref(first)["input_ids"]
    assert [*ids, 50256] == np.asarray(tokens.train[: len(ids) + 1]).tolist()
    assert tok.decode(ids) == first and tok.eos_token_id == 50256


def test_remapped_vocabulary_ships_no_tokenizer_and_says_why(tmp_path, tiny_model_cfg):
    """A ``data.vocab_size`` remap (most frequent ids + UNK) cannot be a HF tokenizer."""
    cfg = RunConfig(model=tiny_model_cfg)
    model = build_model(cfg.model, 64)
    from tti_ray.interventions import build_interventions

    save_checkpoint(tmp_path / "checkpoint", model=model,
                    interventions=build_interventions({}, cfg.model),
                    optimizer=torch.optim.AdamW(model.parameters()), step=0, cfg=cfg,
                    tokens=TokenData.synthetic(64, 100, 100))
    ckpt = tmp_path / "checkpoint"
    assert not (ckpt / "tokenizer.json").exists()
    meta = json.loads((ckpt / "token_map.json").read_text())
    assert meta["hf_tokenizer"] is False and "no HF tokenizer" in meta["no_hf_tokenizer_because"]
    assert checkpoint_tokenizer(tmp_path, id_fallback=False) is None
    assert checkpoint_tokenizer(tmp_path)("<3> <7>")["input_ids"] == [3, 7]  # id stand-in


def test_transformer_lens_and_its_bridge_read_text(bpe_run):
    from transformer_lens.model_bridge import TransformerBridge

    tok = checkpoint_tokenizer(bpe_run)
    want = tok(TEXT, add_special_tokens=False)["input_ids"]
    tl = to_transformer_lens(bpe_run)  # the checkpoint's tokenizer by default
    ids = tl.to_tokens(TEXT, prepend_bos=False)
    assert ids[0].tolist() == want
    assert tl.to_string(ids[0]) == TEXT
    assert (_logits(tl, ids) - _logits(to_hf(bpe_run), ids)).abs().max() <= 1e-4
    bridge = TransformerBridge.boot_transformers(str(bpe_run / "checkpoint"), device="cpu")
    assert bridge.to_tokens(TEXT, prepend_bos=False)[0].tolist() == want


def test_nnsight_traces_text_through_the_gates(bpe_gated_run):
    from nnsight import LanguageModel

    run = load_model(bpe_gated_run)
    ids = checkpoint_tokenizer(bpe_gated_run)(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad(), capture(run.model, [("mlp_hidden", 0)], detach=True) as acts:
        run.model(ids)
    ref = acts[("mlp_hidden", 0)]
    lm = LanguageModel(str(bpe_gated_run / "checkpoint"), trust_remote_code=True, dispatch=True)
    ours = to_nnsight(bpe_gated_run)
    for model in (lm, ours):
        with model.trace(TEXT):
            h = model.transformer.h[0].mlp.act.output.save()
        assert float((h == 0).float().mean()) == pytest.approx(0.75)  # TopK 25% of 64 units
        assert torch.equal(h, ref)
