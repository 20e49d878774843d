"""``python -m tti_ray.sae_eval``: standalone SAE evaluation of a checkpoint.

See :mod:`tti_ray.sae_eval.cli`.
"""

from tti_ray.sae_eval.cli import build_parser, main, resolve_checkpoint

__all__ = ["build_parser", "main", "resolve_checkpoint"]
