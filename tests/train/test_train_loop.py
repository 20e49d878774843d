"""train_run: exact resume after a kill, divergence handling, run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tti_ray.train import loop, train_run
from tti_ray.train.loop import lr_factor, read_final_metrics


class Killed(Exception):
    """Stands in for SIGKILL: the process dies right after a checkpoint was reported."""


class KillAfter:
    def __init__(self, step: int) -> None:
        self.step, self.seen = step, []

    def report(self, metrics, *, step, checkpoint=None):
        self.seen.append((step, checkpoint))
        if step == self.step:
            assert checkpoint is not None and (checkpoint / "model.safetensors").exists()
            raise Killed


class Recorder:
    def __init__(self) -> None:
        self.reports = []

    def report(self, metrics, *, step, checkpoint=None):
        self.reports.append((step, dict(metrics), checkpoint))


def _steps(run: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_killed_and_resumed_run_is_bit_identical(small_cfg, tmp_path):
    # dropout and grad accumulation on: resume must restore RNG and optimizer state exactly
    cfg = small_cfg(**{"model.dropout": 0.1, "train.grad_accum": 2, "train.warmup_steps": 2,
                       "train.ckpt_every": 2})
    a, b = tmp_path / "a", tmp_path / "b"
    final_a = train_run(cfg, None, a)

    killer = KillAfter(step=4)
    with pytest.raises(Killed):
        train_run(cfg, killer, b)
    assert [s for s, _ in killer.seen] == [2, 4]
    assert json.loads((b / "checkpoint/train_state.json").read_text())["step"] == 4
    assert not (b / "metrics.json").exists()

    final_b = train_run(cfg, None, b, resume=True)
    wa, wb = load_file(a / "checkpoint/model.safetensors"), load_file(b / "checkpoint/model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    oa, ob = load_file(a / "checkpoint/optimizer.safetensors"), load_file(b / "checkpoint/optimizer.safetensors")
    assert all(torch.equal(oa[k], ob[k]) for k in oa)

    assert _steps(a) == _steps(b) == [2, 4, 6, 8]  # no duplicates after the resume
    assert final_b["status"] == final_a["status"] == "finished" and final_b["step"] == 8
    for key in ("val/loss", "train/loss", "val/polysemanticity/mean", "val/effective_dim/mean"):
        assert final_b[key] == final_a[key], key
    assert read_final_metrics(b)["val/loss"] == final_a["val/loss"]
    # config.yaml (with provenance) is kept from the first start
    assert "provenance" in (b / "config.yaml").read_text()


def test_resume_without_checkpoint_starts_fresh(small_cfg, tmp_path):
    cfg = small_cfg(**{"train.steps": 2, "train.eval_every": 2, "train.ckpt_every": 2})
    out = train_run(cfg, None, tmp_path / "r", resume=True)
    assert out["status"] == "finished" and _steps(tmp_path / "r") == [2]


def test_resume_of_a_finished_run_does_nothing(small_cfg, tmp_path):
    cfg = small_cfg(**{"train.steps": 2, "train.eval_every": 2, "train.ckpt_every": 2})
    train_run(cfg, None, tmp_path / "r")
    before = load_file(tmp_path / "r/checkpoint/model.safetensors")
    out = train_run(cfg, None, tmp_path / "r", resume=True)
    assert out["status"] == "finished" and out["step"] == 2
    after = load_file(tmp_path / "r/checkpoint/model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _steps(tmp_path / "r") == [2]


def test_nan_loss_ends_the_run_as_diverged(small_cfg, tmp_path, monkeypatch):
    """From the 3rd forward on, the logits are NaN: the run stops at step 3, no exception."""
    real_build = loop.build_model

    def build_poisoned(cfg, vocab):
        model = real_build(cfg, vocab)
        calls = {"n": 0}

        def poison(_m, _i, out):
            calls["n"] += 1
            return out * float("nan") if calls["n"] >= 3 else out

        model.lm_head.register_forward_hook(poison)
        return model

    monkeypatch.setattr(loop, "build_model", build_poisoned)
    rec = Recorder()
    out = train_run(small_cfg(**{"train.steps": 6}), rec, tmp_path / "d")
    assert out["status"] == "diverged" and out["step"] == 3
    assert out["val/loss"] == float("inf")
    final = read_final_metrics(tmp_path / "d")
    assert final["status"] == "diverged" and final["val/loss"] == "inf"  # JSON has no inf
    assert rec.reports[-1][0] == 3 and rec.reports[-1][1]["status"] == "diverged"
    assert rec.reports[-1][2] is None  # a diverged state is not checkpointed


def test_lr_schedule_warmup_then_cosine(small_cfg):
    cfg = small_cfg(**{"train.steps": 110, "train.warmup_steps": 10, "train.min_lr_ratio": 0.1})
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.55)
    assert lr_factor(110, cfg) == pytest.approx(0.1)


def test_batch_not_divisible_by_accumulation_is_a_setup_error(small_cfg, tmp_path):
    with pytest.raises(loop.TrainSetupError, match="train.batch_size"):
        train_run(small_cfg(**{"train.batch_size": 6, "train.grad_accum": 4}), None, tmp_path)


@pytest.mark.parametrize(("perms", "cats"), [(0, None), (2, "coarse")])
def test_eval_reports_the_metrics_its_config_asks_for(small_cfg, tmp_path, perms, cats):
    cfg = small_cfg(**{"train.steps": 4, "eval.permutations": perms, "eval.categories": cats})
    final = train_run(cfg, out_dir=tmp_path / "run")
    assert final["status"] == "finished"
    assert "val/polysemanticity_live/mean" in final
    assert ("val/polysemanticity_calibrated/mean" in final) == (perms > 0)
    assert ("val/category_polysemanticity_calibrated/mean" in final) == (cats is not None)
    assert ("val/category_polysemanticity_live/mean" in final) == (cats is not None)


def test_on_step_sees_every_step_and_changes_nothing(small_cfg, tmp_path):
    """The public per-step hook (what the benchmarks time with) is called once per optimizer
    step and leaves the run bit-identical."""
    cfg = small_cfg()
    seen: list[loop.StepStats] = []
    with_hook = train_run(cfg, None, tmp_path / "a", on_step=seen.append)
    without = train_run(cfg, None, tmp_path / "b")
    assert [s.step for s in seen] == list(range(1, cfg.train.steps + 1))
    assert all(s.tokens == cfg.train.batch_size * cfg.model.seq_len for s in seen)
    assert all(s.seconds > 0 for s in seen)
    wa = load_file(tmp_path / "a/checkpoint/model.safetensors")
    wb = load_file(tmp_path / "b/checkpoint/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    timing = {"train/tokens_per_s"}
    assert {k: v for k, v in with_hook.items() if k not in timing} == {
        k: v for k, v in without.items() if k not in timing}
