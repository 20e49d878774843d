"""Resolve a run or checkpoint directory and load its HF model as trained (gates re-applied)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tti_ray.model import hf_modeling as hm


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory for a checkpoint or a run directory (``<run>/checkpoint``)."""
    path = Path(path)
    if (path / "checkpoint" / "config.json").exists() and not (path / "config.json").exists():
        path = path / "checkpoint"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json (not a checkpoint or run directory)")
    return path


def to_hf(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The checkpoint's HF causal LM in eval mode: ``TtiGPT2LMHeadModel`` (tti-ray's own copy of
    the class the checkpoint ships, so no ``trust_remote_code`` is needed) for a gated checkpoint,
    ``GPT2LMHeadModel`` otherwise."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    ckpt = checkpoint_dir(path)
    model_type = json.loads((ckpt / "config.json").read_text()).get("model_type")
    cls = hm.TtiGPT2LMHeadModel if model_type == hm.MODEL_TYPE else GPT2LMHeadModel
    hf_logging.disable_progress_bar()
    return cls.from_pretrained(ckpt).to(device).eval()


def checkpoint_tokenizer(path: str | Path, *, id_fallback: bool = True) -> Any:
    """A HF tokenizer in the model's own ids: the checkpoint's own
    (``AutoTokenizer.from_pretrained(checkpoint)``; every checkpoint without a ``data.vocab_size``
    remap has one) or else, with ``id_fallback``, :func:`id_tokenizer` (text = ids; for tools
    that insist on a tokenizer object, e.g. nnsight's pipeline), without it None."""
    from transformers import AutoTokenizer

    ckpt = checkpoint_dir(path)
    if (ckpt / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(ckpt)
    if not id_fallback:
        return None
    cfg = json.loads((ckpt / "config.json").read_text())
    vocab = int(cfg["vocab_size"])
    return id_tokenizer(vocab, int(cfg.get("eos_token_id") or vocab - 1))


def id_tokenizer(vocab_size: int, eos_id: int) -> Any:
    """A word-level tokenizer whose tokens are the model ids written ``<i>``: ``encode("<3> <7>")``
    is ``[3, 7]``; ``eos_id`` is the EOS and padding token. It is *not* a text tokenizer: it only
    lets id-level work go through tools that require a tokenizer object."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<{i}>": i for i in range(vocab_size)}
    tok = Tokenizer(WordLevel(vocab, unk_token=f"<{eos_id}>"))
    tok.pre_tokenizer = WhitespaceSplit()
    eos = f"<{eos_id}>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos)
