"""The real CLI (in process): bad input is one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from tti_ray.sae import METRICS
from tti_ray.sae_eval import main, resolve_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, _token_cache):
    """A real checkpoint of a random tiny model (bundled data, 64-token vocabulary)."""
    from tti_ray.config import load_config
    from tti_ray.data import load_tokens
    from tti_ray.interventions import build_interventions
    from tti_ray.model import build_model
    from tti_ray.train.checkpoint import save_checkpoint

    cfg = load_config(
        raw={
            "model": {"n_layer": 2, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 16},
            "data": {"vocab_size": 64},
        }
    )
    tokens = load_tokens(cfg.data)
    model = build_model(cfg.model, tokens.vocab_size)
    ivs = build_interventions(cfg.interventions, cfg.model)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    save_checkpoint(
        path,
        model=model,
        interventions=ivs,
        step=0,
        cfg=cfg,
        tokens=tokens,
        optimizer=torch.optim.AdamW(model.parameters()),
    )
    return path


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    return e.value.code, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--k", "0"], "--k: "),
        (["--k", "x"], "--k: invalid int value"),
        (["--expansion", "0"], "--expansion: "),
        (["--kind", "gated"], "--kind: unknown SAE kind 'gated'"),
        (["--site", "resid"], "--site: "),
        (["--layers", "a,b"], "--layers: "),
        (["--layers", "7"], "--layers: layer 7 does not exist"),
        (["--k", "100000"], "--k: k = 100000 exceeds d_sae"),
        (["--set", "l1_coef=2"], "--set l1_coef: unknown key"),
        (["--set", "lr"], "--set: 'lr': expected dotted.path=value"),
        (["--kind", "relu", "--k", "4"], "--k: unknown key"),
    ],
)
def test_bad_flags_exit_2_with_one_line(checkpoint, tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    code, err = run([str(checkpoint), "--out", str(out), *argv], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("tti_ray.sae_eval: ") and needle in err, err
    assert not out.exists()


def test_bad_checkpoint_paths(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for arg, needle in [
        (tmp_path / "missing", "no such checkpoint directory"),
        (tmp_path / "file", "not a directory"),
        (tmp_path / "empty", "incomplete checkpoint"),
        ("0123456789abcdef0123456789abcdef", "MLflow run ids are not supported yet"),
    ]:
        code, err = run([str(arg), "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and f"{arg}: " in err and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_resolve_checkpoint_accepts_a_directory(checkpoint):
    assert resolve_checkpoint(str(checkpoint)) == checkpoint


def test_cli_writes_metrics(checkpoint, tmp_path, capsys):
    out = tmp_path / "sae"
    code = main(
        [
            str(checkpoint),
            "--site",
            "mlp_out",
            "--layers",
            "1",
            "--k",
            "8",
            "--expansion",
            "4",
            "--tokens",
            "1024",
            "--set",
            "batch_size=256",
            "--set",
            "sae.eval_tokens=128",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "sae_metrics.json").read_text())
    assert set(metrics) == {f"sae/mlp_out/layer_1/{m}" for m in METRICS} | {
        f"sae/{m}" for m in METRICS
    }
    assert (out / "saes" / "mlp_out_layer_1.safetensors").exists()
    assert "sae/l0=" in capsys.readouterr().out
