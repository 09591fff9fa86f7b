"""NITRO: build LLMs into chunked, static-shape OpenVINO artifacts for Intel NPUs (and CPU/GPU), and run them."""
__version__ = "0.1.0"
