"""Helpers for sweep tests: a very small base run so real Ray sweeps finish in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

SMALL_BASE = {
    "preset": "tiny",
    "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
    "train": {"steps": 20, "batch_size": 4, "warmup_steps": 2, "eval_every": 10,
              "ckpt_every": 10, "log_every": 5},
    "eval": {"val_batches": 2, "metric_tokens": 256},
    "interventions": {"anti_poly": {"coef": 0.0}},
}


def write_space(path: Path, **over) -> Path:
    space = {
        "name": "test_sweep",
        "base": SMALL_BASE,
        "parameters": {
            "interventions.anti_poly.coef": {"distribution": "loguniform", "low": 1e-4,
                                             "high": 1e-1}
        },
        "searcher": {"type": "tpe", "seed": 0},
        "budget": {"trials": 3},
        "concurrency": 2,
    }
    space.update(over)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tti_ray.sweep", *args, "--num-cpus", "2"]


def run_sweep_cli(*args: str, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(sweep_cmd(*args), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def finished_ddp_run(out: Path) -> Path:
    """The run directory of a sweep's single 2-worker trial, after checking that it finished,
    that both ranks trained on disjoint data shards and that they ended with identical weights."""
    df = pd.read_csv(out / "trials.csv")
    assert list(df["status"]) == ["finished"]
    run = out / "runs" / df["trial_id"][0]
    w0 = json.loads((run / "worker.json").read_text())
    w1 = json.loads((run / "rank1" / "worker.json").read_text())
    assert (w0["rank"], w1["rank"], w0["world"]) == (0, 1, 2)
    assert not set(w0["first_batch_blocks"]) & set(w1["first_batch_blocks"])
    assert w0["weights_sha256"] == w1["weights_sha256"]
    return run


@pytest.fixture
def space_file(tmp_path):
    return write_space(tmp_path / "space.yaml")
