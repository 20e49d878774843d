"""``python -m tti_ray.tracking {serve,replay}``

``serve``: run an MLflow tracking server (see :mod:`tti_ray.tracking.serve`).
``replay DIR``: upload tracking calls that were buffered while the store was away
(``mlflow_spool-*.jsonl`` under an experiment or run directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tti_ray.cli import UsageError, fail_on_user_errors
from tti_ray.tracking.client import replay_dir
from tti_ray.tracking.config import STATE_FILE, load_state
from tti_ray.tracking.serve import serve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tti_ray.tracking",
                                description="MLflow tracking helpers for tti-ray")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run an MLflow tracking server (wraps `mlflow server`)")
    s.add_argument("--backend-store", default="sqlite:///mlflow.db",
                   help="sqlite:///path.db or postgresql://host/db (default: ./mlflow.db)")
    s.add_argument("--artifact-root", default="./mlartifacts",
                   help="directory or s3://bucket/prefix (default: ./mlartifacts)")
    s.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; 0.0.0.0 for a cluster head)")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    s.add_argument("--no-serve-artifacts", dest="serve_artifacts", action="store_false",
                   help="clients write to the artifact root themselves (they need its "
                        "credentials); default: the server proxies artifact uploads")
    s.add_argument("--dry-run", action="store_true", help="print the mlflow command and exit")
    s.add_argument("extra", nargs=argparse.REMAINDER,
                   help="after --: more `mlflow server` options (e.g. --allowed-hosts)")
    r = sub.add_parser("replay", help="upload buffered tracking calls of an experiment/run dir")
    r.add_argument("dir", type=Path)
    r.add_argument("--tracking-uri", help="default: the one recorded in DIR/mlflow_run.json")
    return p


def _recorded_uri(root: Path) -> str | None:
    for state_dir in [root, *sorted(p.parent for p in root.rglob(STATE_FILE))]:
        state = load_state(state_dir) or {}
        uri = state.get("tracking", {}).get("tracking_uri") or state.get("tracking_uri")
        if uri:
            return uri
    return None


def replay(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        raise UsageError(f"{args.dir}: not a directory")
    uri = args.tracking_uri or _recorded_uri(args.dir)
    if not uri:
        raise UsageError(f"{args.dir}: no mlflow_run.json names a tracking URI; pass --tracking-uri")
    n, pending = replay_dir(args.dir, uri)
    print(f"[tti_ray.tracking] replayed {n} calls to {uri}"
          + (f"; {len(pending)} spools still pending (store unreachable?)" if pending else ""))
    return 1 if pending else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "extra", None) and args.extra[0] == "--":
        args.extra = args.extra[1:]
    with fail_on_user_errors("tti_ray.tracking"):
        if args.cmd == "serve":
            return serve(args)
        return replay(args)
    return 1


if __name__ == "__main__":
    sys.exit(main())
