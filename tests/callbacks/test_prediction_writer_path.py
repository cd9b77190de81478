"""The generators' prediction writer lives with the other writers; the old path still works."""

from __future__ import annotations


def test_prediction_writer_moved_and_reexported():
    import zoo.callbacks
    import zoo.models
    from zoo.callbacks.embeddings import EmbeddingWriter
    from zoo.models.prediction_writer import OneFileWriter

    assert zoo.models.PredictionWriter is zoo.callbacks.PredictionWriter
    assert OneFileWriter is zoo.callbacks.OneFileWriter
    assert issubclass(EmbeddingWriter, zoo.callbacks.OneFileWriter)
    assert zoo.callbacks.PredictionWriter.__module__ == "zoo.callbacks.prediction_writer"
