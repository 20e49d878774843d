"""Gates as modules in the forward path train exactly as the former forward hooks did.

The reference re-creates the old implementation: the same gate function registered with
``add_site_transform`` (a forward hook replacing the site's output). Losses of every step and the
final weights must be bit-identical."""

from __future__ import annotations

import pytest
import torch

from tti_ray.model import add_site_transform, build_model, capture, site_module
from tti_ray.model.hf_modeling import GatedSite


def _hook_reference_attach(iv, model) -> None:
    """What TopK.attach / L0Gate.attach did before gates became modules."""
    for site, layer in iv.site_keys():
        if iv.cfg.type == "topk":
            fn = lambda a, s=site: iv.gate(a, s)  # noqa: E731
        else:
            mod = site_module(model, site, layer)
            fn = lambda a, k=f"{site}_{layer}", m=mod: iv.gated(a, k, m.training)  # noqa: E731
        iv._handles.append(add_site_transform(model, site, layer, fn))


def _train(tiny_model_cfg, make_iv, run_step, batch, overrides, *, hooks: bool, steps: int = 4):
    x, y = batch
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, 64).train()
    name = overrides.pop("name")
    ivs = make_iv(name, **overrides)
    if hooks:
        _hook_reference_attach(ivs[name], model)
    else:
        ivs[name].attach(model)
    opt = torch.optim.AdamW([*model.parameters(), *ivs.parameters()], lr=1e-2)
    torch.manual_seed(11)  # the L0 gates' noise comes from the global RNG
    losses = []
    for step in range(steps):
        total, _, _ = run_step(model, ivs, x, y, step)
        total.backward()
        opt.step()
        opt.zero_grad()
        losses.append(total.detach())
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=x).logits
    return losses, logits, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "topk", "k": 0.1},
        {"name": "topk", "k": 0.25, "mode": "batch"},
        {"name": "topk", "k": 0.5, "sites": ["mlp_hidden", "mlp_out"], "layers": [1]},
        {"name": "l0_gate", "coef": 0.1},
        {"name": "l0_gate", "coef": 0.1, "sites": ["mlp_out"]},
    ],
    ids=["topk", "topk-batch", "topk-mlp_out", "l0", "l0-mlp_out"],
)
def test_gate_modules_train_bit_identical_to_hooks(
    overrides, tiny_model_cfg, make_iv, run_step, batch
):
    ref = _train(tiny_model_cfg, make_iv, run_step, batch, dict(overrides), hooks=True)
    new = _train(tiny_model_cfg, make_iv, run_step, batch, dict(overrides), hooks=False)
    for step, (a, b) in enumerate(zip(ref[0], new[0], strict=True)):
        assert torch.equal(a, b), f"step {step}: {a.item()} != {b.item()}"
    assert torch.equal(ref[1], new[1])
    for k, v in ref[2].items():
        assert torch.equal(v, new[2][k]), k


def test_gate_is_a_module_and_hooks_see_its_output(model, batch, make_iv):
    x, _ = batch
    ivs = make_iv("topk", k=0.1, layers=[0])
    ivs["topk"].attach(model)
    act = model.transformer.h[0].mlp.act
    assert isinstance(act, GatedSite) and len(act.gates) == 1
    assert not any(m._forward_hooks for m in model.modules())  # no hook: a module
    seen = {}
    handle = act.register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out))
    with capture(model, [("mlp_hidden", 0)]) as acts:
        model(input_ids=x)
    handle.remove()
    assert ((seen["out"] != 0).sum(-1) == 6).all()
    assert torch.equal(seen["out"], acts[("mlp_hidden", 0)])
    ivs["topk"].remove_hooks()
    assert len(act.gates) == 0


def test_state_dict_is_hf_gpt2s(model, make_iv):
    """Gate sites and gates add no tensors: checkpoints keep HF GPT-2's parameter names."""
    from transformers import GPT2LMHeadModel

    plain = GPT2LMHeadModel(model.config)
    make_iv("topk", k=0.1)["topk"].attach(model)
    make_iv("l0_gate", coef=0.1)["l0_gate"].attach(model)
    assert list(model.state_dict()) == list(plain.state_dict())
