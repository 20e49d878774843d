"""Where a result came from: the git commit of the code and the versions of the package and its
main libraries.

The one definition behind a run directory's ``config.yaml`` (``train``), the MLflow tags
(``tracking``) and the benchmarks' environment stamp. It imports nothing else of the package, so
every stage may use it.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import tti_ray


def git_commit() -> str | None:
    """``HEAD`` of the checkout the package is imported from; None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            cwd=Path(tti_ray.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    """Versions of ``tti_ray``, ``torch`` and ``python``."""
    import torch  # here, not at the top: tracking uses this module without importing torch

    return {
        "tti_ray": tti_ray.__version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }
