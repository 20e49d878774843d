"""SAEs written by ``evaluate_checkpoint`` open in SAELens (``SAE.load_from_disk``), and SAELens's
own evaluation functions, run on the TransformerLens export of the gated checkpoint, agree with
``sae_metrics.json``.

CE convention (see :mod:`tti_ray.sae.evaluate`): tti-ray scores seq_len targets per block (the
block's extra token is the last target), SAELens seq_len − 1 of the same seq_len-token inputs. The
other metrics are computed on the same tokens and agree to float32 precision; the CE-based ones are
checked against tti-ray's own formula evaluated on SAELens's targets, and their difference from
``sae_metrics.json`` is bounded (and printed)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from tti_ray.data import eval_blocks
from tti_ray.sae import evaluate_checkpoint
from tti_ray.sae.metrics import ce_loss_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAE_CFG = {"kind": "topk", "k": 8, "expansion": 2, "tokens": 8192, "batch_size": 256,
           "eval_tokens": 512, "model_batch": 16, "shuffle_buffer": 2048}


class _Blocks:
    """The one method of SAELens's ``ActivationsStore`` its eval functions call."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens

    def get_batch_tokens(self, n: int) -> torch.Tensor:
        assert n == len(self.tokens)
        return self.tokens


@pytest.fixture(scope="module")
def evaluated(gated_run, tmp_path_factory):
    from tti_ray.train import load_model

    run = load_model(gated_run)
    out = tmp_path_factory.mktemp("sae_eval")
    cfg = {**SAE_CFG, "layers": [0, 1]}
    metrics = evaluate_checkpoint(run, cfg, out, progress=False)
    assert json.loads((out / "sae_metrics.json").read_text()) == pytest.approx(metrics, nan_ok=True)
    return run, out, metrics


@pytest.mark.parametrize("layer", [0, 1])
def test_saelens_opens_the_sae_and_its_evals_agree(evaluated, gated_run, layer):
    from sae_lens import SAE, TopKSAE
    from sae_lens.evals import (
        get_downstream_reconstruction_metrics,
        get_sparsity_and_variance_metrics,
    )
    from sae_lens.training.activation_scaler import ActivationScaler

    from tti_ray.export import to_transformer_lens
    from tti_ray.sae import load_sae
    from tti_ray.sae.saelens import checkpoint_sha256

    run, out, ours = evaluated
    d = out / "saelens" / f"mlp_hidden_layer_{layer}"
    sae = SAE.load_from_disk(d)
    assert isinstance(sae, TopKSAE) and sae.cfg.k == 8
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (80, 160)
    meta = sae.cfg.metadata
    assert meta.hook_name == f"blocks.{layer}.mlp.hook_post"
    assert meta.tti_ray_step == 8 and meta.tti_ray_checkpoint == str(run.directory.resolve())
    assert meta.tti_ray_checkpoint_sha256 == checkpoint_sha256(run.directory)

    # the folded SAELens SAE computes tti-ray's codes and reconstructions
    own = load_sae(out / "saes" / f"mlp_hidden_layer_{layer}.safetensors")
    a = torch.randn(64, 80).relu()
    torch.testing.assert_close(sae.encode(a), own.encode(a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(sae.encode(a)), own(a), atol=1e-5, rtol=1e-5)

    seq_len = run.cfg.model.seq_len
    blocks = eval_blocks(run.tokens.valid, seq_len, math.ceil(SAE_CFG["eval_tokens"] / seq_len))
    x = blocks[:, :-1]  # the inputs tti-ray's evaluation runs the model on
    tl = to_transformer_lens(gated_run)
    store, scaler = _Blocks(x), ActivationScaler()
    sv, feats = get_sparsity_and_variance_metrics(
        sae, tl, store, scaler, n_batches=1, compute_l2_norms=False, compute_sparsity_metrics=True,
        compute_variance_metrics=True, compute_featurewise_density_statistics=True,
        eval_batch_size_prompts=len(x), model_kwargs={},
    )
    down = get_downstream_reconstruction_metrics(
        sae, tl, store, scaler, compute_kl=True, compute_ce_loss=True, n_batches=1,
        eval_batch_size_prompts=len(x),
    )
    key = f"sae/mlp_hidden/layer_{layer}"
    density = torch.tensor(feats["feature_density"])
    theirs = {
        "l0": sv["l0"],
        "mse": sv["mse"],
        "explained_variance": sv["explained_variance"],
        "kl": down["kl_div_with_sae"],
        "dead_fraction": float((density == 0).float().mean()),
        "dense_fraction": float((density > 0.1).float().mean()),
    }
    for m, v in theirs.items():
        assert v == pytest.approx(ours[f"{key}/{m}"], rel=1e-4, abs=1e-6), m
    print(f"layer {layer}: " + ", ".join(
        f"{m} {ours[f'{key}/{m}']:.6g} vs {v:.6g}" for m, v in theirs.items()
    ))

    # CE: SAELens's numbers are tti-ray's formula on seq_len - 1 targets per block ...
    y = x[:, 1:]
    with torch.no_grad():
        clean = tl(x)[:, :-1]
    ce127_clean = float(F.cross_entropy(clean.reshape(-1, clean.shape[-1]), y.reshape(-1)))
    assert down["ce_loss_without_sae"] == pytest.approx(ce127_clean, rel=1e-5)
    score127 = ce_loss_score(
        down["ce_loss_without_sae"], down["ce_loss_with_sae"], down["ce_loss_with_ablation"]
    )
    assert down["ce_loss_score"] == pytest.approx(score127, rel=1e-5)
    # ... and differ from sae_metrics.json (seq_len targets) only by that extra target per block
    diff = abs(down["ce_loss_score"] - ours[f"{key}/ce_loss_score"])
    dce = abs((down["ce_loss_with_sae"] - down["ce_loss_without_sae"]) - ours[f"{key}/delta_ce"])
    print(f"layer {layer}: |ce_loss_score diff| = {diff:.2e}, |delta_ce diff| = {dce:.2e}")
    assert diff < 0.05 and dce < 0.05


@pytest.mark.parametrize("kind", ["topk", "relu"])
@pytest.mark.parametrize("site", ["mlp_hidden", "mlp_out"])
def test_folded_sae_computes_tti_rays_codes(kind, site, tmp_path):
    """Both kinds, an input scale ≠ 1 and a nonzero b_dec: SAELens's encode/decode of the written
    directory equal tti-ray's (architecture, k and hook name in cfg.json)."""
    from sae_lens import SAE

    from tti_ray.sae import build_sae, parse_sae_config
    from tti_ray.sae.saelens import save_saelens

    cfg = parse_sae_config({"kind": kind, "expansion": 4, **({"k": 5} if kind == "topk" else {})})
    sae = build_sae(cfg, 24)
    x = torch.randn(100, 24) * 3.0 + 1.0
    sae.init_from_batch(x)
    assert float(sae.input_scale) != 1.0
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    d = save_saelens(sae, tmp_path / "sae", site=site, layer=3, context_size=16)
    theirs = SAE.load_from_disk(d)
    assert theirs.cfg.architecture() == {"topk": "topk", "relu": "standard"}[kind]
    want_hook = {"mlp_hidden": "blocks.3.mlp.hook_post", "mlp_out": "blocks.3.hook_mlp_out"}[site]
    assert theirs.cfg.metadata.hook_name == want_hook
    with torch.no_grad():
        f = theirs.encode(x)
        torch.testing.assert_close(f, sae.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs.decode(f), sae(x), atol=1e-5, rtol=1e-5)
