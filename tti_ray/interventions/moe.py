"""Mixture of Experts in place of the dense MLP, with a category-specialization loss (issue 11).

Architecture (``moe``, architectural): in each chosen layer the dense GPT-2 MLP becomes an MoE
block whose experts are **slices of the dense MLP**: expert e owns hidden units
[e·w, (e+1)·w), w = ``expert_d_ff`` (default d_ff // n_experts), i.e. columns of ``c_fc`` and rows
of ``c_proj`` (the "MoEfication" split of Zhang et al. 2022, here trained from the start). Units
left over when n_experts·w < d_ff form an always-on shared expert (DeepSeekMoE's "shared expert",
Dai et al. 2024). With E_e(x) = c_proj[e](act(c_fc[e](x))) the block computes

    MoE(x) = b_proj + shared(x) + Σ_e combine_e(x) · E_e(x),

where combine comes from a softmax router (:func:`~tti_ray.interventions.moe_metrics.route`):
top-1 (gate p_e, Switch) or top-k (gates renormalised over the chosen experts), and a per-expert
capacity ceil(capacity_factor · k · N / E) per forward of N tokens. A (token, expert) choice over
capacity is **dropped**: that expert contributes nothing to the token, and a token all of whose
choices are dropped passes through the residual with only the always-on part of the MLP (the
output bias b_proj, plus the shared units if any). Capacity applies to eval forwards too, so
with drops ``val/loss`` depends on which blocks share a forward (under DDP, rank r evaluates
blocks r::world: not the 1-process batches). Because the experts partition the hidden
units, Σ_e E_e(x) + shared(x) + b_proj is exactly the dense MLP (tested): with every expert chosen
at gate 1 the block *is* the dense MLP. The expert weights therefore stay the model's own
``c_fc``/``c_proj`` parameters (saved in ``model.safetensors``); the only new parameters are the
routers ``[d_model, E]`` per layer (``interventions.safetensors``), and
:func:`tti_ray.train.checkpoint.load_model` re-attaches the block from the run config.

Implementation: a forward pre-hook on ``mlp`` routes its input (float32, autocast off: Switch's
"selective precision"); the ``mlp_hidden`` transform multiplies each hidden unit by its expert's
combine weight (:func:`~tti_ray.interventions.moe_metrics.gate_hidden`). Captures at
``mlp_hidden`` see the gated units, ``mlp_out`` the MoE output. Compute is the dense MLP's (no
sparse dispatch: the models are small and this is about interpretability, not FLOPs).

Loss terms (each scaled by its own coefficient; see :meth:`MoE.coef_at`):
``specialization`` = ``coef`` (λ) × mean over categories of H(expert | category),
``balance`` = ``balance_coef`` × Switch load-balancing loss, ``z_loss`` = ``z_coef`` × router
z-loss. Readouts (``val/<name>/...``, over the eval forwards since the last readout):
``utilization/expert_<e>``, ``utilization_entropy`` (/ log E), ``router_entropy``,
``dropped_fraction``, ``category_entropy``, ``mi`` (I(expert; category), nats) and
``mi_normalized`` (I / H(expert)), per layer as ``<key>/layer_<i>`` when several layers.

Ablation readouts (``ablation_tokens > 0``): at each readout, :func:`expert_ablation_by_category`
runs on a fixed validation sample - the first ceil(``ablation_tokens`` / seq_len) blocks of the
validation stream (where the eval metric sample starts too; cut in :meth:`MoE.prepare`, no RNG, so
exact resume is unaffected) - on the model given to :meth:`MoE.attach` (a weak reference), in
eval mode without autocast, 1 + E · (MoE layers) forwards. ΔCE_e(c) = mean over the sample's
tokens of input category c of CE(expert e of that layer zeroed) − CE(intact), nats. Reported
(:func:`~tti_ray.interventions.moe_metrics.ablation_summary`; ``<key>/layer_<i>`` per layer
when several, the bare key is the mean over layers):
``ablation/dce/expert_<e>`` (ΔCE_e on all tokens), ``ablation/max_dce`` (max over experts) and
``ablation/specificity`` = mean over experts e of [max_c ΔCE_e(c) − ΔCE_e] (≥ 0; 0 when ablating
any expert costs every category the same). The full table of the last readout stays in
:attr:`MoE.last_ablation` (``{"layer_<l>/expert_<e>": {category: ΔCE, ..., "all": ΔCE}}``).
The ablation forwards pass through the other interventions' hooks too.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from tti_ray.data.batches import eval_blocks, n_blocks
from tti_ray.interventions.categories import CategoryMap, category_map, validate_kind
from tti_ray.interventions.moe_metrics import (
    Routing,
    ablation_summary,
    category_entropy_from_sums,
    category_prob_sums,
    entropy,
    gate_hidden,
    load_balance_loss,
    mutual_information,
    normalized_entropy,
    normalized_mutual_information,
    route,
    router_z_loss,
    specialization_entropy,
)
from tti_ray.interventions.registry import (
    Intervention,
    InterventionConfig,
    SiteKey,
    StepContext,
    fp32,
    register_intervention,
)


class MoEConfig(InterventionConfig):
    """``enabled: false`` keeps the dense MLP (no hook: the baseline). ``n_experts`` E ≥ 2;
    ``top_k`` experts per token (1 or 2 are the usual choices; at most E); ``capacity_factor``
    (``null``: unlimited, nothing dropped); ``expert_d_ff`` hidden units per expert (default
    d_ff // E; E · expert_d_ff ≤ d_ff). ``coef`` (λ): specialization loss, ramped by
    ``coef_warmup_steps``; ``balance_coef``: Switch load balancing (α = 1e-2 in Fedus et al.);
    ``z_coef``: router z-loss (1e-3 in ST-MoE; off by default). ``categories`` /
    ``exclude_other`` as for ``anti_poly`` (the ``other`` category is left out of the
    specialization loss and of the MI readout). ``router_init_scale`` s: router weights
    ~ N(0, s / d_model) (Switch §2.4 uses s = 0.1). ``ablation_tokens``: validation tokens
    (rounded up to whole blocks) for the per-expert ablation readouts; 0: no ablation."""

    enabled: bool = True
    n_experts: int = Field(4, ge=2, le=1024)
    top_k: int = Field(1, ge=1)
    capacity_factor: float | None = Field(1.25, gt=0.0)
    expert_d_ff: int | None = Field(None, ge=1)
    balance_coef: float = Field(1e-2, ge=0.0)
    z_coef: float = Field(0.0, ge=0.0)
    categories: str = "coarse"
    exclude_other: bool = True
    router_init_scale: float = Field(0.1, gt=0.0)
    ablation_tokens: int = Field(2048, ge=0)

    @field_validator("categories")
    @classmethod
    def _categories_valid(cls, v: str) -> str:
        return validate_kind(v)

    @field_validator("sites")
    @classmethod
    def _hidden_only(cls, v: list[str]) -> list[str]:
        if v != ["mlp_hidden"]:
            raise ValueError("moe replaces the whole MLP and gates its hidden units: "
                             "sites must be [mlp_hidden] (pick layers with 'layers')")
        return v

    @model_validator(mode="after")
    def _k_fits(self) -> MoEConfig:
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        return self


class MoE(Intervention):
    """Top-k MoE over slices of the dense MLP, with specialization / balance / z losses."""

    config_cls = MoEConfig
    architectural = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg, d_ff = self.cfg, self.model_cfg.ff_dim
        self.expert_width = cfg.expert_d_ff or d_ff // cfg.n_experts
        if self.expert_width < 1 or cfg.n_experts * self.expert_width > d_ff:
            raise ValueError(
                f"interventions.{self.name}.expert_d_ff: n_experts × expert_d_ff "
                f"({cfg.n_experts} × {self.expert_width}) must be between 1 and d_ff ({d_ff})"
            )
        g = self.local_generator()
        std = (cfg.router_init_scale / self.model_cfg.d_model) ** 0.5
        shape = (self.model_cfg.d_model, cfg.n_experts)
        self.router = nn.ParameterDict(
            {f"layer_{i}": nn.Parameter(torch.randn(shape, generator=g) * std)
             for i in (self.layer_indices() if cfg.enabled else [])}
        )
        self.register_buffer("category_ids", None, persistent=False)  # [vocab] long
        self.category_names: tuple[str, ...] = ()
        # per-forward scratch, written by the mlp pre-hook and read in the same step; nothing
        # here outlives a training step or differs in meaning across DDP ranks
        self._combine: dict[int, torch.Tensor] = {}  # layer -> [B, T, E]
        self._train: dict[int, Routing] = {}  # layer -> routing of the last training forward
        self._ids: torch.Tensor | None = None  # [B, T] input ids of the current forward
        self._stats: dict[int, dict[str, torch.Tensor]] = {}  # eval sums, reset by readouts()
        self._collect = True
        self._ablate: tuple[int, int] | None = None  # (layer, expert) zeroed by the ablation
        self._ablation_blocks: torch.Tensor | None = None  # [n, seq_len + 1] fixed val sample
        self._model_ref: weakref.ref[nn.Module] | None = None  # not a submodule: no weights
        #: full table of the last ablation readout (see expert_ablation_by_category)
        self.last_ablation: dict[str, dict[str, float]] = {}

    # -- test protocol ------------------------------------------------------------------------
    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"coef": 0.1, "top_k": 2, "capacity_factor": 1.0, "z_coef": 1e-3}

    @classmethod
    def disabled_config(cls) -> dict[str, Any]:
        return {"enabled": False}

    # -- setup --------------------------------------------------------------------------------
    def prepare(self, tokens: Any, tokenizer: Any = None) -> None:
        """Category map, and the ablation sample: the first ceil(ablation_tokens / seq_len)
        blocks of ``tokens.valid`` (none if the stream is shorter than one block)."""

        self._ablation_blocks = None
        if not self.cfg.enabled:
            return
        self.set_category_map(category_map(self.cfg.categories, tokens, tokenizer))
        valid, seq_len = getattr(tokens, "valid", None), self.model_cfg.seq_len
        if self.cfg.ablation_tokens > 0 and valid is not None and n_blocks(valid, seq_len) > 0:
            n = math.ceil(self.cfg.ablation_tokens / seq_len)
            self._ablation_blocks = eval_blocks(valid, seq_len, n)

    def set_category_map(self, cmap: CategoryMap) -> None:
        """Use ``cmap`` (model id -> category) instead of building it in :meth:`prepare`."""
        device = self.category_ids.device if self.category_ids is not None else "cpu"
        self.category_ids = cmap.ids.to(device)
        self.category_names = cmap.names

    def attach(self, model: nn.Module) -> None:
        from tti_ray.model.gpt import add_site_transform  # lazy: transformers

        self.remove_hooks()
        self._combine.clear()
        self._train.clear()
        self._model_ref = None
        if not self.cfg.enabled:
            return
        self._model_ref = weakref.ref(model)
        self._handles.append(
            model.transformer.register_forward_pre_hook(self._remember_ids, with_kwargs=True)
        )
        for layer in self.layer_indices():
            mlp = model.transformer.h[layer].mlp

            def pre(m: nn.Module, args: tuple[Any, ...], layer: int = layer) -> None:
                self._route(layer, args[0], m.training)

            def fn(h: torch.Tensor, layer: int = layer) -> torch.Tensor:
                return gate_hidden(h, self._combine.pop(layer), self.expert_width)

            self._handles.append(mlp.register_forward_pre_hook(pre))
            self._handles.append(add_site_transform(model, "mlp_hidden", layer, fn))

    def _remember_ids(self, _m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        self._ids = ids if torch.is_tensor(ids) else None

    # -- forward ------------------------------------------------------------------------------
    def _route(self, layer: int, x: torch.Tensor, training: bool) -> None:
        """Route ``x`` [B, T, D]; leave the combine weights for the ``mlp_hidden`` transform."""
        b, t, d = x.shape
        with fp32(x.device):
            xt = x.transpose(0, 1).reshape(t * b, d).float()  # position-major: capacity priority
            r = route(xt @ self.router[f"layer_{layer}"].float(), self.cfg.top_k,
                      self.cfg.capacity_factor)
            r = _batch_major(r, t, b)
        combine = r.combine.view(b, t, -1)
        if self._ablate is not None and self._ablate[0] == layer:
            combine = combine.index_fill(-1, torch.tensor([self._ablate[1]], device=x.device), 0.0)
        self._combine[layer] = combine
        if training:
            if torch.is_grad_enabled() and self.coef_at(0) > 0:
                self._train[layer] = r  # read (and released) by loss_terms
        elif self._collect:
            with torch.no_grad():
                self._add_stats(layer, r)

    def _categories(self, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(category per token [N], number of categories kept: ``other`` dropped if asked)."""
        if self.category_ids is None:
            raise RuntimeError(f"intervention {self.name!r}: call prepare(token_data) or "
                               "set_category_map() before training")
        if self.category_ids.device != ids.device:
            self.category_ids = self.category_ids.to(ids.device)
        return self.category_ids[ids.reshape(-1)], len(self.category_names) - (
            1 if self.cfg.exclude_other else 0)

    # -- training -----------------------------------------------------------------------------
    def coef_at(self, step: int) -> float:
        """The trainer's multiplier: 1 while any coefficient is on, else 0 (no terms). The terms
        come pre-scaled by their own coefficients, which one multiplier cannot carry; only λ
        (``coef``) follows ``coef_warmup_steps``."""
        cfg = self.cfg
        on = cfg.enabled and (cfg.coef > 0 or cfg.balance_coef > 0 or cfg.z_coef > 0)
        return 1.0 if on else 0.0

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        layers = self.layer_indices()
        missing = [i for i in layers if i not in self._train]
        if missing:
            raise RuntimeError(
                f"intervention {self.name!r}: no routing for layers {missing}; attach(model) and "
                "run a training forward (model.train(), grad enabled) before loss_terms")
        routs = [self._train.pop(i) for i in layers]
        lam = super().coef_at(ctx.step)  # λ with its warmup ramp
        terms: dict[str, torch.Tensor] = {}
        with fp32(routs[0].probs.device):
            if lam > 0:
                cats, n_cats = self._categories(ctx.token_ids)
                keep = cats < n_cats  # drops "other" (the last category) when excluded
                spec = [specialization_entropy(r.probs[keep], cats[keep], n_cats) for r in routs]
                terms["specialization"] = lam * torch.stack(spec).mean()
            if self.cfg.balance_coef > 0:
                bal = torch.stack([load_balance_loss(r.probs) for r in routs]).mean()
                terms["balance"] = self.cfg.balance_coef * bal
            if self.cfg.z_coef > 0:
                z = torch.stack([router_z_loss(r.logits) for r in routs]).mean()
                terms["z_loss"] = self.cfg.z_coef * z
        return terms

    # -- readouts -----------------------------------------------------------------------------
    def _add_stats(self, layer: int, r: Routing) -> None:
        n_e = self.cfg.n_experts
        dev = r.probs.device
        new = {
            "assigned": F.one_hot(r.experts, n_e).sum((0, 1)).double(),  # [E], before capacity
            "dropped": (~r.kept).sum().double().reshape(1),
            "choices": torch.tensor([float(r.kept.numel())], dtype=torch.float64, device=dev),
            "router_entropy": entropy(r.probs).sum().reshape(1),
            "tokens": torch.tensor([float(r.probs.shape[0])], dtype=torch.float64, device=dev),
        }
        ids = self._ids
        if self.category_ids is not None and ids is not None and ids.numel() == r.probs.shape[0]:
            cats, n_cats = self._categories(ids)
            keep = cats < n_cats
            top1 = r.experts[keep, 0]
            joint = torch.zeros(n_e * n_cats, dtype=torch.float64, device=dev)
            joint.index_add_(0, top1 * n_cats + cats[keep], torch.ones_like(top1, dtype=joint.dtype))
            sums, counts = category_prob_sums(r.probs[keep], cats[keep], n_cats)
            new.update(joint=joint.view(n_e, n_cats), cat_sums=sums.double(),
                       cat_counts=counts.double())
        old = self._stats.get(layer)
        if old is not None and old.keys() == new.keys():
            new = {k: old[k] + v for k, v in new.items()}
        self._stats[layer] = new

    @torch.no_grad()
    def readouts(self) -> dict[str, float]:
        stats, self._stats = self._stats, {}
        per: dict[str, dict[SiteKey, float]] = {}

        def put(key: str, layer: int, value: float) -> None:
            per.setdefault(key, {})[("mlp_hidden", layer)] = float(value)

        for layer, s in sorted(stats.items()):
            util = s["assigned"] / s["assigned"].sum().clamp_min(1)
            for e, u in enumerate(util.tolist()):
                put(f"utilization/expert_{e}", layer, u)
            put("utilization_entropy", layer, normalized_entropy(s["assigned"]))
            put("router_entropy", layer, float(s["router_entropy"] / s["tokens"].clamp_min(1)))
            put("dropped_fraction", layer, float(s["dropped"] / s["choices"].clamp_min(1)))
            if "joint" in s:
                put("category_entropy", layer,
                    float(category_entropy_from_sums(s["cat_sums"], s["cat_counts"])))
                put("mi", layer, mutual_information(s["joint"]))
                put("mi_normalized", layer, normalized_mutual_information(s["joint"]))
        for layer, summary in self._ablation_readouts().items():
            for key, value in summary.items():
                put(f"ablation/{key}", layer, value)
        out: dict[str, float] = {}
        for key, values in per.items():
            out.update(self.per_site(key, values))
        return out

    def _ablation_readouts(self) -> dict[int, dict[str, float]]:
        """{layer: ablation_summary} on the fixed validation sample; {} without a sample or a
        live attached model. Sets :attr:`last_ablation`."""
        model = self._model_ref() if self._model_ref is not None else None
        if model is None or self._ablation_blocks is None or not self.router:
            return {}
        table = expert_ablation_by_category(model, self, self._ablation_blocks)
        self.last_ablation = table
        return {
            layer: ablation_summary({e: table[f"layer_{layer}/expert_{e}"]
                                     for e in range(self.cfg.n_experts)})
            for layer in self.layer_indices()
        }

    # -- analysis -----------------------------------------------------------------------------
    @contextmanager
    def ablating(self, layer: int | None, expert: int | None) -> Iterator[None]:
        """Inside the block, expert ``expert`` of ``layer`` outputs zero (``None``: nothing is
        ablated) and eval forwards do not feed the readouts."""
        prev = (self._ablate, self._collect)
        self._ablate = None if layer is None or expert is None else (layer, expert)
        self._collect = False
        try:
            yield
        finally:
            self._ablate, self._collect = prev


def _batch_major(r: Routing, t: int, b: int) -> Routing:
    """Rows of a routing computed position-major ([T·B]) back to batch-major ([B·T])."""

    def bm(a: torch.Tensor) -> torch.Tensor:
        return a.view(t, b, *a.shape[1:]).transpose(0, 1).reshape(t * b, *a.shape[1:])

    return Routing(*(bm(a) for a in (r.logits, r.probs, r.experts, r.gates, r.kept, r.combine)))


@torch.no_grad()
def expert_ablation_by_category(
    model: nn.Module, moe: MoE, blocks: torch.Tensor, layers: list[int] | None = None
) -> dict[str, dict[str, float]]:
    """Per-expert ablation effect on the loss, by token category.

    ``blocks`` ``[B, T+1]`` token ids (inputs ``[:, :-1]``, next-token targets ``[:, 1:]``). For
    each MoE layer l and expert e, zero E_e's output in layer l (its combine weight, after
    routing and capacity, so the other experts are untouched) and return
    ``{"layer_<l>/expert_<e>": {category: ΔCE, ..., "all": ΔCE}}`` with
    ΔCE = mean over the tokens whose *input* token is in that category (the token that was
    routed) of CE_ablated − CE_intact (nats; > 0: the expert helps that category). Only
    categories present in ``blocks`` appear. The model runs in eval mode (restored after)."""
    if moe.category_ids is None:
        raise RuntimeError(f"intervention {moe.name!r}: prepare() it before the ablation")
    x, y = blocks[:, :-1], blocks[:, 1:]
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    was_training = model.training
    model.eval()
    cats = moe.category_ids.to(device)[x.reshape(-1)]  # [B·T]
    n_cats = len(moe.category_names)
    counts = torch.bincount(cats, minlength=n_cats).double()

    def token_ce() -> torch.Tensor:  # [B·T]
        logits = model(input_ids=x).logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               reduction="none")

    try:
        with moe.ablating(None, None):
            base = token_ce()
        out: dict[str, dict[str, float]] = {}
        for layer in layers if layers is not None else moe.layer_indices():
            for e in range(moe.cfg.n_experts):
                with moe.ablating(layer, e):
                    delta = (token_ce() - base).double()
                per_cat = delta.new_zeros(n_cats).index_add(0, cats, delta)
                row = {moe.category_names[c]: float(per_cat[c] / counts[c])
                       for c in range(n_cats) if counts[c] > 0}
                row["all"] = float(delta.mean())
                out[f"layer_{layer}/expert_{e}"] = row
    finally:
        model.train(was_training)
    return out


register_intervention("moe", MoE)
