"""Token-category lexicons as config values: ``categories:`` is ``coarse``, ``lexicon`` or the
path of a JSON file ``{"category": ["word", ...], ...}``, checked when the config loads.

The category maps themselves are built in :mod:`tti_ray.interventions.categories`; reading and
validating a lexicon file lives here so that config validation needs nothing above ``config``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tti_ray.cli import UserError

OTHER = "other"


class CategoryError(UserError):
    """A bad ``categories`` setting (unknown kind, unreadable or malformed JSON)."""


def read_lexicon(path: str | Path) -> dict[str, list[str]]:
    """``{category: [word, ...]}`` from a JSON file, validated; errors name the file.

    Words are matched lower-cased, so a word may appear under one category only."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CategoryError(f"cannot read category file '{path}' ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise CategoryError(f"{path}: invalid JSON (line {e.lineno}): {e.msg}") from None
    if not isinstance(data, dict) or not data:
        raise CategoryError(f"{path}: must be a non-empty JSON object {{category: [words]}}")
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for cat, words in data.items():
        if cat == OTHER:
            raise CategoryError(f"{path}: category name {OTHER!r} is reserved for unmatched tokens")
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise CategoryError(f"{path}: {cat}: must be a list of non-empty strings")
        for w in words:
            key = w.strip().lower()
            if key in seen and seen[key] != cat:
                raise CategoryError(f"{path}: word {w!r} is in both {seen[key]!r} and {cat!r}")
            seen[key] = cat
        out[cat] = [w.strip().lower() for w in words]
    return out


def validate_kind(kind: str) -> str:
    """Check a ``categories`` setting at config time (file exists and parses)."""
    if kind not in ("coarse", "lexicon"):
        read_lexicon(kind)
    return kind
