"""Cost of the live-neuron and calibrated metrics: a tiny run's wall and CPU time with them on
and off, at the shipped eval cadence (issue: ≤ 10% added to a tiny run's wall time).

    python -m benchmarks.eval_cost [--config configs/tiny.yaml] [--reps 2] [--eval-reps 5]
                                   [--threads 1] [--out benchmarks/results/eval_cost.json]

Variants (same config otherwise; the preset's own steps, eval cadence, metric sample and sites):

* ``off``        - ``eval.permutations: 0``: the metrics as before this change (the live-neuron
  means are still computed: they are masked means of quantities computed anyway);
* ``calibrated`` - ``eval.permutations: 4`` (the default);
* ``categories`` - the default plus ``eval.categories: coarse`` (the category metrics).

Two measurements. (1) Whole ``train_run`` runs, variants rotated within each repetition, wall
and process CPU time (with 1 thread the CPU time is the work done, which other jobs on a shared
machine barely disturb); the added share is (variant − off) / off, median over repetitions.
(2) The eval call alone (``interpretability_metrics`` on the trained model), ``--eval-reps``
times per variant, rotated: the added seconds per eval, times the run's number of evals, over
the ``off`` run's time - a less noisy reading of the same share. Target: ≤ 0.10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, environment, rotation
from tti_ray.config import load_config
from tti_ray.train import load_model, train_run
from tti_ray.train.evaluate import interpretability_metrics

VARIANTS = {
    "off": {"eval.permutations": 0},
    "calibrated": {"eval.permutations": 4},
    "categories": {"eval.permutations": 4, "eval.categories": "coarse"},
}
TARGET = 0.10


def _timed(fn: Any) -> tuple[float, float, Any]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--eval-reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/eval_cost.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    names = list(VARIANTS)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        last_dir = None
        for rep in range(args.reps):
            for name in rotation(names, rep):
                cfg = load_config(args.config, overrides=VARIANTS[name])
                out = Path(tmp) / f"{name}_{rep}"
                wall, cpu, res = _timed(lambda cfg=cfg, out=out: train_run(cfg, out_dir=out))
                runs.append({"variant": name, "rep": rep, "wall_s": wall, "cpu_s": cpu,
                             "status": res["status"]})
                print(f"[eval_cost] rep {rep} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU",
                      flush=True)
                last_dir = out
        cfg0 = load_config(args.config)
        n_evals = len(range(cfg0.train.eval_every, cfg0.train.steps + 1, cfg0.train.eval_every))
        n_evals += cfg0.train.steps % cfg0.train.eval_every != 0  # the final eval
        run = load_model(last_dir)
        model, tokens = run.model, run.tokens
        evals: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for rep in range(args.eval_reps):
            for name in rotation(names, rep):
                cfg = load_config(args.config, overrides=VARIANTS[name])
                wall, cpu, _ = _timed(lambda cfg=cfg: interpretability_metrics(
                    model, tokens, cfg, torch.device("cpu"), nullcontext))
                evals[name].append((wall, cpu))

    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["variant"] == variant)

    result: dict[str, Any] = {"config": args.config, "threads": args.threads,
                              "n_evals_per_run": n_evals, "target_added_share": TARGET}
    for name in names[1:]:
        per_rep = [
            (r["wall_s"] - o["wall_s"]) / o["wall_s"]
            for r in runs if r["variant"] == name
            for o in runs if o["variant"] == "off" and o["rep"] == r["rep"]
        ]
        d_eval_wall = statistics.median(w for w, _ in evals[name]) - statistics.median(
            w for w, _ in evals["off"])
        d_eval_cpu = statistics.median(c for _, c in evals[name]) - statistics.median(
            c for _, c in evals["off"])
        result[name] = {
            "run_wall_s": med(name, "wall_s"),
            "run_cpu_s": med(name, "cpu_s"),
            "added_share_run_wall": statistics.median(per_rep),
            "added_share_run_cpu": (med(name, "cpu_s") - med("off", "cpu_s")) / med("off", "cpu_s"),
            "eval_wall_s": statistics.median(w for w, _ in evals[name]),
            "added_eval_wall_s": d_eval_wall,
            "added_share_from_eval_wall": d_eval_wall * n_evals / med("off", "wall_s"),
            "added_share_from_eval_cpu": d_eval_cpu * n_evals / med("off", "cpu_s"),
        }
        result[name]["meets_target"] = result[name]["added_share_from_eval_cpu"] <= TARGET
    result["off"] = {"run_wall_s": med("off", "wall_s"), "run_cpu_s": med("off", "cpu_s"),
                     "eval_wall_s": statistics.median(w for w, _ in evals["off"])}
    result.update({
        "runs": runs,
        "evals": {n: [list(x) for x in v] for n, v in evals.items()},
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
        **environment(),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name in names[1:]:
        r = result[name]
        print(f"[eval_cost] {name}: +{100 * r['added_share_from_eval_cpu']:.1f}% of a tiny run "
              f"(CPU, from the eval alone), +{100 * r['added_share_run_wall']:.1f}% whole-run wall"
              f" (target <= {100 * TARGET:.0f}%)")
    return result


if __name__ == "__main__":
    main()
