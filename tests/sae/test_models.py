from __future__ import annotations

import itertools

import torch

from tti_ray.sae import build_sae, load_sae, parse_sae_config, save_sae
from tti_ray.sae.train import SAETrainer, lr_factor

D = 16


def topk(**kw):
    return build_sae(parse_sae_config({"expansion": 4, "k": 4, **kw}), D)


def test_topk_keeps_at_most_k_and_exactly_k_when_k_are_positive():
    sae = topk()
    x = torch.randn(200, D)
    pre, f = sae.pre_acts(x), sae.encode(x)
    nnz = (f > 0).sum(-1)
    assert (nnz <= 4).all()
    enough = (pre > 0).sum(-1) >= 4
    assert enough.any() and (nnz[enough] == 4).all()
    assert ((f > 0).sum(-1) == torch.clamp((pre > 0).sum(-1), max=4)).all()
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # every pre-activation positive: exactly k everywhere
    assert ((sae.encode(x) > 0).sum(-1) == 4).all()


def test_sparse_decode_matches_dense_eager_twin():
    sae = topk()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.input_scale.fill_(1.7)
    x = torch.randn(64, D)
    torch.testing.assert_close(sae(x), sae.decode(sae.encode(x)))
    torch.testing.assert_close(sae(x.view(4, 16, D)), sae(x).view(4, 16, D))


def test_sparse_backward_matches_dense_eager_twin():
    """Same loss and the same gradient for every parameter, with dead latents (AuxK) active."""
    grads = []
    for sparse in (True, False):
        torch.manual_seed(0)
        sae = topk(k=3, dead_tokens=10, k_aux=5)
        sae.sparse_backward = sparse
        with torch.no_grad():
            sae.b_dec.normal_()
            sae.b_enc.normal_()
            sae.input_scale.fill_(1.3)
            sae.tokens_since_fired[::3] = 10  # a third of the latents dead
        sae.train()
        out = sae.loss(torch.randn(40, D, generator=torch.Generator().manual_seed(1)))
        assert float(out["auxk"].detach()) > 0
        out["loss"].backward()
        grads.append((out["loss"].detach(), {n: p.grad for n, p in sae.named_parameters()}))
    (loss_a, ga), (loss_b, gb) = grads
    torch.testing.assert_close(loss_a, loss_b)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], msg=name)


def test_decoder_rows_unit_norm_after_steps():
    for sae in (topk(), build_sae(parse_sae_config({"kind": "relu", "expansion": 4}), D)):
        trainer = SAETrainer(sae, 5)
        for _ in range(5):
            trainer.step(torch.randn(32, D) * 3 + 1)
        torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(sae.d_sae))


def test_relu_with_free_decoder_norms_weights_l1_by_them():
    cfg = parse_sae_config(
        {"kind": "relu", "expansion": 4, "l1_decoder_norm": True, "normalize_decoder": False}
    )
    sae = build_sae(cfg, D)
    trainer = SAETrainer(sae, 5)
    for _ in range(5):
        trainer.step(torch.randn(32, D) + 1)
    norms = sae.W_dec.detach().norm(dim=-1)
    assert not torch.allclose(norms, torch.ones_like(norms))
    sae.train()
    x = torch.randn(16, D)
    f = sae.encode(x)
    torch.testing.assert_close(sae.loss(x)["l1"], (f * sae.W_dec.norm(dim=-1)).sum(-1).mean())


def test_init_from_batch_sets_scale_and_pre_bias():
    sae = topk()
    x = torch.randn(512, D) * 5 + 2
    sae.init_from_batch(x)
    xs = x * sae.input_scale
    assert abs(float(xs.norm(dim=-1).mean()) - D**0.5) < 1e-4
    torch.testing.assert_close(sae.b_dec.detach(), xs.mean(0))


def _sparse_feature_batches(n_steps, n=128, n_feat=64, p=0.06, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(n_feat, D, generator=g), dim=-1)
    for _ in range(n_steps):
        mask = torch.rand(n, n_feat, generator=g) < p
        yield (mask * (torch.rand(n, n_feat, generator=g) + 0.5)) @ feats


def test_auxk_revives_latents_that_never_win_the_topk():
    """Half the latents start with a 20x weaker encoder: they never make the top-k, so without
    AuxK they get no gradient at all and stay dead; AuxK trains them on the residual."""

    def run(aux_coef):
        sae = topk(k=2, dead_tokens=512, aux_coef=aux_coef, lr=3e-3)
        with torch.no_grad():
            sae.W_enc[:, sae.d_sae // 2 :] *= 0.05
        trainer = SAETrainer(sae, 300)
        aux = [trainer.step(x)["auxk"] for x in _sparse_feature_batches(300)]
        return int(sae.dead_mask().sum()), torch.stack(aux), sae.d_sae

    dead_with, aux, d_sae = run(1 / 32)
    dead_without, _, _ = run(0.0)
    assert dead_without >= d_sae // 4  # most of the weak half stays dead
    assert dead_with <= dead_without // 3
    assert torch.isfinite(aux).all() and (aux > 0).any()


def test_no_aux_loss_without_dead_latents():
    sae = topk()
    sae.train()
    out = sae.loss(torch.randn(32, D))
    assert float(out["auxk"]) == 0.0
    torch.testing.assert_close(out["loss"], out["mse"])


def test_lr_schedule_warmup_constant_decay():
    f = [lr_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0 and f[50] == 1.0 and f[80] == 1.0
    assert f[99] == 1 / 20 and all(a >= b for a, b in itertools.pairwise(f[80:]))


def test_save_load_round_trip(tmp_path):
    sae = topk(k=3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.input_scale.fill_(0.5)
    path = save_sae(sae, tmp_path / "s.safetensors", {"site": "mlp_out"})
    back = load_sae(path)
    assert back.cfg == sae.cfg and type(back) is type(sae)
    x = torch.randn(8, D)
    torch.testing.assert_close(back(x), sae(x))
