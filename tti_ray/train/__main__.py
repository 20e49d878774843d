"""``python -m tti_ray.train CONFIG.yaml [--set k=v ...] [--preset NAME] [--out DIR] [--resume]``

Trains one run with a progress bar and writes ``DIR/metrics.json``, ``metrics.jsonl``,
``config.yaml`` and ``checkpoint/`` (default ``DIR``: ``runs/<config name>``). Bad input exits
with code 2 and one line naming the file/flag and key.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tti_ray.cli import OneLineParser, UsageError, die, fail_on_user_errors
from tti_ray.config import load_config
from tti_ray.lock import LOCK_NAME, DirLock
from tti_ray.tracking import track_run
from tti_ray.tracking.config import add_tracking_args
from tti_ray.train import train_run
from tti_ray.trials import TrialStatus


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m tti_ray.train", description=__doc__.split("\n")[0],
                      short_prog="tti_ray.train")
    p.add_argument("config", help="run config YAML (e.g. configs/tiny.yaml)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted path (repeatable)")
    p.add_argument("--preset", help="use this shipped preset instead of the file's (tiny, paper)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint")
    add_tracking_args(p, default="none: no MLflow run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with fail_on_user_errors("tti_ray.train", args.config):
        cfg = load_config(args.config, args.sets, preset=args.preset)
        out = args.out or Path("runs") / cfg.name
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out: {out} exists and is not a directory")
        if args.resume and not (out / "checkpoint" / "train_state.json").exists():
            die("tti_ray.train", f"--resume: no checkpoint in {out / 'checkpoint'}")
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out: cannot create {out} ({e.strerror or e})") from None
        try:  # one process per run directory, for the whole run
            with DirLock(out, flag="--out") as lock:
                if lock.stale:
                    print(f"[tti_ray.train] note: took over the lock that a dead process left "
                          f"({lock.stale})", file=sys.stderr)
                with track_run(args.tracking_uri, args.artifact_store, cfg, out,
                               resume=args.resume) as run:
                    final = train_run(cfg, run.wrap(None), out, resume=args.resume,
                                      progress=not args.no_progress)
        except Exception:
            if created and _only_lock(out):  # bad input found before training: leave nothing
                shutil.rmtree(out, ignore_errors=True)
            raise
    status = final.get("status")
    ppl = final.get("val/perplexity")
    poly = final.get("val/polysemanticity/mean")
    print(f"{cfg.name}: status={status} step={final.get('step')} val/perplexity={ppl:.3f} "
          f"val/polysemanticity/mean={poly if poly is None else round(poly, 4)} -> {out}")
    return 0 if status == TrialStatus.FINISHED else 1


def _only_lock(out: Path) -> bool:
    return all(p.name == LOCK_NAME for p in out.iterdir())


if __name__ == "__main__":
    sys.exit(main())
