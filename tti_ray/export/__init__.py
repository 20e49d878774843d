"""Checkpoints into the interpretability ecosystem, gates included (issue 19).

* :func:`to_hf` - the HF model (``TtiGPT2LMHeadModel`` for gated checkpoints; same result as
  ``AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)``);
* :func:`to_transformer_lens` - a TransformerLens ``HookedTransformer`` with the gates in place;
* :func:`to_nnsight` - an nnsight model whose ``transformer.h[i].mlp.act`` output is gated.

The SAELens export of SAEs lives with the SAEs (:mod:`tti_ray.sae.saelens`). Each client library
is imported only when its function is called.
"""

from tti_ray.export.hf import checkpoint_dir, to_hf
from tti_ray.export.lens import to_transformer_lens
from tti_ray.export.nnsight_model import to_nnsight

__all__ = ["checkpoint_dir", "to_hf", "to_nnsight", "to_transformer_lens"]
