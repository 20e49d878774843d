"""Fixtures for the ``analysis`` CLIs: hand-written experiment directories (no Ray), a tiny
checkpoint trained for 4 steps, and an MLflow sqlite store with a fake sweep."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PPL, POLY = "val/perplexity", "val/polysemanticity/mean"
COEF = "interventions.anti_poly.coef"
SPACE = {
    "name": "toy_sweep",
    "base": {"preset": "tiny", "interventions": {"anti_poly": {"coef": 0.0}}},
    "parameters": {COEF: {"distribution": "loguniform", "low": 1e-4, "high": 1e-1}},
    "objectives": [{"metric": PPL, "mode": "min"}, {"metric": POLY, "mode": "min"}],
    "budget": {"trials": 8, "seeds_per_config": 1},
}
TINY_RUN = {
    "preset": "tiny",
    "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_every": 4, "ckpt_every": 4},
    "eval": {"val_batches": 1, "metric_tokens": 128},
}


def layer_metrics(rng: np.random.Generator, finished: bool) -> dict[str, float]:
    out = {}
    for m in ("polysemanticity", "sparsity"):
        for site in ("mlp_hidden", "mlp_out"):
            for i in range(2):
                out[f"val/{m}/{site}/layer_{i}"] = float(rng.uniform(0, 5)) if finished else np.nan
    return out


def partial_trials() -> pd.DataFrame:
    """8 planned, 7 recorded: 3 finished (with a duplicate point and a tie), 2 running, 1 failed,
    1 pending; per-layer metrics, no SAE metrics, no checkpoints."""
    rng = np.random.default_rng(0)
    rows = [
        # trial, status, coef, ppl, poly
        ("a0", "finished", 1e-4, 10.0, 5.0),
        ("a1", "finished", 1e-3, 12.0, 3.0),
        ("a2", "finished", 1e-2, 12.0, 3.0),  # duplicate of a1: both on the front
        ("a3", "running", 3e-2, np.nan, np.nan),
        ("a4", "running", 5e-2, np.nan, np.nan),
        ("a5", "failed", 7e-2, np.nan, np.nan),
        ("a6", "pending", 9e-2, np.nan, np.nan),
    ]
    recs = []
    for k, (t, st, c, p, q) in enumerate(rows):
        recs.append(
            {
                "trial_id": t,
                "config_id": f"c{k}",
                "status": st,
                "seed": 0,
                COEF: c,
                PPL: p,
                POLY: q,
                **layer_metrics(rng, st == "finished"),
                "steps": 40,
                "completed_at": k + 1 if st in ("finished", "failed") else np.nan,
                "node_id": "n",
                "checkpoint": "",
            }
        )
    return pd.DataFrame(recs)


def front_trials(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """``n`` finished trials on a coarse grid (many ties and duplicates), a few other statuses."""
    rng = np.random.default_rng(seed)
    ppl = rng.integers(0, 6, n).astype(float) + 10
    poly = rng.integers(0, 6, n).astype(float)
    status = np.array(["finished"] * n, dtype=object)
    status[:3] = ["diverged", "running", "failed"]
    ppl[0] = 0.5  # a diverged trial that would dominate everything
    return pd.DataFrame(
        {
            "trial_id": [f"t{i:02d}" for i in range(n)],
            "config_id": [f"c{i:02d}" for i in range(n)],
            "status": status,
            "seed": 0,
            COEF: np.geomspace(1e-4, 1e-1, n),
            PPL: ppl,
            POLY: poly,
            "val/sparsity/mean": rng.uniform(0, 1, n),
            "completed_at": np.arange(1, n + 1),
        }
    )


def multi_seed_trials() -> pd.DataFrame:
    """3 configurations x 4 seeds, all finished; known values for scipy comparisons."""
    vals = {
        1e-4: ([10.0, 10.5, 9.8, 10.2], [5.0, 5.2, 4.9, 5.1]),
        1e-3: ([10.4, 10.9, 10.1, 10.6], [4.1, 4.3, 4.0, 4.4]),
        1e-2: ([12.0, 12.6, 11.5, 12.2], [3.0, 3.5, 2.8, 3.1]),
    }
    recs = []
    for k, (coef, (ps, qs)) in enumerate(vals.items()):
        for s, (p, q) in enumerate(zip(ps, qs, strict=True)):
            recs.append(
                {
                    "trial_id": f"m{k}{s}",
                    "config_id": f"cfg{k}",
                    "status": "finished",
                    "seed": s,
                    COEF: coef,
                    PPL: p,
                    POLY: q,
                    "completed_at": len(recs) + 1,
                    "checkpoint": "",
                }
            )
    return pd.DataFrame(recs)


def write_experiment(d: Path, df: pd.DataFrame, space: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    df.to_csv(d / "trials.csv", index=False)
    if space is not None:
        (d / "search_space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    return d


def run_cli(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The real ``python -m <module>`` command, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def partial_exp(tmp_path) -> Path:
    return write_experiment(tmp_path / "partial", partial_trials(), SPACE)


@pytest.fixture
def multi_exp(tmp_path) -> Path:
    space = {**SPACE, "budget": {"trials": 3, "seeds_per_config": 4}}
    return write_experiment(tmp_path / "multi", multi_seed_trials(), space)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory with a 4-step checkpoint of a 1-layer d_model 32 model (~10 s)."""
    from tti_ray.config import load_config
    from tti_ray.train import train_run

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    train_run(load_config(raw=TINY_RUN), None, out)
    assert (out / "checkpoint" / "model.safetensors").exists()
    return out


@pytest.fixture
def exp_with_checkpoint(tmp_path, tiny_run) -> Path:
    """The multi-seed experiment with the tiny checkpoint as two trials' checkpoints."""
    d = write_experiment(
        tmp_path / "ckpt_exp",
        multi_seed_trials(),
        {**SPACE, "budget": {"trials": 3, "seeds_per_config": 4}},
    )
    for t in ("m00", "m20"):
        shutil.copytree(tiny_run / "checkpoint", d / "runs" / t / "checkpoint")
    return d


# -- MLflow ---------------------------------------------------------------------------------------
FAKE_TRIALS = [
    # trial_id, config_id, status, coef, ppl (last logged), poly, finished in MLflow
    ("t0", "c0", "finished", 1e-4, 10.0, 5.0, True),
    ("t1", "c1", "finished", 1e-3, 11.0, 4.0, True),
    ("t2", "c2", "running", 1e-2, 12.0, 4.5, False),
]


def log_fake_sweep(
    client, exp_id: str, tmp: Path, *, with_space: bool = True, searched_tag: bool = True
) -> str:
    """A parent run (``tti_ray.role=sweep``) and FAKE_TRIALS as its children, as
    :mod:`tti_ray.tracking` logs them (trial t0 with a ``checkpoint.json`` pointer to a local
    directory holding the two files a checkpoint needs). Returns the parent run id."""
    parent = client.create_run(exp_id, tags={"tti_ray.role": "sweep"}, run_name="sweep")
    pid = parent.info.run_id
    if with_space:
        f = tmp / "search_space.yaml"
        f.write_text(yaml.safe_dump({**SPACE, "budget": {"trials": 4}}))
        client.log_artifact(pid, str(f))
    for tid, cid, status, coef, ppl, poly, done in FAKE_TRIALS:
        tags = {
            "tti_ray.role": "trial",
            "mlflow.parentRunId": pid,
            "tti_ray.status": status,
            "tti_ray.trial_id": tid,
            "tti_ray.config_id": cid,
        }
        if searched_tag:
            tags["tti_ray.searched"] = COEF
        rid = client.create_run(exp_id, run_name=tid, tags=tags).info.run_id
        if tid == "t0":
            ckpt = tmp / f"ckpt_{rid}"
            ckpt.mkdir()
            (ckpt / "model.safetensors").write_bytes(b"")
            (ckpt / "run_config.yaml").write_text("{}")
            pointer = tmp / f"ptr_{rid}" / "checkpoint.json"
            pointer.parent.mkdir()
            pointer.write_text(json.dumps({"path": str(ckpt), "host": "h", "step": 4}))
            client.log_artifact(rid, str(pointer))
        for k, v in {
            COEF: coef,
            "train.seed": 0,
            "model.n_layer": 2,
            "data.tokenizer": "gpt2",
        }.items():
            client.log_param(rid, k, v)
        client.log_metric(rid, PPL, ppl + 3.0, step=1)  # an earlier eval: the reader takes the last
        client.log_metric(rid, PPL, ppl, step=2)
        client.log_metric(rid, POLY, poly, step=2)
        if done:
            client.set_terminated(rid)
    return pid


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """A temp sqlite tracking store with experiment ``anti_poly``: one fake sweep; an older
    sweep in the same experiment; experiment ``no_space`` without the search-space artifact;
    ``bare`` without it and without ``tti_ray.searched`` tags.
    Returns ``(uri, client, {"parent": id, "old_parent": id})``."""
    from mlflow.tracking import MlflowClient

    d = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("anti_poly", artifact_location=str(d / "artifacts"))
    old = client.create_run(
        exp, tags={"tti_ray.role": "sweep"}, run_name="old sweep", start_time=1_000
    )  # long before the fake sweep below
    client.create_run(
        exp,
        tags={
            "tti_ray.role": "trial",
            "mlflow.parentRunId": old.info.run_id,
            "tti_ray.status": "finished",
            "tti_ray.trial_id": "old0",
        },
    )
    parent = log_fake_sweep(client, exp, d)
    exp2 = client.create_experiment("no_space", artifact_location=str(d / "artifacts2"))
    log_fake_sweep(client, exp2, d, with_space=False)
    exp3 = client.create_experiment("bare", artifact_location=str(d / "artifacts3"))
    log_fake_sweep(client, exp3, d, with_space=False, searched_tag=False)
    return uri, client, {"parent": parent, "old_parent": old.info.run_id}
