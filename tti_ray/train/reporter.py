"""How a run reports: a small protocol (the Ray glue implements it) and the run's own files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import yaml

from tti_ray.config import RunConfig
from tti_ray.io import atomic_write_text
from tti_ray.provenance import git_commit, versions


class Reporter(Protocol):
    """Receives metrics at each eval/checkpoint step, on every rank; ``checkpoint`` is the saved
    directory on rank 0 and None elsewhere (interpretability metrics exist on rank 0 only)."""

    def report(self, metrics: dict[str, Any], *, step: int, checkpoint: Path | None = None) -> None:
        ...


def provenance(cfg: RunConfig) -> dict[str, Any]:
    """The ``provenance`` section of a run's ``config.yaml`` (see :mod:`tti_ray.provenance`)."""
    v = versions()
    return {
        "tti_ray_version": v["tti_ray"],
        "git_commit": git_commit(),
        "torch_version": v["torch"],
        "seed": cfg.train.seed,
    }


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "nan", "inf": JSON has no such numbers
    return v


def dump_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


class RunFiles:
    """``metrics.jsonl`` / ``metrics.json`` / ``config.yaml`` of one run directory."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root, self.enabled = Path(root), enabled
        if enabled:
            self.root.mkdir(parents=True, exist_ok=True)

    def start(self, cfg: RunConfig, prov: dict[str, Any]) -> None:
        if not self.enabled:
            return
        data = {**cfg.to_dict(), "provenance": prov}
        (self.root / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        (self.root / "metrics.jsonl").write_text("")
        (self.root / "metrics.json").unlink(missing_ok=True)

    def append(self, metrics: dict[str, Any]) -> None:
        if self.enabled:
            with (self.root / "metrics.jsonl").open("a") as f:
                f.write(json.dumps({k: _json_safe(v) for k, v in metrics.items()}) + "\n")

    def truncate_history(self, step: int) -> None:
        """On resume: drop records logged after the checkpoint (they will be logged again)."""
        path = self.root / "metrics.jsonl"
        if not self.enabled or not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))

    def write_final(self, metrics: dict[str, Any]) -> None:
        if self.enabled:
            dump_json(self.root / "metrics.json", {k: _json_safe(v) for k, v in metrics.items()})
