"""tti-ray: distributed sweeps for training-time interpretability research, on Ray."""

__version__ = "0.1.0"
