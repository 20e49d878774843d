"""``python -m tti_ray.train`` end to end, and its one-line errors (exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tti_ray.train.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "tti_ray.train", *args], cwd=REPO, env=env, check=False,
        capture_output=True, text=True, timeout=300,
    )


def test_cli_end_to_end(tmp_path, small_sets):
    out = tmp_path / "run"
    sets = [*small_sets, "train.steps=60", "train.eval_every=20", "train.ckpt_every=30",
            "train.lr=3e-3", "train.warmup_steps=5", "train.batch_size=8"]
    r = _cli("configs/tiny.yaml", *(f"--set={s}" for s in sets), "--out", str(out),
             "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "status=finished" in r.stdout

    for name in ("metrics.json", "metrics.jsonl", "config.yaml", "checkpoint/model.safetensors",
                 "checkpoint/config.json", "checkpoint/train_state.json"):
        assert (out / name).exists(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 60 and cfg["model"]["d_model"] == 32
    prov = cfg["provenance"]
    assert prov["tti_ray_version"] and prov["seed"] == 0
    assert prov["git_commit"] is None or len(prov["git_commit"]) == 40
    assert "git_commit" in prov

    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 30, 40, 60]  # evals and checkpoints
    evals = [r for r in records if "val/perplexity" in r]
    assert [e["step"] for e in evals] == [20, 40, 60]
    final = json.loads((out / "metrics.json").read_text())
    assert final["status"] == "finished" and final["step"] == 60
    assert final["val/perplexity"] < evals[0]["val/perplexity"]
    for key in ("val/loss", "val/polysemanticity/mean", "val/sparsity/mean",
                "val/polysemanticity/mlp_hidden/layer_0", "val/polysemanticity/mlp_out/layer_0",
                "val/mean_abs_cosine/mean", "val/effective_dim/mean", "train/tokens_per_s"):
        assert isinstance(final[key], float), key


def test_cli_bad_key_subprocess_one_line_exit_2():
    r = _cli("configs/tiny.yaml", "--set", "model.bogus=1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "configs/tiny.yaml" in lines[0] and "model.bogus" in lines[0]


def _main_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    assert ei.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert captured.out == ""
    return lines[0]


def test_cli_bad_key_in_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: tiny\ntrain:\n  lrate: 0.1\n")
    line = _main_error(capsys, str(bad))
    assert str(bad) in line and "train.lrate" in line


def test_cli_missing_file(tmp_path, capsys):
    line = _main_error(capsys, str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in line


def test_cli_bad_value(capsys):
    line = _main_error(capsys, str(REPO / "configs/tiny.yaml"), "--set", "train.lr=-1")
    assert "tiny.yaml" in line and "train.lr" in line


def test_cli_resume_without_checkpoint(tmp_path, capsys):
    line = _main_error(capsys, str(REPO / "configs/tiny.yaml"), "--out", str(tmp_path / "x"),
                       "--resume")
    assert "--resume" in line and str(tmp_path / "x" / "checkpoint") in line
