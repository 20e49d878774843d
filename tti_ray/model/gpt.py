"""GPT-2 style model (HF ``GPT2LMHeadModel``, SDPA attention) with named hook sites.

Sites per layer ``i`` (``transformer.h[i]``):

* ``mlp_hidden`` - output of ``mlp.act``: the post-activation hidden units, shape ``[B, T, d_ff]``;
* ``mlp_out``    - output of ``mlp`` (after ``c_proj`` and dropout), shape ``[B, T, d_model]``;
* ``resid_post`` - output of the whole block (residual stream), shape ``[B, T, d_model]``.

Capture is opt-in: :func:`capture` registers forward hooks only for the requested sites and removes
them on exit, so an uninstrumented forward pays nothing.

Gates (TopK, L0 gates: :func:`add_site_gate`) are modules in the forward path: every block's
``mlp.act`` and ``mlp.dropout`` is a :class:`~tti_ray.model.hf_modeling.GatedSite` (the original
module, then its gates; with no gate the output is the original's, bit for bit), so captures,
forward hooks, nnsight's ``mlp.act.output`` and exported checkpoints all see gated values. A gate
therefore acts before every hook on its site, whatever the attach order. Other architectural
interventions (MoE routing, SAE splicing, bottlenecks) persistently replace a site's output with a
forward hook (:func:`add_site_transform`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from tti_ray.config.schema import ModelConfig
from tti_ray.model.hf_modeling import FnGate, gate_site, install_gate_sites

HOOK_SITES = ("mlp_hidden", "mlp_out", "resid_post")
#: each site's hook name in TransformerLens's ``HookedTransformer`` (SAELens's ``hook_name``)
TL_HOOK_NAMES = {
    "mlp_hidden": "blocks.{layer}.mlp.hook_post",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "resid_post": "blocks.{layer}.hook_resid_post",
}


def hf_config(cfg: ModelConfig, vocab_size: int) -> GPT2Config:
    """The HF config that ``GPT2LMHeadModel.from_pretrained`` will read back."""
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.seq_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.ff_dim,
        activation_function=cfg.activation,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
        use_cache=False,
    )


def build_model(cfg: ModelConfig, vocab_size: int) -> GPT2LMHeadModel:
    """A freshly initialised model (HF's GPT-2 init), SDPA attention, with empty gate sites
    (parameterless wrappers: same parameters, state dict and outputs as HF's GPT-2)."""
    hf_cfg = hf_config(cfg, vocab_size)
    hf_cfg._attn_implementation = "sdpa"
    return install_gate_sites(GPT2LMHeadModel(hf_cfg))


def site_module(model: GPT2LMHeadModel, site: str, layer: int) -> nn.Module:
    """The module whose forward output *is* the site's activation."""
    block = model.transformer.h[layer]
    if site == "mlp_hidden":
        return block.mlp.act
    if site == "mlp_out":
        return block.mlp
    if site == "resid_post":
        return block
    raise KeyError(f"unknown site {site!r} (known: {', '.join(HOOK_SITES)})")


def _first(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[index,return-value]


@contextmanager
def capture(
    model: GPT2LMHeadModel, sites: Iterable[tuple[str, int]], detach: bool = False
) -> Iterator[dict[tuple[str, int], torch.Tensor]]:
    """Record activations at ``sites`` during forwards inside the ``with`` block.

    Yields a dict ``{(site, layer): Tensor[B, T, D]}`` filled by each forward (the latest forward
    wins). With ``detach=False`` the tensors stay in the autograd graph (loss terms need that)."""
    store: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    for site, layer in dict.fromkeys(sites):

        def hook(_m: nn.Module, _i: object, out: object, key=(site, layer)) -> None:
            t = _first(out)
            store[key] = t.detach() if detach else t

        handles.append(site_module(model, site, layer).register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def add_site_transform(
    model: GPT2LMHeadModel,
    site: str,
    layer: int,
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> torch.utils.hooks.RemovableHandle:
    """Persistently replace the site's output ``a`` by ``fn(a)`` (architectural interventions)."""
    if site == "resid_post":

        def block_hook(_m: nn.Module, _i: object, out: object) -> object:
            if isinstance(out, tuple):
                return (fn(out[0]), *out[1:])
            return fn(out)  # type: ignore[arg-type]

        return site_module(model, site, layer).register_forward_hook(block_hook)

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        return fn(out)

    return site_module(model, site, layer).register_forward_hook(hook)


class _GateHandle:
    """Removes one gate from its site (the ``RemovableHandle`` protocol of interventions)."""

    def __init__(self, site: nn.Module, gate: nn.Module) -> None:
        self.site, self.gate = site, gate

    def remove(self) -> None:
        gates = self.site.gates
        for i, g in enumerate(gates):
            if g is self.gate:
                del gates[i]
                return


def add_site_gate(
    model: GPT2LMHeadModel,
    site: str,
    layer: int,
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> _GateHandle:
    """Append the gate ``a -> fn(a)`` to the site's :class:`GatedSite` (``mlp_hidden``: the
    output of ``mlp.act``; ``mlp_out``: of ``mlp.dropout``, the MLP's last op). Gates at one site
    run in the order they were added; ``handle.remove()`` takes the gate out again."""
    gated = gate_site(model, site, layer)
    gate = FnGate(fn)
    gated.gates.append(gate)
    return _GateHandle(gated, gate)


def count_params(model: nn.Module, non_embedding: bool = True) -> int:
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return n
