"""Export tests load only local files (checkpoints written by the tests themselves); the gated run
fixture is in tests/conftest.py.

``HF_HUB_OFFLINE=1`` is set by tests/conftest.py before anything imports huggingface_hub, so a
load that would reach for the hub fails instead."""

from __future__ import annotations
