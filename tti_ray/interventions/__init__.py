"""Training-time interpretability interventions, as a registry of composable plugins.

Importing this package registers every built-in intervention.
"""

from tti_ray.interventions.registry import (
    Intervention,
    InterventionConfig,
    KeyPathError,
    StepContext,
    build_interventions,
    check_against_model,
    parse_interventions,
    register_intervention,
    registered,
)

__all__ = [
    "Intervention",
    "InterventionConfig",
    "KeyPathError",
    "StepContext",
    "build_interventions",
    "check_against_model",
    "parse_interventions",
    "register_intervention",
    "registered",
]
