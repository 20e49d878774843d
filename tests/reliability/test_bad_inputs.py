"""A catalogue of bad inputs. Each one: exit code 2, exactly one line on stderr naming the
file/flag and the key, and nothing created in the experiment/run directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GOOD_BASE = {
    "preset": "tiny",
    "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_every": 4, "ckpt_every": 4},
    "eval": {"val_batches": 1, "metric_tokens": 128},
    "interventions": {"anti_poly": {"coef": 0.0}},
}


def good_space() -> dict:
    return {
        "name": "bad_input",
        "base": yaml.safe_load(yaml.safe_dump(GOOD_BASE)),
        "parameters": {"interventions.anti_poly.coef": {"distribution": "loguniform",
                                                        "low": 1e-4, "high": 1e-1}},
        "budget": {"trials": 2},
    }


def run(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Call the CLI's ``main`` in-process (the same code path as ``python -m``; one import for
    the whole catalogue), with HF offline and ``env`` applied, capturing stdout/stderr."""
    import contextlib
    import importlib
    import io

    e = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    saved = {k: os.environ.get(k) for k in e}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    cwd = os.getcwd()
    try:
        os.environ.update(e)
        os.chdir(ROOT)
        main = importlib.import_module(f"{module}.__main__").main
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args)) or 0
            except SystemExit as ex:
                code = ex.code if isinstance(ex.code, int) else 1
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def assert_one_line_exit_2(r: subprocess.CompletedProcess, *needles: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _edit(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


SPACE_CASES = {
    # name: (dotted edit on the search space, value, expected key text)
    "unknown_top_level_key": ("colour", "blue", "colour: unknown key"),
    "unknown_key_in_base_model": ("base.model.width", 3, "base: model.width: unknown key"),
    "unknown_key_in_base_train": ("base.train.epochs", 3, "base: train.epochs: unknown key"),
    "unknown_key_in_base_data": ("base.data.corpus", "x", "base: data.corpus: unknown key"),
    "unknown_key_in_eval": ("base.eval.every", 3, "base: eval.every: unknown key"),
    "unknown_key_in_intervention": ("base.interventions.anti_poly.lambda", 1.0,
                                    "interventions.anti_poly.lambda: unknown key"),
    "unknown_intervention": ("base.interventions.dropout_magic", {"coef": 1.0},
                             "interventions.dropout_magic"),
    "unknown_key_in_searcher": ("searcher.temperature", 1.0, "searcher.temperature: unknown key"),
    "wrong_type_steps": ("base.train.steps", "many", "base: train.steps"),
    "wrong_type_budget": ("budget.trials", "lots", "budget.trials"),
    "negative_lambda_bound": ("parameters", {"interventions.anti_poly.coef": {"values": [-0.1]}},
                              "parameters.interventions.anti_poly.coef"),
    "negative_fixed_lambda": ("base.interventions.anti_poly.coef", -1.0,
                              "interventions.anti_poly.coef"),
    "topk_k_above_one": ("base.interventions.topk", {"k": 1.5}, "interventions.topk.k"),
    "topk_k_zero": ("base.interventions.topk", {"k": 0.0}, "interventions.topk.k"),
    "heads_do_not_divide": ("base.model.n_head", 3, "base: model"),
    "unknown_searcher": ("searcher.type", "hyperband", "searcher.type"),
    "unknown_scheduler": ("scheduler.type", "pbt", "scheduler.type"),
    "empty_search_space": ("parameters", {}, "parameters: empty search space"),
    "unknown_parameter_path": ("parameters", {"train.momentum": {"values": [0.9]}},
                               "parameters.train.momentum"),
    "objective_nobody_reports": ("objectives", [{"metric": "val/accuracy", "mode": "max"}],
                                 "objectives[0].metric"),
    "low_above_high": ("parameters", {"train.lr": {"distribution": "uniform", "low": 0.1,
                                                   "high": 0.01}}, "parameters.train.lr"),
    "bad_layer_index": ("base.interventions.anti_poly.layers", [7],
                        "interventions.anti_poly.layers"),
    "bad_sae_config": ("sae_eval", {"config": {"expansion": 0}}, "sae_eval.config.expansion"),
}


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_bad_search_space(tmp_path, case):
    dotted, value, needle = SPACE_CASES[case]
    space = good_space()
    _edit(space, dotted, value)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "exp"
    r = run("tti_ray.sweep", str(path), "--out", str(out))
    assert_one_line_exit_2(r, str(path), needle)
    assert not out.exists()


def test_malformed_yaml(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("name: x\nparameters: {a: [1, 2}\n")
    r = run("tti_ray.sweep", str(path), "--out", str(tmp_path / "exp"))
    assert_one_line_exit_2(r, str(path), "invalid YAML", "line 2")
    assert not (tmp_path / "exp").exists()


def test_python_object_tag_is_rejected(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    r = run("tti_ray.sweep", str(path), "--out", str(tmp_path / "exp"))
    assert_one_line_exit_2(r, str(path), "invalid YAML")
    assert "pwned" not in r.stdout


def test_missing_file(tmp_path):
    r = run("tti_ray.sweep", str(tmp_path / "nope.yaml"))
    assert_one_line_exit_2(r, "nope.yaml", "cannot read")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--resume", "--dry-run"], "--resume and --dry-run"),
        (["--resume", "--set", "budget.trials=3"], "--resume"),
        (["--preset", "huge"], "--preset"),
        (["--set", "budget.trials"], "--set"),
    ],
)
def test_conflicting_or_bad_flags(tmp_path, flags, needle):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(good_space()))
    out = tmp_path / "exp"
    r = run("tti_ray.sweep", str(path), "--out", str(out), *flags)
    assert_one_line_exit_2(r, needle)
    assert not out.exists()


def _small_config(tmp_path, **edits) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(GOOD_BASE))
    for k, v in edits.items():
        _edit(cfg, k, v)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    cfg = _small_config(d)
    out = d / "run"
    r = run("tti_ray.train", str(cfg), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    return cfg, out


def test_checkpoint_from_another_model_shape(tmp_path, trained_run):
    _, out = trained_run
    other = _small_config(tmp_path, **{"model.d_model": 64})
    r = run("tti_ray.train", str(other), "--out", str(out), "--resume", "--no-progress")
    assert_one_line_exit_2(r, "model.safetensors", "shape")


def test_truncated_checkpoint_file(tmp_path, trained_run):
    cfg, out = trained_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    r = run("tti_ray.train", str(cfg), "--out", str(copy), "--resume", "--no-progress")
    assert_one_line_exit_2(r, "model.safetensors", "unreadable")


def test_nonexistent_dataset_offline(tmp_path):
    cfg = _small_config(tmp_path, **{"data.source": "hf",
                                     "data.hf_dataset": "nobody/no-such-dataset"})
    out = tmp_path / "run"
    r = run("tti_ray.train", str(cfg), "--out", str(out), "--no-progress",
            "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert_one_line_exit_2(r, "data.hf_dataset")
    assert not out.exists()


def test_nonexistent_tokenizer_offline(tmp_path):
    cfg = _small_config(tmp_path, **{"data.tokenizer": "hf:nobody/no-such-tokenizer"})
    out = tmp_path / "run"
    r = run("tti_ray.train", str(cfg), "--out", str(out), "--no-progress",
            "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert_one_line_exit_2(r, "data.tokenizer")
    assert not out.exists()


def test_sweep_with_unloadable_data_fails_before_starting(tmp_path):
    space = good_space()
    space["base"]["data"] = {"tokenizer": "hf:nobody/no-such-tokenizer",
                             "cache_dir": str(tmp_path / "cache")}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "exp"
    r = run("tti_ray.sweep", str(path), "--out", str(out))
    assert_one_line_exit_2(r, "data.tokenizer")
    assert not out.exists()


def test_s3_storage_without_credentials(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(good_space()))
    out = tmp_path / "exp"
    env = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                           "AWS_PROFILE")}
    env.update({"AWS_CONFIG_FILE": str(tmp_path / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                "AWS_EC2_METADATA_DISABLED": "true"})
    r = run("tti_ray.sweep", str(path), "--out", str(out), "--storage",
            "s3://tti-ray-no-such-bucket/x", env=env)
    assert_one_line_exit_2(r, "--storage", "s3://tti-ray-no-such-bucket")
    assert not out.exists()
