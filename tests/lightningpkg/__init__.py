"""LightningModules, LightningDataModules, a Flash-style task and a container, as users write them,
for tests/test_lightning.py."""
