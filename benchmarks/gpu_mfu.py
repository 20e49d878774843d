"""Tokens/s and model FLOPs utilisation (MFU) of ``train_run`` at the paper scale on one GPU.

    python -m benchmarks.gpu_mfu [--config configs/paper.yaml] [--warmup 20] [--steps 50]
                                 [--precision bf16] [--peak-tflops auto]
                                 [--out benchmarks/results/gpu_mfu.json]

The real trainer (no interventions; evaluation and checkpointing only at the last step, outside
the timed window) runs ``warmup + steps`` optimizer steps of the paper preset (6 layers,
d_model 384, 6 heads, seq 512, batch 32, bf16 autocast). Throughput is measured over the last
``steps`` steps from wall time between step ends (the trainer reads the loss every step, which
synchronises the GPU).

MFU = achieved model FLOP/s ÷ the device's peak dense FLOP/s at that precision, with model FLOPs
per token as in PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT's ``estimate_mfu``:
6·N + 12·L·d·T, N = parameters except position embeddings (the tied token embedding counts, since
it is also the output projection), L layers, d = d_model, T = sequence length. Peak bf16 dense
TFLOP/s by device name: H100 SXM / H200 989.4, H100 PCIe 756, A100 312, L4 121; otherwise give
``--peak-tflops``. Target (issue 9): ≥ 40% bf16 on H100.

On a machine without CUDA the script exits 2 unless ``--allow-cpu`` (a smoke run that checks the
arithmetic, reported with ``mfu: null``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from benchmarks.common import REPO, environment, run_train_run
from tti_ray.config import ModelConfig, RunConfig, load_config
from tti_ray.data import load_tokens

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L4": 121.0}


def flops_per_token(m: ModelConfig, vocab_size: int) -> float:
    """6·N + 12·L·d·T for a GPT-2 block stack with tied embeddings (see module docstring)."""
    d, L, T, f = m.d_model, m.n_layer, m.seq_len, m.d_ff
    per_layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d  # attn qkv+proj, mlp, 2 layernorms
    n = vocab_size * d + L * per_layer + 2 * d  # + final layernorm; wpe excluded
    return 6.0 * n + 12.0 * L * d * T


def peak_tflops(name: str) -> float | None:
    for key, v in PEAK_BF16_TFLOPS.items():  # "H100 PCIe" before "H100": dict order
        if key in name:
            return v
    return None


def bench_config(path: str, warmup: int, steps: int, precision: str, device: str,
                 sets: list[str]) -> RunConfig:
    total = warmup + steps
    return load_config(path, sets, overrides={
        "train.steps": total, "train.warmup_steps": min(warmup, total),
        "train.eval_every": total, "train.ckpt_every": total, "train.log_every": total,
        "train.precision": precision, "train.device": device, "interventions": {},
        "eval.val_batches": 1, "eval.metric_tokens": 512,
    })


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "paper.yaml"))
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--allow-cpu", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config overrides (smoke runs: model.n_layer=1 ...)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_mfu.json")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_mfu.py: no CUDA device here (use --allow-cpu for a smoke run)", file=sys.stderr)
        raise SystemExit(2)
    device = "cuda" if cuda else "cpu"
    precision = args.precision if cuda else "fp32"
    cfg = bench_config(args.config, args.warmup, args.steps, precision, device, args.set)
    rates = run_train_run(cfg, args.steps)
    vocab = load_tokens(cfg.data).vocab_size
    fpt = flops_per_token(cfg.model, vocab)
    achieved = rates["wall_tokens_per_s"] * fpt
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    env = environment()
    res = {
        "device": name,
        "torch": env["torch"],
        "tti_ray": env["tti_ray_version"],
        "precision": precision,
        "model": cfg.model.model_dump(),
        "batch_size": cfg.train.batch_size,
        "vocab_size": vocab,
        "timed_steps": args.steps,
        "tokens_per_s": rates["wall_tokens_per_s"],
        "flops_per_token": fpt,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak,
        "mfu": achieved / (peak * 1e12) if peak else None,
        "target_mfu": 0.40,
        "final_train_loss": rates["final_train_loss"],
        "loadavg": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
