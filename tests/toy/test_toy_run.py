"""run_toy end to end on both workloads: reports, safetensors checkpoint, metrics.json."""

from __future__ import annotations

import json
import math

import pytest

from tti_ray.config import RunConfig, TrainConfig
from tti_ray.toy import load_checkpoint, parse_toy_config, run_toy
from tti_ray.toy import superposition as S


def run_config(workload: str, toy: dict, seed: int = 0) -> RunConfig:
    # model_construct: the loader path is covered by test_toy_config (RunConfig.toy's annotation
    # is pending a schema fix); run_toy reads only workload, toy and train.seed.
    return RunConfig.model_construct(
        workload=workload,
        toy=parse_toy_config(toy, workload=workload),
        train=TrainConfig(seed=seed),
    )


class Recorder:
    def __init__(self):
        self.calls = []

    def report(self, metrics, *, step, checkpoint=None):
        self.calls.append((dict(metrics), step, checkpoint))


SMALL = {
    "toy_superposition": {"kind": "superposition", "n_features": 3, "n_hidden": 2, "steps": 120,
                          "eval_every": 50, "batch_size": 128, "eval_samples": 256},
    "toy_ablation": {"kind": "ablation", "steps": 120, "eval_every": 50, "n_train": 128,
                     "n_val": 64, "sae_steps": 40, "null_draws": 20},
}  # fmt: skip
EXPECTED = {
    "toy_superposition": ["toy/loss", "toy/features_represented", "toy/superposition/mean",
                          "toy/phase", "toy/norm/2", "toy/superposition/0"],
    "toy_ablation": ["toy/macs", "toy/interference", "toy/l0", "toy/sae_mse", "toy/task_mse",
                     "toy/val_mse", "toy/w4_sparsity", "toy/calibrated_macs",
                     "toy/feature_recovery"],
}  # fmt: skip


@pytest.mark.parametrize("workload", ["toy_superposition", "toy_ablation"])
def test_run_toy_end_to_end(workload, tmp_path):
    cfg = run_config(workload, SMALL[workload], seed=3)
    rec = Recorder()
    out = run_toy(cfg, rec, tmp_path / "run")
    assert out["status"] == "finished"
    for key in EXPECTED[workload]:
        assert math.isfinite(out[key]), key
    # periodic reports at 50 and 100, then the final one with the checkpoint
    assert [c[1] for c in rec.calls[:-1]] == [50, 100]
    final, step, ckpt = rec.calls[-1]
    assert step == out["step"] and ckpt == tmp_path / "run" / "checkpoint"
    assert final["status"] == "finished" and final["step"] == out["step"]
    assert all(isinstance(v, float) for k, v in final.items() if k.startswith("toy/"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == out
    tensors, toy, meta = load_checkpoint(ckpt)
    assert toy == cfg.toy and meta["workload"] == workload and meta["seed"] == "3"
    assert not list(ckpt.glob("*.pt")) and not list(ckpt.glob("*.pkl"))
    if workload == "toy_superposition":
        assert tensors["W"].shape == (2, 3)
        assert run_toy(cfg, None, tmp_path / "again")["toy/loss"] == out["toy/loss"]  # seeded
    else:
        assert tensors["sae.dec.weight"].shape == (12, 16)
        assert tensors["true_directions"].shape == (12, 8)


def test_nan_loss_is_reported_as_diverged(tmp_path, monkeypatch):
    real = S.instance_losses

    def nan_losses(*args):
        mse, l1 = real(*args)
        return mse * float("nan"), l1

    monkeypatch.setattr(S, "instance_losses", nan_losses)
    cfg = run_config("toy_superposition", SMALL["toy_superposition"])
    out = run_toy(cfg, None, tmp_path)
    assert out["status"] == "diverged"
    assert json.loads((tmp_path / "metrics.json").read_text())["toy/loss"] is None
