"""Write a trained SAE as a SAELens directory (``cfg.json`` + ``sae_weights.safetensors``), so that
``sae_lens.SAE.load_from_disk(dir)`` opens it with no glue.

Architecture map: tti-ray ``topk`` -> SAELens ``topk`` (``k``), ``relu`` -> ``standard``. Both
compute f = σ((x − b_dec) W_enc + b_enc), x̂ = f W_dec + b_dec with SAELens's
``apply_b_dec_to_input``; tti-ray's input scale s (:class:`~tti_ray.sae.models.SAE`,
``normalize_input``) is folded into the weights the way SAELens folds its own activation-norm
scaling factor: W_enc' = s W_enc, b_dec' = b_dec / s, W_dec' = W_dec / s, b_enc' = b_enc. The codes
f are then *identical* to tti-ray's ``sae.encode(x)`` and x̂ to ``sae.decode(f)``; SAELens's
``normalize_activations`` is ``none``. (Decoder rows then have norm 1/s, so
``rescale_acts_by_decoder_norm`` stays ``false``.)

``metadata.hook_name`` is the site's TransformerLens hook (``blocks.{i}.mlp.hook_post`` for
``mlp_hidden``, ``blocks.{i}.hook_mlp_out`` for ``mlp_out``), the model to run it with being
:func:`tti_ray.export.to_transformer_lens` of the checkpoint; provenance (checkpoint path, step,
SHA-256 of its weights, the tti-ray SAE config and input scale) sits in ``metadata`` too, under
``tti_ray_*`` keys. Writing needs no SAELens install.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tti_ray.model import TL_HOOK_NAMES
from tti_ray.sae.models import SAE

#: the SAELens release whose on-disk format (6.x ``cfg.json``) this writer follows (tested)
SAELENS_FORMAT_VERSION = "6.54.12"
ARCHITECTURES = {"topk": "topk", "relu": "standard"}
CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"


def checkpoint_sha256(directory: str | Path) -> str:
    """SHA-256 over the checkpoint's weight files (``model.safetensors``, then
    ``interventions.safetensors`` if present): what the SAE's activations depend on."""
    h = hashlib.sha256()
    for name in ("model.safetensors", "interventions.safetensors"):
        path = Path(directory) / name
        if path.exists():
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def folded_weights(sae: SAE) -> dict[str, torch.Tensor]:
    """SAELens state dict with the input scale folded in (see module docstring)."""
    s = sae.input_scale.float()
    return {
        "W_enc": (sae.W_enc.float() * s).contiguous(),
        "b_enc": sae.b_enc.float().clone(),
        "W_dec": (sae.W_dec.float() / s).contiguous(),
        "b_dec": (sae.b_dec.float() / s).contiguous(),
    }


def saelens_cfg(
    sae: SAE, *, site: str, layer: int, context_size: int, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``cfg.json`` of a SAELens 6 inference SAE for ``sae`` at ``(site, layer)``."""
    kind = sae.cfg.kind
    if kind not in ARCHITECTURES:
        raise ValueError(f"SAE kind {kind!r} has no SAELens architecture")
    cfg: dict[str, Any] = {
        "architecture": ARCHITECTURES[kind],
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if kind == "topk":
        cfg.update(k=int(sae.cfg.k), rescale_acts_by_decoder_norm=False)
    cfg["metadata"] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        "model_class_name": "HookedTransformer",
        "model_name": "tti-ray checkpoint (tti_ray.export.to_transformer_lens)",
        "hook_name": TL_HOOK_NAMES[site].format(layer=layer),
        "hook_head_index": None,
        "prepend_bos": False,
        "context_size": context_size,
        "tti_ray_site": site,
        "tti_ray_layer": layer,
        "tti_ray_input_scale": float(sae.input_scale),
        "tti_ray_sae_config": sae.cfg.model_dump(mode="json"),
        **(provenance or {}),
    }
    return cfg


def save_saelens(
    sae: SAE,
    directory: str | Path,
    *,
    site: str,
    layer: int,
    context_size: int,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``directory/cfg.json`` and ``directory/sae_weights.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = saelens_cfg(sae, site=site, layer=layer, context_size=context_size, provenance=provenance)
    save_file({k: v.cpu() for k, v in folded_weights(sae).items()}, directory / WEIGHTS_FILE)
    (directory / CFG_FILE).write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    return directory


def provenance(loaded_run: Any) -> dict[str, Any]:
    """``tti_ray_checkpoint`` / ``_step`` / ``_checkpoint_sha256`` of a ``LoadedRun`` (empty for a
    run-like object without a directory)."""
    directory = getattr(loaded_run, "directory", None)
    if directory is None:
        return {}
    return {
        "tti_ray_checkpoint": str(Path(directory).resolve()),
        "tti_ray_step": int(getattr(loaded_run, "step", 0)),
        "tti_ray_checkpoint_sha256": checkpoint_sha256(directory),
    }
