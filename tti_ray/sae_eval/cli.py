"""``python -m tti_ray.sae_eval CHECKPOINT [--site S] [--layers 0,1] [--expansion N] [--kind K]
[--k N] [--tokens N] [--set key=value ...] [--out DIR]``

Trains one SAE per (site, layer) on a frozen checkpoint and writes ``DIR/sae_metrics.json`` (keys
``sae/<site>/layer_<i>/<metric>`` and the means ``sae/<metric>``) plus the SAE weights under
``DIR/saes/`` and, as SAELens directories, under ``DIR/saelens/`` (default ``DIR``:
``CHECKPOINT/sae_eval``). ``--set`` addresses SAE config keys
(``--set lr=3e-4``, ``--set sae.dead_tokens=50000``); the flags win over ``--set``. Bad input exits
with code 2 and one line naming the flag or file, before anything is written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NoReturn

from tti_ray.cli import die, fail_on_user_errors
from tti_ray.config import parse_sets
from tti_ray.config.base import KeyPathError

PROG = "tti_ray.sae_eval"

#: config key → the flag that sets it (for error messages)
FLAG_KEYS = {
    "kind": "--kind",
    "expansion": "--expansion",
    "k": "--k",
    "tokens": "--tokens",
    "sites": "--site",
    "layers": "--layers",
}


def resolve_checkpoint(arg: str) -> Path:
    """The checkpoint directory for ``CHECKPOINT_OR_RUN_ID``.

    For now only directories (a checkpoint, or a run directory holding ``checkpoint/``); an
    MLflow run id will be resolved here once tracking lands. Raises ``ValueError`` (one line)."""
    path = Path(arg)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{arg}: not a directory (expected a checkpoint directory)")
    if len(arg) == 32 and all(c in "0123456789abcdef" for c in arg):
        raise ValueError(
            f"{arg}: MLflow run ids are not supported yet; pass a checkpoint directory"
        )
    raise ValueError(f"{arg}: no such checkpoint directory")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (not argparse's usage dump)
        die(PROG, message.removeprefix("argument "))


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _layers(text: str) -> str | list[int]:
    if text.strip() == "all":
        return "all"
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or comma-separated ints, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint (or run) directory")
    p.add_argument("--site", type=_csv, help="mlp_hidden and/or mlp_out, comma-separated")
    p.add_argument("--layers", type=_layers, help="'all' or comma-separated layer indices")
    p.add_argument("--expansion", type=int, help="d_sae / d_in (seed configs: 4, 8, 16)")
    p.add_argument("--kind", help="SAE kind: topk (default) or relu")
    p.add_argument("--k", type=int, help="TopK: latents kept per token")
    p.add_argument("--tokens", type=int, help="training-token budget per SAE")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an SAE config key (repeatable)",
    )
    p.add_argument("--out", type=Path, help="output directory (default CHECKPOINT/sae_eval)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def sae_config_from_args(args: argparse.Namespace) -> Any:
    """Validated SAE config from ``--set`` entries and flags; errors name the flag."""
    from tti_ray.sae import parse_sae_config

    raw: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, value in parse_sets(args.sets):
        top = key.removeprefix("sae.")
        if "." in top:
            die(PROG, f"--set {key}: SAE config keys are not nested")
        raw[top], source[top] = value, f"--set {key}"
    flags = {
        "kind": args.kind,
        "expansion": args.expansion,
        "k": args.k,
        "tokens": args.tokens,
        "sites": args.site,
        "layers": args.layers,
    }
    for key, value in flags.items():
        if value is not None:
            raw[key], source[key] = value, FLAG_KEYS[key]
    try:
        return parse_sae_config(raw), source
    except KeyPathError as e:
        top = e.path.removeprefix("sae.").split(".")[0]
        die(PROG, f"{source.get(top, e.path)}: {e.msg}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with fail_on_user_errors(PROG):
        cfg, source = sae_config_from_args(args)
        try:
            ckpt = resolve_checkpoint(args.checkpoint)
        except ValueError as e:
            die(PROG, str(e))
        out = args.out if args.out is not None else ckpt / "sae_eval"
        if out.exists() and not out.is_dir():
            die(PROG, f"--out: {out}: exists and is not a directory")
        existing = next(p for p in (out, *out.absolute().parents) if p.exists())
        if not os.access(existing, os.W_OK):
            die(PROG, f"--out: {out}: not writable")

        import torch

        from tti_ray.sae.evaluate import METRICS_FILE, check_config, evaluate_checkpoint
        from tti_ray.train.checkpoint import load_model

        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            die(PROG, "--device: cuda requested but no GPU is available")
        run = load_model(ckpt, device=device)
        try:
            check_config(run.cfg, cfg)
        except KeyPathError as e:
            top = e.path.removeprefix("sae.").split(".")[0]
            die(PROG, f"{source.get(top, e.path)}: {e.msg}")
    metrics = evaluate_checkpoint(run, cfg, out, progress=False if args.no_progress else None)
    means = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.count("/") == 1)
    print(f"{ckpt}: {means} -> {out / METRICS_FILE}")
    return 0
