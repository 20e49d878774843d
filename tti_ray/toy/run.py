"""One toy run: train, report, write ``checkpoint/model.safetensors`` and ``metrics.json``.

:func:`run_toy` is what ``tti_ray.train.train_run`` calls for ``workload: toy_*``. Toy runs take
seconds, so there is no mid-run checkpoint and ``resume`` has nothing to resume: a rerun
recomputes the same result from ``train.seed``. They run on CPU whatever ``train.device`` says
(a few hundred weights; a GPU launch costs more than the whole step).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tti_ray.toy.ablation import train_ablation
from tti_ray.toy.config import (
    AblationConfig,
    SuperpositionConfig,
    parse_toy_config,
    resolve_toy,
)
from tti_ray.toy.superposition import train_superposition
from tti_ray.trials import TrialStatus

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"


class Reporter(Protocol):
    def report(
        self, metrics: dict[str, float], *, step: int, checkpoint: Path | None = None
    ) -> None: ...


def run_toy(cfg: Any, reporter: Reporter | None, out_dir: str | Path) -> dict[str, float | str]:
    """Run the toy workload of ``cfg`` (a :class:`~tti_ray.config.schema.RunConfig` with
    ``workload`` ``toy_superposition`` or ``toy_ablation``) seeded by ``cfg.train.seed``.

    Reports ``toy/*`` metrics every ``toy.eval_every`` steps and once at the end (with the
    checkpoint directory); returns the final metrics plus ``step`` and ``status``
    (``finished`` | ``diverged``), which also go to ``out_dir/metrics.json``."""
    toy = resolve_toy(cfg.workload, cfg.toy)
    seed = int(cfg.train.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def on_eval(metrics: dict[str, float], step: int) -> None:
        if reporter is not None:
            reporter.report({**metrics, "step": step, "status": TrialStatus.RUNNING.value},
                            step=step)

    train = train_superposition if toy.kind == "superposition" else train_ablation
    result = train(toy, seed=seed, on_eval=on_eval)  # type: ignore[arg-type]
    ckpt = save_checkpoint(
        out / CHECKPOINT_DIR, result.tensors, toy, workload=cfg.workload, seed=seed
    )
    final: dict[str, float | str] = {**result.metrics, "step": result.step, "status": result.status}
    (out / METRICS_FILE).write_text(json.dumps(_json_safe(final), indent=2, sort_keys=True) + "\n")
    if reporter is not None:
        reporter.report(dict(final), step=result.step, checkpoint=ckpt)
    return final


def save_checkpoint(
    ckpt_dir: Path,
    tensors: dict[str, torch.Tensor],
    toy: SuperpositionConfig | AblationConfig,
    *,
    workload: str,
    seed: int,
) -> Path:
    """Write ``ckpt_dir/model.safetensors`` with the toy config, workload and seed as metadata
    (safetensors, never pickle). Returns ``ckpt_dir``."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "tti_ray.toy",
        "workload": workload,
        "seed": str(seed),
        "toy": json.dumps(toy.model_dump(mode="json"), sort_keys=True),
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
              str(ckpt_dir / WEIGHTS_FILE), metadata=meta)  # fmt: skip
    return ckpt_dir


def load_checkpoint(
    ckpt_dir: str | Path,
) -> tuple[dict[str, torch.Tensor], SuperpositionConfig | AblationConfig, dict[str, str]]:
    """Read back (tensors, toy config, metadata) written by :func:`save_checkpoint`."""
    path = Path(ckpt_dir) / WEIGHTS_FILE
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    return tensors, parse_toy_config(json.loads(meta["toy"])), meta


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats become null (strict JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
