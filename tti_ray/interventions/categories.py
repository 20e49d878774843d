"""Token categories: a map from each model token id to a category id.

Used by the category version of the anti-polysemanticity penalty (entropy of a neuron's
activation mass over *categories* instead of token ids: essay 3 measures "entropy across semantic
context categories"). Three kinds, chosen by ``categories:`` in the intervention config:

* ``coarse`` - lexical classes from the decoded token string alone: punctuation, whitespace,
  number, capitalized (names, sentence-initial words), function word, content word, other
  (UNK, end-of-text, byte fragments);
* ``lexicon`` - the shipped TinyStories semantic lexicon (``lexicon/tinystories_semantic.json``,
  written for this project: animals, people, family, colors, emotions, actions, places,
  objects/toys, food, nature, time, body, qualities); a token matches when its stripped,
  lower-cased string is one of the words; everything else is ``other``;
* a path to a user JSON file of the same form ``{"category": ["word", ...], ...}`` (relative
  paths are resolved against the working directory).

Model ids are remapped tokenizer ids (``TokenData.keep_ids``); every model id is decoded on its own
with the run's tokenizer, so the map is exact for the vocabulary the model sees.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch

from tti_ray.config.lexicon import (  # noqa: F401 - CategoryError, validate_kind re-exported
    OTHER,
    CategoryError,
    read_lexicon,
    validate_kind,
)
from tti_ray.config.schema import DataConfig
from tti_ray.data.tokens import TextTokenizer, TokenData

LEXICON_DIR = Path(__file__).parent / "lexicon"
SHIPPED_LEXICON = LEXICON_DIR / "tinystories_semantic.json"

COARSE_CLASSES: tuple[str, ...] = (
    "punctuation",
    "whitespace",
    "number",
    "capitalized",
    "function",
    "content",
    OTHER,
)

#: Closed-class English words (determiners, pronouns, prepositions, conjunctions, auxiliaries,
#: modals, common adverbs/particles) and GPT-2's clitic pieces ("'s", "'t", ...).
FUNCTION_WORDS: frozenset[str] = frozenset(
    """
    a an the this that these those my your his her its our their some any no every each all
    both many much more most few other another such what which who whom whose i me you he him
    she it we us they them myself yourself himself herself itself ourselves themselves mine
    yours hers ours theirs in on at to from with without by for of off up down over under into
    onto out about around through after before behind between near across along against toward
    towards upon until till since during and or but so because if then than when while where
    why how as though although yet nor is am are was were be been being have has had having do
    does did will would can could shall should may might must not very too also just only
    there here now again even still yes oh okay ok please let 's 't 'll 're 've 'm 'd n't s t
    ll re ve m d
    """.split()
)


@dataclass(frozen=True)
class CategoryMap:
    """``ids[model_id]`` = category index into ``names`` (``Tensor[vocab_size]``, int64)."""

    names: tuple[str, ...]
    ids: torch.Tensor

    def counts(self) -> dict[str, int]:
        """How many vocabulary entries fall in each category."""
        c = torch.bincount(self.ids, minlength=len(self.names)).tolist()
        return dict(zip(self.names, c, strict=True))


# -- classifiers ------------------------------------------------------------------------------
def _is_special(s: str) -> bool:
    return s == "<unk>" or (s.startswith("<|") and s.endswith("|>")) or "\ufffd" in s


def coarse_class(s: str) -> str:
    """The coarse lexical class of one decoded token string (leading space included)."""
    if s == "" or _is_special(s):
        return OTHER
    t = s.strip()
    if not t:
        return "whitespace"
    if all(unicodedata.category(ch)[0] in "PS" for ch in t):
        return "punctuation"
    if any(ch.isdigit() for ch in t) and not any(ch.isalpha() for ch in t):
        return "number"
    if t.lower() in FUNCTION_WORDS:
        return "function"
    word = t.replace("'", "").replace("-", "")
    if word.isalpha():
        return "capitalized" if t[0].isupper() else "content"
    return OTHER


def categorize(strings: list[str], kind: str) -> CategoryMap:
    """Category map for a list of decoded token strings (index = model id)."""
    if kind == "coarse":
        names = COARSE_CLASSES
        index = {n: i for i, n in enumerate(names)}
        ids = [index[coarse_class(s)] for s in strings]
    else:
        lex = read_lexicon(SHIPPED_LEXICON if kind == "lexicon" else kind)
        names = (*lex, OTHER)
        lookup = {w: i for i, words in enumerate(lex.values()) for w in words}
        other = len(names) - 1
        ids = [other if _is_special(s) else lookup.get(s.strip().lower(), other) for s in strings]
    return CategoryMap(names=tuple(names), ids=torch.tensor(ids, dtype=torch.long))


# -- from the run's vocabulary ----------------------------------------------------------------
def tokenizer_for(tokens: TokenData) -> TextTokenizer:
    """The tokenizer the token cache was built with (``tokenizer`` in its ``meta.json``, or in
    older caches its key, ``v<version>|<source>|<tokenizer>|<vocab_size>``); the bundled GPT-2
    BPE if unknown."""
    name = "gpt2"
    meta = Path(tokens.directory) / "meta.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        parts = info.get("key", "").rsplit("|", 2)
        if info.get("tokenizer"):
            name = info["tokenizer"]
        elif len(parts) == 3 and parts[1]:
            name = parts[1]
    return TextTokenizer(DataConfig(tokenizer=name))


def category_map(
    kind: str, tokens: TokenData, tokenizer: TextTokenizer | None = None
) -> CategoryMap:
    """Category of every model id of ``tokens`` (``[tokens.vocab_size]``)."""
    tok = tokenizer if tokenizer is not None else tokenizer_for(tokens)
    strings = tokens.decode(list(range(tokens.vocab_size)), tok)
    return categorize(strings, kind)
