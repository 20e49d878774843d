"""``python -m analysis.pareto SOURCE [--objectives m1:min,m2:min] [--out DIR] [--ref r1,r2]``

Export a sweep's Pareto front: ``DIR/pareto.csv``, ``pareto.json``, ``pareto.parquet``,
``hypervolume.json`` and ``front.png``. SOURCE is an experiment directory or
``mlflow:<experiment>@<tracking uri>`` (:mod:`analysis.sources`).

Everything is computed by :mod:`tti_ray.fronts` (the same code the sweep runs): the front is
:func:`~tti_ray.fronts.tables.pareto_table` (non-dominated finished trials, or configurations by
their seed means when a configuration has several seeds), the hypervolume and its stated
reference point :func:`~tti_ray.fronts.tables.hypervolume_report` (default reference: the
worst finished value of each objective pushed out by 10 % of its range; ``--ref`` fixes it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.cli import user_errors
from analysis.sources import Source, SourceError, load_source
from tti_ray.cli import OneLineParser, UserError
from tti_ray.fronts.tables import hypervolume_report, pareto_json, pareto_table


def default_out(src: Source) -> Path:
    """``<experiment dir>/analysis``; for MLflow ``experiments/<name>/analysis`` (the sweep's
    default experiment directory, git-ignored)."""
    if src.kind == "dir":
        return Path(src.location) / "analysis"
    return Path("experiments") / src.name / "analysis"


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding mixed scalars (str and NaN, numbers and str) as nullable strings;
    list columns (``trial_ids``) as lists of strings. Parquet needs one type per column."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype != object:
            continue
        vals = out[c].tolist()
        if any(isinstance(v, (list, tuple, np.ndarray)) for v in vals):
            out[c] = [
                [str(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else []
                for v in vals
            ]
        else:
            out[c] = pd.array(
                [
                    None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                    for v in vals
                ],
                dtype="string",
            )
    return out


def _colour_column(df: pd.DataFrame, params: list[str]) -> tuple[pd.DataFrame, str | None]:
    """What the front is coloured by: the ``method`` column if any, else a single searched
    parameter (a colour bar beyond 8 values, else its values rounded to 3 digits as labels)."""
    if "method" in df.columns or len(params) != 1 or params[0] not in df.columns:
        return df, None
    p = params[0]
    vals = pd.to_numeric(df[p], errors="coerce")
    if vals.isna().any() or vals.nunique() > 8:
        return df, p
    label = p.split(".", 1)[-1] if p.count(".") > 1 else p
    # rows in parameter order, so the legend lists the values ascending
    shown = df.assign(**{label: [f"{v:.3g}" for v in vals]}).iloc[np.argsort(vals.to_numpy())]
    return shown, label


def export_pareto(
    src: Source, out: str | Path, *, ref: list[float] | None = None, title: str | None = None
) -> dict[str, Any]:
    """Write the front files for ``src`` into ``out``; returns the table, hypervolume report and
    the paths written. Works with no finished trial (an empty front, hypervolume 0)."""
    from tti_ray.fronts.figures import plot_front

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    df, spec = src.trials, src.objective_spec
    missing = [o.metric for o in src.objectives if o.metric not in df.columns]
    if missing and (df["status"].astype(str) == "finished").any():
        metrics = [c for c in df.columns if "/" in str(c)]
        raise UserError(
            f"objective(s) {missing} not in the trials table of {src.location} "
            f"(metrics: {', '.join(metrics[:12])}{' ...' if len(metrics) > 12 else ''})"
        )
    if missing:  # no trial has finished: the metric columns are simply not there yet
        df = df.assign(**{m: np.nan for m in missing})
    try:  # computed before anything is written: a failure leaves no empty directory behind
        table = pareto_table(df, spec, params=src.params)
        hv = hypervolume_report(df, spec, ref)
    except (ValueError, KeyError, TypeError) as e:
        raise SourceError(f"SOURCE {src.location}: {type(e).__name__}: {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "pareto.csv",
        "json": out / "pareto.json",
        "parquet": out / "pareto.parquet",
        "hypervolume": out / "hypervolume.json",
        "png": out / "front.png",
    }
    table.to_csv(paths["csv"], index=False)
    pj = pareto_json(table, spec, hv["reference_point"], hv["hypervolume"])
    pj["reference_rule"] = hv["reference_rule"]
    pj["source"] = {"kind": src.kind, "location": src.location, "name": src.name}
    paths["json"].write_text(json.dumps(pj, indent=1, allow_nan=False))
    _parquet_safe(table).to_parquet(paths["parquet"], index=False)
    paths["hypervolume"].write_text(json.dumps(hv, indent=1, allow_nan=False))
    shown, colour = _colour_column(df, src.params)
    plot_front(
        shown, spec, paths["png"], color_by=colour, title=title or f"{src.name}: Pareto front"
    )
    return {"table": table, "hypervolume": hv, "paths": paths, "missing_objectives": missing}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m analysis.pareto", description=__doc__.split("\n")[2],
        short_prog="analysis.pareto",
    )
    p.add_argument("source", help="experiment directory, or mlflow:<experiment>@<tracking uri>")
    p.add_argument("--objectives", help="metric:min|max,... (default: the sweep's objectives)")
    p.add_argument(
        "--out",
        type=Path,
        help="output directory (default: <experiment dir>/analysis; "
        "MLflow: experiments/<name>/analysis)",
    )
    p.add_argument(
        "--ref",
        help="fixed hypervolume reference point, one number per objective "
        "(default: nadir + 10%% of the range)",
    )
    p.add_argument("--parent-run", help="MLflow: the sweep (parent) run id (default: the latest)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors("analysis.pareto"):
        src = load_source(args.source, objectives=args.objectives, parent_run=args.parent_run)
        ref = None
        if args.ref:
            try:
                ref = [float(x) for x in args.ref.split(",")]
            except ValueError:
                raise UserError(f"--ref: expected numbers separated by commas, got {args.ref!r}") \
                    from None
            if len(ref) != len(src.objectives):
                raise UserError(f"--ref: {len(ref)} numbers for {len(src.objectives)} "
                                 f"objectives ({src.objective_spec})")
        res = export_pareto(src, args.out or default_out(src), ref=ref)
    hv, table = res["hypervolume"], res["table"]
    if res["missing_objectives"]:
        print(f"[analysis.pareto] no values yet for {', '.join(res['missing_objectives'])}")
    print(
        f"[analysis.pareto] {len(table)} on the front of {hv['n_finished']} finished "
        f"({hv['n_trials']} trials); hypervolume {hv['hypervolume']:.6g} "
        f"(reference {hv['reference_point']})"
    )
    print(f"[analysis.pareto] wrote {', '.join(str(p) for p in res['paths'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
