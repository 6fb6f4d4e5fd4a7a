"""pictale: a local-first image-generation server for stories."""

__version__ = "0.1.0"
