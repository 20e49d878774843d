"""The report's checkpoint analyses: which checkpoints (the baseline, then the front, local
ones only, capped), and for each the per-neuron activation-frequency histogram, the linear
probes (:mod:`analysis.probes`) and neuron browser pages (:mod:`analysis.neurons`). Torch is
imported only when there is a checkpoint to analyse."""

from __future__ import annotations

import html
import json
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from analysis.neurons import collect, write_browser
from analysis.page import Report, img, para
from analysis.plots import ALWAYS_ON, DEAD, config_labels, plot_utilization
from analysis.probes import plot_probes, run_probes, spacy_available
from tti_ray.fronts.tables import CONFIG_ID, FINISHED, STATUS, TRIAL_ID


def checkpoint_trials(rep: Report, max_n: int) -> list[tuple[str, str, Path]]:
    """(label, trial_id, checkpoint) for the baseline and the front, local checkpoints only."""
    src, df = rep.src, rep.src.trials
    fin = df[df[STATUS].astype(str) == FINISHED] if len(df) else df
    labels = config_labels(df, src.params) if len(df) else {}
    want: list[str] = []
    base = rep.data.get("baseline")
    if base is not None:
        want += fin[fin[CONFIG_ID].astype(str) == base][TRIAL_ID].astype(str).tolist()[:1]
    front = rep.data.get("front")
    if front is not None and len(front):
        if "trial_ids" in front.columns:
            want += [str(ids[0]) for ids in front["trial_ids"] if len(ids)]
        else:
            want += front[TRIAL_ID].astype(str).tolist()
    out, seen = [], set()
    no_ckpt = [t for t in fin[TRIAL_ID].astype(str) if src.checkpoint(t) is None]
    if len(fin) and len(no_ckpt) == len(fin):
        rep.missing.append(
            "no local checkpoints for the finished trials (neuron utilization, "
            "probes and neuron pages need <code>runs/&lt;trial_id&gt;/checkpoint</code>)"
        )
    elif no_ckpt:
        rep.notes.append(f"{len(no_ckpt)} finished trial(s) have no local checkpoint")
    for t in want:
        if t in seen or len(out) >= max_n:
            continue
        seen.add(t)
        ck = src.checkpoint(t)
        if ck is None:
            continue
        row = df[df[TRIAL_ID].astype(str) == t].iloc[0]
        tag = " (baseline)" if str(row[CONFIG_ID]) == base else ""
        out.append((f"{labels.get(row[CONFIG_ID], t)}{tag} [{t}]", t, ck))
    return out


def checkpoint_section(
    rep: Report,
    *,
    max_n: int,
    probe_tokens: int,
    categories: str,
    neuron_pages: bool,
    device: str = "cpu",
) -> None:
    """Utilization histograms, probes and neuron pages for :func:`checkpoint_trials`; each
    checkpoint that fails to load or analyse is listed as missing, never fatal."""
    chosen = checkpoint_trials(rep, max_n)
    if not chosen:
        if not rep.src.trials.empty and not any("checkpoint" in m for m in rep.missing):
            rep.missing.append(
                "no checkpoint analysed yet (needs a finished trial on the front "
                "with a local checkpoint)"
            )
        rep.section(
            "Neurons and probes (checkpoints)",
            para("No checkpoint analysed: see what is missing above.", "notes"),
        )
        return
    from contextlib import nullcontext

    import torch

    from tti_ray.train.checkpoint import load_model
    from tti_ray.train.evaluate import interpretability_metrics

    freqs: dict[str, dict[str, np.ndarray]] = {}
    probes: dict[str, Any] = {}
    pages: list[str] = []
    for label, tid, ck in chosen:
        try:
            run = load_model(ck, device)
            raw = interpretability_metrics(
                run.model, run.tokens, run.cfg, torch.device(device), nullcontext, return_raw=True
            )["_raw"]
            freqs[label] = {
                f"layer {i}": v["neuron_frequency"].numpy()
                for (s, i), v in sorted(raw.items())
                if s == "mlp_hidden"
            }
            probes[label] = run_probes(run, categories=categories, n_tokens=probe_tokens)
            if neuron_pages:
                for layer in range(run.cfg.model.n_layer):
                    data = collect(run, "mlp_hidden", layer, top_k=5, n_tokens=probe_tokens)
                    page, _ = write_browser(data, rep.out / "neurons" / tid)
                    pages.append(
                        f"<li><a href='{html.escape(str(page.relative_to(rep.out)))}'>"
                        f"{html.escape(label)}: mlp_hidden layer {layer}</a></li>"
                    )
        except Exception as e:  # noqa: BLE001 - one bad checkpoint must not sink the report
            rep.missing.append(
                f"checkpoint of {html.escape(tid)} could not be analysed "
                f"({html.escape(type(e).__name__)}: {html.escape(str(e)[:200])})"
            )
            traceback.print_exc()
    rep.data["probes"] = probes
    rep.data["utilization"] = {
        k: {
            lk: {"dead": float((v < DEAD).mean()), "always_on": float((v > ALWAYS_ON).mean())}
            for lk, v in d.items()
        }
        for k, d in freqs.items()
    }
    if spacy_available() is None:
        rep.notes.append(
            "spaCy (with a pipeline) is not installed: POS probes skipped; "
            f"probes use the <code>{html.escape(categories)}</code> categories"
        )
    parts = [
        img(
            plot_utilization(freqs, rep.out / "utilization.png"),
            "Per-neuron activation frequency at mlp_hidden on the run's metric sample.",
        )
    ]
    if probes:
        (rep.out / "probes.json").write_text(json.dumps(probes, indent=1, allow_nan=False))
        parts.append(
            img(
                plot_probes(probes, rep.out / "probes.png"),
                f"Logistic-regression probes of the {html.escape(categories)} token "
                f"category on frozen activations ({probe_tokens} validation tokens, 25 % "
                "held out), per layer and site; dotted: majority class.",
            )
        )
    if pages:
        parts.append(
            "<p>Neuron browser pages (top-5 contexts per neuron):</p><ul>"
            + "".join(pages)
            + "</ul>"
        )
    rep.section("Neurons and probes (checkpoints)", *parts)
