"""Seconds of overhead per sweep trial: 1-worker trials (``train_run`` inside the Tune trial) and
2-worker DDP trials (a Ray Train ``TorchTrainer`` inside the trial).

Overhead per trial = (sweep wall time − Ray start-up) / trials − the mean time of the same
``train_run`` called directly in-process. Target (issue 4): ≤ 2 s per 1-worker trial.

    python benchmarks/trial_overhead.py [--trials 6] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "preset": "tiny",
    "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
    "train": {"steps": 10, "batch_size": 4, "warmup_steps": 1, "eval_every": 10,
              "ckpt_every": 10, "threads": 1},
    "eval": {"val_batches": 1, "metric_tokens": 128},
}


def direct_seconds(n: int) -> float:
    from tti_ray.config import load_config
    from tti_ray.train import train_run

    cfg = load_config(raw=BASE)
    times = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(n + 1):
            t0 = time.perf_counter()
            train_run(cfg, None, Path(d) / str(i))
            times.append(time.perf_counter() - t0)
    return sum(times[1:]) / n  # the first call pays imports and tokenization


def sweep_seconds(trials: int, workers: int) -> dict:
    import ray

    from tti_ray.sweep.runner import plan_sweep, run_sweep
    from tti_ray.sweep.space import SearchSpace

    space = SearchSpace.model_validate({
        "name": f"overhead_w{workers}",
        "base": BASE,
        "parameters": {"train.lr": {"values": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3][:trials]}},
        "searcher": {"type": "grid"},
        "budget": {"trials": trials},
        "resources": {"workers": workers, "cpus_per_worker": 1},
        "concurrency": 1,
        "max_failures": 0,
    })
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    t_init = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        plan = plan_sweep(space, Path(d) / "exp")
        t1 = time.perf_counter()
        res = run_sweep(plan)
        wall = time.perf_counter() - t1
    ray.shutdown()
    n = len(res["trials"])
    return {"trials": n, "ray_init_s": t_init, "sweep_wall_s": wall, "per_trial_s": wall / n,
            "statuses": res["trials"]["status"].value_counts().to_dict()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    direct = direct_seconds(3)
    one = sweep_seconds(args.trials, 1)
    two = sweep_seconds(min(args.trials, 3), 2)
    res = {
        "train_run_direct_s": direct,
        "one_worker": {**one, "overhead_per_trial_s": one["per_trial_s"] - direct},
        "two_worker_ddp": {**two, "overhead_per_trial_s": two["per_trial_s"] - direct},
        "target_one_worker_overhead_s": 2.0,
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trial_overhead.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
