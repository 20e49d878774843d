"""The ``bottleneck`` intervention beyond the shared suite: the KL term's closed form, the TC
term's scaling, eval = μ, readouts (KL, active latents, MIG/SAP probe), config, exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tti_ray.interventions import parse_interventions
from tti_ray.interventions.registry import KeyPathError
from tti_ray.metrics.disentanglement import gaussian_kl, total_correlation

MU = [0.5, -1.0, 2.0]
LOGVAR = [0.0, math.log(4.0), -1.0]
#: ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) for MU, LOGVAR
KL_HAND = 0.5 * ((0.25 + 1 - 1 - 0) + (1 + 4 - 1 - math.log(4)) + (4 + math.exp(-1) - 1 + 1))


def _fixed_posterior(iv, mu=MU, logvar=LOGVAR):
    """Every token gets the same (μ, log σ²): encoder weights 0, biases = the hand values."""
    with torch.no_grad():
        for vae in iv.vaes.values():
            vae.w_mu.zero_()
            vae.w_lv.zero_()
            vae.b_mu.copy_(torch.tensor(mu))
            vae.b_lv.copy_(torch.tensor(logvar))


def test_kl_term_matches_the_closed_form(model, batch, make_iv, run_step, fake_tokens):
    x, y = batch
    ivs = make_iv("bottleneck", d_z=3, tc_coef=0.0, layers=[0, 1])
    iv = ivs["bottleneck"]
    _fixed_posterior(iv)
    iv.prepare(fake_tokens)
    iv.attach(model)
    model.train()
    _, _, terms = run_step(model, ivs, x, y)
    assert set(terms) == {"bottleneck/kl"}
    assert float(terms["bottleneck/kl"].detach()) == pytest.approx(KL_HAND, rel=1e-6)
    assert KL_HAND == pytest.approx(3.6157927, rel=1e-6)


def test_tc_term_is_tc_coef_times_total_correlation(model, batch, make_iv, fake_tokens):
    from tti_ray.interventions import StepContext

    x, _ = batch
    ivs = make_iv("bottleneck", coef=0.5, tc_coef=0.2, tc_max_tokens=1000)
    iv = ivs["bottleneck"]
    iv.attach(model)
    model.train()
    model(input_ids=x)
    mu, lv, z = iv._codes[("resid_post", 0)]
    expected = total_correlation(z, mu, lv).detach()
    terms = iv.loss_terms({}, StepContext(token_ids=x, step=0))
    assert set(terms) == {"kl", "tc"}
    # the trainer multiplies by coef: coef · term = tc_coef · TC
    assert float(0.5 * terms["tc"].detach()) == pytest.approx(0.2 * float(expected), rel=1e-6)
    kl = gaussian_kl(mu, lv).sum(-1).mean().detach()
    assert float(terms["kl"].detach()) == pytest.approx(float(kl))


def test_loss_terms_without_a_training_forward_is_an_error(model, batch, make_iv):
    from tti_ray.interventions import StepContext

    iv = make_iv("bottleneck")["bottleneck"]
    iv.attach(model)
    with pytest.raises(RuntimeError, match="training forward"):
        iv.loss_terms({}, StepContext(token_ids=batch[0], step=0))


def test_train_samples_and_eval_uses_the_mean(model, batch, make_iv):
    x, _ = batch
    iv = make_iv("bottleneck")["bottleneck"]
    iv.attach(model)
    vae = iv.vaes["resid_post_0"]
    seen = {}
    model.transformer.h[0].register_forward_hook(
        lambda _m, _i, out: seen.update(out=out[0] if isinstance(out, tuple) else out)
    )
    model.eval()
    with torch.no_grad():
        model(input_ids=x)
        h = seen["out"]  # the decoded output of layer 0
        model(input_ids=x)
        assert torch.equal(seen["out"], h)  # deterministic
        model.train()
        torch.manual_seed(1)
        model(input_ids=x)
        a = seen["out"]
        torch.manual_seed(2)
        model(input_ids=x)
        assert not torch.equal(seen["out"], a)  # noise from the global RNG
        assert not torch.equal(a, h)
    # eval output = decode(μ) of the block's own output: recompute μ from a hook-free forward
    iv.remove_hooks()
    model.eval()
    with torch.no_grad():
        model(input_ids=x)
        raw = seen["out"]
        mu, _ = vae.encode(raw.reshape(-1, raw.shape[-1]))
        assert torch.allclose(vae.decode(mu).reshape(h.shape), h, atol=1e-6)


def test_readouts_report_kl_active_latents_and_the_probe(model, batch, make_iv, fake_tokens):
    x, _ = batch
    ivs = make_iv("bottleneck", d_z=3, layers=[1], probe_per_cell=2)
    iv = ivs["bottleneck"]
    _fixed_posterior(iv)
    iv.prepare(fake_tokens)
    iv.attach(model)
    model.eval()
    with torch.no_grad():
        model(input_ids=x)
    out = iv.readouts()
    assert out["kl"] == pytest.approx(KL_HAND, rel=1e-6)
    assert out["kl_per_latent"] == pytest.approx(KL_HAND / 3, rel=1e-6)
    tops = sorted(float(v) for v in gaussian_kl(torch.tensor(MU), torch.tensor(LOGVAR)))[::-1]
    assert [out["kl_top1"], out["kl_top2"], out["kl_top3"]] == pytest.approx(tops, rel=1e-6)
    assert out["active_latents"] == 0.0  # μ does not depend on x
    assert out["mig"] == 0.0 and out["sap"] == 0.0  # a constant code carries no factor
    assert iv.readouts().keys() == {"mig", "sap"}  # eval sums were reset; the probe remains
    assert model.training is False


def test_probe_codes_pool_per_sentence_and_leave_the_model_alone(model, make_iv, fake_tokens):
    ivs = make_iv("bottleneck", d_z=4, layers=[0, 1], probe_per_cell=1, probe_pool="last")
    iv = ivs["bottleneck"]
    iv.prepare(fake_tokens)
    iv.attach(model)
    model.train()
    codes = iv.probe_codes()
    assert set(codes) == {("resid_post", 0), ("resid_post", 1)}
    assert all(c.shape == (32, 4) and torch.isfinite(c).all() for c in codes.values())
    assert model.training  # restored
    out = iv.readouts()
    assert {"mig/layer_0", "mig/layer_1", "sap/layer_0", "sap/layer_1", "mig"} <= set(out)
    assert "kl" not in out  # no eval forward since the last readout


def test_config_selection_and_validation():
    cfg = parse_interventions({"bottleneck": {"coef": 4.0}})["bottleneck"]
    assert cfg.sites == ["resid_post"] and cfg.layers == [0] and cfg.d_z == 16
    for bad, path in [({"sites": ["mlp_hidden"]}, "sites"), ({"d_z": 0}, "d_z"),
                      ({"probe_pool": "max"}, "probe_pool"), ({"beta": 1.0}, "beta")]:
        with pytest.raises(KeyPathError, match=f"interventions.bottleneck.{path}"):
            parse_interventions({"bottleneck": {"coef": 1.0, **bad}})


def test_disabled_bottleneck_skips_the_probe(make_iv, fake_tokens, model):
    iv = make_iv("bottleneck", coef=0.0)["bottleneck"]
    iv.prepare(fake_tokens)
    iv.attach(model)
    assert iv._probe is None and iv.readouts() == {}


# -- exact resume through the real trainer ---------------------------------------------------------
SMALL = {
    "name": "bn",
    "data": {"vocab_size": 256, "max_train_stories": 200},
    "model": {"n_layer": 2, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 0, "eval_every": 2, "ckpt_every": 2,
              "threads": 1},
    "eval": {"val_batches": 1, "metric_tokens": 64},
    "interventions": {"bottleneck": {"coef": 1.0, "d_z": 4, "tc_coef": 0.5, "layers": [0],
                                     "probe_per_cell": 1}},
}


class _Killed(Exception):
    pass


class _KillAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def report(self, metrics, *, step, checkpoint=None):
        if step == self.step:
            raise _Killed


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    from tti_ray.config import load_config
    from tti_ray.train import train_run

    cfg = load_config(raw=SMALL)
    a, b = tmp_path / "a", tmp_path / "b"
    final_a = train_run(cfg, None, a)
    with pytest.raises(_Killed):
        train_run(cfg, _KillAt(2), b)
    assert json.loads((b / "checkpoint/train_state.json").read_text())["step"] == 2
    final_b = train_run(cfg, None, b, resume=True)
    for f in ("model.safetensors", "interventions.safetensors"):
        wa, wb = load_file(a / "checkpoint" / f), load_file(b / "checkpoint" / f)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f
    keys = [k for k in final_a if k.startswith(("val/", "train/")) and "per_s" not in k]
    assert {"val/bottleneck/kl", "val/bottleneck/mig", "train/reg/bottleneck/tc"} <= set(keys)
    for k in keys:
        assert final_a[k] == final_b[k] or (math.isnan(final_a[k]) and math.isnan(final_b[k])), k
