"""``python -m analysis.neurons`` on a tiny 4-step checkpoint: top-k contexts, entropy and
utilization agree with a brute-force recomputation; the page is static and self-contained."""

from __future__ import annotations

import json
import re

import pytest
import torch

from analysis.neurons import collect, main, parse_neurons, render_html, script_json
from tti_ray.interventions.categories import tokenizer_for
from tti_ray.metrics.core import activation_frequency, polysemanticity
from tti_ray.train.checkpoint import load_model


@pytest.fixture(scope="module")
def run(tiny_run):
    return load_model(tiny_run)


def test_top_contexts_entropy_and_frequency_match_brute_force(run):
    from analysis.neurons import activations, validation_blocks

    k, before, after = 3, 5, 2
    data = collect(
        run, "mlp_hidden", 0, top_k=k, neurons="0-7", n_tokens=256, before=before, after=after
    )
    ids = validation_blocks(run, 256)[:, :-1]  # [B, T]
    acts = activations(run, ids, [("mlp_hidden", 0)])[("mlp_hidden", 0)]  # [B, T, D]
    flat = acts.reshape(-1, acts.shape[-1])
    ent = polysemanticity(flat, ids.reshape(-1))
    freq = activation_frequency(flat, run.cfg.eval.active_threshold)
    assert [n["id"] for n in data["neurons"]] == list(range(8))
    for n in data["neurons"]:
        i = n["id"]
        best_per_block = acts[:, :, i].max(dim=1).values  # [B]
        expected = sorted(range(len(ids)), key=lambda b: -float(best_per_block[b]))[:k]
        assert [c["b"] for c in n["ctx"]] == expected
        assert n["max"] == pytest.approx(float(best_per_block.max()), abs=1e-4)
        assert n["entropy"] == pytest.approx(float(ent[i]), abs=1e-4)
        assert n["freq"] == pytest.approx(float(freq[i]), abs=1e-5)
        for c in n["ctx"]:
            lo = max(0, c["p"] - before)
            toks = ids[c["b"], lo : c["p"] + after + 1].tolist()
            assert len(c["t"]) == len(toks) and c["m"] == c["p"] - lo
            assert c["a"][c["m"]] == pytest.approx(float(acts[c["b"], c["p"], i]), abs=1e-4)
            assert c["a"][c["m"]] == max(c["a"])  # the window's maximum is the context's maximum
            strings = run.tokens.decode(toks, tokenizer_for(run.tokens))
            assert [data["vocab"][t] for t in c["t"]] == strings


def test_cli_writes_a_self_contained_page(tiny_run, tmp_path, capsys):
    assert main([str(tiny_run), "--top-k", "4", "--tokens", "256", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "neurons_mlp_hidden_L0.html").read_text()
    data = json.loads((tmp_path / "neurons_mlp_hidden_L0.json").read_text())
    assert data["meta"]["n_neurons"] == 64 and data["meta"]["top_k"] == 4
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no network, no CDN
    embedded = re.search(
        r'<script id="data" type="application/json">(.*?)</script>', page, re.DOTALL
    )
    assert json.loads(embedded.group(1)) == data
    assert "neurons_mlp_hidden_L0.html" in capsys.readouterr().out


def test_token_text_cannot_break_out_of_the_script():
    data = {
        "meta": {"site": "mlp_hidden", "layer": 0, "step": 1},
        "vocab": ["</script><b>", "<!--"],
        "neurons": [],
    }
    page = render_html(data)
    assert "</script><b>" not in page and "<!--" not in script_json(data)
    assert json.loads(script_json(data)) == data


def test_parse_neurons():
    assert parse_neurons(None, 4) == [0, 1, 2, 3]
    assert parse_neurons("2", 64) == [0, 1]  # a bare number is a count
    assert parse_neurons("100", 64) == list(range(64))
    assert parse_neurons("3,1-2,3", 64) == [3, 1, 2]
    with pytest.raises(ValueError, match="out of range"):
        parse_neurons("1,70", 64)
    with pytest.raises(ValueError, match="--neurons"):
        parse_neurons("a-b", 64)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--site", "attn"], "unknown site"),
        (["--layer", "3"], "out of range"),
    ],
)
def test_bad_site_or_layer_is_one_line(tiny_run, tmp_path, capsys, args, msg):
    with pytest.raises(SystemExit) as e:
        main([str(tiny_run), *args, "--out", str(tmp_path)])
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_resid_site(run):
    data = collect(run, "resid_post", 0, top_k=2, neurons="4", n_tokens=128)
    assert data["meta"]["d"] == run.cfg.model.d_model and len(data["neurons"][0]["ctx"]) == 2
    assert torch.isfinite(torch.tensor(data["neurons"][0]["entropy"]))
