"""Small file helpers shared by every stage."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and ``os.replace``: a reader (or a
    process killed mid-write) sees the old file or the new one, never half of one. The temporary
    name carries the pid, so concurrent writers do not clobber each other's temporary file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
