"""Training-time interpretability interventions, as a registry of composable plugins.

Importing this package registers every built-in intervention:

* regularizers (:mod:`.regularizers`): ``orthogonality``, ``anti_poly``, ``l1_act``, ``l2_act``,
  ``weight_l1``, ``weight_l2``;
* architectural gates (:mod:`.gates`): ``topk``, ``l0_gate``;
* sparse coding (:mod:`.sparse_coding`): ``joint_sae``, ``overcomplete`` (architectural);
* mixture of experts (:mod:`.moe`): ``moe`` (architectural; top-k routing over MLP slices);
* variational bottleneck (:mod:`.bottleneck`): ``bottleneck`` (architectural; β-VAE /
  β-TC-VAE latents in the residual stream).
"""

from tti_ray.interventions.categories import CategoryMap, categorize, category_map
from tti_ray.interventions.registry import (
    Intervention,
    InterventionConfig,
    KeyPathError,
    StepContext,
    attach_all,
    build_interventions,
    check_against_model,
    parse_interventions,
    register_intervention,
    registered,
)

__all__ = [
    "CategoryMap",
    "Intervention",
    "InterventionConfig",
    "KeyPathError",
    "StepContext",
    "attach_all",
    "build_interventions",
    "categorize",
    "category_map",
    "check_against_model",
    "parse_interventions",
    "register_intervention",
    "registered",
]

# Importing the implementations registers them (this order is the order of ``registered()``).
from tti_ray.interventions import (  # noqa: F401, I001
    regularizers, gates, sparse_coding, moe, bottleneck,
)
