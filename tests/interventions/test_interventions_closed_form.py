"""Closed-form answers for each penalty and gate, and agreement with the eval metrics."""

from __future__ import annotations

import math

import pytest
import torch

from tti_ray.interventions import StepContext
from tti_ray.interventions.categories import CategoryMap
from tti_ray.interventions.ops import (
    HC_BETA,
    HC_GAMMA,
    HC_ZETA,
    hard_concrete_eval,
    hard_concrete_p_open,
    hard_concrete_sample,
    mean_abs_offdiag_cosine,
    mean_entropy,
    strided_subsample,
    topk_mask_values,
)
from tti_ray.metrics import mean_abs_cosine, polysemanticity
from tti_ray.model import capture


def _ctx(ids: torch.Tensor, step: int = 0) -> StepContext:
    return StepContext(token_ids=ids, step=step)


# -- TopK -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, units", [(0.10, 6), (0.25, 16), (0.50, 32), (0.01, 1)])
def test_topk_keeps_exactly_k_units_per_token(k, units, model, batch, make_iv):
    x, _ = batch
    ivs = make_iv("topk", k=k)
    ivs["topk"].attach(model)
    with capture(model, [("mlp_hidden", 0), ("mlp_hidden", 1)]) as acts:
        model(input_ids=x)
    for a in acts.values():  # [B, T, 64]
        assert ((a != 0).sum(-1) == units).all()
    assert ivs["topk"].readouts() == {
        "k_units": float(units), "k_units/layer_0": float(units), "k_units/layer_1": float(units)
    }


def test_topk_keeps_the_largest_magnitudes_and_passes_their_gradient():
    a = torch.tensor([[0.5, -3.0, 0.1, 2.0], [-0.2, 0.3, 0.0, -0.1]], requires_grad=True)
    out = topk_mask_values(a, 2)
    assert torch.equal(out, torch.tensor([[0.0, -3.0, 0.0, 2.0], [-0.2, 0.3, 0.0, 0.0]]))
    out.sum().backward()
    assert torch.equal(a.grad, (out != 0).float())


def test_topk_batch_mode_keeps_k_fraction_of_the_whole_batch(model, batch, make_iv):
    x, _ = batch
    make_iv("topk", k=0.1, mode="batch")["topk"].attach(model)
    with capture(model, [("mlp_hidden", 0)]) as acts:
        model(input_ids=x)
    a = acts[("mlp_hidden", 0)]
    assert int((a != 0).sum()) == round(0.1 * a.numel())
    assert (a != 0).sum(-1).float().std() > 0  # not the same count on every token


def test_topk_k1_registers_nothing(model, make_iv):
    make_iv("topk", k=1.0)["topk"].attach(model)
    assert not any(m._forward_hooks for m in model.modules())


# -- entropy (anti-polysemanticity) ---------------------------------------------------------------
def test_entropy_is_zero_for_one_token_neurons_and_log_n_for_uniform():
    n = 5
    ids = torch.arange(n).repeat(4)  # [20], each id 4 times
    one_token = (ids == 2).float() * torch.linspace(0.5, 2.0, 20)  # fires on id 2 only
    uniform = torch.ones(20) * torch.where(torch.arange(20) % 2 == 0, 1.0, -1.0)  # |a| uniform
    assert mean_entropy(one_token[:, None], ids, n).item() == 0.0
    assert mean_entropy(uniform[:, None], ids, n).item() == pytest.approx(math.log(n), abs=1e-6)


def test_anti_poly_token_term_equals_the_polysemanticity_metric(make_iv):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (2, 16), generator=g)
    acts = {("mlp_hidden", i): torch.randn(2, 16, 64, generator=g) for i in (0, 1)}
    iv = make_iv("anti_poly", coef=0.1)["anti_poly"]
    got = iv.loss_terms(acts, _ctx(ids))["loss"]
    want = torch.stack([polysemanticity(a.reshape(-1, 64), ids.reshape(-1)).mean()
                        for a in acts.values()]).mean()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_anti_poly_accumulates_in_float32_under_bf16():
    ids = torch.arange(4).repeat(256)  # [1024]
    a = torch.full((1024, 1), 1.0, dtype=torch.bfloat16)
    a[ids == 0] = 1e-3  # small masses that a bf16 running sum would swallow
    h = mean_entropy(a, ids, 4)
    p = torch.tensor([1e-3, 1, 1, 1], dtype=torch.float64)
    p = p / p.sum()
    assert h.dtype == torch.float32
    assert h.item() == pytest.approx(float(-(p * p.log()).sum()), rel=1e-3)


def test_anti_poly_category_term_and_exclude_other(make_iv):
    # vocab of 6: ids 0-1 -> "a", 2-3 -> "b", 4-5 -> "other"
    cmap = CategoryMap(names=("a", "b", "other"), ids=torch.tensor([0, 0, 1, 1, 2, 2]))
    ids = torch.tensor([[0, 1, 2, 3, 4, 5]])
    a = torch.zeros(1, 6, 64)
    a[0, :2, 0] = 1.0  # unit 0: category "a" only (two different token ids)
    a[0, :4, 1] = 1.0  # unit 1: "a" and "b" evenly
    a[0, :, 2] = 1.0  # unit 2: a, b and other evenly
    for exclude, h2 in ((True, math.log(2)), (False, math.log(3))):
        iv = make_iv("anti_poly", coef=0.1, over="category", exclude_other=exclude)["anti_poly"]
        iv.set_category_map(cmap)
        acts = {("mlp_hidden", i): a for i in (0, 1)}
        got = iv.loss_terms(acts, _ctx(ids))["loss"]
        assert got.item() == pytest.approx((0 + math.log(2) + h2) / 64, abs=1e-6)


def test_anti_poly_category_needs_prepare(make_iv):
    iv = make_iv("anti_poly", over="category")["anti_poly"]
    with pytest.raises(RuntimeError, match="prepare"):
        iv.loss_terms({("mlp_hidden", 0): torch.ones(1, 2, 64)}, _ctx(torch.zeros(1, 2).long()))


def test_prepare_builds_the_category_map_for_the_model_vocab(make_iv, fake_tokens):
    iv = make_iv("anti_poly", over="category", categories="lexicon")["anti_poly"]
    iv.prepare(fake_tokens)
    assert iv.category_ids.shape == (64,)
    names = iv.category_names
    # model ids 0 (" dog") and 6 (" happy"); the last id is UNK
    assert names[iv.category_ids[0]] == "animals" and names[iv.category_ids[6]] == "emotions"
    assert names[iv.category_ids[63]] == "other"
    assert "category_ids" not in iv.state_dict()  # rebuilt by prepare(), never stale on load


# -- orthogonality --------------------------------------------------------------------------------
def test_orthogonality_is_zero_for_orthogonal_columns_and_one_for_identical():
    q, _ = torch.linalg.qr(torch.randn(100, 8, generator=torch.Generator().manual_seed(0)))
    assert mean_abs_offdiag_cosine(q).item() == pytest.approx(0.0, abs=1e-6)
    same = torch.randn(50, 1).repeat(1, 4) * torch.tensor([1.0, -2.0, 3.0, 0.5])
    assert mean_abs_offdiag_cosine(same).item() == pytest.approx(1.0, abs=1e-6)


def test_orthogonality_matches_the_metric_neuron_neuron():
    a = torch.randn(300, 20, generator=torch.Generator().manual_seed(1))
    a[:, 3] = 0.0  # a dead neuron: cosine 0 with everything in both implementations
    assert mean_abs_offdiag_cosine(a).item() == pytest.approx(mean_abs_cosine(a), abs=1e-6)


def test_orthogonality_term_uses_a_deterministic_strided_subsample(make_iv):
    a = torch.randn(4, 100, 64, generator=torch.Generator().manual_seed(2))  # N = 400
    acts = {("mlp_hidden", i): a for i in (0, 1)}
    iv = make_iv("orthogonality", coef=0.1, max_tokens=100)["orthogonality"]
    rng = torch.get_rng_state()
    for step in (0, 1, 5):
        got = iv.loss_terms(acts, _ctx(torch.zeros(4, 100).long(), step))["loss"]
        sub = a.reshape(400, 64)[step % 4 :: 4]
        assert got.item() == pytest.approx(mean_abs_cosine(sub), abs=1e-6)
    assert torch.equal(torch.get_rng_state(), rng)
    x = torch.arange(10)[:, None]
    assert strided_subsample(x, 4, step=1).flatten().tolist() == [1, 4, 7]
    assert strided_subsample(x, None).shape[0] == 10


# -- L0 gates -------------------------------------------------------------------------------------
LOG_ALPHAS = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5])


def test_l0_expectation_matches_its_formula():
    want = torch.sigmoid(LOG_ALPHAS - HC_BETA * math.log(-HC_GAMMA / HC_ZETA))
    torch.testing.assert_close(hard_concrete_p_open(LOG_ALPHAS), want)
    # Monte Carlo: P(z > 0) over 200k draws per gate
    g = torch.Generator().manual_seed(0)
    u = torch.rand(200_000, len(LOG_ALPHAS), generator=g)
    z = hard_concrete_sample(LOG_ALPHAS.expand_as(u), u)
    assert ((z >= 0) & (z <= 1)).all()
    torch.testing.assert_close((z > 0).float().mean(0), want, atol=4e-3, rtol=0)
    # deterministic test-time gate, eq. 13
    want_eval = (torch.sigmoid(LOG_ALPHAS) * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0, 1)
    torch.testing.assert_close(hard_concrete_eval(LOG_ALPHAS), want_eval)


def test_l0_gate_penalty_readouts_and_modes(model, batch, make_iv):
    x, _ = batch
    ivs = make_iv("l0_gate", coef=0.1, layers=[1])
    iv = ivs["l0_gate"]
    with torch.no_grad():
        iv.log_alpha["mlp_hidden_1"].copy_(torch.linspace(-4, 4, 64))
    la = iv.log_alpha["mlp_hidden_1"].detach()
    term = iv.loss_terms({}, _ctx(x))["loss"]
    assert term.item() == pytest.approx(hard_concrete_p_open(la).mean().item(), abs=1e-7)
    r = iv.readouts()
    open_frac = float((hard_concrete_eval(la) > 0).float().mean())
    assert 0 < open_frac < 1 and r["gate_open_fraction"] == pytest.approx(open_frac)
    assert r["expected_l0"] == pytest.approx(term.item(), abs=1e-7)
    iv.attach(model)
    with capture(model, [("mlp_hidden", 1)]) as acts:
        model.eval()
        model(input_ids=x)
        e1 = acts[("mlp_hidden", 1)].clone()
        model(input_ids=x)
        assert torch.equal(e1, acts[("mlp_hidden", 1)])  # eval: deterministic
        assert (e1[..., hard_concrete_eval(la) == 0] == 0).all()
        model.train()
        model(input_ids=x)
        t1 = acts[("mlp_hidden", 1)].clone()
        model(input_ids=x)
        assert not torch.equal(t1, acts[("mlp_hidden", 1)])  # train: sampled


# -- activation and weight norms -----------------------------------------------------------------
def test_activation_norm_terms(make_iv):
    a = torch.tensor([[[1.0, -2.0], [0.0, 3.0]]]).repeat(1, 1, 32)  # [1, 2, 64]
    acts = {("mlp_hidden", i): a * (i + 1) for i in (0, 1)}
    ids = torch.zeros(1, 2).long()
    l1 = make_iv("l1_act")["l1_act"].loss_terms(acts, _ctx(ids))["loss"]
    l2 = make_iv("l2_act")["l2_act"].loss_terms(acts, _ctx(ids))["loss"]
    assert l1.item() == pytest.approx((1.5 + 3.0) / 2)  # mean |a| = 6/4 at layer 0, doubled at 1
    assert l2.item() == pytest.approx((3.5 + 14.0) / 2)  # mean a² = 14/4, x4 at layer 1


def test_weight_penalties_are_means_over_mlp_weights(model, make_iv):
    for name, power in (("weight_l1", 1), ("weight_l2", 2)):
        iv = make_iv(name, layers=[0])[name]
        with pytest.raises(RuntimeError, match="attach"):
            iv.loss_terms({}, _ctx(torch.zeros(1, 1).long()))
        iv.attach(model)
        mlp = model.transformer.h[0].mlp
        w_fc, w_proj = mlp.c_fc.weight.abs().pow(power), mlp.c_proj.weight.abs().pow(power)
        want = (w_fc.mean() + w_proj.mean()) / 2
        got = iv.loss_terms({}, _ctx(torch.zeros(1, 1).long()))["loss"]
        torch.testing.assert_close(got, want)


def test_coef_warmup_is_linear(make_iv):
    iv = make_iv("l1_act", coef=0.2, coef_warmup_steps=10)["l1_act"]
    assert [iv.coef_at(s) for s in (0, 5, 10, 20)] == [0.0, pytest.approx(0.1), 0.2, 0.2]


# -- sparse coding --------------------------------------------------------------------------------
def test_joint_sae_gradient_reaches_the_model_unless_detached(make_iv):
    a = torch.randn(2, 8, 32, requires_grad=True)
    acts = {("mlp_out", i): a for i in (0, 1)}
    ids = torch.zeros(2, 8).long()
    terms = make_iv("joint_sae")["joint_sae"].loss_terms(acts, _ctx(ids))
    assert set(terms) == {"recon", "sparsity"}
    (g,) = torch.autograd.grad(terms["recon"], a)
    assert g.abs().sum() > 0
    det = make_iv("joint_sae", detach_input=True)["joint_sae"]
    r = det.loss_terms(acts, _ctx(ids))["recon"]
    (g2,) = torch.autograd.grad(r, a, allow_unused=True)
    assert g2 is None


def test_joint_sae_terms_and_readouts_closed_form(model, batch, make_iv):
    x, _ = batch
    ivs = make_iv("joint_sae", coef=1.0, l1_coef=0.5, layers=[0])
    sae = ivs["joint_sae"].coders["mlp_out_0"]
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()  # z = 0, x̂ = b_dec = 0
    a = torch.randn(2, 8, 32)
    terms = ivs["joint_sae"].loss_terms({("mlp_out", 0): a}, _ctx(torch.zeros(2, 8).long()))
    assert terms["recon"].item() == pytest.approx(a.pow(2).mean().item(), rel=1e-6)
    assert terms["sparsity"].item() == 0.0
    ivs["joint_sae"].attach(model)
    model.eval()
    with torch.no_grad(), capture(model, [("mlp_out", 0)]) as acts:
        model(input_ids=x)
    r = ivs["joint_sae"].readouts()
    h = acts[("mlp_out", 0)].reshape(-1, 32).double()
    assert r["l0"] == 0.0
    assert r["mse"] == pytest.approx(float(h.pow(2).mean()), rel=1e-6)
    assert r["fvu"] == pytest.approx(float(h.pow(2).sum() / (h - h.mean(0)).pow(2).sum()), rel=1e-6)
    assert ivs["joint_sae"].readouts() == {}  # reset after reading


def test_overcomplete_replaces_the_site_and_penalizes_the_code(model, batch, make_iv):
    x, _ = batch
    ivs = make_iv("overcomplete", coef=0.1, expansion=3, layers=[1])
    iv = ivs["overcomplete"]
    coder = iv.coders["mlp_out_1"]
    with capture(model, [("mlp_out", 1)]) as before:
        model(input_ids=x)
    iv.attach(model)
    model.train()
    with capture(model, [("mlp_out", 1)]) as after:
        model(input_ids=x)
    a = before[("mlp_out", 1)].reshape(-1, 32)
    x_hat, z = coder(a)
    assert z.shape == (32, 96)
    torch.testing.assert_close(after[("mlp_out", 1)].reshape(-1, 32), x_hat)
    loss = iv.loss_terms({}, _ctx(x))["loss"]
    torch.testing.assert_close(loss, z.abs().mean())
    with pytest.raises(RuntimeError, match="no code"):
        iv.loss_terms({}, _ctx(x))  # codes are consumed once per forward


def test_attach_all_puts_gates_before_read_only_hooks(model, batch, tiny_model_cfg):
    from tti_ray.interventions import attach_all, build_interventions, parse_interventions

    x, _ = batch
    cfgs = parse_interventions(  # the SAE is listed first on purpose
        {"joint_sae": {"coef": 1.0, "sites": ["mlp_hidden"], "layers": [0], "expansion": 1},
         "topk": {"k": 0.1, "layers": [0]}}
    )
    ivs = build_interventions(cfgs, tiny_model_cfg)
    with torch.no_grad():
        for p in ivs["joint_sae"].parameters():
            p.zero_()  # x̂ = 0, so the mse readout is the mean square of what the SAE saw
    attach_all(ivs, model)
    model.eval()
    with torch.no_grad(), capture(model, [("mlp_hidden", 0)]) as acts:
        model(input_ids=x)
    gated = acts[("mlp_hidden", 0)].double()
    assert ((gated != 0).sum(-1) == 6).all()
    assert ivs["joint_sae"].readouts()["mse"] == pytest.approx(float(gated.pow(2).mean()))
