"""The training core: build the parts of a run from its config, run the loop, evaluate, checkpoint."""
