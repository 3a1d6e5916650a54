"""Hydra plugin package of Hyrax's Optuna sweeper (`hydra/sweeper=optuna`)."""
