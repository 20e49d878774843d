"""Seed 001's training-factor ablation (stanleyngugi/taming_polysemanticity), made measurable.

A 5-layer MLP 8→d→d→d→8 (d = 12) learns non-linear targets of 8 grouped, correlated sparse
features under one setting of four factors (init, noise, weight regularisation, activation; see
:class:`~tti_ray.toy.config.AblationConfig`). After it trains, a LeakyReLU SAE (d_sae = 16,
positive encoder bias init, z-scored inputs) is fitted on its last hidden layer - the layer the
training noise is injected into - and the SAE's decoder directions are scored
(:mod:`tti_ray.toy.metrics`).

Ground truth. Feature i's direction in the SAE's input space is the network's image of a one-hot
input: t_i = (f(a_i e_i) − f(0)) / σ, with f the map to the last hidden layer, a_i the mean
active magnitude of feature i in the training data, and σ the per-unit std used to z-score the
SAE inputs. ``toy/feature_recovery`` is the mean over features of max_k cos(t_i, d_k), and each
SAE direction inherits the importance of the feature it is closest to in axis (max |cos|) for
``toy/interference`` - seed 001 attached 0.9^(k mod 8) by latent index, which depends on the SAE's
arbitrary latent order.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from tti_ray.toy import metrics as M
from tti_ray.toy.config import AblationConfig
from tti_ray.toy.superposition import EvalHook, ToyResult, single_thread
from tti_ray.trials import TrialStatus

GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (3, 4), (5, 6, 7))
N_FEATURES = 8
_GROUP_OF = torch.tensor([g for g, members in enumerate(GROUPS) for _ in members])


# -- data -----------------------------------------------------------------------------------


def group_correlations(cfg: AblationConfig) -> torch.Tensor:
    """Per-group magnitude correlation, ``correlation ± correlation_spread`` spread linearly."""
    c, s = cfg.correlation, cfg.correlation_spread
    return torch.linspace(c - s, c + s, len(GROUPS))


def grouped_features(n: int, cfg: AblationConfig, generator: torch.Generator) -> torch.Tensor:
    """``[n, 8]`` sparse, grouped, correlated features (values ≥ 0).

    Each feature is on with probability p = ``feature_prob``; with probability ``coactivation``
    a group's members copy its first member's on/off draw (so P(j on | i on) = c + (1 − c)p for
    i, j in one group, and the marginal stays p). Magnitudes v_i = √ρ_g z_g + √(1 − ρ_g) u_i
    with z_g, u_i ~ U[0, 1] i.i.d., so co-active members of group g correlate with Pearson ρ_g."""
    active = torch.rand(n, N_FEATURES, generator=generator) < cfg.feature_prob
    tied = torch.rand(n, len(GROUPS), generator=generator) < cfg.coactivation
    for g, members in enumerate(GROUPS):
        lead = active[:, members[0]]
        for i in members[1:]:
            active[:, i] = torch.where(tied[:, g], lead, active[:, i])
    rho = group_correlations(cfg)[_GROUP_OF]  # [8]
    z = torch.rand(n, len(GROUPS), generator=generator)[:, _GROUP_OF]
    u = torch.rand(n, N_FEATURES, generator=generator)
    return (rho.sqrt() * z + (1 - rho).sqrt() * u) * active


def targets(x: torch.Tensor) -> torch.Tensor:
    """Non-linear targets ``[n, 8]``: products, sin, tanh, and cross-group terms.

    y0 = x0·x1,  y1 = sin(π/2·(x1 + x2)),  y2 = tanh(2·x2 − x0),  y3 = x3·x4,
    y4 = tanh(x3 + x4) − ½·x5 (cross-group),  y5 = x5·x6·x7,  y6 = sin(π/2·x6) + ½·x7,
    y7 = x7·x0 (cross-group)."""
    x0, x1, x2, x3, x4, x5, x6, x7 = x.unbind(-1)
    half_pi = math.pi / 2
    return torch.stack(
        [
            x0 * x1,
            torch.sin(half_pi * (x1 + x2)),
            torch.tanh(2 * x2 - x0),
            x3 * x4,
            torch.tanh(x3 + x4) - 0.5 * x5,
            x5 * x6 * x7,
            torch.sin(half_pi * x6) + 0.5 * x7,
            x7 * x0,
        ],
        dim=-1,
    )


def feature_importances(cfg: AblationConfig) -> torch.Tensor:
    """I_i = importance_decay^i (seed 001: 0.9^i), ``[8]``; weights the task MSE per output."""
    return cfg.importance_decay ** torch.arange(N_FEATURES, dtype=torch.float32)


def weighted_mse(pred: torch.Tensor, y: torch.Tensor, imp: torch.Tensor) -> torch.Tensor:
    """mean over samples and outputs of I_i (ŷ_i − y_i)²."""
    return (imp * (pred - y).pow(2)).mean()


# -- network, noise, regularisation ---------------------------------------------------------


class ToyMLP(nn.Module):
    """8 → d → d → d → 8 with one activation; :meth:`hidden` is the last hidden layer."""

    def __init__(self, d_hidden: int, activation: str) -> None:
        super().__init__()
        dims = [N_FEATURES, d_hidden, d_hidden, d_hidden, N_FEATURES]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()

    def hidden(self, x: torch.Tensor) -> torch.Tensor:  # [N, 8] -> [N, d]
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return x

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        h = self.hidden(x)
        return self.layers[-1](h if noise is None else h + noise)


def init_mlp(model: ToyMLP, kind: str, generator: torch.Generator) -> None:
    """gaussian: W ~ N(0, 1/fan_in); orthogonal: orthonormal rows/columns (gain 1) - the same
    scale, so the factor changes only the geometry. Biases 0."""
    with torch.no_grad():
        for layer in model.layers:
            if kind == "orthogonal":
                nn.init.orthogonal_(layer.weight, generator=generator)
            else:
                nn.init.normal_(layer.weight, 0.0, layer.in_features**-0.5, generator=generator)
            layer.bias.zero_()


def sample_noise(
    shape: torch.Size, cfg: AblationConfig, generator: torch.Generator
) -> torch.Tensor:
    """bipolar: ±σ with a fair random sign (seed repo's ``add_noise``); student_t: σ·t₃/√3, a
    heavy-tailed draw with the same variance σ² (t₃ = z / √(χ²₃/3))."""
    sigma = cfg.noise_scale
    if cfg.noise == "bipolar":
        return (torch.rand(shape, generator=generator) < 0.5).float().mul(2).sub(1) * sigma
    z = torch.randn(shape, generator=generator)
    chi2 = torch.randn((*shape, 3), generator=generator).pow(2).sum(-1)
    return z / (chi2 / 3).sqrt().clamp_min(1e-6) * (sigma / math.sqrt(3))


def weight_penalty(model: nn.Module, reg: str) -> torch.Tensor:
    """Σ|w| (l1) or Σw² (l2) over weight matrices (biases excluded)."""
    ws = [p for p in model.parameters() if p.dim() > 1]
    if reg == "l1":
        return sum(w.abs().sum() for w in ws)  # type: ignore[return-value]
    return sum(w.pow(2).sum() for w in ws)  # type: ignore[return-value]


# -- SAE ------------------------------------------------------------------------------------


class ToySAE(nn.Module):
    """Linear encoder (positive bias init U(0, 0.1)) → LeakyReLU(0.01) → linear decoder; the
    decoder's columns ``dec.weight[:, k]`` are the latent directions."""

    def __init__(self, d_in: int, d_sae: int, generator: torch.Generator) -> None:
        super().__init__()
        self.enc = nn.Linear(d_in, d_sae)
        self.dec = nn.Linear(d_sae, d_in)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.enc.weight, a=math.sqrt(5), generator=generator)
            nn.init.uniform_(self.enc.bias, 0.0, 0.1, generator=generator)
            self.dec.weight.copy_(M.unit_columns(self.enc.weight.T))
            self.dec.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.leaky_relu(self.enc(x), 0.01)
        return self.dec(z), z


def fit_sae(
    acts: torch.Tensor, cfg: AblationConfig, generator: torch.Generator
) -> tuple[ToySAE, bool]:
    """Full-batch Adam on MSE + ``sae_l1``·mean|z| over z-scored activations ``[N, d]``, decoder
    columns renormalised to unit norm after every step (Bricken et al. 2023; seed 001 left them
    free, which lets the L1 term be traded for decoder scale). Returns (sae, diverged)."""
    sae = ToySAE(acts.shape[1], cfg.d_sae, generator)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.sae_lr, fused=True)
    for _ in range(cfg.sae_steps):
        recon, z = sae(acts)
        loss = F.mse_loss(recon, acts) + cfg.sae_l1 * z.abs().mean()
        if not torch.isfinite(loss):
            return sae, True
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # unit-norm decoder columns, so the L1 cannot be dodged by scale
            sae.dec.weight.copy_(M.unit_columns(sae.dec.weight))
    return sae, False


# -- the run --------------------------------------------------------------------------------


def train_ablation(cfg: AblationConfig, *, seed: int, on_eval: EvalHook | None = None) -> ToyResult:
    """Train the MLP, fit the SAE, and compute every ablation metric (see :mod:`tti_ray.toy`).

    Data depend on ``seed`` only (not on the factors), so configurations at one seed are paired."""
    with single_thread():
        return _train_ablation(cfg, seed, on_eval)


def _train_ablation(cfg: AblationConfig, seed: int, on_eval: EvalHook | None) -> ToyResult:
    g_data, g_init, g_train, g_sae = (
        torch.Generator().manual_seed(seed * 1009 + k) for k in range(11, 15)
    )
    x = grouped_features(cfg.n_train + cfg.n_val, cfg, g_data)
    y = targets(x)
    x_tr, y_tr, x_va, y_va = x[: cfg.n_train], y[: cfg.n_train], x[cfg.n_train :], y[cfg.n_train :]
    imp = feature_importances(cfg)
    model = ToyMLP(cfg.d_hidden, cfg.activation)
    init_mlp(model, cfg.init, g_init)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )

    def task_metrics() -> dict[str, float]:
        with torch.no_grad():
            task = float(weighted_mse(model(x_tr), y_tr, imp))
            reg = float(weight_penalty(model, cfg.reg))
            return {
                "toy/loss": task + cfg.reg_lambda * reg,
                "toy/reg": reg,
                "toy/task_mse": task,
                "toy/val_mse": float(weighted_mse(model(x_va), y_va, imp)),
            }

    step = 0
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, cfg.n_train, (cfg.batch_size,), generator=g_train)
        noise = sample_noise(torch.Size((cfg.batch_size, cfg.d_hidden)), cfg, g_train)
        loss = weighted_mse(model(x_tr[idx], noise), y_tr[idx], imp)
        if cfg.reg_lambda:
            loss = loss + cfg.reg_lambda * weight_penalty(model, cfg.reg)
        if not torch.isfinite(loss):
            return _diverged(model, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_eval is not None and step % cfg.eval_every == 0 and step < cfg.steps:
            on_eval(task_metrics(), step)

    final = task_metrics()
    if not all(math.isfinite(v) for v in final.values()):
        return _diverged(model, step)
    with torch.no_grad():
        h_tr, h_va = model.hidden(x_tr), model.hidden(x_va)  # [N, d]
        mu, sd = h_tr.mean(0), h_tr.std(0)
        dead = sd < 1e-6
        sd = torch.where(dead, torch.ones_like(sd), sd)
        a = (x_tr.sum(0) / (x_tr > 0).sum(0).clamp_min(1)).clamp_min(1e-3)  # mean active value
        t = (model.hidden(torch.diag(a)) - model.hidden(torch.zeros(1, N_FEATURES))) / sd
        true_dirs = t.T.contiguous()  # [d, 8]
    sae, sae_diverged = fit_sae((h_tr - mu) / sd, cfg, g_sae)
    with torch.no_grad():
        acts_va = (h_va - mu) / sd
        recon, z = sae(acts_va)
        dirs = sae.dec.weight.detach()  # [d, d_sae]
        weights = [p for p in model.parameters() if p.dim() > 1]
        metrics = {
            **final,
            "toy/sae_mse": float(F.mse_loss(recon, acts_va)),
            "toy/l0": M.l0_fraction(z),
            "toy/macs": M.macs(dirs),
            "toy/calibrated_macs": M.calibrated_macs(dirs, draws=cfg.null_draws, seed=seed),
            "toy/interference": M.interference(dirs, M.attach_importances(dirs, true_dirs, imp)),
            "toy/feature_recovery": float(M.feature_recovery(true_dirs, dirs).mean()),
            "toy/w4_sparsity": M.w4_sparsity(weights),
            "toy/w4_kurtosis": M.w4_kurtosis(weights),
            "toy/dead_hidden": float(dead.float().mean()),
        }
    tensors = {f"net.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"sae.{k}": v.detach().contiguous() for k, v in sae.state_dict().items()}
    tensors |= {"sae.input_mean": mu, "sae.input_std": sd, "true_directions": true_dirs}
    diverged = sae_diverged or not math.isfinite(metrics["toy/sae_mse"])
    status = (TrialStatus.DIVERGED if diverged else TrialStatus.FINISHED).value
    return ToyResult(
        metrics=metrics, tensors=tensors, step=cfg.steps + cfg.sae_steps, status=status
    )


def _diverged(model: nn.Module, step: int) -> ToyResult:
    tensors = {f"net.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    return ToyResult(
        metrics={"toy/loss": float("nan")}, tensors=tensors, step=step,
        status=TrialStatus.DIVERGED.value
    )
