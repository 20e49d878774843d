"""Rebuild the bundled TinyStories BPE: ``python -m tti_ray.data.build_bpe [--check]``."""

from __future__ import annotations

import argparse
import sys

from tti_ray.data.text_tokenizer import BPE_FILE, BPE_SIZE, train_tinystories_bpe


def main() -> None:
    """Rebuild ``assets/tinystories_bpe/tokenizer.json`` (``--check``: only compare)."""
    ap = argparse.ArgumentParser(
        prog="python -m tti_ray.data.build_bpe", description=main.__doc__
    )
    ap.add_argument("--check", action="store_true", help="exit 1 if the shipped file differs")
    args = ap.parse_args()
    text = train_tinystories_bpe()
    if args.check:
        same = BPE_FILE.read_text(encoding="utf-8") == text
        print(f"{BPE_FILE}: {'identical' if same else 'DIFFERS'}")
        sys.exit(0 if same else 1)
    BPE_FILE.parent.mkdir(parents=True, exist_ok=True)
    BPE_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {BPE_FILE} ({BPE_SIZE} ids)")


if __name__ == "__main__":
    main()
