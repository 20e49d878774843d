"""What the benchmarks share: the repository root, the environment stamp of every result JSON,
the rotated order of variants, and ``train_run`` timed step by step through its public
``on_step`` hook."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

from tti_ray.config import RunConfig
from tti_ray.provenance import versions
from tti_ray.train import StepStats, train_run

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def environment() -> dict[str, Any]:
    """Where and when a result was measured: CPU count, library versions (one definition:
    :func:`tti_ray.provenance.versions`) and a timestamp."""
    v = versions()
    return {
        "cpu_count": os.cpu_count(),
        "torch": v["torch"],
        "python": v["python"],
        "tti_ray_version": v["tti_ray"],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def rotation(names: list[T], rep: int) -> list[T]:
    """``names`` rotated by ``rep`` (A B C, B C A, C A B, ...): variants alternate within each
    repetition so that background load and order effects hit them alike."""
    k = rep % len(names)
    return names[k:] + names[:k]


def rates(
    tokens_per_step: int, secs: list[float], ends: list[float], cpu_ends: list[float], k: int
) -> dict[str, float]:
    """Tokens/s over the last k steps: from the per-step timers, from wall time between step ends,
    and from process CPU time between step ends (robust to other jobs taking the cores)."""
    return {
        "tokens_per_s": tokens_per_step * k / sum(secs[-k:]),
        "wall_tokens_per_s": tokens_per_step * k / (ends[-1] - ends[-k - 1]),
        "cpu_tokens_per_s": tokens_per_step * k / (cpu_ends[-1] - cpu_ends[-k - 1]),
    }


def run_train_run(cfg: RunConfig, k: int) -> dict[str, float]:
    """``train_run`` in a temporary directory, timed per step: the trainer's own step timer
    (the one behind ``train/tokens_per_s``) and the wall/CPU clock at each step's end, read
    through ``train_run(on_step=...)``; :func:`rates` over the last ``k`` steps and the final
    step's training loss."""
    secs: list[float] = []
    ends: list[float] = []
    cpu_ends: list[float] = []
    losses: list[float] = []

    def record(s: StepStats) -> None:
        secs.append(s.seconds)
        losses.append(s.loss)
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())

    with tempfile.TemporaryDirectory() as d:
        final = train_run(cfg, None, d, on_step=record)
    assert final["status"] == "finished" and len(secs) == cfg.train.steps
    out = rates(cfg.train.batch_size * cfg.model.seq_len, secs, ends, cpu_ends, k)
    out["final_train_loss"] = losses[-1]
    return out
