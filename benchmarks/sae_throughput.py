"""SAE evaluation throughput (tokens/s) at the tiny preset's shape (d_model 128, d_ff 512, 2 layers).

    python -m benchmarks.sae_throughput [--device cpu] [--threads 1] [--tokens 32768]
                                        [--eval-tokens 4096] [--steps 20]
                                        [--out benchmarks/results/sae_throughput.json]

Parts, all with the default SAE config (TopK, k 32, expansion 8 → 4096 latents on mlp_hidden,
batch 1024 tokens) unless said otherwise:

* ``sae_step``: one SAE's training step alone (forward, loss, backward, Adam, decoder upkeep) on a
  fixed activation batch, for ``topk`` and ``relu``: steady-state tokens/s over ``--steps`` steps;
* ``sae_inference``: TopK reconstruction with the sparse decoder (``embedding_bag``) vs its dense
  eager twin (``decode(encode(x))``);
* ``sae_step_dense_twin``: the TopK step with the plain-autograd (dense) encoder backward, to show
  what the sparse backward buys;
* ``train``: ``train_saes`` end to end for every default (site, layer) — frozen-model forwards,
  shuffle buffer and one SAE per layer — ``--tokens`` tokens; tokens/s counts each token once
  (it feeds every layer's SAE);
* ``eval``: ``evaluate_saes`` on ``--eval-tokens`` validation tokens (1 clean forward plus 2
  spliced forwards per (site, layer): SAE and zero ablation);
* ``default_budget_seconds``: the wall time a default ``evaluate_checkpoint`` (200k training
  tokens, 8192 eval tokens) would take at these rates (and in CPU-seconds).

Every part reports wall-clock and process-CPU rates: ``tokens_per_cpu_s`` is the stable figure on
a shared machine (with ``--threads 1`` it is the single-core throughput).

The model is randomly initialised and the tokens are random ids (throughput does not depend on
either). On a shared machine the numbers are noisy: the load average is written next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Self

import torch

from benchmarks.common import REPO, environment
from tti_ray.config import load_config
from tti_ray.data import TokenData
from tti_ray.model import build_model
from tti_ray.sae import build_sae, parse_sae_config
from tti_ray.sae.evaluate import build_saes, evaluate_saes, train_saes
from tti_ray.sae.train import SAETrainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timer:
    """Wall time and this process's CPU time: on a shared CPU the wall rate is mostly a measure of
    the neighbours, while tokens per CPU-second (with 1 thread) is what the code itself costs."""

    def __enter__(self) -> Self:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def rates(self, tokens: int) -> dict[str, float]:
        return {
            "tokens": tokens,
            "seconds": self.wall,
            "cpu_seconds": self.cpu,
            "tokens_per_s": tokens / self.wall,
            "tokens_per_cpu_s": tokens / self.cpu,
        }


def fake_tokens(vocab: int, n_train: int, n_valid: int) -> TokenData:
    return TokenData.synthetic(vocab, n_train, n_valid)


def bench_sae_step(
    kind: str, d_in: int, steps: int, device: torch.device, sparse_backward: bool = True
) -> dict[str, float]:
    cfg = parse_sae_config({"kind": kind})
    sae = build_sae(cfg, d_in).to(device)
    sae.sparse_backward = sparse_backward  # only read by TopK
    x = torch.relu(torch.randn(cfg.batch_size, d_in, device=device))  # GELU-like, non-negative
    trainer = SAETrainer(sae, 10 * steps)
    for _ in range(3):
        trainer.step(x)
    sync(device)
    with Timer() as t:
        for _ in range(steps):
            trainer.step(x)
        sync(device)
    return {**t.rates(cfg.batch_size * steps), "seconds_per_step": t.wall / steps}


@torch.no_grad()
def bench_inference(d_in: int, steps: int, device: torch.device) -> dict[str, float]:
    sae = build_sae(parse_sae_config(), d_in).to(device).eval()
    x = torch.relu(torch.randn(4096, d_in, device=device))
    out = {}
    for name, fn in (("sparse", sae), ("dense_twin", lambda t: sae.decode(sae.encode(t)))):
        fn(x)
        sync(device)
        with Timer() as t:
            for _ in range(steps):
                fn(x)
            sync(device)
        out[name] = t.rates(x.shape[0] * steps)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--tokens", type=int, default=32768, help="training tokens for 'train'")
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20, help="timed steps for 'sae_step'")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/sae_throughput.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    run_cfg = load_config(raw={"preset": "tiny"})
    d_ff = run_cfg.model.ff_dim
    results: dict[str, Any] = {
        "sae_step": {k: bench_sae_step(k, d_ff, args.steps, device) for k in ("topk", "relu")},
        "sae_step_dense_twin": bench_sae_step("topk", d_ff, args.steps, device, False),
        "sae_inference": bench_inference(d_ff, args.steps, device),
    }

    vocab = run_cfg.data.vocab_size or 8192
    tokens = fake_tokens(vocab, max(4 * args.tokens, 200_000), 4 * args.eval_tokens + 1024)
    model = build_model(run_cfg.model, vocab).to(device).eval()
    for p_ in model.parameters():
        p_.requires_grad_(False)
    sae_cfg = parse_sae_config({"tokens": args.tokens, "eval_tokens": args.eval_tokens})
    saes = build_saes(run_cfg, sae_cfg, device)
    with Timer() as t_train:
        train_saes(model, tokens, run_cfg, saes)
        sync(device)
    with Timer() as t_eval:
        evaluate_saes(model, tokens, run_cfg, saes)
        sync(device)
    n_eval = -(-args.eval_tokens // run_cfg.model.seq_len) * run_cfg.model.seq_len
    results["train"] = {**t_train.rates(args.tokens), "saes": len(saes)}
    results["eval"] = t_eval.rates(n_eval)
    default = parse_sae_config()
    results["default_budget_seconds"] = (
        default.tokens / results["train"]["tokens_per_s"]
        + default.eval_tokens / results["eval"]["tokens_per_s"]
    )
    results["default_budget_cpu_seconds"] = (
        default.tokens / results["train"]["tokens_per_cpu_s"]
        + default.eval_tokens / results["eval"]["tokens_per_cpu_s"]
    )

    report = {
        "benchmark": "sae_throughput",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": environment()["torch"],
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "model": run_cfg.model.model_dump(),
        "sae": sae_cfg.model_dump(),
        "sae_keys": [f"{s}/layer_{i}" for s, i in saes],
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    r = results

    def fmt(part: dict[str, float]) -> str:
        return f"{part['tokens_per_s']:,.0f} tok/s ({part['tokens_per_cpu_s']:,.0f}/cpu-s)"

    print(
        f"[{device}, {report['threads']} threads, load {report['loadavg_1m']:.1f}] "
        f"SAE step topk {fmt(r['sae_step']['topk'])}, relu {fmt(r['sae_step']['relu'])} | "
        f"train (model + {len(saes)} SAEs) {fmt(r['train'])} | eval {fmt(r['eval'])} | "
        f"default evaluate_checkpoint ≈ {r['default_budget_seconds']:.0f} s "
        f"({r['default_budget_cpu_seconds']:.0f} cpu-s) -> {args.out}"
    )


if __name__ == "__main__":
    main()
