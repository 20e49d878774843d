"""``train_run``: the one training entry point (CLI, Ray worker and tests all call it).

AdamW, linear warmup + cosine decay to ``min_lr_ratio * lr``, gradient clipping, gradient
accumulation, bf16 autocast on GPU only (CPU runs fp32: same code, ``nullcontext``), periodic
eval + checkpoint, exact resume. Data-parallel when ``torch.distributed`` is initialised (the Ray
Train glue does that); only rank 0 writes files and reports.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tti_ray.cli import UserError
from tti_ray.config import RunConfig
from tti_ray.data import BlockSampler, load_tokens
from tti_ray.data.batches import require_blocks
from tti_ray.interventions import StepContext, build_interventions
from tti_ray.interventions.registry import attach_all
from tti_ray.model import build_model, capture
from tti_ray.toy import run_toy
from tti_ray.train.checkpoint import load_train_state, load_weights, save_checkpoint
from tti_ray.train.dist import DistInfo, any_worker, maybe_barrier, maybe_ddp, maybe_no_sync
from tti_ray.train.evaluate import evaluate
from tti_ray.train.reporter import Reporter, RunFiles, provenance
from tti_ray.trials import TrialStatus

FINISHED, DIVERGED = TrialStatus.FINISHED, TrialStatus.DIVERGED


class TrainSetupError(UserError):
    """A run that cannot start as configured (one line, names the key)."""


def resolve_device(cfg: RunConfig, hint: torch.device | None) -> torch.device:
    if hint is not None:
        return hint
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainSetupError("train.device: 'cuda' requested but no CUDA device is available")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU (fp16 on request); None (fp32, no autocast) on CPU."""
    p = cfg.train.precision
    if device.type != "cuda" or p == "fp32":
        return None
    if p == "fp16":
        return torch.float16
    return torch.bfloat16


def lr_factor(step: int, cfg: RunConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine from 1 to ``min_lr_ratio``."""
    t = cfg.train
    if t.warmup_steps and step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    span = max(t.steps - t.warmup_steps, 1)
    progress = min(max(step - t.warmup_steps, 0) / span, 1.0)
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not biases, LayerNorm gains, or 1-D gate logits)."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for mod in modules:
        for p in mod.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class TrainObjective(nn.Module):
    """Model + interventions as one module, so DDP sees every trainable parameter; ``forward``
    returns the training loss ``CE + sum(coef * term)``, the CE and the weighted terms. Public so
    that a benchmark can time the trainer's own step (``benchmarks/interventions.py``)."""

    def __init__(self, model: nn.Module, interventions: nn.ModuleDict) -> None:
        super().__init__()
        self.model, self.interventions = model, interventions
        self.sites = sorted({s for iv in interventions.values() for s in iv.capture_sites()})

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        ctx = capture(self.model, self.sites) if self.sites else nullcontext({})
        with ctx as acts:
            logits = self.model(input_ids=x).logits
        ce = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        terms: dict[str, torch.Tensor] = {}
        total = ce
        sctx = StepContext(token_ids=x, step=step)
        for name, iv in self.interventions.items():
            c = iv.coef_at(step)
            if c == 0.0:
                continue
            for tname, t in iv.loss_terms(acts, sctx).items():
                key = name if tname == "loss" else f"{name}/{tname}"
                terms[key] = c * t.float()
                total = total + terms[key]
        return total, ce, terms


@dataclass(frozen=True)
class StepStats:
    """One optimizer step as the trainer timed it, passed to ``train_run(on_step=...)`` (how the
    benchmarks read per-step timings)."""

    step: int  # optimizer steps done, this one included
    loss: float  # CE + weighted terms, mean over the micro-batches
    seconds: float  # wall time of the step: the timer behind train/tokens_per_s
    tokens: int  # tokens in the step's batch (train.batch_size × model.seq_len)


def train_run(
    cfg: RunConfig,
    reporter: Reporter | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    *,
    dist_info: DistInfo | None = None,
    progress: bool = False,
    on_step: Callable[[StepStats], None] | None = None,
) -> dict[str, Any]:
    """Train one run; return its final metrics (``status``: ``finished`` or ``diverged``).

    Files (rank 0): ``out_dir/metrics.jsonl`` (one record per eval), ``metrics.json`` (final),
    ``config.yaml`` (resolved config + provenance), ``checkpoint/``. With ``resume=True`` and a
    checkpoint present, training continues from it and ends bit-identical (CPU) to an
    uninterrupted run. ``on_step`` (LM workloads) is called after every optimizer step, before
    any eval or checkpoint of that step, with the step's :class:`StepStats`."""
    if cfg.workload != "lm":
        out = Path(out_dir or f"runs/{cfg.name}")
        out.mkdir(parents=True, exist_ok=True)
        return run_toy(cfg, reporter, out)

    di = dist_info or DistInfo.detect()
    device = resolve_device(cfg, di.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t = cfg.train
    per_micro, rem = divmod(t.batch_size, t.grad_accum * di.world)
    if rem or per_micro == 0:
        raise TrainSetupError(
            f"train.batch_size: {t.batch_size} is not divisible by grad_accum × workers "
            f"({t.grad_accum} × {di.world})"
        )
    tokens = load_tokens(cfg.data)  # before anything is written: bad data leaves no run dir
    require_blocks(tokens.train, tokens.valid, cfg.model.seq_len)
    files = RunFiles(Path(out_dir or f"runs/{cfg.name}"), enabled=di.rank == 0)

    torch.manual_seed(t.seed)
    model = build_model(cfg.model, tokens.vocab_size)
    ivs = build_interventions(cfg.interventions, cfg.model)
    for iv in ivs.values():
        iv.prepare(tokens)
    attach_all(ivs, model)
    model.to(device)
    ivs.to(device)
    stepper = TrainObjective(model, ivs)
    opt = torch.optim.AdamW(
        param_groups([model, ivs], t.weight_decay),
        lr=t.lr,
        betas=(t.beta1, t.beta2),
        fused=device.type == "cuda",
    )

    step = 0
    ckpt_dir = files.root / "checkpoint"
    if resume and ckpt_dir.joinpath("train_state.json").exists():
        load_weights(ckpt_dir, model, ivs)
        step = int(load_train_state(ckpt_dir, opt)["step"])
        files.truncate_history(step)
    elif di.rank == 0:
        files.start(cfg, provenance(cfg))

    wrapped = maybe_ddp(stepper, device, find_unused_parameters=any(True for _ in ivs.parameters()))

    sampler = BlockSampler(tokens.train, cfg.model.seq_len, t.seed)
    amp = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else nullcontext
    )

    bar = None
    if progress and di.rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=step, desc=cfg.name, unit="step", dynamic_ncols=True)

    status: str = FINISHED
    last: dict[str, Any] = {}
    window = _Window()
    model.train()
    ivs.train()
    while step < t.steps:
        t0 = time.perf_counter()
        lr = t.lr * lr_factor(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = sampler.indices(step, t.batch_size, di.rank, di.world)
        loss_sum = ce_sum = 0.0
        term_sums: dict[str, float] = {}
        for micro in range(t.grad_accum):
            x, y = sampler.batch(idx[micro * per_micro : (micro + 1) * per_micro])
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with maybe_no_sync(wrapped, sync=micro == t.grad_accum - 1):
                with autocast():
                    total, ce, terms = wrapped(x, y, step)
                scaler.scale(total / t.grad_accum).backward()
            loss_sum += float(total.detach()) / t.grad_accum
            ce_sum += float(ce.detach()) / t.grad_accum
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + float(v.detach()) / t.grad_accum
        if t.grad_clip is not None:
            scaler.unscale_(opt)
            gnorm = float(torch.nn.utils.clip_grad_norm_(stepper.parameters(), t.grad_clip))
        else:
            gnorm = float("nan")
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        step += 1
        secs, n_tokens = time.perf_counter() - t0, t.batch_size * cfg.model.seq_len
        if on_step is not None:
            on_step(StepStats(step, loss_sum, secs, n_tokens))
        window.add(loss_sum, ce_sum, term_sums, gnorm, n_tokens, secs)
        if bar is not None:
            bar.update(1)
            if step % t.log_every == 0:
                bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.2e}")

        if any_worker(not math.isfinite(loss_sum), device):  # all ranks stop together
            status = DIVERGED
            last = {**window.flush(lr), "status": DIVERGED, "step": step}
            last["val/loss"] = last["val/perplexity"] = float("inf")
            files.write_final(last)
            if reporter is not None:
                reporter.report(last, step=step, checkpoint=None)
            break

        do_eval = step % t.eval_every == 0 or step == t.steps
        do_ckpt = step % t.ckpt_every == 0 or step == t.steps
        if not (do_eval or do_ckpt):
            continue
        metrics: dict[str, Any] = {**window.flush(lr), "step": step,
                                   "tokens_seen": step * t.batch_size * cfg.model.seq_len}
        if do_eval:
            metrics.update(evaluate(model, ivs, tokens, cfg, device, di, autocast))
        saved = None
        if do_ckpt and di.rank == 0:
            saved = save_checkpoint(
                ckpt_dir, model=model, interventions=ivs, optimizer=opt, step=step, cfg=cfg,
                tokens=tokens,
            )
        maybe_barrier()
        model.train()
        ivs.train()
        metrics["status"] = FINISHED if step == t.steps else TrialStatus.RUNNING
        last = metrics
        files.append(metrics)
        if reporter is not None:  # every rank (Ray Train's report is a collective)
            reporter.report(metrics, step=step, checkpoint=saved)
    if bar is not None:
        bar.close()
    if di.world > 1:  # a file of data-parallel runs only (not a collective)
        _write_worker_record(files.root, di, sampler, t.batch_size, stepper)
    if status == FINISHED and "val/loss" not in last:
        # resumed from a final checkpoint: nothing left to train, but the caller still needs
        # the final metrics (e.g. a trial relaunched on another node)
        last = {"step": step, **evaluate(model, ivs, tokens, cfg, device, di, autocast)}
        if reporter is not None:
            reporter.report({**last, "status": FINISHED}, step=step, checkpoint=None)
    if status == FINISHED:
        last = {**last, "status": FINISHED, "step": step}
        files.write_final(last)
    return last


def _write_worker_record(
    root: Path, di: DistInfo, sampler: BlockSampler, batch_size: int, stepper: nn.Module
) -> None:
    """``worker.json`` per data-parallel rank: the blocks of its first batch and a hash of its
    final weights - how tests (and worried users) check sharding and replica agreement."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(stepper.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    record = {
        "rank": di.rank,
        "world": di.world,
        "first_batch_blocks": sampler.indices(0, batch_size, di.rank, di.world),
        "weights_sha256": h.hexdigest(),
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "worker.json").write_text(json.dumps(record))


class _Window:
    """Running means of train-time quantities between reports."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.ce, self.gnorm, self.tokens, self.secs = 0, 0.0, 0.0, 0.0, 0, 0.0
        self.terms: dict[str, float] = {}

    def add(self, loss: float, ce: float, terms: dict[str, float], gnorm: float, tokens: int,
            secs: float) -> None:
        self.n += 1
        self.loss += loss
        self.ce += ce
        self.gnorm += gnorm
        self.tokens += tokens
        self.secs += secs
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v

    def flush(self, lr: float) -> dict[str, float]:
        n = max(self.n, 1)
        ce = self.ce / n
        reg = sum(self.terms.values()) / n
        out = {
            "train/loss": self.loss / n,
            "train/ce": ce,
            "train/lr": lr,
            "train/grad_norm": self.gnorm / n,
            "train/tokens_per_s": self.tokens / self.secs if self.secs else 0.0,
            "train/reg_to_ce_ratio": reg / ce if ce else 0.0,
        }
        out.update({f"train/reg/{k}": v / n for k, v in self.terms.items()})
        self.reset()
        return out


def read_final_metrics(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "metrics.json").read_text())


__all__ = [
    "DistInfo",
    "StepStats",
    "TrainObjective",
    "TrainSetupError",
    "lr_factor",
    "param_groups",
    "read_final_metrics",
    "train_run",
]
