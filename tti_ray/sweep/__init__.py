"""Distributed multi-objective sweeps: Ray Tune + Optuna over ``train_run`` trials."""
