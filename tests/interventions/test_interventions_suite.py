"""One suite over every registered intervention (a new one is covered automatically).

Each check runs the trainer's protocol (``run_step``) on the tiny model with the class's
``example_config()``; the zero check uses ``disabled_config()``.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from tti_ray.interventions import registered
from tti_ray.model import build_model

NAMES = sorted(registered())


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _model_grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", NAMES)
def test_finite_and_differentiable(name, model, batch, make_iv, run_step, fake_tokens):
    x, y = batch
    ivs = make_iv(name)
    iv = ivs[name]
    iv.prepare(fake_tokens)
    iv.attach(model)
    model.train()
    total, ce, terms = run_step(model, ivs, x, y)
    assert math.isfinite(float(total.detach()))
    assert terms or (iv.architectural and not iv.capture_sites()), f"{name} returned no terms"
    for tname, t in terms.items():
        assert t.dim() == 0 and t.dtype == torch.float32 and math.isfinite(float(t.detach())), tname
        # every term reaches some trainable tensor (model or intervention)
        params = [p for p in (*model.parameters(), *iv.parameters()) if p.requires_grad]
        grads = torch.autograd.grad(t, params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{tname}: no gradient"
    total.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert model.transformer.h[0].mlp.c_fc.weight.grad.abs().sum() > 0
    for n, p in iv.named_parameters():  # intervention parameters train with the model
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", NAMES)
def test_disabled_is_bit_identical_to_baseline(
    name, tiny_model_cfg, batch, make_iv, run_step, fake_tokens
):
    x, y = batch
    torch.manual_seed(0)
    base = build_model(tiny_model_cfg, 64).train()
    loss0, _, _ = run_step(base, {}, x, y)
    loss0.backward()
    grads0 = _model_grads(base)

    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, 64).train()
    rng = torch.get_rng_state()
    cls = registered()[name]
    ivs = make_iv(name, **cls.disabled_config())
    iv = ivs[name]
    iv.prepare(fake_tokens)
    iv.attach(model)
    assert torch.equal(torch.get_rng_state(), rng), "building must not consume the global RNG"
    assert _hook_count(model) == 0, "a disabled intervention registers no hook"
    loss1, _, terms = run_step(model, ivs, x, y)
    assert terms == {}
    loss1.backward()
    assert torch.equal(loss0, loss1)
    for n, g in _model_grads(model).items():
        assert torch.equal(g, grads0[n]), n


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(
    name, tiny_model_cfg, batch, make_iv, run_step, fake_tokens, tmp_path
):
    x, y = batch
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, 64)
    clean = {k: v.clone() for k, v in model.state_dict().items()}
    ivs = make_iv(name)
    with torch.no_grad():  # move away from the init so the round trip is not trivial
        g = torch.Generator().manual_seed(7)
        for p in ivs.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ivs[name].prepare(fake_tokens)
    ivs[name].attach(model)
    save_file({k: v.contiguous() for k, v in ivs.state_dict().items()}, tmp_path / "iv.st")

    torch.manual_seed(123)  # a different init, overwritten by the load
    model2 = build_model(tiny_model_cfg, 64)
    model2.load_state_dict(clean)
    ivs2 = make_iv(name)
    ivs2.load_state_dict(load_file(tmp_path / "iv.st"), strict=True)
    ivs2[name].prepare(fake_tokens)
    ivs2[name].attach(model2)

    t1, terms1, logits1, r1 = _outputs(model, ivs, name, x, y, run_step)
    t2, terms2, logits2, r2 = _outputs(model2, ivs2, name, x, y, run_step)
    assert torch.equal(t1, t2)
    assert terms1.keys() == terms2.keys()
    assert all(torch.equal(terms1[k], terms2[k]) for k in terms1)
    assert torch.equal(logits1, logits2)
    assert r1.keys() == r2.keys()
    assert all(r1[k] == r2[k] or (math.isnan(r1[k]) and math.isnan(r2[k])) for k in r1)


def _outputs(model, ivs, name, x, y, run_step):
    """Train-mode loss and terms (fixed gate noise), eval logits, readouts."""
    model.train()
    torch.manual_seed(5)
    total, _, terms = run_step(model, ivs, x, y)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=x).logits
    return total.detach(), {k: t.detach() for k, t in terms.items()}, logits, ivs[name].readouts()


@pytest.mark.parametrize("name", NAMES)
def test_readouts_are_finite_floats(name, model, batch, make_iv, fake_tokens):
    x, _ = batch
    ivs = make_iv(name)
    ivs[name].prepare(fake_tokens)
    ivs[name].attach(model)
    model.eval()
    with torch.no_grad():
        model(input_ids=x)
        model(input_ids=x)
    out = ivs[name].readouts()
    assert isinstance(out, dict)
    for k, v in out.items():
        assert isinstance(k, str) and "." not in k
        assert isinstance(v, float) and math.isfinite(v), (k, v)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_under_bf16_autocast(name, device, model, batch, make_iv, run_step, fake_tokens):
    x, y = (t.to(device) for t in batch)
    ivs = make_iv(name)
    ivs[name].prepare(fake_tokens)
    ivs[name].attach(model)
    model.to(device).train()
    ivs.to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        total, _, terms = run_step(model, ivs, x, y)
    for tname, t in terms.items():
        assert t.dtype == torch.float32 and torch.isfinite(t), tname
    total.backward()
    for n, p in (*model.named_parameters(), *ivs.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
