"""Text tokenizers: the two bundled byte-level BPEs, any HF tokenizer, and their HF export.

* ``tinystories-bpe`` (the tiny preset's): a byte-level BPE with 8,192 ids trained with HF
  ``tokenizers`` on the bundled TinyStories *train* split (``assets/tinystories_bpe``; rebuilt
  bit for bit by ``python -m tti_ray.data.build_bpe``). 8,191 ids come from training (the
  256 byte symbols + 7,935 merges, pairs seen at least twice) and ``<|endoftext|>`` is the last
  id, 8191, as in GPT-2. Byte-level, so every text encodes and decodes back exactly.
* ``gpt2``: OpenAI's GPT-2 BPE (``assets/gpt2``, 50,257 ids), the seed experiments' tokenizer and
  the paper preset's.
* ``hf:<name>``: anything ``transformers.AutoTokenizer`` loads.

Why a tokenizer of its own for the tiny preset: it used to keep the 8,191 most frequent GPT-2 ids
of the sample plus one UNK id. That remap cannot be written as a HF tokenizer (BPE merges produce
the dropped ids, and no post-processor renumbers ids), so its checkpoints could not ship one, and
every rare word became UNK (which doubled as end-of-text). A BPE trained at the same size has no
UNK, loads with ``AutoTokenizer.from_pretrained(checkpoint)`` and no remote code, and spends its
8,192 ids on this corpus's own words. The remap is still available (``tokenizer: gpt2`` with a
``vocab_size``) for comparison with older runs; its checkpoints ship no tokenizer.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tti_ray.cli import UserError

if TYPE_CHECKING:
    from tti_ray.config.schema import DataConfig

ASSETS = Path(__file__).parent / "assets"
EOT = "<|endoftext|>"
TINYSTORIES_BPE = "tinystories-bpe"
BUNDLED = ("gpt2", TINYSTORIES_BPE)
BPE_FILE = ASSETS / "tinystories_bpe" / "tokenizer.json"
BPE_SIZE = 8192
BPE_MIN_FREQUENCY = 2


class DataError(UserError):
    """Data or tokenizer cannot be loaded (one line, names the config key)."""

    names_config_key = True  # a CLI puts the config file in front of the message


def bundled_stories(split: str) -> list[str]:
    """The bundled TinyStories sample's stories (``train`` or ``valid``), stripped."""
    path = ASSETS / "tinystories" / f"{'train' if split == 'train' else 'valid'}.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    return [s.strip() for s in text.split(EOT) if s.strip()]


def train_tinystories_bpe() -> str:
    """Train the bundled byte-level BPE on the bundled train split; its ``tokenizer.json`` text.

    Deterministic (same text, same file). ``<|endoftext|>`` is added after training so that it
    takes the last id, as in GPT-2."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        bundled_stories("train"),
        vocab_size=BPE_SIZE - 1,
        min_frequency=BPE_MIN_FREQUENCY,
        special_tokens=[],
        show_progress=False,
    )
    tok.add_special_tokens([EOT])
    assert tok.get_vocab_size() == BPE_SIZE and tok.token_to_id(EOT) == BPE_SIZE - 1
    return tok.to_str()


class TextTokenizer:
    """Encode text to tokenizer ids and decode back, whichever backend: ``TextTokenizer(name)`` or
    ``TextTokenizer(data_config)`` (its ``tokenizer``)."""

    def __init__(self, spec: str | DataConfig) -> None:
        name = spec if isinstance(spec, str) else spec.tokenizer
        self.name = name
        self._hf: Any = None
        if name in BUNDLED:
            from tokenizers import ByteLevelBPETokenizer, Tokenizer

            if name == "gpt2":
                gpt2 = ASSETS / "gpt2"
                bpe = ByteLevelBPETokenizer(str(gpt2 / "vocab.json"), str(gpt2 / "merges.txt"))
                bpe.add_special_tokens([EOT])
                self._tok = Tokenizer.from_str(bpe.to_str())
            else:
                self._tok = Tokenizer.from_file(str(BPE_FILE))
            self.eot_id = self._tok.token_to_id(EOT)
            self.size = self._tok.get_vocab_size()
        else:
            try:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(name.removeprefix("hf:"))
            except Exception as e:  # noqa: BLE001
                raise DataError(
                    f"data.tokenizer: cannot load {name!r} ({type(e).__name__}); "
                    f"offline, use data.tokenizer={TINYSTORIES_BPE} or gpt2 (bundled)"
                ) from None
            self.eot_id = self._hf.eos_token_id if self._hf.eos_token_id is not None else 0
            self.size = len(self._hf)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._hf is not None:
            return self._hf(texts, add_special_tokens=False)["input_ids"]
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode_ids(self, ids: list[int]) -> list[str]:
        """Each id decoded on its own (for per-token displays)."""
        if self._hf is not None:
            return [self._hf.decode([i]) for i in ids]
        return [self._tok.decode([i], skip_special_tokens=False) for i in ids]

    def hf(self, model_max_length: int | None = None) -> Any:
        """This tokenizer as a ``transformers`` tokenizer (same ids), for saving beside a model.

        The bundled BPEs become a ``PreTrainedTokenizerFast`` whose BOS, EOS, UNK and padding
        token is ``<|endoftext|>`` (GPT-2's convention; padding is never scored)."""
        if self._hf is not None:
            return self._hf
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(
            tokenizer_object=self._tok,
            bos_token=EOT,
            eos_token=EOT,
            unk_token=EOT,
            pad_token=EOT,
            model_max_length=model_max_length or int(1e30),
            clean_up_tokenization_spaces=False,
        )
        return tok


@functools.lru_cache(maxsize=1)
def bpe_file_hash() -> str:
    """SHA-256 prefix of the shipped BPE file (read once per process; part of the cache key)."""
    return hashlib.sha256(BPE_FILE.read_bytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def cached_tokenizer(name: str) -> TextTokenizer:
    """``TextTokenizer(name)``, loaded once per process."""
    return TextTokenizer(name)


@functools.lru_cache(maxsize=4)
def hf_tokenizer_files(name: str, model_max_length: int | None) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes for tokenizer ``name`` (built once per process, then
    copied into every checkpoint)."""
    with tempfile.TemporaryDirectory() as d:
        cached_tokenizer(name).hf(model_max_length).save_pretrained(d)
        return {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}
