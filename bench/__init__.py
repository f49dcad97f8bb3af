"""diffpref-bench: the engine (CLI, config, world, backbones, data, train, sample, evaluate, results)."""
import os

# Library chatter (torchvision fallbacks, safety-checker notices) drowns the progress output;
# set these variables yourself to see it again.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
