"""benchmarks/gpu_mfu.py: its FLOP count matches the model, and it refuses to report MFU without
a GPU (the GPU run itself happens on a GPU machine, not in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_mfu import flops_per_token, peak_tflops
from tti_ray.config import load_config
from tti_ray.model import build_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sets", [{}, {"model.n_layer": 2, "model.d_ff": 256, "model.seq_len": 64}])
def test_flops_per_token_is_6n_plus_attention(sets):
    cfg = load_config(ROOT / "configs" / "paper.yaml", overrides=sets)
    vocab = 1000
    model = build_model(cfg.model, vocab)
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    m = cfg.model
    assert flops_per_token(m, vocab) == 6 * n + 12 * m.n_layer * m.d_model * m.seq_len


def test_peak_lookup_prefers_the_specific_name():
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA H200") == 989.4
    assert peak_tflops("Some GPU") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_without_cuda_exits_2_or_runs_a_cpu_smoke(tmp_path):
    script = ["-m", "benchmarks.gpu_mfu"]  # run from the repository root
    r = subprocess.run([sys.executable, *script], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "no CUDA" in r.stderr
    out = tmp_path / "mfu.json"
    r = subprocess.run(
        [sys.executable, *script, "--allow-cpu", "--warmup", "1", "--steps", "2",
         "--set", "model.n_layer=1", "--set", "model.seq_len=32", "--set", "train.batch_size=2",
         "--set", "train.threads=1", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["mfu"] is None and res["tokens_per_s"] > 0 and res["precision"] == "fp32"
