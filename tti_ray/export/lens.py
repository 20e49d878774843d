"""TransformerLens: a ``HookedTransformer`` built from a checkpoint, with its gates in the forward
path.

The config is written by hand (TransformerLens's own GPT-2 converter assumes d_ff = 4·d_model);
the weights go through TransformerLens's ``convert_gpt2_weights`` and are loaded *unprocessed*
(no LayerNorm folding or centring), so every hook reads what the HF model computes. Each gated site
gets a :class:`GatedHookPoint` in place of its hook point (``blocks.{i}.mlp.hook_post`` for
``mlp_hidden``, ``blocks.{i}.hook_mlp_out`` for ``mlp_out``): the gates are part of the hook
point's forward, so ``run_with_cache``, ``run_with_hooks`` and ``reset_hooks(including_permanent=
True)`` all see or keep the gated values.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tti_ray.export.hf import checkpoint_tokenizer, to_hf
from tti_ray.model import TL_HOOK_NAMES
from tti_ray.model import hf_modeling as hm


def _gated_hook_point_cls() -> type:
    from transformer_lens.hook_points import HookPoint

    class GatedHookPoint(HookPoint):
        """A hook point whose forward applies the site's gates (then hooks see the result)."""

        def __init__(self, gates: nn.ModuleList) -> None:
            super().__init__()
            self.gates = gates

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for gate in self.gates:
                x = gate(x)
            return x

    return GatedHookPoint


def tl_config(hf_cfg: Any, device: str | torch.device = "cpu") -> Any:
    """``HookedTransformerConfig`` of a (tti-ray) GPT-2 HF config, ``d_mlp = n_inner``."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=hf_cfg.n_layer,
        d_model=hf_cfg.n_embd,
        n_heads=hf_cfg.n_head,
        d_head=hf_cfg.n_embd // hf_cfg.n_head,
        d_mlp=hf_cfg.n_inner or 4 * hf_cfg.n_embd,
        d_vocab=hf_cfg.vocab_size,
        n_ctx=hf_cfg.n_positions,
        act_fn=hf_cfg.activation_function,
        eps=hf_cfg.layer_norm_epsilon,
        normalization_type="LN",
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False,  # tti-ray blocks carry no BOS
        device=str(device),
        dtype=torch.float32,
    )


def to_transformer_lens(
    path: str | Path, *, device: str | torch.device = "cpu", tokenizer: Any = None
) -> Any:
    """``HookedTransformer`` of a checkpoint or run directory, gates applied, eval mode.

    ``tokenizer`` defaults to the checkpoint's own (so ``to_tokens``/``to_string`` work on text);
    a checkpoint with a remapped vocabulary has none, and then tensors of token ids are the
    input (or pass a tokenizer in the model's own ids)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    hf = to_hf(path)
    cfg = tl_config(hf.config, device)
    if tokenizer is None:
        tokenizer = checkpoint_tokenizer(path, id_fallback=False)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    with torch.no_grad():
        state = {k: v.detach().clone() for k, v in convert_gpt2_weights(hf, cfg).items()}
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )
    gated_cls = _gated_hook_point_cls()
    for site in hm.SITE_MODULES:
        template = TL_HOOK_NAMES[site]
        for layer in range(cfg.n_layers):
            gates = hm.gate_site(hf, site, layer).gates
            if len(gates) == 0:
                continue
            name = template.format(layer=layer)
            parent_name, attr = name.rsplit(".", 1)
            setattr(model.get_submodule(parent_name), attr, gated_cls(copy.deepcopy(gates)))
    model.setup()
    return model.to(device).eval()
