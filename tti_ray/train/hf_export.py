"""Make a checkpoint's ``config.json`` say what the model *is*: architectural interventions
recorded, gates re-applied by
``AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)``.

After ``save_pretrained`` has written the plain GPT-2 ``config.json`` + ``model.safetensors``,
:func:`write_hf_extras` adds

* ``tti_ray_interventions`` - every intervention's resolved config (all checkpoints that have any);

and, when an architectural intervention changes the forward pass ("gated" checkpoint):

* ``model_type: tti_gpt2``, ``architectures``, ``auto_map`` -> ``modeling_tti_gpt2.py`` (a copy of
  :mod:`tti_ray.model.hf_modeling`, self-contained) - the HF ``trust_remote_code`` mechanism;
* ``tti_ray_gates`` - gate specs in forward order (TopK: ``k``, ``k_units``, ``mode``; L0 gates as
  ``fixed`` gates whose eval-mode values are added to ``model.safetensors`` under the remote
  class's buffer names);
* ``tti_ray_unsupported`` - architectural interventions the remote class cannot re-apply (MoE,
  overcomplete SAE, bottleneck): it then refuses to build instead of running the wrong model;
* the activation name marked (see :data:`~tti_ray.model.hf_modeling.MARKER`), so that the plain
  ``GPT2LMHeadModel.from_pretrained`` raises ``KeyError`` instead of silently running ungated.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tti_ray.model import hf_modeling as hm


def gate_specs(
    interventions: Mapping[str, nn.Module],
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor], list[str]]:
    """(specs, tensors, unsupported) of ``interventions`` in attach order (architectural first,
    config order: :func:`tti_ray.interventions.registry.attach_all`), i.e. forward order."""
    ordered = sorted(interventions.items(), key=lambda kv: not kv[1].architectural)
    specs: list[dict[str, Any]] = []
    values: list[torch.Tensor | None] = []
    unsupported: list[str] = []
    for name, iv in ordered:
        gates = iv.portable_gates()
        if gates is None:
            unsupported.append(name)
            continue
        for g in gates:
            g = dict(g)
            values.append(g.pop("values", None))
            specs.append({"intervention": name, **g})
    tensors = {
        key: v.float().contiguous()
        for key, v in zip(hm.gate_tensor_names(specs), values, strict=True)
        if key is not None and v is not None
    }
    return specs, tensors, unsupported


def write_hf_extras(directory: Path, interventions: Mapping[str, nn.Module]) -> bool:
    """Amend ``directory``'s ``config.json`` (+ ``model.safetensors``, + the modeling file) as
    described in the module docstring. Returns whether the checkpoint is gated."""
    directory = Path(directory)
    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if interventions:
        cfg["tti_ray_interventions"] = {
            name: iv.cfg.model_dump(mode="json") for name, iv in interventions.items()
        }
    specs, tensors, unsupported = gate_specs(interventions)
    gated = bool(specs or unsupported)
    if gated:
        cfg.update(
            model_type=hm.MODEL_TYPE,
            architectures=["TtiGPT2LMHeadModel"],
            auto_map={
                "AutoConfig": f"{hm.MODULE_NAME}.TtiGPT2Config",
                "AutoModelForCausalLM": f"{hm.MODULE_NAME}.TtiGPT2LMHeadModel",
            },
            activation_function=hm.mark_activation(cfg.get("activation_function", "gelu_new")),
            **{hm.GATES_KEY: specs, hm.UNSUPPORTED_KEY: unsupported},
        )
        shutil.copyfile(hm.__file__, directory / f"{hm.MODULE_NAME}.py")
        if tensors:
            _add_tensors(directory / "model.safetensors", tensors)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return gated


def _add_tensors(path: Path, extra: dict[str, torch.Tensor]) -> None:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    clash = sorted(set(tensors) & set(extra))
    if clash:
        raise ValueError(f"{path}: gate tensors would overwrite model tensors ({clash[0]})")
    save_file({**tensors, **extra}, path, metadata={"format": "pt", **meta})
