"""A synthetic corpus with known generative factors, for disentanglement metrics (issue #11).

Every sentence is generated from a template by four factors, each realised in words the model
must read to recover it:

* ``tense``     - present / past: verb form (``plays`` / ``played``) and copula (``is`` / ``was``);
* ``sentiment`` - positive / negative: the adjective (``happy`` / ``sad``, ...);
* ``topic``     - park / food / school / sea: the verb phrase (``plays on the swing``,
  ``bakes a cake``, ``draws a picture``, ``swims in the sea``);
* ``number``    - singular / plural: the subject (``dog`` / ``dogs``), verb agreement in the
  present tense and the copula (``is`` / ``are``, ``was`` / ``were``).

Nuisance choices (template, subject noun, verb phrase, adjective within its sentiment) are drawn
from a seeded NumPy generator, so the corpus is a pure function of ``(n_per_cell, seed)``. It is
balanced exactly: each of the 2·2·4·2 = 32 factor cells holds ``n_per_cell`` sentences.

Every word is chosen so that its GPT-2 BPE pieces are among the 8,191 most frequent ids of the
bundled TinyStories sample (the tiny preset's remapped vocabulary): the only word not preceded by
a space is the sentence-initial ``The`` (most unspaced forms are out of that vocabulary).
``tests/data`` checks that the corpus encodes without UNK under that vocabulary.

The corpus is the probe set of the ``bottleneck`` intervention (MIG/SAP of its latents); it is not
a ``data.source`` (that would need a third source kind in ``tti_ray.data.tokens``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from tti_ray.data.tokens import TextTokenizer, TokenData

FACTORS: tuple[str, ...] = ("tense", "sentiment", "topic", "number")
FACTOR_VALUES: dict[str, tuple[str, ...]] = {
    "tense": ("present", "past"),
    "sentiment": ("positive", "negative"),
    "topic": ("park", "food", "school", "sea"),
    "number": ("singular", "plural"),
}

#: subject nouns, (singular, plural)
NOUNS: tuple[tuple[str, str], ...] = (
    ("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("boy", "boys"),
    ("girl", "girls"), ("kid", "kids"), ("friend", "friends"), ("frog", "frogs"),
)
#: per sentiment: adjectives that read well both before a noun and after a copula
ADJECTIVES: dict[str, tuple[str, ...]] = {
    "positive": ("happy", "glad", "proud", "excited"),
    "negative": ("sad", "angry", "upset", "lonely"),
}
#: per topic: (base form, 3rd person singular, past, objects/places)
VERBS: dict[str, tuple[tuple[str, str, str, tuple[str, ...]], ...]] = {
    "park": (
        ("play", "plays", "played", ("in the park", "on the swing", "with a ball")),
        ("run", "runs", "ran", ("on the grass", "around the tree", "in the park")),
        ("jump", "jumps", "jumped", ("on the grass", "over the ball")),
    ),
    "food": (
        ("eat", "eats", "ate", ("a cake", "some bread", "an apple")),
        ("bake", "bakes", "baked", ("a cake", "some bread", "a pie")),
        ("taste", "tastes", "tasted", ("the soup", "the cookies")),
    ),
    "school": (
        ("write", "writes", "wrote", ("a story at school", "some letters")),
        ("draw", "draws", "drew", ("a picture", "a picture at school")),
        ("learn", "learns", "learned", ("new words", "the numbers at school")),
    ),
    "sea": (
        ("swim", "swims", "swam", ("in the sea", "in the water")),
        ("sail", "sails", "sailed", ("a boat on the sea",)),
        ("find", "finds", "found", ("a shell on the beach", "a fish in the sea")),
    ),
}
#: {adj} {noun} {be} {verb} {obj}; every template realises all four factors
TEMPLATES: tuple[str, ...] = (
    "The {adj} {noun} {verb} {obj}.",
    "The {noun} {be} {adj} and {verb} {obj}.",
    "The {noun} {verb} {obj} and {be} very {adj}.",
)
BE = {("present", "singular"): "is", ("present", "plural"): "are",
      ("past", "singular"): "was", ("past", "plural"): "were"}


@dataclass(frozen=True)
class FactorCorpus:
    """``texts[i]`` was generated with factor values ``labels[i]``.

    ``labels`` is ``int64 [N, len(FACTORS)]``: column k indexes ``FACTOR_VALUES[FACTORS[k]]``."""

    texts: list[str]
    labels: np.ndarray  # [N, F]
    factors: tuple[str, ...] = FACTORS

    def __len__(self) -> int:
        return len(self.texts)


def sentence(tense: str, sentiment: str, topic: str, number: str, rng: np.random.Generator
             ) -> str:
    """One sentence for the given factor values, nuisance words drawn from ``rng``."""
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    noun = NOUNS[rng.integers(len(NOUNS))][number == "plural"]
    base, third, past, objects = VERBS[topic][rng.integers(len(VERBS[topic]))]
    verb = past if tense == "past" else (third if number == "singular" else base)
    return template.format(
        adj=ADJECTIVES[sentiment][rng.integers(len(ADJECTIVES[sentiment]))],
        noun=noun,
        be=BE[(tense, number)],
        verb=verb,
        obj=objects[rng.integers(len(objects))],
    )


def factor_corpus(n_per_cell: int = 32, seed: int = 0) -> FactorCorpus:
    """``n_per_cell`` sentences for each of the 32 factor cells, shuffled (seeded)."""
    if n_per_cell < 1:
        raise ValueError(f"n_per_cell must be >= 1 (got {n_per_cell})")
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for idx in itertools.product(*(range(len(FACTOR_VALUES[f])) for f in FACTORS)):
        values = [FACTOR_VALUES[f][i] for f, i in zip(FACTORS, idx, strict=True)]
        for _ in range(n_per_cell):
            texts.append(sentence(*values, rng=rng))
            labels.append(idx)
    order = rng.permutation(len(texts))
    return FactorCorpus([texts[i] for i in order], np.asarray(labels, dtype=np.int64)[order])


def vocabulary() -> list[str]:
    """Every word the templates can emit (for vocabulary checks)."""
    words = {w for t in TEMPLATES for w in t.replace(".", "").split() if "{" not in w}
    words |= {w for pair in NOUNS for w in pair}
    words |= {w for adjs in ADJECTIVES.values() for w in adjs}
    words |= set(BE.values())
    for verbs in VERBS.values():
        for base, third, past, objects in verbs:
            words |= {base, third, past}
            words |= {w for o in objects for w in o.split()}
    return sorted(words)


# -- encoding into model ids ----------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedCorpus:
    """Model-id batch of a corpus: row i is ``[eot, sentence_i tokens, eot padding]``.

    ``mask[i, t]`` is True on sentence i's own tokens (not on the leading end-of-text, which the
    training stream also puts before every story, nor on padding). Right padding is harmless in a
    causal model: no real token attends to it."""

    ids: torch.Tensor  # [N, T] int64 model ids
    mask: torch.Tensor  # [N, T] bool
    n_unk: int  # sentence tokens that map to the UNK id
    n_truncated: int  # sentences cut to fit max_len


def model_id_map(keep_ids: np.ndarray, tokenizer_size: int) -> tuple[np.ndarray, int | None]:
    """(lut, unk): ``lut[tokenizer_id]`` = model id (``unk`` for ids outside the vocabulary);
    ``unk`` is None for an identity map (no UNK slot)."""
    keep = np.asarray(keep_ids, dtype=np.int64)
    unk_pos = np.flatnonzero(keep < 0)
    unk = int(unk_pos[0]) if unk_pos.size else None
    size = max(tokenizer_size, int(keep.max()) + 1)
    lut = np.full(size, -1 if unk is None else unk, dtype=np.int64)
    valid = keep >= 0
    lut[keep[valid]] = np.flatnonzero(valid)
    return lut, unk


def encode_corpus(
    corpus: FactorCorpus,
    tokens: TokenData,
    tokenizer: TextTokenizer,
    max_len: int | None = None,
) -> EncodedCorpus:
    """Tokenize ``corpus`` with the run's tokenizer and map it to the run's model ids
    (``tokens.keep_ids``). Rows longer than ``max_len`` (the model's ``seq_len``) are cut."""
    lut, unk = model_id_map(tokens.keep_ids, tokenizer.size)
    rows, n_unk, n_cut = [], 0, 0
    for ids in tokenizer.encode_batch(corpus.texts):
        m = lut[np.asarray(ids, dtype=np.int64)] if ids else np.zeros(0, np.int64)
        if (m < 0).any():  # identity map and an id beyond the model's vocabulary
            raise ValueError("tokenizer ids outside the model vocabulary (no UNK slot)")
        n_unk += int((m == unk).sum()) if unk is not None else 0
        row = [tokens.eot_id, *m.tolist()]
        if max_len is not None and len(row) > max_len:
            row, n_cut = row[:max_len], n_cut + 1
        rows.append(row)
    t = max(len(r) for r in rows)
    ids_t = torch.full((len(rows), t), tokens.eot_id, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids_t[i, : len(r)] = torch.tensor(r)
        mask[i, 1 : len(r)] = True
    return EncodedCorpus(ids_t, mask, n_unk, n_cut)


__all__ = [
    "FACTORS",
    "FACTOR_VALUES",
    "EncodedCorpus",
    "FactorCorpus",
    "encode_corpus",
    "factor_corpus",
    "model_id_map",
    "vocabulary",
]
