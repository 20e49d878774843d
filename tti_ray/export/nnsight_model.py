"""nnsight: the gated HF model wrapped for tracing.

``to_nnsight(path)`` wraps :func:`tti_ray.export.to_hf`'s model (what
``AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)`` returns) in nnsight's
``TransformersModel(..., task="text-generation")`` (0.8's name for ``LanguageModel``, which is
deprecated there but works the same). Because the gates are modules in the forward path, the
gated ``mlp_hidden`` is read at ``model.transformer.h[i].mlp.act.output`` (and ``mlp_out`` at
``model.transformer.h[i].mlp.output``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tti_ray.export.hf import checkpoint_tokenizer, to_hf


def to_nnsight(
    path: str | Path, *, tokenizer: Any = None, device: str | torch.device = "cpu"
) -> Any:
    """nnsight ``TransformersModel`` of a checkpoint or run directory, gates applied.

    nnsight's pipeline needs a tokenizer object: by default the checkpoint's own, so
    ``model.trace("text")`` works; a checkpoint with a remapped vocabulary has none, and gets an
    id-level stand-in (:func:`tti_ray.export.hf.id_tokenizer`): trace tensors of token ids
    (``model.trace(ids)``) or pass ``tokenizer`` (one in the model's own ids)."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers.utils import logging as hf_logging

    model = to_hf(path, device)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(hf_logging.CRITICAL)  # the pipeline lists the classes it "supports"
    try:
        return TransformersModel(
            model, task="text-generation", tokenizer=tokenizer or checkpoint_tokenizer(path)
        )
    finally:
        hf_logging.set_verbosity(verbosity)
