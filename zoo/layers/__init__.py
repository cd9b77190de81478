"""The papers' building blocks, one module per mechanism.

* ``attention``: SAM-style attention and masks that need no host synchronization.
* ``sfi``: Aquila's Spatial Feature Integration (and its convolutional ablation).
* ``windows``: FUSE's multi-scale sliding windows.
* ``injection``: detail features injected into an LLM's hidden states (FUSE).
* ``fusion``: FLAVA's multimodal fusion encoder and heads (FLAVARS).
* ``mask_decoder`` and ``memory``: GeoPix's multi-scale mask decoder and class-wise memory.
* ``projector``: the connectors' MLPs (LLaVA-1.5's projector).
"""
