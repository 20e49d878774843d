"""``python -m analysis.probes CHECKPOINT [--categories coarse|lexicon|pos|FILE] [--tokens 4096]
[--out DIR]``

Linear probes on frozen activations (the seed repo's evaluation level 4): for every layer and
site (``mlp_hidden``, ``resid_post``), a logistic-regression classifier predicts the category of
the token at each position from the activation at that position. Accuracy and macro-F1 on a
held-out split say how linearly readable the category is at that layer; a sparse or
monosemantic training intervention should not make it worse.

* **Tokens**: the first ``ceil(tokens / seq_len)`` validation blocks (the fixed sample of the
  run's own metrics), every position; split ``test_size`` (default 25 %) held out, stratified when
  every class has two examples, ``random_state=seed``.
* **Labels**: the category maps of :mod:`tti_ray.interventions.categories` (``coarse`` lexical
  classes, the shipped ``lexicon``, or a user JSON file), or ``pos``: spaCy's coarse POS tag of
  the word the token starts in (needs ``spacy`` and an installed pipeline, e.g.
  ``en_core_web_sm``; guarded, so without them ``pos`` is an error and everything else works).
* **Probe**: ``StandardScaler`` then ``LogisticRegression`` (scikit-learn, L2, C = 1, lbfgs,
  multinomial, at most 200 iterations). Reported next to the majority-class baseline of the same
  test split, so an accuracy can be read against "always guess the most common category".
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.cli import user_errors
from analysis.neurons import activations, default_out, validation_blocks
from tti_ray.cli import UserError

if TYPE_CHECKING:
    from tti_ray.train.checkpoint import LoadedRun

PROBE_SITES = ("mlp_hidden", "resid_post")


def spacy_available() -> str | None:
    """The name of an installed spaCy pipeline, or None (spaCy missing or no model)."""
    try:
        import spacy
    except ImportError:
        return None
    models = sorted(spacy.util.get_installed_models())
    return models[0] if models else None


def pos_labels(strings_per_block: list[list[str]]) -> tuple[np.ndarray, list[str]]:
    """spaCy coarse POS of each token: the tag of the spaCy token covering the token's first
    non-space character (``SPACE`` for whitespace-only tokens). Returns (labels [N], names)."""
    model = spacy_available()
    if model is None:
        raise UserError(
            "--categories pos needs spaCy and an installed pipeline "
            "(pip install spacy && python -m spacy download en_core_web_sm)"
        )
    import spacy

    nlp = spacy.load(model, disable=["ner", "lemmatizer", "parser"])
    names: dict[str, int] = {}
    out: list[int] = []
    for strings in strings_per_block:
        text = "".join(strings)
        doc = nlp(text)
        char_pos = np.full(len(text) + 1, -1, dtype=np.int64)
        for t in doc:
            char_pos[t.idx : t.idx + len(t.text)] = t.i
        start = 0
        for s in strings:
            lead = len(s) - len(s.lstrip())
            k = char_pos[start + lead] if s.strip() else -1
            tag = doc[int(k)].pos_ if k >= 0 else "SPACE"
            out.append(names.setdefault(tag, len(names)))
            start += len(s)
    return np.asarray(out, dtype=np.int64), list(names)


def token_labels(run: LoadedRun, ids: Any, categories: str) -> tuple[np.ndarray, list[str]]:
    """Category of every token of ``ids`` [B, T] -> (labels [B*T], category names)."""
    from tti_ray.interventions.categories import category_map, tokenizer_for

    if categories == "pos":
        tok = tokenizer_for(run.tokens)
        blocks = [run.tokens.decode(row.tolist(), tok) for row in ids]
        return pos_labels(blocks)
    cmap = category_map(categories, run.tokens)
    return cmap.ids[ids.reshape(-1)].numpy(), list(cmap.names)


def fit_probe(
    x: np.ndarray, y: np.ndarray, *, test_size: float = 0.25, seed: int = 0, max_iter: int = 200
) -> dict[str, float]:
    """Standardize + multinomial logistic regression on a train split; metrics on the test split:
    ``accuracy``, ``macro_f1`` (over the classes present in the test split or predicted),
    ``train_accuracy``, ``majority_accuracy`` and ``majority_macro_f1`` (always the most common
    training class)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    counts = np.bincount(y)
    strat = y if (counts[counts > 0] >= 2).all() and len(np.unique(y)) > 1 else None
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=strat
    )
    majority = np.bincount(ytr).argmax()
    base = np.full_like(yte, majority)
    out = {
        "n_train": len(ytr),
        "n_test": len(yte),
        "n_classes": len(np.unique(y)),
        "majority_accuracy": float(accuracy_score(yte, base)),
        "majority_macro_f1": float(f1_score(yte, base, average="macro", zero_division=0)),
    }
    if len(np.unique(ytr)) < 2:  # one class only: the probe is the majority guess
        return {
            **out,
            "accuracy": out["majority_accuracy"],
            "macro_f1": out["majority_macro_f1"],
            "train_accuracy": 1.0,
        }
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
    # one BLAS thread: on a few shared cores, threaded BLAS made these small fits 20-60x slower
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # capped iterations, reported anyway
        clf.fit(xtr, ytr)
        pred = clf.predict(xte)
        train_pred = clf.predict(xtr)
    return {
        **out,
        "accuracy": float(accuracy_score(yte, pred)),
        "macro_f1": float(f1_score(yte, pred, average="macro", zero_division=0)),
        "train_accuracy": float(accuracy_score(ytr, train_pred)),
    }


def run_probes(
    run: LoadedRun,
    *,
    categories: str = "coarse",
    sites: tuple[str, ...] = PROBE_SITES,
    n_tokens: int = 4096,
    test_size: float = 0.25,
    seed: int = 0,
) -> dict[str, Any]:
    """Probe every (site, layer); JSON-ready ``{meta, results: [{site, layer, accuracy, ...}]}``."""

    if not 0 < test_size < 1:
        raise UserError(f"--test-size: must be in (0, 1), got {test_size}")
    ids = validation_blocks(run, n_tokens)[:, :-1]  # [B, T]
    y, names = token_labels(run, ids, categories)
    n_layer = run.cfg.model.n_layer
    keys = [(s, i) for s in sites for i in range(n_layer)]
    acts = activations(run, ids, keys)
    results = []
    for site, layer in keys:
        x = acts[(site, layer)].reshape(len(y), -1).numpy()
        results.append(
            {
                "site": site,
                "layer": layer,
                "dim": int(x.shape[1]),
                **fit_probe(x, y, test_size=test_size, seed=seed),
            }
        )
    counts = np.bincount(y, minlength=len(names))
    return {
        "meta": {
            "checkpoint": str(run.directory),
            "step": run.step,
            "categories": categories,
            "class_names": names,
            "class_counts": dict(zip(names, counts.tolist(), strict=True)),
            "n_tokens": len(y),
            "test_size": test_size,
            "seed": seed,
            "probe": "StandardScaler + LogisticRegression(C=1, lbfgs, multinomial, max_iter=200)",
        },
        "results": results,
    }


def plot_probes(
    results: dict[str, dict[str, Any]] | dict[str, Any], out_png: str | Path, *, title: str = ""
) -> Path:
    """Accuracy and macro-F1 per layer; one line per (label, site), majority baseline dashed.
    ``results``: one :func:`run_probes` output, or ``{label: output}`` to compare runs."""
    from matplotlib.figure import Figure

    from tti_ray.fronts.figures import save_figure

    runs = {"": results} if "results" in results else results
    fig = Figure(figsize=(9.0, 3.6 + 0.22 * len(runs) * 2), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for ax, metric, base in zip(
        axes, ("accuracy", "macro_f1"), ("majority_accuracy", "majority_macro_f1"), strict=True
    ):
        for j, (label, res) in enumerate(runs.items()):
            for k, site in enumerate(dict.fromkeys(r["site"] for r in res["results"])):
                rows = [r for r in res["results"] if r["site"] == site]
                # one run: a colour per site; several: a colour per run, a marker per site
                color = f"C{(k if len(runs) == 1 else j) % 10}"
                ax.plot(
                    [r["layer"] for r in rows],
                    [r[metric] for r in rows],
                    color=color,
                    marker="os^D"[k % 4],
                    ls="-",
                    label=f"{label} {site}".strip(),
                )
            rows = [r for r in res["results"] if r["site"] == res["results"][0]["site"]]
            ax.plot(
                [r["layer"] for r in rows],
                [r[base] for r in rows],
                ls=":",
                color="grey",
                marker="_",
                ms=14,
                label="majority class" if j == 0 else None,
            )
        ax.set_xlabel("layer")
        ax.set_ylabel(metric.replace("_", "-"))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    first = next(iter(runs.values()))
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=2, fontsize="x-small")
    fig.suptitle(title or f"Linear probes: {first['meta']['categories']} token categories")
    layers = sorted({r["layer"] for r in first["results"]})
    axes[0].set_xticks(layers)
    return save_figure(fig, out_png)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.probes", description="Per-layer linear probes of token categories."
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (or a run directory)")
    p.add_argument(
        "--categories",
        default="coarse",
        help="coarse | lexicon | pos (spaCy) | path to a {category: [words]} JSON",
    )
    p.add_argument("--sites", default=",".join(PROBE_SITES), help="comma-separated hook sites")
    p.add_argument("--tokens", type=int, default=4096, help="validation tokens to use")
    p.add_argument("--test-size", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--out", type=Path, help="output directory (default: <run dir>/analysis)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors("analysis.probes"):
        from tti_ray.interventions.categories import validate_kind
        from tti_ray.model.gpt import HOOK_SITES
        from tti_ray.train.checkpoint import load_model

        sites = tuple(s.strip() for s in args.sites.split(",") if s.strip())
        bad = [s for s in sites if s not in HOOK_SITES]
        if bad or not sites:
            raise UserError(f"--sites: unknown {bad} (known: {', '.join(HOOK_SITES)})")
        if args.categories != "pos":
            validate_kind(args.categories)
        run = load_model(args.checkpoint, args.device)
        res = run_probes(
            run,
            categories=args.categories,
            sites=sites,
            n_tokens=args.tokens,
            test_size=args.test_size,
            seed=args.seed,
        )
        out = args.out or default_out(run.directory)
        out.mkdir(parents=True, exist_ok=True)
        kind = args.categories
        stem = f"probes_{kind if kind in ('coarse', 'lexicon', 'pos') else Path(kind).stem}"
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1, allow_nan=False))
        plot_probes(res, out / f"{stem}.png")
    for r in res["results"]:
        print(
            f"[analysis.probes] {r['site']:>10} layer {r['layer']}: accuracy {r['accuracy']:.3f} "
            f"macro-F1 {r['macro_f1']:.3f} (majority {r['majority_accuracy']:.3f})"
        )
    print(f"[analysis.probes] wrote {out / (stem + '.json')}, {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
