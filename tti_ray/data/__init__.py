"""Offline-first data: bundled TinyStories + GPT-2 BPE, memory-mapped token cache."""

from tti_ray.data.batches import BlockSampler, eval_blocks, n_blocks
from tti_ray.data.tokens import DataError, TextTokenizer, TokenData, load_tokens, stories

__all__ = [
    "BlockSampler",
    "DataError",
    "TextTokenizer",
    "TokenData",
    "eval_blocks",
    "load_tokens",
    "n_blocks",
    "stories",
]
