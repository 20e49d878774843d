"""Short CPU experiment (issue 3): what each seed intervention does to the interpretability metrics.

    python -m benchmarks.intervention_effects [--steps 300] [--seed 0] [--jobs 2]
        [--variants expt1_baseline,expt2_topk_10pct,...]
        [--out benchmarks/results/intervention_effects.json]

Every variant is one of the seed configurations shipped in ``configs/`` (``expt1_baseline``,
``expt2_topk_10pct``, ``expt2_l1_1e-3``, ``expt1_orthogonal_1e-2``, ``expt1_polysemantic_1e-2``
and ``_1e-1``), trained with ``train_run`` on the tiny preset for ``--steps`` steps with the same
seed (same init, same batches), one torch thread each, ``--jobs`` runs at a time. From the final
evaluation it reports perplexity and, at both hook sites, the token-entropy polysemanticity, the
mean |cos| between neurons, sparsity (fraction of |a| < 0.01) and the dead fraction, each with
its relative change against the baseline: (variant - baseline) / baseline.

Headline metrics (``val/<metric>/mean``) are at ``mlp_hidden`` (where TopK and L1 act); the seed's
expt1 penalties (orthogonality, anti-poly) act on ``mlp_out``, so the ``mlp_out`` numbers are the
ones to read for them. One seed, 300 steps: an indication of direction, not a significance test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, environment
from tti_ray.config import load_config
from tti_ray.data import load_tokens
from tti_ray.train import train_run

DEFAULT_VARIANTS = (
    "expt1_baseline",
    "expt2_topk_10pct",
    "expt2_l1_1e-3",
    "expt1_orthogonal_1e-2",
    "expt1_polysemantic_1e-2",
    "expt1_polysemantic_1e-1",
)
BASELINE = "expt1_baseline"
METRICS = ("polysemanticity", "mean_abs_cosine", "sparsity", "dead_fraction")
SITES = ("mlp_hidden", "mlp_out")


def report_keys() -> list[str]:
    """The metrics reported per variant, in order."""
    keys = ["val/perplexity", "val/loss"]
    for m in METRICS:
        keys.append(f"val/{m}/mean")
        keys += [f"val/{m}/{s}/mean" for s in SITES]
    return keys


def run_one(name: str, steps: int, seed: int, runs_dir: str) -> dict[str, Any]:
    """Train ``configs/<name>.yaml`` on the tiny preset; return its final metrics (a worker)."""
    torch.set_num_threads(1)
    cfg = load_config(
        REPO / "configs" / f"{name}.yaml",
        overrides={
            "train.steps": steps,
            "train.warmup_steps": min(30, steps),
            "train.seed": seed,
            "train.threads": 1,
            "train.device": "cpu",
            "train.eval_every": steps,  # one evaluation, at the end
            "train.ckpt_every": steps,
        },
    )
    t0 = time.time()
    final = train_run(cfg, None, Path(runs_dir) / name)
    final = {k: v for k, v in final.items() if isinstance(v, (int, float, str))}
    final["wall_s"] = round(time.time() - t0, 1)
    final["interventions"] = cfg.to_dict()["interventions"]
    return final


def relative(v: float, b: float) -> float | None:
    return (v - b) / b if b not in (0, 0.0) else None


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    base = results[BASELINE]
    out = {}
    for name, r in results.items():
        row: dict[str, Any] = {"status": r.get("status"), "interventions": r["interventions"]}
        row["metrics"] = {k: r.get(k) for k in report_keys()}
        row["relative_change_vs_baseline"] = {
            k: relative(r[k], base[k]) for k in report_keys()
            if isinstance(r.get(k), (int, float)) and isinstance(base.get(k), (int, float))
        }
        row["train"] = {k: r[k] for k in sorted(r) if k.startswith("train/")}
        row["readouts"] = {
            k: r[k] for k in sorted(r)
            if k.startswith("val/") and k.split("/")[1] in r["interventions"]
        }
        row["wall_s"] = r["wall_s"]
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help="comma list of configs/<name>.yaml (must include expt1_baseline)")
    p.add_argument("--runs-dir", type=Path, help="keep the run directories here (default: temp)")
    p.add_argument("--out", type=Path,
                   default=REPO / "benchmarks/results/intervention_effects.json")
    args = p.parse_args(argv)

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    missing = [n for n in names if not (REPO / "configs" / f"{n}.yaml").exists()]
    if missing or BASELINE not in names:
        raise SystemExit(f"--variants: unknown {missing} or no {BASELINE}")
    load_tokens(load_config(REPO / "configs" / f"{BASELINE}.yaml").data)  # build the cache once

    load_before = list(os.getloadavg())
    t0 = time.time()
    tmp = None if args.runs_dir else tempfile.TemporaryDirectory()
    runs_dir = str(args.runs_dir or tmp.name)  # type: ignore[union-attr]
    results: dict[str, dict[str, Any]] = {}
    try:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futs = {n: pool.submit(run_one, n, args.steps, args.seed, runs_dir) for n in names}
            for n, f in futs.items():
                results[n] = f.result()
                r = results[n]
                print(f"{n:26s} ppl {r['val/perplexity']:8.2f}  poly(h/o) "
                      f"{r['val/polysemanticity/mlp_hidden/mean']:.3f}/"
                      f"{r['val/polysemanticity/mlp_out/mean']:.3f}  |cos|(h/o) "
                      f"{r['val/mean_abs_cosine/mlp_hidden/mean']:.3f}/"
                      f"{r['val/mean_abs_cosine/mlp_out/mean']:.3f}  sparsity(h) "
                      f"{r['val/sparsity/mlp_hidden/mean']:.3f}  {r['wall_s']} s", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    result = {
        "benchmark": "intervention_effects",
        "what": "final eval of one short tiny-preset run per seed configuration, same seed; "
                "relative change = (variant - baseline) / baseline",
        "preset": "tiny",
        "steps": args.steps,
        "seed": args.seed,
        "threads_per_run": 1,
        "jobs": args.jobs,
        "headline_site": "mlp_hidden (val/<metric>/mean); expt1 penalties act on mlp_out",
        "variants": summarize(results),
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
        "wall_s": round(time.time() - t0, 1),
        **environment(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out} ({result['wall_s']} s)")
    return result


if __name__ == "__main__":
    main()
