"""Hydra plugins shipped with Hyrax, found by Hydra through the `hydra_plugins` namespace package."""
