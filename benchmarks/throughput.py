"""Training throughput: ``train_run`` vs a bare PyTorch loop over the same model, batch and optimizer.

    python -m benchmarks.throughput [--config configs/tiny.yaml] [--warmup 5] [--steps 20]
                                    [--reps 3] [--threads 1] [--out benchmarks/results/throughput.json]

Three variants, same process, same threads, same model shape (the tiny preset by default), same
batches (``BlockSampler`` indices), same optimizer (AdamW, decay on matrices only, warmup + cosine
lr, grad-norm clip):

* ``train_run`` - the real trainer with no interventions; eval/checkpoint fall outside the timed
  window (they only happen at the run's last step, after the last timed step ends);
* ``bare`` - a hand-written loop: forward, cross-entropy, backward, clip, step, zero_grad;
* ``bare_capture`` - the bare loop with ``tti_ray.model.capture`` around the forward at every
  ``mlp_hidden`` and ``mlp_out`` site (not detached, as a loss term would need): the cost of
  capture being on.

Steady state is the last ``--steps`` steps after ``--warmup`` steps. For ``train_run`` the per-step
numbers are the trainer's own ``train/tokens_per_s`` timer, read per step (``train_run``'s
``on_step`` hook) rather than averaged from the first step; ``wall`` rates use the time between
consecutive step ends, so they include all per-step overhead of the loop; ``cpu`` rates divide by
the process CPU time between step ends instead, which other jobs on a shared machine barely
disturb (with 1 thread it is the work the step costs). Variants alternate within each repetition
in rotated order (A B C, B C A, C A B, ...) so background load and order effects hit them alike;
the median is reported, and the load average is written next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import REPO, environment, rates, rotation, run_train_run
from tti_ray.config import RunConfig, load_config
from tti_ray.data import BlockSampler, load_tokens
from tti_ray.model import build_model, capture
from tti_ray.train.loop import lr_factor, param_groups


def bench_config(path: str, warmup: int, steps: int, threads: int) -> RunConfig:
    total = warmup + steps
    return load_config(
        path,
        overrides={
            "train.steps": total,
            "train.warmup_steps": min(warmup, total),
            # only the final step evaluates and checkpoints, after the last timed step ends
            "train.eval_every": total,
            "train.ckpt_every": total,
            "train.log_every": total,
            "train.threads": threads,
            "train.device": "cpu",
            "interventions": {},
        },
    )


def run_bare(cfg: RunConfig, k: int, capture_sites: bool) -> dict[str, float]:
    """The same training, written out by hand (no trainer, no hooks unless ``capture_sites``)."""
    t = cfg.train
    torch.manual_seed(t.seed)
    tokens = load_tokens(cfg.data)
    model = build_model(cfg.model, tokens.vocab_size)
    opt = torch.optim.AdamW(
        param_groups([model], t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2)
    )
    sampler = BlockSampler(tokens.train, cfg.model.seq_len, t.seed)
    sites = [(s, i) for s in ("mlp_hidden", "mlp_out") for i in range(cfg.model.n_layer)]
    secs: list[float] = []
    ends: list[float] = []
    cpu_ends: list[float] = []
    model.train()
    for step in range(t.steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = t.lr * lr_factor(step, cfg)
        x, y = sampler.batch(sampler.indices(step, t.batch_size))
        ctx = capture(model, sites) if capture_sites else nullcontext({})
        with ctx as acts:
            logits = model(input_ids=x).logits
        assert not capture_sites or len(acts) == len(sites)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        last_loss = float(loss.detach())
        secs.append(time.perf_counter() - t0)
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
    out = rates(t.batch_size * cfg.model.seq_len, secs, ends, cpu_ends, k)
    out["final_train_loss"] = last_loss
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs/tiny.yaml"))
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--steps", type=int, default=20, help="timed (steady-state) steps")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every variant (1: steady on a shared machine)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/throughput.json")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = bench_config(args.config, args.warmup, args.steps, args.threads)
    load_tokens(cfg.data)  # tokenize outside the timings
    load_before = os.getloadavg()
    variants = {
        "train_run": lambda: run_train_run(cfg, args.steps),
        "bare": lambda: run_bare(cfg, args.steps, capture_sites=False),
        "bare_capture": lambda: run_bare(cfg, args.steps, capture_sites=True),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(args.reps):
        for name in rotation(names, rep):  # rotate: no order bias
            r = variants[name]()
            runs[name].append(r)
            print(f"rep {rep} {name:13s} {r['tokens_per_s']:7.0f} tok/s "
                  f"(wall {r['wall_tokens_per_s']:7.0f}, per CPU-s {r['cpu_tokens_per_s']:7.0f})"
                  f"  load {os.getloadavg()[0]:.2f}", flush=True)
    keys = ("tokens_per_s", "wall_tokens_per_s", "cpu_tokens_per_s")
    med = {
        name: {key: statistics.median(r[key] for r in rs) for key in keys}
        for name, rs in runs.items()
    }
    # per repetition, so a load spike that hits one repetition hits both sides of its ratio less
    paired = [
        a["cpu_tokens_per_s"] / b["cpu_tokens_per_s"]
        for a, b in zip(runs["train_run"], runs["bare"], strict=True)
    ]
    # the trainer and the bare loop see the same batches and do the same math: same losses
    same_loss = runs["train_run"][0]["final_train_loss"] == runs["bare"][0]["final_train_loss"]
    result = {
        "benchmark": "throughput",
        "config": os.path.relpath(args.config, REPO),
        "shape": {
            "n_layer": cfg.model.n_layer, "d_model": cfg.model.d_model,
            "d_ff": cfg.model.ff_dim, "seq_len": cfg.model.seq_len,
            "batch_size": cfg.train.batch_size, "vocab_size": cfg.data.vocab_size,
            "tokens_per_step": cfg.train.batch_size * cfg.model.seq_len,
        },
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "reps": args.reps,
        "threads": args.threads,
        "device": "cpu",
        "median": med,
        "ratio_train_run_vs_bare": med["train_run"]["tokens_per_s"] / med["bare"]["tokens_per_s"],
        "ratio_train_run_vs_bare_wall": med["train_run"]["wall_tokens_per_s"]
        / med["bare"]["wall_tokens_per_s"],
        "ratio_train_run_vs_bare_cpu": med["train_run"]["cpu_tokens_per_s"]
        / med["bare"]["cpu_tokens_per_s"],
        "ratio_train_run_vs_bare_cpu_per_rep": paired,
        "ratio_capture_vs_bare": med["bare_capture"]["tokens_per_s"]
        / med["bare"]["tokens_per_s"],
        "ratio_capture_vs_bare_cpu": med["bare_capture"]["cpu_tokens_per_s"]
        / med["bare"]["cpu_tokens_per_s"],
        "target_ratio": 0.95,
        "same_final_loss_train_run_and_bare": same_loss,
        "runs": runs,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "note": "2 CPU cores shared with other engineers' jobs; see loadavg",
        **environment(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"train_run {med['train_run']['tokens_per_s']:.0f} tok/s | bare "
        f"{med['bare']['tokens_per_s']:.0f} tok/s | ratio {result['ratio_train_run_vs_bare']:.3f}"
        f" wall-clock, {result['ratio_train_run_vs_bare_cpu']:.3f} per CPU-second (target >= "
        f"0.95) | capture on: {med['bare_capture']['tokens_per_s']:.0f} tok/s, "
        f"x{result['ratio_capture_vs_bare_cpu']:.3f} of bare per CPU-second | load "
        f"{load_before[0]:.2f} -> {result['loadavg_after'][0]:.2f} | -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
