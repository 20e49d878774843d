"""Gated GPT-2 for plain Hugging Face loading: the ``trust_remote_code`` class of tti-ray
checkpoints.

This file is **self-contained** (torch + transformers only): :func:`tti_ray.train.checkpoint.
save_checkpoint` copies it into every checkpoint whose forward pass an architectural intervention
changes, as ``modeling_tti_gpt2.py``, and points ``config.json``'s ``auto_map`` at it, so that ::

    AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True)

returns the model as it was trained: GPT-2 with the TopK / L0 gates re-applied from
``config.json``'s ``tti_ray_gates`` (L0 gates as their deterministic eval-mode values, stored in
``model.safetensors``).

The same module classes are the gate sites of tti-ray's own models
(:func:`tti_ray.model.build_model` installs them), so a gate is a module in the forward path, not
a forward hook:

* ``transformer.h[i].mlp.act`` is a :class:`GatedSite` (the activation, then the gates): its output
  is the gated ``mlp_hidden``; nnsight's ``mlp.act.output`` and every forward hook see gated values;
* ``transformer.h[i].mlp.dropout`` is a :class:`GatedSite` too: its output is ``mlp_out`` (GPT-2's
  MLP ends with its dropout).

Loading a gated checkpoint with the plain ``GPT2LMHeadModel.from_pretrained`` fails instead of
running ungated: ``config.json`` stores the activation as ``"gelu_new [tti-ray gated ...]"``, which
HF's activation table does not know (``KeyError`` naming the fix); :class:`TtiGPT2Config` reads it
back. ``model_type`` is ``tti_gpt2``, so ``AutoModelForCausalLM`` without ``trust_remote_code``
refuses as well.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

MODEL_TYPE = "tti_gpt2"
MODULE_NAME = "modeling_tti_gpt2"  # the file name inside a checkpoint
GATES_KEY = "tti_ray_gates"
UNSUPPORTED_KEY = "tti_ray_unsupported"
#: appended to ``activation_function`` in config.json of gated checkpoints (see module docstring)
MARKER = (
    " [tti-ray gated model: load it with AutoModelForCausalLM.from_pretrained(path, "
    "trust_remote_code=True) or tti_ray.train.load_model(path)]"
)
#: the submodule of ``transformer.h[i].mlp`` that is each site's gate point
SITE_MODULES = {"mlp_hidden": "act", "mlp_out": "dropout"}


# -- gate modules ----------------------------------------------------------------------------------
class GatedSite(nn.Module):
    """``inner`` (the activation or the MLP's dropout), then each gate of ``gates`` in order.

    With no gates the output is ``inner``'s, bit for bit. Gates without parameters add nothing to
    the state dict, so tti-ray's models keep HF GPT-2's parameter names."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.gates = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        for gate in self.gates:
            out = gate(out)
        return out


class FnGate(nn.Module):
    """A gate computed by a function (tti-ray's training-time gates: TopK, sampled L0 gates)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn  # a plain callable, not a registered submodule: no parameters leak in

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.fn(a)


class TopKGate(nn.Module):
    """Keep the ``k_units`` entries of largest |a| per token (``mode: token``), or the
    round(k · a.numel()) largest of the whole tensor (``mode: batch``); zero the rest. Same
    operation as ``tti_ray.interventions.ops.topk_mask_values`` (ties broken by ``torch.topk``)."""

    def __init__(self, k: float, k_units: int, mode: str = "token") -> None:
        super().__init__()
        if mode not in ("token", "batch"):
            raise ValueError(f"TopK gate: unknown mode {mode!r}")
        self.k, self.k_units, self.mode = float(k), int(k_units), mode

    @staticmethod
    def _mask(a: torch.Tensor, k: int, dim: int) -> torch.Tensor:
        idx = a.abs().topk(k, dim=dim, sorted=False).indices
        return torch.zeros_like(a).scatter(dim, idx, a.gather(dim, idx))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.mode == "token":
            return self._mask(a, self.k_units, -1)
        keep = max(1, round(self.k * a.numel()))
        return self._mask(a.reshape(-1), keep, 0).reshape(a.shape)

    def extra_repr(self) -> str:
        return f"k={self.k}, k_units={self.k_units}, mode={self.mode}"


class FixedGate(nn.Module):
    """a · z with a stored per-unit gate z ``[D]`` (an L0 gate's deterministic eval value)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("z", torch.ones(width))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.z.to(a.dtype)


# -- sites -----------------------------------------------------------------------------------------
def install_gate_sites(model: nn.Module) -> nn.Module:
    """Wrap every block's ``mlp.act`` and ``mlp.dropout`` in a :class:`GatedSite` (idempotent)."""
    for block in model.transformer.h:
        for name in SITE_MODULES.values():
            mod = getattr(block.mlp, name)
            if not isinstance(mod, GatedSite):
                setattr(block.mlp, name, GatedSite(mod))
    return model


def gate_site(model: nn.Module, site: str, layer: int) -> GatedSite:
    """The :class:`GatedSite` whose output is ``site`` of block ``layer`` (installed if missing)."""
    if site not in SITE_MODULES:
        raise KeyError(f"site {site!r} cannot be gated (gate sites: {', '.join(SITE_MODULES)})")
    mlp = model.transformer.h[layer].mlp
    mod = getattr(mlp, SITE_MODULES[site])
    if not isinstance(mod, GatedSite):
        mod = GatedSite(mod)
        setattr(mlp, SITE_MODULES[site], mod)
    return mod


def gate_tensor_names(specs: list[dict[str, Any]]) -> list[str | None]:
    """The state-dict key of each spec's stored gate values (``None`` for TopK): the j-th gate at
    a site lives at ``transformer.h.<layer>.mlp.<act|dropout>.gates.<j>``."""
    seen: dict[tuple[str, int], int] = {}
    names: list[str | None] = []
    for s in specs:
        key = (s["site"], int(s["layer"]))
        j = seen.get(key, 0)
        seen[key] = j + 1
        prefix = f"transformer.h.{key[1]}.mlp.{SITE_MODULES[key[0]]}.gates.{j}"
        names.append(f"{prefix}.z" if s["type"] == "fixed" else None)
    return names


def apply_gate_specs(model: nn.Module, specs: list[dict[str, Any]], width: dict[str, int]) -> None:
    """Append one gate module per spec (``config.json``'s ``tti_ray_gates``), in order.

    ``width``: units per site (``mlp_hidden``: d_ff, ``mlp_out``: d_model), for stored gates."""
    for s in specs:
        site = gate_site(model, s["site"], int(s["layer"]))
        if s["type"] == "topk":
            site.gates.append(TopKGate(s["k"], s["k_units"], s.get("mode", "token")))
        elif s["type"] == "fixed":
            site.gates.append(FixedGate(width[s["site"]]))
        else:
            raise ValueError(f"{GATES_KEY}: unknown gate type {s['type']!r}")


def mark_activation(name: str) -> str:
    return name if name.endswith(MARKER) else name + MARKER


# -- the HF classes --------------------------------------------------------------------------------
class TtiGPT2Config(GPT2Config):
    """GPT-2 config plus ``tti_ray_gates`` (list of gate specs) and ``tti_ray_unsupported``
    (architectural interventions only tti-ray can re-apply). Reads the marked activation name
    back to the real one and writes it marked again."""

    model_type = MODEL_TYPE

    def __post_init__(self, **kwargs: Any) -> None:
        if self.activation_function.endswith(MARKER):
            self.activation_function = self.activation_function[: -len(MARKER)]
        kwargs.setdefault(GATES_KEY, [])
        kwargs.setdefault(UNSUPPORTED_KEY, [])
        super().__post_init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if out.get(GATES_KEY) or out.get(UNSUPPORTED_KEY):
            out["activation_function"] = mark_activation(out["activation_function"])
        return out


class TtiGPT2LMHeadModel(GPT2LMHeadModel):
    """``GPT2LMHeadModel`` with the checkpoint's gates in the forward path.

    Stored (L0) gates are their deterministic eval values whatever ``model.train()`` says: this
    class is for analysis, not for continuing training (use tti-ray's trainer for that)."""

    config_class = TtiGPT2Config
    config: TtiGPT2Config

    def __init__(self, config: TtiGPT2Config) -> None:
        unsupported = list(getattr(config, UNSUPPORTED_KEY, []) or [])
        if unsupported:
            raise ValueError(
                f"this checkpoint's forward pass uses {', '.join(unsupported)}, which only "
                "tti_ray.train.load_model re-applies; load it with tti-ray"
            )
        super().__init__(config)
        install_gate_sites(self)
        d_ff = config.n_inner or 4 * config.n_embd
        apply_gate_specs(
            self, list(getattr(config, GATES_KEY, []) or []),
            {"mlp_hidden": d_ff, "mlp_out": config.n_embd},
        )
