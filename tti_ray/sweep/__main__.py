"""``python -m tti_ray.sweep SEARCH_SPACE.yaml [--out DIR] [--resume] [--dry-run] ...``

Runs a multi-objective sweep on a local Ray started by the command (or ``--address auto`` /
``ray://…`` for a cluster), writes the trial table, Pareto front and hypervolume into the
experiment directory, and prints the front at the end. Bad files or flags: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tti_ray.cli import OneLineParser, UsageError, fail_on_user_errors, positive_int
from tti_ray.tracking.config import add_tracking_args

PROG = "tti_ray.sweep"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m tti_ray.sweep", description=__doc__.split("\n")[0],
                      short_prog=PROG)
    p.add_argument("search_space", help="search-space YAML (e.g. search_spaces/anti_poly.yaml)")
    p.add_argument("--out", type=Path, help="experiment directory (default experiments/<name>)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a search-space value by dotted path, e.g. budget.trials=4 or "
                        "base.train.steps=200 (repeatable)")
    p.add_argument("--preset", help="rebase the base run config on this preset (tiny, paper)")
    p.add_argument("--address", help="Ray cluster address (e.g. auto); default: start a local Ray")
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for the local Ray (default: all)")
    p.add_argument("--storage", help="Tune storage (local dir or s3://bucket/prefix); "
                                     "default: the experiment directory")
    add_tracking_args(p, default="sqlite:///<out>/mlflow.db, artifacts in <out>/mlartifacts")
    p.add_argument("--no-tracking", action="store_true", help="no MLflow tracking")
    p.add_argument("--no-wait-sae", action="store_true",
                   help="end without waiting for outstanding SAE evaluations")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved plan (configs, resources, storage) and exit")
    p.add_argument("--skip-resource-check", action="store_true",
                   help="do not refuse trials larger than the cluster's nodes (an autoscaling "
                        "cluster that adds nodes on demand)")
    return p


def _print_front(result: dict) -> None:
    table = result.get("pareto")
    if table is None or table.empty:
        print("[tti_ray.sweep] no finished trials: no Pareto front")
        return
    cols = [c for c in ("trial_id", "config_id", "n_seeds") if c in table.columns]
    cols += [c for c in result["parameters"] if c in table.columns]
    cols += [c for m in result["objectives"] for c in (m, f"{m}_std") if c in table.columns]
    print(f"\nPareto front ({len(table)} of {result['n_finished']} finished):")
    print(table[cols].to_string(index=False, max_colwidth=40))
    effects = result.get("effects")
    if effects is not None and not effects.empty:
        eff = effects[effects["metric"].isin(result["objectives"])]
        print("\nMain effects on the objectives (Welch t, pooled over the other parameters; "
              "effects.csv):")
        for r in eff.itertuples():
            print(f"  {r.metric}: {r.parameter} {r.reference_level} -> {r.level}: "
                  f"{r.reference_mean:.4g} -> {r.mean:.4g} ({r.diff_pct:+.1f}%), "
                  f"t={r.t:.2f}, p={r.p_value:.3g}, n={r.reference_n}/{r.n}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tti_ray.sweep.signals import SweepInterrupted

    try:
        return _main(args)
    except SweepInterrupted as e:
        print(f"{PROG}: interrupted; continue with --resume", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue with --resume", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    with fail_on_user_errors(PROG):
        from tti_ray.sweep.plan import plan_sweep
        from tti_ray.sweep.preflight import check_resources, check_storage, check_writable, is_uri
        from tti_ray.sweep.ray_start import local_nodes, local_where, parse_address
        from tti_ray.sweep.resume import check_space_unchanged
        from tti_ray.sweep.space import load_search_space

        if args.resume and args.dry_run:
            raise UsageError("--resume and --dry-run cannot be combined")
        if args.resume and (args.sets or args.preset):
            raise UsageError("--resume continues the sweep as it was planned: drop --set/--preset")
        space = load_search_space(args.search_space, args.sets, preset=args.preset)
        if args.resume:  # continue the sweep as it was planned, not as the file reads now
            exp = args.out or Path("experiments") / space.name
            check_space_unchanged(exp, args.search_space)
            saved = exp / "search_space.yaml"
            if saved.exists():
                space = load_search_space(saved)
        plan = plan_sweep(space, args.out, storage=args.storage, address=args.address,
                          resume=args.resume, tracking_uri=args.tracking_uri,
                          artifact_store=args.artifact_store, track=not args.no_tracking)
        plan.wait_sae = not args.no_wait_sae
        plan.check_resources = not args.skip_resource_check
        plan.origin = {"source": str(args.search_space), "sets": list(args.sets),
                       "preset": args.preset}
        if args.dry_run:
            check_writable(plan.exp_dir)
            if not is_uri(plan.storage):
                check_storage(plan.storage)
            described = plan.describe()
            if args.address:
                parse_address(args.address)
                described["resource_check"] = "against the cluster when the sweep connects"
            elif plan.check_resources:
                check_resources(space, local_nodes(args.num_cpus), local_where(args.num_cpus),
                                args.sets)
                described["resource_check"] = f"fits {local_where(args.num_cpus)}"
            print(json.dumps(described, indent=2, default=str))
            return 0
        from tti_ray.sweep.runner import run_sweep  # Ray, Tune, pandas: only for a real run

        result = run_sweep(plan, num_cpus=args.num_cpus)
    _print_front(result)
    df = result["trials"]
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    print(f"\n[tti_ray.sweep] {len(df)} trials {counts} -> {plan.exp_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
