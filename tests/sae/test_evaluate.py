from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tti_ray.interventions.registry import KeyPathError
from tti_ray.sae import METRICS, SAE, TopKSAEConfig, evaluate_checkpoint, load_sae, parse_sae_config
from tti_ray.sae.evaluate import evaluate_saes

FAST = {"tokens": 2048, "batch_size": 256, "eval_tokens": 256, "k": 8, "shuffle_buffer": 1024}


class IdentitySAE(SAE):
    """Exact reconstruction: codes (relu(x), relu(-x)), decode = positive − negative part."""

    def encode(self, x):
        return torch.cat([F.relu(x), F.relu(-x)], -1)

    def decode(self, f):
        return f[:, : self.d_in] - f[:, self.d_in :]

    def forward(self, x):
        return self.decode(self.encode(x.reshape(-1, x.shape[-1]))).reshape(x.shape)


class ZeroSAE(SAE):
    """Reconstructs nothing: splicing it in is exactly the zero ablation."""

    def encode(self, x):
        return torch.zeros(x.shape[0], self.d_sae)

    def forward(self, x):
        return torch.zeros_like(x)


def _stub(cls, run, key):
    cfg = TopKSAEConfig(expansion=2, eval_tokens=256, model_batch=8)
    d = run.cfg.model.ff_dim if key[0] == "mlp_hidden" else run.cfg.model.d_model
    return cls(cfg, d).eval()


@pytest.mark.parametrize("key", [("mlp_hidden", 0), ("mlp_out", 1)])
def test_perfect_sae_scores_one_and_zero_sae_scores_zero(tiny_run, key):
    m = evaluate_saes(
        tiny_run.model, tiny_run.tokens, tiny_run.cfg, {key: _stub(IdentitySAE, tiny_run, key)}
    )[key]
    assert m["fvu"] == 0.0 and m["explained_variance"] == 1.0 and m["mse"] == 0.0
    assert m["ce_loss_score"] == 1.0 and m["delta_ce"] == 0.0 and m["kl"] == 0.0
    z = evaluate_saes(
        tiny_run.model, tiny_run.tokens, tiny_run.cfg, {key: _stub(ZeroSAE, tiny_run, key)}
    )[key]
    assert z["ce_loss_score"] == 0.0 and z["delta_ce"] != 0 and z["kl"] > 0
    assert z["l0"] == 0.0 and z["dead_fraction"] == 1.0


def test_evaluate_checkpoint_end_to_end(tiny_run, tmp_path):
    sae_cfg = {**FAST, "sites": ["mlp_hidden", "mlp_out"]}
    out = evaluate_checkpoint(tiny_run, sae_cfg, tmp_path, progress=False)
    keys = [
        f"sae/{s}/layer_{i}/{m}" for s in ("mlp_hidden", "mlp_out") for i in (0, 1) for m in METRICS
    ]
    assert set(out) == set(keys) | {f"sae/{m}" for m in METRICS}
    assert all(math.isfinite(v) for v in out.values()), out
    assert all(out[f"sae/{s}/layer_{i}/l0"] <= 8 for s in ("mlp_hidden", "mlp_out") for i in (0, 1))
    means = [out[f"sae/{s}/layer_{i}/fvu"] for s in ("mlp_hidden", "mlp_out") for i in (0, 1)]
    assert out["sae/fvu"] == pytest.approx(sum(means) / 4)
    assert out["sae/explained_variance"] == pytest.approx(1 - out["sae/fvu"])
    assert json.loads((tmp_path / "sae_metrics.json").read_text()) == pytest.approx(out)
    sae = load_sae(tmp_path / "saes" / "mlp_out_layer_1.safetensors")
    assert (sae.d_in, sae.d_sae, sae.cfg.k) == (32, 256, 8)
    assert not any(p.requires_grad is False for p in tiny_run.model.parameters())


def test_relu_kind_runs_and_model_is_left_untouched(tiny_run):
    before = {k: v.clone() for k, v in tiny_run.model.state_dict().items()}
    out = evaluate_checkpoint(
        tiny_run,
        {**{k: v for k, v in FAST.items() if k != "k"}, "kind": "relu", "layers": [1]},
        progress=False,
    )
    assert set(out) == {f"sae/mlp_hidden/layer_1/{m}" for m in METRICS} | {
        f"sae/{m}" for m in METRICS
    }
    assert all(math.isfinite(v) for v in out.values())
    for k, v in tiny_run.model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    ("raw", "path"), [({"layers": [2]}, "sae.layers"), ({"k": 10_000}, "sae.k")]
)
def test_config_that_does_not_fit_the_model_fails_before_training(tiny_run, tmp_path, raw, path):
    with pytest.raises(KeyPathError) as e:
        evaluate_checkpoint(tiny_run, parse_sae_config({**FAST, **raw}), tmp_path / "o")
    assert e.value.path == path and not (tmp_path / "o").exists()
