"""Export tests load only local files (checkpoints written by the tests themselves); the gated run
fixture is in tests/conftest.py.

``HF_HUB_OFFLINE=1`` is set when this file is imported, so a load that would reach for the hub fails
instead (huggingface_hub reads it at import, so it is fully effective when tests/export runs on its
own, or when the environment sets it)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
