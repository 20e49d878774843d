"""HTML building blocks of the sweep report: inlined figures, escaped tables, and the
:class:`Report` the sections write into."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.sources import Source


def img(path: Path, caption: str) -> str:
    """A PNG inlined as base64 (the page stays one file), with its caption (trusted HTML)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def table(df: pd.DataFrame, max_rows: int = 60) -> str:
    """A DataFrame as an escaped HTML table; floats to 4 significant digits, NaN as a dash."""

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else f"{v:.4g}"
        if isinstance(v, list):
            return ", ".join(map(str, v))
        return str(v)

    shown = df.head(max_rows)
    body = shown.to_html(
        index=False,
        classes="data",
        border=0,
        na_rep="–",
        formatters={c: fmt for c in shown.columns},
        escape=True,
    )
    more = (
        f"<p class='notes'>… {len(df) - max_rows} more rows in the CSV.</p>"
        if len(df) > max_rows
        else ""
    )
    return f"<div class='scroll'>{body}</div>{more}"


def para(text: str, cls: str = "") -> str:
    """A paragraph of trusted HTML (callers escape what came from data)."""
    return f"<p class='{cls}'>{text}</p>" if cls else f"<p>{text}</p>"


@dataclass
class Report:
    """What :func:`build_report` collects before rendering (also written as ``report.json``)."""

    src: Source
    out: Path
    sections: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def section(self, title: str, *parts: str) -> None:
        self.sections.append(f"<h2>{html.escape(title)}</h2>" + "".join(parts))


def strip_tags(s: str) -> str:
    """Plain text of an HTML snippet (for report.json and the terminal)."""
    return html.unescape(re.sub(r"<[^>]+>", "", s))
