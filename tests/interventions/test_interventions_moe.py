"""The Mixture-of-Experts intervention: routing, capacity, closed-form losses and readouts, the
dense-MLP identity, the ablation function, and a train → checkpoint → load_model round trip.
(The registry suite in test_interventions_suite.py covers ``moe`` too.)"""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext

import pytest
import torch

from tti_ray.interventions import CategoryMap, KeyPathError, parse_interventions, registered
from tti_ray.interventions.moe import MoE, expert_ablation_by_category
from tti_ray.interventions.moe_metrics import (
    Routing,
    ablation_summary,
    expert_capacity,
    gate_hidden,
    load_balance_loss,
    mutual_information,
    normalized_entropy,
    normalized_mutual_information,
    route,
    specialization_entropy,
)
from tti_ray.model import build_model

VOCAB = 64  # the tiny fixtures' vocabulary (conftest.VOCAB)


def _logits(n: int, e: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, e, generator=torch.Generator().manual_seed(seed))


# -- routing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2])
def test_each_token_goes_to_exactly_k_experts(k):
    r = route(_logits(50, 4), k, capacity_factor=None)
    assert r.kept.all()
    assert ((r.combine > 0).sum(-1) == k).all()
    assert all(len(set(row)) == k for row in r.experts.tolist())
    assert torch.equal(r.experts[:, 0], r.probs.argmax(-1))
    if k == 1:  # Switch: the gate is the router probability of the chosen expert
        assert torch.allclose(r.gates[:, 0], r.probs.max(-1).values)
    else:  # renormalised over the chosen experts
        assert torch.allclose(r.combine.sum(-1), torch.ones(50))
        top2 = r.probs.topk(2, -1).values
        assert torch.allclose(r.gates, top2 / top2.sum(-1, keepdim=True))


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("cf", [0.5, 1.0, 1.25])
def test_capacity_is_respected_and_overflow_dropped(k, cf):
    n, e = 64, 4
    logits = _logits(n, e, 3)
    logits[:, 0] += 3.0  # most tokens prefer expert 0: it overflows
    r = route(logits, k, cf)
    cap = expert_capacity(n, e, k, cf)
    assert cap == math.ceil(cf * k * n / e)
    served = torch.zeros(e, dtype=torch.long).index_add(
        0, r.experts[r.kept], torch.ones(int(r.kept.sum()), dtype=torch.long)
    )
    assert (served <= cap).all()
    assert (~r.kept).any()  # something overflowed
    # a dropped choice contributes nothing; the kept ones keep their gate
    for i in range(n):
        for j in range(k):
            w = r.combine[i, r.experts[i, j]]
            assert float(w) == (float(r.gates[i, j]) if r.kept[i, j] else 0.0)


def test_capacity_priority_is_row_order_and_first_choices_first():
    # 6 tokens all prefer expert 0, then expert 1; capacity = ceil(0.5 · 2 · 6 / 3) = 2
    logits = torch.tensor([[2.0, 1.0, -5.0]] * 6)
    r = route(logits, 2, 0.5)
    assert expert_capacity(6, 3, 2, 0.5) == 2
    # expert 0 keeps the first 2 tokens' first choices, expert 1 the first 2 second choices
    assert r.kept[:, 0].tolist() == [True, True, False, False, False, False]
    assert r.kept[:, 1].tolist() == [True, True, False, False, False, False]
    assert torch.equal(r.combine[2:], torch.zeros(4, 3))


# -- losses: closed forms -------------------------------------------------------------------------
@pytest.mark.parametrize("e", [2, 4, 8])
def test_load_balance_loss_closed_forms(e):
    n = 4 * e
    uniform = torch.full((n, e), 1.0 / e)
    assert float(load_balance_loss(uniform)) == pytest.approx(1.0, abs=1e-6)
    balanced_onehot = torch.eye(e).repeat(4, 1)  # each expert gets n/e tokens with p = 1
    assert float(load_balance_loss(balanced_onehot)) == pytest.approx(1.0, abs=1e-6)
    collapsed = torch.zeros(n, e)
    collapsed[:, 0] = 1.0
    assert float(load_balance_loss(collapsed)) == pytest.approx(float(e), abs=1e-6)


def test_load_balance_loss_matches_formula_on_hand_made_probs():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    f = torch.tensor([2, 1, 1]) / 4  # argmax: 0, 0, 2, 1
    p_mean = probs.mean(0)
    assert float(load_balance_loss(probs)) == pytest.approx(float(3 * (f * p_mean).sum()))
    assert float(3 * (f * p_mean).sum()) == pytest.approx(3 * (0.5 * 0.4 + 0.25 * 0.275
                                                                + 0.25 * 0.325))


@pytest.mark.parametrize("e", [2, 4])
def test_specialization_entropy_closed_forms(e):
    n_cats = 2 * e
    cats = torch.arange(n_cats).repeat(5)  # [N]
    specialized = torch.nn.functional.one_hot(cats % e, e).float()  # category c -> expert c % e
    assert float(specialization_entropy(specialized, cats, n_cats)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((cats.numel(), e), 1.0 / e)
    assert float(specialization_entropy(uniform, cats, n_cats)) == pytest.approx(math.log(e))
    # categories absent from the batch are left out of the mean, not counted as 0
    assert float(specialization_entropy(uniform, cats, n_cats + 3)) == pytest.approx(math.log(e))


def test_specialization_entropy_is_differentiable_in_the_router():
    w = (0.3 * _logits(8, 4, 1)).requires_grad_()  # [D, E] router
    x = _logits(40, 8)  # [N, D]
    cats = torch.arange(40) % 5
    h = specialization_entropy((x @ w).softmax(-1), cats, 5)
    (g,) = torch.autograd.grad(h, w)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert 0 < float(h.detach()) < math.log(4)


@pytest.mark.parametrize("n", [2, 4, 7])
def test_mutual_information_closed_forms(n):
    independent = torch.outer(torch.arange(1.0, n + 1), torch.tensor([3.0, 1.0, 2.0]))
    assert mutual_information(independent) == pytest.approx(0.0, abs=1e-9)
    assert normalized_mutual_information(independent) == pytest.approx(0.0, abs=1e-9)
    bijection = 5 * torch.eye(n)[torch.randperm(n)]
    assert mutual_information(bijection) == pytest.approx(math.log(n))
    assert normalized_mutual_information(bijection) == pytest.approx(1.0)
    # several categories per expert, each category on one expert: I = H(E), normalized 1
    many = torch.zeros(n, 2 * n)
    many[torch.arange(2 * n) % n, torch.arange(2 * n)] = 1.0
    assert normalized_mutual_information(many) == pytest.approx(1.0)
    assert mutual_information(torch.zeros(n, 3)) == 0.0
    assert normalized_mutual_information(torch.ones(1, 5)) == 0.0  # one expert: H(E) = 0


def test_normalized_entropy_closed_forms():
    assert normalized_entropy(torch.ones(4)) == pytest.approx(1.0)
    assert normalized_entropy(torch.tensor([0.0, 7.0, 0.0])) == pytest.approx(0.0)


# -- the MoE block ----------------------------------------------------------------------------------
def _moe(tiny_model_cfg, **overrides) -> MoE:
    cfg = parse_interventions({"moe": {"n_experts": 4, **overrides}})["moe"]
    return MoE("moe", cfg, tiny_model_cfg)


def test_experts_partition_the_dense_mlp(tiny_model_cfg):
    """Σ_e E_e(x) + shared(x) + b_proj = MLP(x): expert e is its slice of c_fc / c_proj."""
    torch.manual_seed(0)
    mlp = build_model(tiny_model_cfg, VOCAB).transformer.h[0].mlp.eval()
    x = torch.randn(3, 5, tiny_model_cfg.d_model)
    for w, n_e in ((16, 4), (12, 4), (32, 2)):  # 12 · 4 < 64: 16 shared always-on units
        total = mlp.c_proj.bias.expand(3, 5, -1).clone()
        for e in range(n_e):
            s = slice(e * w, (e + 1) * w)
            h = mlp.act(x @ mlp.c_fc.weight[:, s] + mlp.c_fc.bias[s])
            total += h @ mlp.c_proj.weight[s]
        h = mlp.act(x @ mlp.c_fc.weight[:, n_e * w :] + mlp.c_fc.bias[n_e * w :])
        total += h @ mlp.c_proj.weight[n_e * w :]
        assert torch.allclose(total, mlp(x), atol=1e-5)
        hidden = torch.randn(3, 5, tiny_model_cfg.ff_dim)
        assert torch.equal(gate_hidden(hidden, torch.ones(3, 5, n_e), w), hidden)


def test_every_expert_at_gate_one_is_the_dense_model(tiny_model_cfg, fake_tokens, monkeypatch):
    import tti_ray.interventions.moe as moe_mod

    def all_ones(logits, top_k, capacity_factor):
        r = route(logits, top_k, capacity_factor)
        return Routing(r.logits, r.probs, r.experts, r.gates, r.kept, torch.ones_like(r.combine))

    x = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    dense = build_model(tiny_model_cfg, VOCAB).eval()
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, VOCAB).eval()
    iv = _moe(tiny_model_cfg, top_k=4, capacity_factor=None)
    iv.prepare(fake_tokens)
    iv.attach(model)
    with torch.no_grad():
        assert not torch.equal(model(input_ids=x).logits, dense(input_ids=x).logits)
        monkeypatch.setattr(moe_mod, "route", all_ones)
        assert torch.equal(model(input_ids=x).logits, dense(input_ids=x).logits)


def test_coefficients_are_separate(tiny_model_cfg, fake_tokens, batch, run_step):
    x, y = batch
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, VOCAB).train()
    ivs = torch.nn.ModuleDict({"moe": _moe(tiny_model_cfg, coef=0.0, balance_coef=0.5)})
    ivs["moe"].prepare(fake_tokens)
    ivs["moe"].attach(model)
    _, _, terms = run_step(model, ivs, x, y)
    assert set(terms) == {"moe/balance"}  # λ = 0 does not switch the balance loss off
    assert 0.5 <= float(terms["moe/balance"].detach()) <= 0.5 * 4
    ivs["moe"].cfg.balance_coef = 0.0
    assert ivs["moe"].coef_at(0) == 0.0  # all coefficients 0: no terms, but still an MoE
    _, _, terms = run_step(model, ivs, x, y)
    assert terms == {}
    ivs["moe"].cfg.coef, ivs["moe"].cfg.coef_warmup_steps = 0.2, 10
    _, _, terms = run_step(model, ivs, x, y, step=5)
    assert set(terms) == {"moe/specialization"}
    assert float(terms["moe/specialization"].detach()) <= 0.1 * math.log(4) + 1e-6  # λ ramped to 0.1


def test_readouts_name_and_range(tiny_model_cfg, fake_tokens, batch):
    x, _ = batch
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, VOCAB).eval()
    iv = _moe(tiny_model_cfg, top_k=1, capacity_factor=1.0, ablation_tokens=0)  # routing only
    iv.prepare(fake_tokens)
    iv.attach(model)
    with torch.no_grad():
        model(input_ids=x)
    out = iv.readouts()
    for layer in (0, 1):
        util = [out[f"utilization/expert_{e}/layer_{layer}"] for e in range(4)]
        assert sum(util) == pytest.approx(1.0)
        assert 0 <= out[f"utilization_entropy/layer_{layer}"] <= 1
        assert 0 <= out[f"router_entropy/layer_{layer}"] <= math.log(4)
        assert 0 <= out[f"dropped_fraction/layer_{layer}"] < 1
        assert 0 <= out[f"mi/layer_{layer}"] <= math.log(4)
        assert 0 <= out[f"mi_normalized/layer_{layer}"] <= 1
        assert 0 <= out[f"category_entropy/layer_{layer}"] <= math.log(4)
    assert out["mi_normalized"] == pytest.approx(
        (out["mi_normalized/layer_0"] + out["mi_normalized/layer_1"]) / 2
    )
    assert iv.readouts() == {}  # reset after reading; training forwards do not count
    model.train()
    model(input_ids=x)
    assert iv.readouts() == {}


def test_ablation_by_category(tiny_model_cfg, fake_tokens):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, VOCAB).train()
    iv = _moe(tiny_model_cfg, layers=[1], top_k=2)
    iv.prepare(fake_tokens)
    iv.attach(model)
    blocks = torch.randint(0, VOCAB, (4, 17), generator=torch.Generator().manual_seed(2))
    out = expert_ablation_by_category(model, iv, blocks)
    assert model.training  # restored
    assert sorted(out) == [f"layer_1/expert_{e}" for e in range(4)]
    cats = iv.category_ids[blocks[:, :-1].reshape(-1)]
    present = {iv.category_names[c] for c in cats.tolist()}
    for row in out.values():
        assert set(row) == present | {"all"}
        assert all(math.isfinite(v) for v in row.values())
        # "all" is the token-weighted mean of the per-category effects
        counts = {n: int((cats == i).sum()) for i, n in enumerate(iv.category_names)}
        weighted = sum(row[n] * counts[n] for n in present) / cats.numel()
        assert row["all"] == pytest.approx(weighted, abs=1e-6)
    assert any(abs(v["all"]) > 0 for v in out.values())
    # the ablation forwards do not feed the routing readouts (only the ablation's own are left)
    assert all(k.startswith("ablation/") for k in iv.readouts())


def test_ablation_of_an_unused_expert_is_zero(tiny_model_cfg, monkeypatch):
    import tti_ray.interventions.moe as moe_mod

    def prefer_expert_0(logits, top_k, capacity_factor):
        return route(logits + torch.tensor([50.0, 0.0, 0.0, 0.0]), top_k, capacity_factor)

    monkeypatch.setattr(moe_mod, "route", prefer_expert_0)
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, VOCAB)
    iv = _moe(tiny_model_cfg, layers=[0], capacity_factor=None)
    iv.set_category_map(CategoryMap(("a", "b"), torch.arange(VOCAB) % 2))
    iv.attach(model)
    blocks = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    out = expert_ablation_by_category(model, iv, blocks)
    assert all(v == 0.0 for e in (1, 2, 3) for v in out[f"layer_0/expert_{e}"].values())
    assert out["layer_0/expert_0"]["all"] != 0.0
    assert set(out["layer_0/expert_0"]) == {"a", "b", "all"}


def test_ablation_summary_closed_forms():
    same = {e: {"a": 0.3 * e, "b": 0.3 * e, "all": 0.3 * e} for e in range(3)}
    out = ablation_summary(same)
    assert out["specificity"] == 0.0  # every category loses the same: no specialization
    assert out["max_dce"] == pytest.approx(0.6)
    assert [out[f"dce/expert_{e}"] for e in range(3)] == pytest.approx([0.0, 0.3, 0.6])
    # expert 0 hurts "a" (2 tokens of 4) only, expert 1 hurts "b" only, twice as much
    rows = {0: {"a": 0.4, "b": 0.0, "all": 0.2}, 1: {"a": 0.0, "b": 0.8, "all": 0.4}}
    out = ablation_summary(rows)
    assert out == pytest.approx({"dce/expert_0": 0.2, "dce/expert_1": 0.4, "max_dce": 0.4,
                                 "specificity": ((0.4 - 0.2) + (0.8 - 0.4)) / 2})
    assert ablation_summary({0: {"all": 0.1}})["specificity"] == 0.0  # no category present
    assert ablation_summary({}) == {}


def _with_valid(tokens, n: int, seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    valid = torch.randint(0, VOCAB, (n,), generator=g).numpy().astype("uint16")
    return dataclasses.replace(tokens, valid=valid)


def test_ablation_readouts(tiny_model_cfg, fake_tokens, batch):
    x, _ = batch
    tokens = _with_valid(fake_tokens, 5 * 16 + 1)  # 5 validation blocks of seq_len 16
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, VOCAB).train()
    iv = _moe(tiny_model_cfg, top_k=2, ablation_tokens=40)  # ceil(40 / 16) = 3 blocks
    iv.prepare(tokens)
    iv.attach(model)
    assert iv._ablation_blocks.shape == (3, 17)
    second = torch.from_numpy(tokens.valid[16:33].astype("int64"))
    assert torch.equal(iv._ablation_blocks[1], second)  # the first blocks of the stream
    with torch.no_grad():
        model.eval()
        model(input_ids=x)
    rng = torch.get_rng_state()
    out = iv.readouts()
    assert torch.equal(torch.get_rng_state(), rng)  # no RNG: exact resume unaffected
    for layer in (0, 1):
        for e in range(4):
            assert math.isfinite(out[f"ablation/dce/expert_{e}/layer_{layer}"])
        assert out[f"ablation/max_dce/layer_{layer}"] == max(
            out[f"ablation/dce/expert_{e}/layer_{layer}"] for e in range(4))
        assert 0.0 <= out[f"ablation/specificity/layer_{layer}"] < math.inf
    assert out["ablation/specificity"] == pytest.approx(
        (out["ablation/specificity/layer_0"] + out["ablation/specificity/layer_1"]) / 2)
    # the full table is kept, and is what a direct call on the same sample gives
    assert iv.last_ablation == expert_ablation_by_category(model, iv, iv._ablation_blocks)
    assert sorted(iv.last_ablation) == sorted(f"layer_{l}/expert_{e}" for l in (0, 1)
                                              for e in range(4))
    assert "mi" in out  # the routing readouts are still there (the ablation does not feed them)
    again = iv.readouts()  # no eval forward since: only the (deterministic) ablation
    assert set(again) == {k for k in out if k.startswith("ablation/")}
    assert all(again[k] == out[k] for k in again)

    off = _moe(tiny_model_cfg, ablation_tokens=0)
    off.prepare(tokens)
    off.attach(model)
    assert off._ablation_blocks is None and off.readouts() == {}
    short = _moe(tiny_model_cfg)
    short.prepare(_with_valid(fake_tokens, 16))  # shorter than one block: no sample
    short.attach(model)
    assert short._ablation_blocks is None and short.readouts() == {}


# -- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"top_k": 5}, "interventions.moe"),
        ({"sites": ["mlp_out"]}, "interventions.moe.sites"),
        ({"n_experts": 1}, "interventions.moe.n_experts"),
        ({"capacity_factor": 0}, "interventions.moe.capacity_factor"),
        ({"categories": "/nope.json"}, "interventions.moe.categories"),
        ({"expert_dff": 8}, "interventions.moe.expert_dff"),
        ({"ablation_tokens": -1}, "interventions.moe.ablation_tokens"),
    ],
)
def test_bad_config_names_the_key(raw, path):
    with pytest.raises(KeyPathError) as e:
        parse_interventions({"moe": raw})
    assert e.value.path == path


def test_expert_width_must_fit_d_ff(tiny_model_cfg):
    with pytest.raises(ValueError, match="expert_d_ff"):
        _moe(tiny_model_cfg, expert_d_ff=17)  # 4 × 17 > 64
    assert _moe(tiny_model_cfg, expert_d_ff=12).expert_width == 12
    assert "moe" in registered()


def test_disabled_has_no_parameters_and_no_hooks(tiny_model_cfg, fake_tokens):
    iv = _moe(tiny_model_cfg, enabled=False)
    iv.prepare(fake_tokens)
    model = build_model(tiny_model_cfg, VOCAB)
    iv.attach(model)
    assert list(iv.parameters()) == [] and iv.coef_at(0) == 0.0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# -- end to end: train, checkpoint, load_model ----------------------------------------------------
def test_train_checkpoint_and_load_model_round_trip(tmp_path):
    from tti_ray.config import load_config
    from tti_ray.train import train_run
    from tti_ray.train.checkpoint import load_model
    from tti_ray.train.evaluate import val_loss
    from tti_ray.train.loop import DistInfo

    cfg = load_config(raw={
        "name": "moe_small",
        "data": {"vocab_size": 256, "max_train_stories": 1000},
        "model": {"n_layer": 2, "d_model": 32, "n_head": 2, "d_ff": 64, "seq_len": 32},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 0, "eval_every": 4,
                  "ckpt_every": 4, "threads": 1},
        "eval": {"val_batches": 2, "metric_tokens": 128},
        "interventions": {"moe": {"coef": 0.1, "top_k": 2, "layers": [1]}},
    })
    final = train_run(cfg, out_dir=tmp_path)
    assert final["status"] == "finished"
    assert {"train/reg/moe/specialization", "train/reg/moe/balance"} <= set(final)
    assert 0 <= final["val/moe/mi_normalized"] <= 1
    assert final["val/moe/utilization_entropy"] > 0
    assert final["val/moe/ablation/specificity"] >= 0  # one MoE layer: no /layer_<l> suffix
    assert math.isfinite(final["val/moe/ablation/max_dce"])
    assert {f"val/moe/ablation/dce/expert_{e}" for e in range(4)} <= set(final)
    run = load_model(tmp_path)
    assert set(run.interventions["moe"].state_dict()) == {"router.layer_1"}
    loss = val_loss(run.model, run.tokens, run.cfg, torch.device("cpu"), DistInfo(), nullcontext)
    assert loss == pytest.approx(final["val/loss"], abs=1e-6)


# -- 2-worker DDP (gloo) trial through the sweep CLI ----------------------------------------------
@pytest.mark.slow
def test_two_worker_ddp_trial_agrees_on_weights_and_reloads(tmp_path):
    """~55 s: both ranks end with the same weights (router included), each rank routes its own
    shard, rank 0's readouts include the ablation, and the checkpoint reloads."""
    import copy
    import json

    from tests.sweep.conftest import SMALL_BASE, finished_ddp_run, run_sweep_cli, write_space
    from tti_ray.train.checkpoint import load_model
    from tti_ray.train.evaluate import val_loss
    from tti_ray.train.loop import DistInfo

    base = copy.deepcopy(SMALL_BASE)
    base["interventions"] = {"moe": {"coef": 0.01, "n_experts": 2, "top_k": 1}}  # d_ff 64: 2 × 32
    base["train"] = {**base["train"], "steps": 10}  # one eval + checkpoint, at the end
    space = write_space(
        tmp_path / "space.yaml", base=base,
        parameters={"interventions.moe.coef": {"values": [0.01]}},
        budget={"trials": 1}, concurrency=1, max_failures=0,
        resources={"workers": 2, "cpus_per_worker": 0.5},
    )
    out = tmp_path / "exp"
    r = run_sweep_cli(str(space), "--out", str(out), "--no-tracking")
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = finished_ddp_run(out)
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["train/reg/moe/specialization"] > 0 and final["train/reg/moe/balance"] > 0
    assert final["val/moe/ablation/specificity"] >= 0
    run = load_model(run_dir)
    assert set(run.interventions["moe"].state_dict()) == {"router.layer_0"}
    # capacity is per forward, so the loss depends on which blocks share a forward: rank r
    # evaluated blocks[r::2]; with the same composition the reload gives the run's val/loss
    from tti_ray.data import eval_blocks

    blocks = eval_blocks(run.tokens.valid, run.cfg.model.seq_len, run.cfg.eval.val_batches * 4)
    with torch.no_grad():
        ce = [torch.nn.functional.cross_entropy(
            run.model(input_ids=b[:, :-1]).logits.flatten(0, 1), b[:, 1:].flatten(),
            reduction="sum") for b in (blocks[0::2], blocks[1::2])]
    assert float(sum(ce)) / blocks[:, 1:].numel() == pytest.approx(final["val/loss"], abs=1e-5)
    loss = val_loss(run.model, run.tokens, run.cfg, torch.device("cpu"), DistInfo(), nullcontext)
    assert loss == pytest.approx(final["val/loss"], abs=1e-2)  # 1 process: blocks [0:4], [4:8]
