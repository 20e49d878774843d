"""``python -m analysis.report SOURCE [--out DIR] [--baseline CONFIG_ID] [--objectives ...]``

A one-page HTML sweep report (``DIR/report.html``, figures inlined, plus ``report.json`` and the
PNGs and front files next to it). SOURCE is an experiment directory or
``mlflow:<experiment>@<tracking uri>`` (:mod:`analysis.sources`). Sections:

1. **Status and what is missing**: trials finished / running / pending / not started against the
   planned count, and every section that has no data yet (no SAE metrics, one seed per
   configuration, no checkpoints, ...). Works on running and interrupted sweeps.
2. **Pareto front** (:mod:`analysis.pareto`): plot, table, hypervolume and its reference point.
3. **Configurations vs baseline**: per configuration, each objective's seed mean, std and 95 %
   CI, and Welch's t-test against the baseline (Holm-adjusted p, Cohen's d):
   :func:`tti_ray.fronts.effects.summary_vs_baseline`. **Baseline**: ``--baseline CONFIG_ID``,
   else the configuration whose searched values are smallest (sorted by the first parameter,
   then the next, ...: the one with every searched coefficient at its minimum when there is one)
   among the configurations with a finished trial (:mod:`analysis.status`).
4. **Per-layer polysemanticity and sparsity** by configuration (``val/<m>/<site>/layer_<i>``).
5. **Sensitivity curves** (each searched parameter vs each objective), **metric correlations**
   (Spearman, the seeds' Figure 6) and **hypervolume vs trials**.
6. **Checkpoints** (local only, at most ``--max-checkpoints``: the baseline and the front):
   neuron-utilization histograms (per-neuron activation frequency on the run's metric sample,
   dead < 1 %, always-on > 99 %), linear probes per layer (:mod:`analysis.probes`, capped at
   ``--probe-tokens`` tokens) and a neuron browser page per layer (:mod:`analysis.neurons`).

:func:`log_report` uploads the report to the sweep's parent MLflow run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.checkpoints import checkpoint_section
from analysis.cli import user_errors
from analysis.page import Report, img, para, strip_tags, table
from analysis.pareto import default_out, export_pareto
from analysis.plots import (
    config_labels,
    correlation_columns,
    correlation_matrix,
    layer_columns,
    plot_correlation,
    plot_layer_profiles,
    plot_sensitivity,
)
from analysis.sources import Source, load_source
from analysis.status import choose_baseline, sweep_status
from tti_ray.cli import UserError
from tti_ray.fronts.effects import summary_vs_baseline
from tti_ray.fronts.figures import plot_hypervolume_history
from tti_ray.fronts.tables import (  # jsonable: NaN -> null, numpy unwrapped (pareto.json's)
    CONFIG_ID,
    FINISHED,
    STATUS,
    TRIAL_ID,
    is_multi_seed,
)
from tti_ray.fronts.tables import (
    jsonable as _jsonable,
)

TEMPLATES = Path(__file__).parent / "templates"
ARTIFACT_PATH = "analysis"


# -- sections -------------------------------------------------------------------------------------
def _front_section(rep: Report, ref: list[float] | None) -> None:
    src = rep.src
    res = export_pareto(src, rep.out, ref=ref)
    front, hv = res["table"], res["hypervolume"]
    for m in res["missing_objectives"]:
        rep.missing.append(f"objective <code>{html.escape(m)}</code> has no values yet")
    rep.data["hypervolume"] = hv
    cols = [c for c in (TRIAL_ID, CONFIG_ID, "n_seeds", "seed") if c in front.columns]
    cols += [p for p in src.params if p in front.columns]
    for o in src.objectives:
        cols += [c for c in (o.metric, f"{o.metric}_ci95") if c in front.columns]
    ref_txt = ", ".join(
        f"{html.escape(k)} = {v:.4g}" for k, v in (hv["reference_point"] or {}).items()
    )
    by_means = " (configurations by their seed means)" if "n_seeds" in front.columns else ""
    rep.section(
        "Pareto front",
        img(
            res["paths"]["png"],
            f"Objectives {html.escape(src.objective_spec)}; dominated "
            "finished trials faded, the non-dominated ones edged in black.",
        ),
        para(
            f"<b>{len(front)}</b> non-dominated of {hv['n_finished']} finished trials with every "
            f"objective finite{by_means}. Hypervolume <b>{hv['hypervolume']:.6g}</b> w.r.t. "
            f"reference point ({ref_txt or 'none'}); rule: {html.escape(hv['reference_rule'])}."
        ),
        table(front[cols]) if len(front) else para("No front yet.", "notes"),
        para(
            "Files: <code>pareto.csv</code>, <code>pareto.json</code>, "
            "<code>pareto.parquet</code>, <code>hypervolume.json</code>, <code>front.png</code>.",
            "notes",
        ),
    )
    rep.data["front"] = front


def _baseline_section(rep: Report, baseline: str | None) -> None:
    src, df = rep.src, rep.src.trials
    metrics = [o.metric for o in src.objectives if o.metric in df.columns]
    fin = df[df[STATUS].astype(str) == FINISHED] if len(df) else df
    base = choose_baseline(df, src.params, baseline) if len(df) else None
    rep.data["baseline"] = base
    if base is None or not metrics or not len(fin):
        rep.section("Configurations vs baseline", para("No finished trials yet.", "notes"))
        return
    summary = summary_vs_baseline(df, metrics, base, params=src.params)
    rep.data["summary"] = summary
    labels = config_labels(df, src.params)
    multi = is_multi_seed(df)
    if not multi:
        rep.missing.append(
            "one seed per configuration: no standard deviations, confidence "
            "intervals or t-tests (set <code>budget.seeds_per_config</code> ≥ 2)"
        )
    nb = int((fin[CONFIG_ID].astype(str) == base).sum())
    if multi and nb < 2:
        rep.missing.append(f"the baseline configuration has {nb} finished seed(s): t-tests need 2")
    wide = []
    for cid, g in summary.groupby(CONFIG_ID, sort=False):
        row: dict[str, Any] = {
            "configuration": labels.get(cid, str(cid)),
            CONFIG_ID: cid,
            "baseline": "yes" if g["is_baseline"].iloc[0] else "",
        }
        row["n"] = int(g["n"].iloc[0])
        for _, r in g.iterrows():
            m = r["metric"]
            row[f"{m} mean"] = r["mean"]
            row[f"{m} ± CI95"] = r["ci95"]
            row[f"{m} std"] = r["std"]
            row[f"{m} Δ vs base"] = r["diff"]
            row[f"{m} p (Holm)"] = r["p_holm"]
            row[f"{m} d"] = r["cohens_d"]
        wide.append(row)
    how = (
        "given by <code>--baseline</code>"
        if baseline
        else "the configuration with the smallest searched values (every searched coefficient at "
        "its minimum when one exists; <code>--baseline CONFIG_ID</code> picks another)"
    )
    rep.section(
        "Configurations vs baseline",
        para(
            f"Baseline: <b>{html.escape(labels.get(base, base))}</b> "
            f"(<code>{html.escape(base)}</code>), "
            f"{how}. Per configuration: mean over finished seeds, 95 % Student-t CI half-width, "
            "sample std, difference to the baseline mean, Welch's t-test p-value "
            "Holm-adjusted over the configurations (per metric), and Cohen's d."
        ),
        table(pd.DataFrame(wide).dropna(axis=1, how="all")),
        para("Full table: <code>summary_vs_baseline.csv</code>.", "notes"),
    )
    summary.to_csv(rep.out / "summary_vs_baseline.csv", index=False)


def _plots_section(rep: Report) -> None:
    src, df, out = rep.src, rep.src.trials, rep.out
    fin = df[df[STATUS].astype(str) == FINISHED] if len(df) else df
    objs = [o.metric for o in src.objectives]
    cols = layer_columns(df)
    if not cols:
        rep.missing.append(
            "no per-layer metrics "
            "(<code>val/&lt;metric&gt;/&lt;site&gt;/layer_&lt;i&gt;</code>) yet"
        )
    if not any(str(c).startswith("sae/") for c in df.columns):
        rep.missing.append("no SAE metrics (<code>sae/*</code>) yet")
    parts = [
        img(
            plot_layer_profiles(df, src.params, out / "layers.png", log_params=src.log_params),
            "Per-layer polysemanticity (entropy of activation mass over token ids, nats) and "
            "sparsity (share of near-zero activations) by configuration.",
        )
    ]
    rep.section("Per-layer polysemanticity and sparsity", *parts)
    rep.section(
        "Sensitivity",
        img(
            plot_sensitivity(
                df, src.params, objs, out / "sensitivity.png", log_params=src.log_params
            ),
            "Each searched parameter against each objective: dots are trials, red the "
            "configuration "
            "means with 95 % CIs (multi-seed).",
        ),
    )
    corr = correlation_matrix(df, correlation_columns(df, src.params, objs))
    if len(corr) < 2:
        rep.missing.append("metric correlations need ≥ 3 finished trials")
    corr.to_csv(out / "correlations.csv")
    rep.section(
        "Metric correlations",
        img(
            plot_correlation(corr, out / "correlations.png", n_trials=len(fin)),
            "Spearman rank correlation across finished trials of the searched parameters, "
            "objectives "
            "and headline metrics (<code>correlations.csv</code>).",
        ),
    )
    hv = rep.data["hypervolume"]
    rep.section(
        "Hypervolume vs trials",
        img(
            plot_hypervolume_history(hv["history"], out / "hypervolume.png"),
            "Hypervolume of the finished trials after each completed trial (completion order; "
            "failed, diverged and early-stopped trials count as spent), fixed final reference "
            "point.",
        ),
    )


# -- the report -----------------------------------------------------------------------------------
def build_report(
    src: Source,
    out: str | Path,
    *,
    baseline: str | None = None,
    ref: list[float] | None = None,
    checkpoints: bool = True,
    max_checkpoints: int = 3,
    probe_tokens: int = 2048,
    categories: str = "coarse",
    neuron_pages: bool = True,
    device: str = "cpu",
) -> Path:
    """Write ``out/report.html`` (+ ``report.json``, PNGs, front files); returns the HTML path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(src, out, notes=list(src.notes))
    status = sweep_status(src)
    _front_section(rep, ref)
    _baseline_section(rep, baseline)
    _plots_section(rep)
    if checkpoints:
        checkpoint_section(
            rep,
            max_n=max_checkpoints,
            probe_tokens=probe_tokens,
            categories=categories,
            neuron_pages=neuron_pages,
            device=device,
        )
    else:
        rep.missing.append("checkpoint analysis skipped (<code>--no-checkpoints</code>)")
    if src.expected_trials is None:
        rep.notes.append("planned trial count unknown (no search space)")

    title = f"Sweep report: {src.name}"
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    head = [
        f"<h1>{html.escape(title)}</h1>",
        para(
            f"Source: <code>{html.escape(src.location)}</code> ({src.kind}) · objectives "
            f"<code>{html.escape(src.objective_spec)}</code> · searched "
            f"{', '.join(f'<code>{html.escape(p)}</code>' for p in src.params) or 'nothing'} · "
            f"generated {now}",
            "sub",
        ),
        (
            f"<div class='status' id='status'><b>{html.escape(status['line'])}</b>"
            f"{'' if status['complete'] else ' — partial sweep'}</div>"
        ),
    ]
    if rep.missing:
        head.append(
            "<div class='missing' id='missing'><b>What is missing</b><ul>"
            + "".join(f"<li>{m}</li>" for m in rep.missing)
            + "</ul></div>"
        )
    if rep.notes:
        head.append("<div class='notes'>" + "<br>".join(rep.notes) + "</div>")
    page = (TEMPLATES / "report.html").read_text(encoding="utf-8")
    page = page.replace("__TITLE__", html.escape(title)).replace(
        "__BODY__", "\n".join(head + rep.sections)
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    summary = rep.data.get("summary")
    (out / "report.json").write_text(
        json.dumps(
            _jsonable(
                {
                    "source": {"kind": src.kind, "location": src.location, "name": src.name},
                    "status": status,
                    "missing": [strip_tags(m) for m in rep.missing],
                    "notes": [strip_tags(n) for n in rep.notes],
                    "baseline": rep.data.get("baseline"),
                    "hypervolume": {
                        k: v for k, v in rep.data["hypervolume"].items() if k != "history"
                    },
                    "summary": summary.to_dict(orient="records") if summary is not None else [],
                    "utilization": rep.data.get("utilization", {}),
                    "probes": {k: v["results"] for k, v in rep.data.get("probes", {}).items()},
                }
            ),
            indent=1,
            allow_nan=False,
        )
    )
    return path


# -- MLflow ---------------------------------------------------------------------------------------
def log_report(
    report_path: str | Path,
    tracking_uri: str | None,
    run_id: str,
    *,
    artifact_path: str = ARTIFACT_PATH,
    include_dir: bool = True,
) -> str:
    """Log the report as an artifact of ``run_id`` (the sweep's parent run) under
    ``artifact_path``: ``report.html`` alone, or with ``include_dir`` the whole report directory
    (front files, PNGs, neuron pages, so the page's links work in the MLflow UI). Returns the
    artifact URI of the report."""
    from mlflow.tracking import MlflowClient

    path = Path(report_path)
    if not path.exists():
        raise FileNotFoundError(f"report {path} does not exist")
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)  # fails early with MLflow's message on a bad id
    if path.is_dir():
        path, include_dir = path / "report.html", True
    if include_dir:
        client.log_artifacts(run_id, str(path.parent), artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path)
    return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}/{path.name}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="One-page HTML sweep report (works on partial sweeps).",
    )
    p.add_argument("source", help="experiment directory, or mlflow:<experiment>@<tracking uri>")
    p.add_argument(
        "--out",
        type=Path,
        help="output directory (default: <experiment dir>/analysis; "
        "MLflow: experiments/<name>/analysis)",
    )
    p.add_argument("--objectives", help="metric:min|max,... (default: the sweep's objectives)")
    p.add_argument(
        "--baseline",
        help="config_id of the baseline (default: the configuration "
        "with the smallest searched values)",
    )
    p.add_argument("--ref", help="fixed hypervolume reference point, one number per objective")
    p.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="skip the checkpoint analyses (utilization, probes, neuron pages)",
    )
    p.add_argument(
        "--max-checkpoints",
        type=int,
        default=3,
        help="checkpoints to analyse: the baseline, then the front (default 3)",
    )
    p.add_argument("--probe-tokens", type=int, default=2048, help="validation tokens per probe")
    p.add_argument(
        "--categories",
        default="coarse",
        help="probe labels: coarse | lexicon | pos | JSON file (default coarse)",
    )
    p.add_argument("--no-neuron-pages", action="store_true", help="skip the neuron browser pages")
    p.add_argument("--device", default="cpu", help="torch device for the checkpoints (cpu, cuda)")
    p.add_argument("--parent-run", help="MLflow: the sweep (parent) run id (default: the latest)")
    p.add_argument(
        "--log-to-mlflow",
        action="store_true",
        help="MLflow source: also log the report to the sweep's parent run",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors("analysis.report"):
        src = load_source(args.source, objectives=args.objectives, parent_run=args.parent_run)
        ref = [float(x) for x in args.ref.split(",")] if args.ref else None
        path = build_report(
            src,
            args.out or default_out(src),
            baseline=args.baseline,
            ref=ref,
            checkpoints=not args.no_checkpoints,
            max_checkpoints=args.max_checkpoints,
            probe_tokens=args.probe_tokens,
            categories=args.categories,
            neuron_pages=not args.no_neuron_pages,
            device=args.device,
        )
        if args.log_to_mlflow:
            if src.kind != "mlflow" or src.parent_run_id is None:
                raise UserError("--log-to-mlflow needs an MLflow SOURCE with a sweep (parent) run")
            uri = log_report(path, src.tracking_uri, src.parent_run_id)
            print(f"[analysis.report] logged to MLflow run {src.parent_run_id}: {uri}")
    info = json.loads((path.parent / "report.json").read_text())
    print(f"[analysis.report] {info['status']['line']}")
    for m in info["missing"]:
        print(f"[analysis.report] missing: {m}")
    print(f"[analysis.report] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
