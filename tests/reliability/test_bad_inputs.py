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
        try:
            main = importlib.import_module(f"{module}.__main__").main
        except ModuleNotFoundError:  # a plain module (analysis.pareto)
            main = importlib.import_module(module).main
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
    # issue 22: what used to pass loading and fail later (or be accepted silently)
    "unbounded_budget_with_tpe": ("budget.trials", None, "budget.trials: null"),
    "unbounded_budget_with_random": ("searcher", {"type": "random", "seed": 0},
                                     "budget.trials: null"),
    "logint_with_step": ("parameters", {"train.batch_size": {
        "distribution": "logint", "low": 2, "high": 8, "step": 2}}, "step: logint takes no step"),
    "int_step_rounds_to_zero": ("parameters", {"train.batch_size": {
        "distribution": "int", "low": 2, "high": 8, "step": 0.5}}, "step: an int step"),
    "int_step_not_whole": ("parameters", {"train.batch_size": {
        "distribution": "int", "low": 2, "high": 8, "step": 1.5}}, "whole number"),
    "int_bounds_not_integers": ("parameters", {"train.batch_size": {
        "distribution": "int", "low": 1.5, "high": 4.7}}, "low: int bounds must be integers"),
    "logint_high_not_integer": ("parameters", {"train.batch_size": {
        "distribution": "logint", "low": 2, "high": 7.5}}, "high: logint bounds"),
    "uniform_step_larger_than_range": ("parameters", {"train.lr": {
        "distribution": "uniform", "low": 0.001, "high": 0.002, "step": 0.01}},
        "step: 0.01 is larger than the range"),
    "step_on_loguniform": ("parameters", {"train.lr": {
        "distribution": "loguniform", "low": 1e-4, "high": 1e-2, "step": 1e-4}},
        "step: loguniform takes no step"),
    "infinite_bound": ("parameters", {"train.lr": {
        "distribution": "uniform", "low": 0.001, "high": float("inf")}}, "finite"),
    "values_with_low": ("parameters", {"train.lr": {"values": [0.001], "low": 0.0001}},
                        "low: goes with a distribution"),
    "unknown_distribution": ("parameters", {"train.lr": {
        "distribution": "normal", "low": 0.001, "high": 0.01}}, "parameters.train.lr"),
    "choice_list_too_long": ("parameters", {"train.seed": {"values": list(range(10_001))}},
                             "more than 10,000"),
    "choice_value_out_of_range_among_many": ("parameters", {"train.seed": {
        "values": [*range(4000), -1, *range(4000, 8000)]}}, "parameters.train.seed"),
    "grid_too_large": ("parameters", {
        "train.seed": {"values": list(range(50))},
        "train.lr": {"values": [1e-4 * (i + 1) for i in range(50)]},
        "interventions.anti_poly.coef": {"values": [1e-3 * (i + 1) for i in range(50)]}},
        "125,000 points"),
    "grace_steps_beyond_training": ("scheduler", {"type": "mo_asha", "grace_steps": 50},
                                    "scheduler.grace_steps: 50 is beyond"),
    "reduction_factor_one": ("scheduler", {"type": "mo_asha", "reduction_factor": 1.0},
                             "scheduler.reduction_factor"),
    "study_storage_in_missing_dir": ("study_storage", "sqlite:////no/such/dir/optuna.db",
                                     "study_storage: directory /no/such/dir does not exist"),
    "study_storage_not_a_url": ("study_storage", "optuna.db", "study_storage: not a SQLAlchemy"),
    "name_with_slash": ("name", "a/b", "name: must be a plain name"),
    "name_escapes_experiments": ("name", "../../etc", "name: must be a plain name"),
    "name_dot_dot": ("name", "..", "name: must be a plain name"),
    "name_hidden": (".name", None, None),  # placeholder replaced below
    "configurations_without_grid": ("configurations", [{"interventions.anti_poly.coef": 0.01}],
                                    "configurations: an explicit list needs searcher type"),
    "baseline_with_unknown_parameter": ("baseline", {"train.lr": 0.1}, "baseline: must set"),
    "workers_zero": ("resources.workers", 0, "resources.workers"),
    "negative_cpus_per_worker": ("resources.cpus_per_worker", -1, "resources.cpus_per_worker"),
    "concurrency_zero": ("concurrency", 0, "concurrency"),
    "seeds_per_config_zero": ("budget.seeds_per_config", 0, "budget.seeds_per_config"),
    "objective_mode_unknown": ("objectives", [{"metric": "val/perplexity", "mode": "up"}],
                               "objectives.0.mode"),
    "objectives_repeated": ("objectives", [{"metric": "val/perplexity"},
                                           {"metric": "val/perplexity"}], "distinct"),
    "max_failures_negative": ("max_failures", -1, "max_failures"),
    "sae_eval_zero_cpus": ("sae_eval", {"cpus": 0}, "sae_eval.cpus"),
    "parameters_not_a_mapping": ("parameters", [1, 2], "parameters"),
    "base_not_a_mapping": ("base", "tiny", "base"),
}
SPACE_CASES["name_hidden"] = ("name", ".hidden", "name: must be a plain name")
EXTRA_EDITS = {  # cases that need a second edit
    "unbounded_budget_with_random": {"budget.trials": None},
    "grid_too_large": {"searcher.type": "grid"},
}


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_bad_search_space(tmp_path, case):
    dotted, value, needle = SPACE_CASES[case]
    space = good_space()
    _edit(space, dotted, value)
    for k, v in EXTRA_EDITS.get(case, {}).items():
        _edit(space, k, v)
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


# -- issue 22: raw YAML text, flags, resources, state files, analysis --------------------------------
def _space_text(tmp_path, text: str | bytes) -> Path:
    path = tmp_path / "space.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _good_text() -> str:
    return yaml.safe_dump(good_space(), sort_keys=False)


RAW_CASES = {
    # name: (file bytes, expected text)
    "duplicate_top_level_key": (lambda: _good_text() + "budget: {trials: 9}\n",
                                "duplicate key 'budget'"),
    "duplicate_nested_key": (lambda: _good_text().replace(
        "  train:\n", "  train:\n    steps: 4\n", 1), "duplicate key 'steps'"),
    "duplicate_key_in_flow_mapping": (lambda: "name: x\nparameters: {a: {values: [1]}, "
                                      "a: {values: [2]}}\n", "duplicate key 'a'"),
    "latin1_bytes": (lambda: _good_text().encode() + b"description: caf\xe9\n",
                     "not UTF-8 text"),
    "utf16_file": (lambda: _good_text().encode("utf-16"), "not UTF-8 text"),
    "binary_png": (lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text"),
    "top_level_list": (lambda: "- 1\n- 2\n", "top level must be a mapping"),
    "tab_indentation": (lambda: "name: x\nparameters:\n\ttrain.lr: {values: [1]}\n",
                        "invalid YAML"),
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_bad_yaml_text_for_sweep_and_train(tmp_path, case):
    make, needle = RAW_CASES[case]
    path = _space_text(tmp_path, make())
    out = tmp_path / "exp"
    r = run("tti_ray.sweep", str(path), "--out", str(out))
    assert_one_line_exit_2(r, str(path), needle)
    r = run("tti_ray.train", str(path), "--out", str(out), "--no-progress")
    assert_one_line_exit_2(r, str(path))
    assert not out.exists()


def test_train_config_with_duplicate_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(GOOD_BASE) + "model: {n_layer: 2}\n")
    r = run("tti_ray.train", str(path), "--out", str(tmp_path / "run"), "--no-progress")
    assert_one_line_exit_2(r, str(path), "duplicate key 'model'")
    assert not (tmp_path / "run").exists()


def test_search_space_path_is_a_directory(tmp_path):
    r = run("tti_ray.sweep", str(tmp_path), "--out", str(tmp_path / "exp"))
    assert_one_line_exit_2(r, str(tmp_path), "is a directory")


FLAG_CASES = {
    # name: (extra flags, expected text); each must also name no file that got created
    "unknown_flag": (["--bogus"], "unrecognized arguments: --bogus"),
    "num_cpus_zero": (["--num-cpus", "0"], "--num-cpus: must be ≥ 1"),
    "num_cpus_negative": (["--num-cpus", "-3"], "--num-cpus"),
    "num_cpus_not_a_number": (["--num-cpus", "two"], "--num-cpus"),
    "set_wrong_type_blames_set": (["--set", "budget.trials=lots"], "--set budget.trials=lots"),
    "set_negative_steps_blames_set": (["--set", "base.train.steps=-1"],
                                      "--set base.train.steps=-1"),
    "set_unknown_key_blames_set": (["--set", "base.model.width=3"], "--set base.model.width=3"),
    "set_bad_name_blames_set": (["--set", "name=../up"], "--set name=../up"),
    "set_unbounded_budget_blames_set": (["--set", "budget.trials=null"],
                                        "--set budget.trials=null"),
    "address_without_port": (["--address", "127.0.0.1:notaport"], "--address"),
    "unsatisfiable_cpus": (["--set", "resources.cpus_per_worker=64", "--num-cpus", "2"],
                           "--set resources.cpus_per_worker=64: resources.cpus_per_worker: a "
                           "trial needs 64 CPU"),
    "unsatisfiable_gpu": (["--set", "resources.gpus_per_worker=1", "--num-cpus", "2"],
                          "--set resources.gpus_per_worker=1: resources.gpus_per_worker: a trial "
                          "needs 1 GPU"),
    "unsatisfiable_ddp_total": (["--set", "resources.workers=3", "--num-cpus", "2"],
                                "--set resources.workers=3: resources.workers × "
                                "resources.cpus_per_worker"),
    "unsatisfiable_custom_resource": (["--set", "resources.custom={tpu: 1}", "--num-cpus", "2"],
                                      "--set resources.custom={tpu: 1}: resources.custom.tpu"),
    "unsatisfiable_sae_eval_gpu": (["--set", "sae_eval={gpus: 1}", "--num-cpus", "2"],
                                   "--set sae_eval={gpus: 1}: sae_eval.gpus: an SAE evaluation "
                                   "needs 1 GPU"),
}


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry_run"])
@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_bad_flags_and_unsatisfiable_resources(tmp_path, case, dry):
    import torch

    if "gpu" in case and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the GPU request can be satisfied")
    flags, needle = FLAG_CASES[case]
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(good_space()))
    out = tmp_path / "exp"
    r = run("tti_ray.sweep", str(path), "--out", str(out), *flags, *(["--dry-run"] if dry else []))
    assert_one_line_exit_2(r, needle)
    assert not out.exists()


def test_out_or_storage_pointing_at_a_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(good_space()))
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    r = run("tti_ray.sweep", str(path), "--out", str(blocker))
    assert_one_line_exit_2(r, "--out", "not a directory")
    r = run("tti_ray.sweep", str(path), "--out", str(tmp_path / "exp"), "--storage", str(blocker))
    assert_one_line_exit_2(r, "--storage", "not a directory")
    r = run("tti_ray.train", str(_small_config(tmp_path)), "--out", str(blocker), "--no-progress")
    assert_one_line_exit_2(r, "--out", "not a directory")
    r = run("tti_ray.train", str(_small_config(tmp_path)), "--bogus")
    assert_one_line_exit_2(r, "unrecognized arguments")
    assert blocker.read_text() == "keep me" and not (tmp_path / "exp").exists()


def test_corpus_shorter_than_one_block(tmp_path):
    edits = {"data.max_train_stories": 1, "model.seq_len": 4096}
    cfg = _small_config(tmp_path, **edits)
    out = tmp_path / "run"
    r = run("tti_ray.train", str(cfg), "--out", str(out), "--no-progress")
    assert_one_line_exit_2(r, "shorter than one block" if False else "fewer than one block")
    assert not out.exists()
    space = good_space()
    for k, v in edits.items():
        _edit(space["base"], k, v)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    r = run("tti_ray.sweep", str(path), "--out", str(tmp_path / "exp"))
    assert_one_line_exit_2(r, "base.data", "fewer than one block")
    assert not (tmp_path / "exp").exists()


STATE_CASES = {
    # name: (file in checkpoint/, new bytes, expected text)
    "truncated_train_state": ("train_state.json", lambda b: b[: len(b) // 2],
                              "train_state.json: unreadable"),
    "train_state_not_a_mapping": ("train_state.json", lambda b: b"[1, 2]",
                                  "train_state.json: not a train state"),
    "train_state_not_utf8": ("train_state.json", lambda b: b"\xff\xfe{}", "train_state.json"),
    "train_state_foreign_optimizer": ("train_state.json",
                                      lambda b: b'{"step": 4, "optimizer": {"x": 1}}',
                                      "optimizer state does not fit"),
    "run_config_duplicate_key": ("run_config.yaml", lambda b: b + b"\nmodel: {n_layer: 9}\n",
                                 "duplicate key 'model'"),
}


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_train_resume_and_sae_eval_refuse_broken_state(tmp_path, trained_run, case):
    import shutil

    cfg, out = trained_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    name, change, needle = STATE_CASES[case]
    f = copy / "checkpoint" / name
    f.write_bytes(change(f.read_bytes()))
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != ".tti_ray.lock"}
    if name == "train_state.json":  # train --resume reads the train state; run_config is sae's
        r = run("tti_ray.train", str(cfg), "--out", str(copy), "--resume", "--no-progress")
        assert_one_line_exit_2(r, needle)
    if "optimizer" not in case:  # sae_eval reads the step and the run config, not the optimizer
        r = run("tti_ray.sae_eval.cli", str(copy), "--no-progress", "--tokens", "256")
        assert_one_line_exit_2(r, needle)
    after = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != ".tti_ray.lock"}
    assert after == before


def _experiment(tmp_path, csv: str | bytes | None, space: str | None = None) -> Path:
    d = tmp_path / "exp"
    d.mkdir()
    if csv is not None:
        (d / "trials.csv").write_bytes(csv if isinstance(csv, bytes) else csv.encode())
    if space is not None:
        (d / "search_space.yaml").write_text(space)
    return d


GOOD_CSV = ("trial_id,config_id,status,seed,interventions.anti_poly.coef,val/perplexity,"
            "val/polysemanticity/mean,steps\n"
            "a1,c1,finished,0,0.001,30.0,4.0,4\nb2,c2,finished,0,0.01,31.0,3.5,4\n")
PARETO_CASES = {
    # name: (trials.csv, search_space.yaml, extra flags, expected text)
    "empty_trials_csv": (b"", None, [], "trials.csv is empty (0 bytes)"),
    "trials_csv_without_ids": ("a,b\n1,2\n", None, [], "no trial_id column"),
    "trials_csv_without_status": ("trial_id,x\n1,2\n", None, [], "no status column"),
    "trials_csv_not_utf8": (b"trial_id,status\n\xff\xfe,finished\n", None, [], "unreadable"),
    "space_with_duplicate_key": (GOOD_CSV, "name: x\nname: y\n", [], "duplicate key 'name'"),
    "bad_objectives_flag": (GOOD_CSV, None, ["--objectives", "val/perplexity:up"],
                            "--objectives"),
    "ref_of_wrong_length": (GOOD_CSV, None, ["--ref", "1,2,3"], "--ref: 3 numbers for 2"),
    "ref_not_numbers": (GOOD_CSV, None, ["--ref", "a,b"], "--ref"),
    "objective_not_in_table": (GOOD_CSV.replace("val/perplexity", "val/p" + "x" * 4000), None,
                               [], "not in the trials table"),
    "unknown_flag": (GOOD_CSV, None, ["--bogus"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", sorted(PARETO_CASES))
def test_analysis_pareto_refuses_in_one_short_line_and_writes_nothing(tmp_path, case):
    csv, space, flags, needle = PARETO_CASES[case]
    d = _experiment(tmp_path, csv, space)
    r = run("analysis.pareto", str(d), *flags)
    assert_one_line_exit_2(r, needle)
    assert len(r.stderr.strip()) <= 340  # prog prefix + a message cut at 300 characters
    assert not (d / "analysis").exists()
