"""``python -m analysis.probes``: exact answers on synthetic data, the CLI on a tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.probes import fit_probe, main, spacy_available


def test_separable_classes_are_probed_perfectly():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [200, 100, 100])
    x = rng.normal(size=(400, 8)) * 0.1
    x[np.arange(400), y] += 5.0  # class c lights up feature c
    r = fit_probe(x, y, test_size=0.25, seed=0)
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0 and r["train_accuracy"] == 1.0
    assert r["n_test"] == 100 and r["n_classes"] == 3
    # stratified split: the test set keeps the 2:1:1 ratio, so "always class 0" scores 50 / 100
    assert r["majority_accuracy"] == pytest.approx(0.5)
    assert r["majority_macro_f1"] == pytest.approx((2 * 0.5 / 1.5) / 3)


def test_noise_is_no_better_than_chance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(600, 4)), rng.integers(0, 2, 600)
    assert fit_probe(x, y)["accuracy"] < 0.62


def test_cli_on_a_checkpoint(tiny_run, tmp_path, capsys):
    assert main([str(tiny_run), "--tokens", "512", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "probes_coarse.json").read_text())
    assert (tmp_path / "probes_coarse.png").stat().st_size > 0
    assert res["meta"]["n_tokens"] == 512 and res["meta"]["categories"] == "coarse"
    assert sum(res["meta"]["class_counts"].values()) == 512
    assert {(r["site"], r["layer"]) for r in res["results"]} == {
        ("mlp_hidden", 0),
        ("resid_post", 0),
    }
    for r in res["results"]:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 and r["n_test"] == 128
    assert "accuracy" in capsys.readouterr().out


def test_user_lexicon_file(tiny_run, tmp_path):
    lex = tmp_path / "animals.json"
    lex.write_text(json.dumps({"animal": ["dog", "cat", "bird"], "name": ["lily", "tom", "max"]}))
    assert (
        main(
            [
                str(tiny_run),
                "--categories",
                str(lex),
                "--tokens",
                "256",
                "--sites",
                "mlp_hidden",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "probes_animals.json").read_text())
    assert res["meta"]["class_names"] == ["animal", "name", "other"]


@pytest.mark.skipif(spacy_available() is not None, reason="a spaCy pipeline is installed")
def test_pos_without_spacy_is_a_clear_error(tiny_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tiny_run), "--categories", "pos", "--out", str(tmp_path)])
    assert e.value.code == 2 and "spaCy" in capsys.readouterr().err
