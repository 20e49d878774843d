"""Checkpoints: safetensors only, never pickles.

A checkpoint directory holds

* ``config.json`` + ``model.safetensors`` - HF ``save_pretrained`` output, amended by
  :func:`tti_ray.train.hf_export.write_hf_extras`: an ungated checkpoint loads with
  ``transformers.GPT2LMHeadModel.from_pretrained(dir)``; one whose forward an architectural
  intervention changes (TopK, L0 gates, ...) records it in ``config.json`` and ships
  ``modeling_tti_gpt2.py``, so ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``
  gives the gated model and the plain GPT-2 class refuses it. :func:`load_model` re-applies every
  intervention from ``run_config.yaml``;
* ``interventions.safetensors`` - parameters and buffers of the interventions (L0 gate logits, a
  joint SAE, ...);
* ``optimizer.safetensors`` + ``train_state.json`` - AdamW state tensors, param-group settings,
  step and RNG states (torch CPU/CUDA RNG as uint8 tensors), for exact resume;
* ``tokenizer.json`` + ``tokenizer_config.json`` - the run's tokenizer in HF's layout, so
  ``AutoTokenizer.from_pretrained(dir)`` encodes and decodes in the model's own ids (written when
  the model's ids are the tokenizer's, i.e. no ``data.vocab_size`` remap);
* ``run_config.yaml`` - the resolved run config; ``token_map.json`` - end-of-text id and the
  model-id → tokenizer-id map (``keep_ids``), and why no tokenizer was saved if none was.

Writes go to a temporary sibling directory that is renamed into place, so a kill mid-write leaves
the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tti_ray.cli import UserError
from tti_ray.config import RunConfig, load_config
from tti_ray.data import TokenData, load_tokens
from tti_ray.data.tokens import save_tokenizer
from tti_ray.interventions import build_interventions
from tti_ray.interventions.registry import attach_all
from tti_ray.model import build_model
from tti_ray.train.hf_export import write_hf_extras

REQUIRED = ("config.json", "model.safetensors", "run_config.yaml")


class CheckpointError(UserError):
    """A checkpoint that cannot be used (one line, names the file)."""


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    for idx, kv in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(kv)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    interventions: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    cfg: RunConfig,
    tokens: TokenData,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to ``directory`` atomically (tmp dir + rename)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _quiet_hf()
    model.save_pretrained(tmp, safe_serialization=True)
    write_hf_extras(tmp, interventions)
    iv_state = {k: v.detach().cpu().contiguous() for k, v in interventions.state_dict().items()}
    save_file(iv_state, tmp / "interventions.safetensors")
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    save_file({**opt_tensors}, tmp / "optimizer.safetensors")
    save_file(rng_state(), tmp / "rng.safetensors")
    state = {"step": step, "optimizer": opt_meta, **(extra or {})}
    (tmp / "train_state.json").write_text(json.dumps(state, indent=1))
    (tmp / "run_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    save_tokenizer(tmp, cfg.data, tokens, model_max_length=cfg.model.seq_len)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _check_dir(directory: Path) -> None:
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory")
    missing = [f for f in REQUIRED if not (directory / f).exists()]
    if missing:
        raise CheckpointError(f"{directory}: incomplete checkpoint (missing {', '.join(missing)})")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None


def read_train_state(directory: Path) -> dict[str, Any]:
    """``train_state.json`` as written by :func:`save_checkpoint`, or a one-line error."""
    path = directory / "train_state.json"
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0][:160]})") from None
    step = state.get("step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: not a train state (no step count)")
    return state


def load_weights(
    directory: Path, model: nn.Module, interventions: nn.Module
) -> None:
    """Load model + intervention weights, with a one-line error on shape mismatch."""
    weights = _load_tensors(directory / "model.safetensors")
    own = model.state_dict()
    if "lm_head.weight" not in weights and "lm_head.weight" in own:
        weights["lm_head.weight"] = weights["transformer.wte.weight"]
    for k, v in weights.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(
                f"{directory / 'model.safetensors'}: {k}: shape {tuple(v.shape)} does not match "
                f"the configured model's {tuple(own[k].shape)}"
            )
    missing = sorted(set(own) - set(weights))
    if missing:
        raise CheckpointError(
            f"{directory / 'model.safetensors'}: missing tensors ({', '.join(missing[:3])}...)"
        )
    model.load_state_dict({k: weights[k] for k in own}, strict=True)
    iv_path = directory / "interventions.safetensors"
    if iv_path.exists():
        iv = _load_tensors(iv_path)
        try:
            interventions.load_state_dict(iv, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{iv_path}: {str(e).splitlines()[0]}") from None


def load_train_state(
    directory: Path, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore optimizer state and RNG; return ``train_state.json``."""
    state = read_train_state(directory)
    tensors = _load_tensors(directory / "optimizer.safetensors")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{directory / 'train_state.json'}: optimizer state does not fit this run "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from None
    set_rng_state(_load_tensors(directory / "rng.safetensors"))
    return state


@dataclass
class LoadedRun:
    """A checkpoint ready for analysis: model in eval mode with interventions re-attached."""

    model: nn.Module
    interventions: nn.Module
    cfg: RunConfig
    tokens: TokenData
    step: int
    directory: Path


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load a checkpoint written by :func:`save_checkpoint` (or a run dir containing one).

    Rebuilds the model from ``run_config.yaml``, loads the weights, re-applies architectural
    interventions, and maps the token data (tokenizing into the cache if needed)."""
    directory = Path(directory)
    if (directory / "checkpoint").is_dir() and not (directory / "model.safetensors").exists():
        directory = directory / "checkpoint"
    _check_dir(directory)
    cfg = load_config(directory / "run_config.yaml")
    tokens = load_tokens(cfg.data)
    model = build_model(cfg.model, tokens.vocab_size)
    ivs = build_interventions(cfg.interventions, cfg.model)
    for iv in ivs.values():
        iv.prepare(tokens)
    load_weights(directory, model, ivs)
    attach_all(ivs, model)
    model.to(device).eval()
    ivs.to(device).eval()
    step = 0
    if (directory / "train_state.json").exists():
        step = read_train_state(directory)["step"]
    return LoadedRun(model, ivs, cfg, tokens, step, directory)
