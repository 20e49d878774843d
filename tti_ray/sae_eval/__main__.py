"""Entry point: ``python -m tti_ray.sae_eval`` (see :mod:`tti_ray.sae_eval.cli`)."""

import sys

from tti_ray.sae_eval.cli import main

sys.exit(main())
