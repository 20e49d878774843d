"""``python -m analysis.neurons CHECKPOINT [--site mlp_hidden] [--layer 0] [--top-k 10]
[--neurons N|i,j|a-b] [--tokens 4096] [--out DIR]``

A static neuron browser for one hook site of one layer: for each neuron, the top-k validation
contexts where it fires most, tokens highlighted by that neuron's activation, with its
polysemanticity (entropy of its activation mass over token ids) and utilization (activation
frequency). One self-contained HTML page (no network, no CDN) with an inline filter by neuron id
and by token text, sortable by entropy, plus the same data as JSON.

* **Sample**: the first ``ceil(tokens / seq_len)`` validation blocks (``eval_blocks``, the fixed
  sample the run's own metrics use), one forward pass with :func:`tti_ray.model.capture`.
* **Top-k contexts**: a neuron's score in a block is its maximum (signed) activation over the
  block's positions; the k blocks with the highest scores are its contexts (so the k contexts
  are distinct passages), each shown as ``before`` tokens left and ``after`` tokens right of
  the maximum. Shading is ``max(a, 0) / a_max`` with ``a_max`` the neuron's top score.
* **Entropy / frequency**: exactly :class:`tti_ray.metrics.stats.ActivationStats` over the same
  sample (entropy in nats of the |a| mass over distinct token ids, seed repo's polysemanticity;
  frequency = share of tokens with |a| >= ``eval.active_threshold``; dead < 1 %, always-on > 99 %).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.cli import user_errors
from tti_ray.cli import UserError

if TYPE_CHECKING:
    import torch

    from tti_ray.train.checkpoint import LoadedRun

TEMPLATES = Path(__file__).parent / "templates"
DEAD, ALWAYS_ON = 0.01, 0.99  # activation-frequency thresholds of tti_ray.metrics.stats


def validation_blocks(run: LoadedRun, n_tokens: int) -> torch.Tensor:
    """The first ``ceil(n_tokens / seq_len)`` validation blocks ``[B, seq_len + 1]``."""
    from tti_ray.data import eval_blocks

    seq = run.cfg.model.seq_len
    return eval_blocks(run.tokens.valid, seq, max(1, math.ceil(n_tokens / seq)))


def activations(
    run: LoadedRun, ids: torch.Tensor, sites: list[tuple[str, int]], batch_size: int = 16
) -> dict[tuple[str, int], torch.Tensor]:
    """Frozen activations ``{(site, layer): [B, T, D]}`` (float32, CPU) for input ids ``[B, T]``."""
    import torch

    from tti_ray.model import capture

    device = next(run.model.parameters()).device
    out: dict[tuple[str, int], list[torch.Tensor]] = {k: [] for k in sites}
    with torch.no_grad(), capture(run.model, sites, detach=True) as acts:
        for i in range(0, len(ids), batch_size):
            run.model(input_ids=ids[i : i + batch_size].to(device))
            for k in sites:
                out[k].append(acts[k].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def parse_neurons(spec: str | None, d: int) -> list[int]:
    """``None`` -> all; ``"N"`` -> the first N; ``"3,17"`` / ``"0-31"`` -> those ids."""
    if spec is None or spec == "":
        return list(range(d))
    spec = spec.strip()
    if spec.isdigit():
        return list(range(min(int(spec), d)))
    ids: list[int] = []
    for part in spec.split(","):
        a, sep, b = part.strip().partition("-")
        if not a.isdigit() or (sep and not b.isdigit()):
            raise UserError(f"--neurons: expected N, i,j,... or a-b, got {spec!r}")
        ids.extend(range(int(a), int(b) + 1) if sep else [int(a)])
    bad = [i for i in ids if i >= d]
    if bad:
        raise UserError(f"--neurons: ids {bad[:5]} out of range (the site has {d} neurons)")
    return list(dict.fromkeys(ids))


def top_contexts(acts: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k distinct blocks per neuron. ``acts`` [B, T, D] -> ``scores`` [D, k'] (descending),
    ``blocks`` [D, k'] (block index) and ``pos`` [D, k'] (the maximum's position in the block),
    k' = min(k, B). A neuron's score in a block is its maximum activation there."""
    per_block, argpos = acts.max(dim=1)  # [B, D]: each neuron's best position in each block
    kk = min(k, acts.shape[0])
    scores, blocks = per_block.topk(kk, dim=0)  # [k', D]
    pos = argpos.gather(0, blocks)  # [k', D]
    return scores.T.contiguous(), blocks.T.contiguous(), pos.T.contiguous()


def collect(
    run: LoadedRun,
    site: str = "mlp_hidden",
    layer: int = 0,
    *,
    top_k: int = 10,
    neurons: str | None = None,
    n_tokens: int = 4096,
    before: int = 12,
    after: int = 4,
) -> dict[str, Any]:
    """The browser's data (JSON-ready): meta, the decoded vocabulary used, and per neuron its
    entropy, frequency, top score and contexts ``{b, p, t: [vocab idx], a: [act], m: max idx}``."""
    import torch

    from tti_ray.interventions.categories import tokenizer_for
    from tti_ray.metrics import position_permutations
    from tti_ray.metrics.stats import ActivationStats
    from tti_ray.model.gpt import HOOK_SITES

    cfg = run.cfg
    if site not in HOOK_SITES:
        raise UserError(f"--site: unknown site {site!r} (known: {', '.join(HOOK_SITES)})")
    if not 0 <= layer < cfg.model.n_layer:
        raise UserError(
            f"--layer: {layer} out of range (the model has {cfg.model.n_layer} layers)"
        )
    if top_k < 1:
        raise UserError(f"--top-k: must be >= 1, got {top_k}")
    ids = validation_blocks(run, n_tokens)[:, :-1]  # [B, T]
    acts = activations(run, ids, [(site, layer)])[(site, layer)]  # [B, T, D]
    d = acts.shape[-1]
    chosen = parse_neurons(neurons, d)

    uniq, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
    ev = cfg.eval
    perms = position_permutations(inverse.numel(), max(ev.permutations, 1), ev.permutation_seed)
    stats = ActivationStats(len(uniq), d, ev.active_threshold, torch.device("cpu"),
                            permutations=len(perms), min_freq=ev.live_min_freq,
                            monosemantic_threshold=ev.monosemantic_threshold)
    stats.update(acts.reshape(-1, d), inverse, inverse[perms])
    res = stats.finalize(len(uniq))
    entropy, freq = res["neuron_entropy"], res["neuron_frequency"]
    calibrated = res["neuron_calibrated"]

    scores, blocks, pos = top_contexts(acts[..., chosen], top_k)
    t_len = ids.shape[1]
    vocab: dict[int, int] = {}  # model id -> index into the page's vocabulary list
    out_neurons = []
    for j, n in enumerate(chosen):
        ctxs = []
        for r in range(scores.shape[1]):
            b, p = int(blocks[j, r]), int(pos[j, r])
            lo, hi = max(0, p - before), min(t_len, p + after + 1)
            toks = ids[b, lo:hi].tolist()
            ctxs.append(
                {
                    "b": b,
                    "p": p,
                    "t": [vocab.setdefault(t, len(vocab)) for t in toks],
                    "a": [round(float(x), 4) for x in acts[b, lo:hi, n]],
                    "m": p - lo,
                }
            )
        out_neurons.append(
            {
                "id": n,
                "entropy": round(float(entropy[n]), 5),
                # NaN (dead) -> null in JSON
                "calibrated": round(float(calibrated[n]), 5)
                if math.isfinite(float(calibrated[n])) else None,
                "freq": round(float(freq[n]), 5),
                "max": round(float(scores[j, 0]), 5) if scores.shape[1] else None,
                "ctx": ctxs,
            }
        )
    strings = run.tokens.decode(list(vocab), tokenizer_for(run.tokens))
    return {
        "meta": {
            "checkpoint": str(run.directory),
            "step": run.step,
            "site": site,
            "layer": layer,
            "d": d,
            "n_neurons": len(chosen),
            "n_tokens": int(ids.numel()),
            "n_blocks": int(ids.shape[0]),
            "seq_len": t_len,
            "top_k": top_k,
            "before": before,
            "after": after,
            "active_threshold": cfg.eval.active_threshold,
            "dead_below": DEAD,
            "always_on_above": ALWAYS_ON,
            "log_n_ids": math.log(len(uniq)) if len(uniq) > 1 else 1.0,
            "polysemanticity_mean": float(entropy.mean()),
            "calibrated_mean": _finite_or_none(res["polysemanticity_calibrated"]),
            "monosemantic_fraction": _finite_or_none(res["monosemantic_fraction"]),
            "monosemantic_threshold": ev.monosemantic_threshold,
            "dead_fraction": float(res["dead_fraction"]),
            "always_on_fraction": float(res["always_on_fraction"]),
        },
        "vocab": strings,
        "neurons": out_neurons,
    }


def _finite_or_none(v: Any) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def script_json(data: Any) -> str:
    """JSON safe to inline in ``<script>``: ``<``, ``>``, ``&`` as JSON ``\\u`` escapes, so no
    token text can close the script element or open a comment."""
    s = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(data: dict[str, Any], title: str | None = None) -> str:
    """The browser page: ``templates/neurons.html`` with the data inlined."""
    import html

    m = data["meta"]
    title = title or f"Neurons: {m['site']} layer {m['layer']} (step {m['step']})"
    page = (TEMPLATES / "neurons.html").read_text(encoding="utf-8")
    return page.replace("__TITLE__", html.escape(title)).replace("__DATA__", script_json(data))


def default_out(checkpoint: Path) -> Path:
    """``<run dir>/analysis`` (the checkpoint's parent when it is a run's ``checkpoint/``)."""
    c = Path(checkpoint)
    return (c.parent if c.name == "checkpoint" else c) / "analysis"


def write_browser(data: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"neurons_{data['meta']['site']}_L{data['meta']['layer']}"
    html_path, json_path = out / f"{stem}.html", out / f"{stem}.json"
    html_path.write_text(render_html(data), encoding="utf-8")
    json_path.write_text(json.dumps(data, allow_nan=False), encoding="utf-8")
    return html_path, json_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.neurons",
        description="Static HTML neuron browser for one site and layer.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (or a run directory)")
    p.add_argument("--site", default="mlp_hidden", help="mlp_hidden | mlp_out | resid_post")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--top-k", type=int, default=10, help="contexts per neuron")
    p.add_argument("--neurons", help="N (the first N), i,j,... or a-b (default: all)")
    p.add_argument("--tokens", type=int, default=4096, help="validation tokens to scan")
    p.add_argument("--before", type=int, default=12, help="context tokens left of the maximum")
    p.add_argument("--after", type=int, default=4, help="context tokens right of the maximum")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--out", type=Path, help="output directory (default: <run dir>/analysis)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with user_errors("analysis.neurons"):
        from tti_ray.train.checkpoint import load_model

        run = load_model(args.checkpoint, args.device)
        data = collect(
            run,
            args.site,
            args.layer,
            top_k=args.top_k,
            neurons=args.neurons,
            n_tokens=args.tokens,
            before=args.before,
            after=args.after,
        )
        html_path, json_path = write_browser(data, args.out or default_out(run.directory))
    m = data["meta"]
    print(
        f"[analysis.neurons] {m['n_neurons']} neurons of {m['site']} layer {m['layer']} over "
        f"{m['n_tokens']} tokens -> {html_path} ({json_path.name})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
