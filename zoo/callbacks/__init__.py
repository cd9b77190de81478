"""Callbacks: sample logging."""

from zoo.callbacks.samples import RetrievalSamples

__all__ = ["RetrievalSamples"]
