"""GPT-2 style model with named, opt-in hook sites."""

from tti_ray.model.gpt import (
    HOOK_SITES,
    TL_HOOK_NAMES,
    add_site_gate,
    add_site_transform,
    build_model,
    capture,
    count_params,
    hf_config,
    site_module,
)

__all__ = [
    "HOOK_SITES",
    "TL_HOOK_NAMES",
    "add_site_gate",
    "add_site_transform",
    "build_model",
    "capture",
    "count_params",
    "hf_config",
    "site_module",
]
