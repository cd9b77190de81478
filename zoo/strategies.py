"""Sharded training of the generators: FSDP2 (``fully_shard``) through Lightning.

    trainer:
      strategy:
        class_path: zoo.strategies.GeneratorFSDPStrategy
      precision: bf16-mixed

(``configs/strategy/fsdp.yaml`` composes this after a model config). The strategy is
Lightning's ``ModelParallelStrategy`` with every rank in one data-parallel group and no tensor
parallelism; the generators' ``configure_model`` calls :func:`fully_shard_generator`, which
makes each LLM decoder layer and each vision block its own FSDP unit (found on the model, so one
YAML serves Llama, Vicuna and any timm ViT or ConvNeXt), the embeddings and LM head too, and the
model itself the root unit.
FSDP2 shards every parameter on its own (a DTensor), so frozen weights, LoRA adapters and
trainable connectors mix freely within a unit, and it runs on CPUs with gloo as on GPUs with
NCCL. Checkpoints are folders of shards (``torch.distributed.checkpoint``) plus ``meta.pt``,
which :func:`zoo.io.read_state_dict` (hence ``zoo export`` and a later stage's
``init_checkpoint``) consolidates without a process group.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from zoo.encoders.llm import decoder_layers

__all__ = ["GeneratorFSDPStrategy", "fully_shard_generator", "wrap_classes"]

#: The LightningModule's entry points: FSDP gathers the root unit around each (as around forward).
STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")


def wrap_classes(model: nn.Module, names: list[str] | None = None) -> set[type[nn.Module]]:
    """The module classes sharded one unit each: those named in ``names`` (class names found in
    ``model``), else the LLM's decoder-layer class and the vision tower's block classes (the
    members of any ``blocks`` container: a ViT's blocks, each ConvNeXt stage's blocks)."""
    if names is not None:
        found = {type(m) for m in model.modules() if type(m).__name__ in names}
        missing = set(names) - {c.__name__ for c in found}
        if missing:
            raise ValueError(
                f"wrap_classes {sorted(missing)} are not in the model {type(model).__name__}; "
                "leave wrap_classes unset to wrap its decoder layers and vision blocks"
            )
        return found
    classes: set[type[nn.Module]] = set()
    if isinstance(getattr(model, "llm", None), nn.Module):
        classes.add(type(decoder_layers(model.llm)[0]))
    vision = getattr(model, "vision", None)
    if isinstance(vision, nn.Module):
        for name, module in vision.named_modules():
            if name.rsplit(".", 1)[-1] == "blocks" and len(module):
                classes.update(type(block) for block in module)
    if not classes:
        raise ValueError(
            f"found no LLM decoder layers or vision blocks in {type(model).__name__}: name the "
            "classes to shard in the strategy's wrap_classes"
        )
    return classes


def _dtype(name: str | None) -> torch.dtype | None:
    return getattr(torch, name) if name else None


def fully_shard_generator(
    model: nn.Module,
    mesh: DeviceMesh,
    names: list[str] | None = None,
    param_dtype: str | None = None,
    reduce_dtype: str | None = "float32",
    reshard_after_forward: bool = True,
) -> None:
    """Shard ``model`` (a generator) in place with FSDP2 over ``mesh``, bottom-up.

    Units: each module of :func:`wrap_classes`; the LLM's input embeddings (the core calls them
    outside the LLM's forward) and its LM head, one unit when they share weights; then
    ``model`` itself as the root, holding the rest (connectors, injection, norms), gathered
    around each Lightning step method. Every parameter ends in a unit (0-d ones replicated, see
    :func:`_replicate_scalars`), so every gradient is reduced across ranks.

    Args:
        param_dtype: dtype of the gathered parameters for compute (``bfloat16``; None: as stored).
        reduce_dtype: dtype of the gradient reduce-scatter.
        reshard_after_forward: free gathered parameters after each unit's forward (ZeRO-3; False
            keeps them until the backward, ZeRO-2-like).
    """
    from torch.distributed.fsdp import (
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    scalars = _replicate_scalars(model, mesh)
    kwargs = {
        "mesh": mesh,
        "reshard_after_forward": reshard_after_forward,
        "ignored_params": scalars,
        "mp_policy": MixedPrecisionPolicy(
            param_dtype=_dtype(param_dtype), reduce_dtype=_dtype(reduce_dtype)
        ),
    }
    classes = tuple(wrap_classes(model, names))
    for module in list(model.modules()):
        if isinstance(module, classes):
            fully_shard(module, **kwargs)
    llm = getattr(model, "llm", None)
    if isinstance(llm, nn.Module):
        base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
        embed, head = base.get_input_embeddings(), base.get_output_embeddings()
        if head is not None and head.weight is embed.weight:  # tied: one unit for both
            fully_shard([embed, head], **kwargs)
        else:
            fully_shard(embed, **kwargs)
            if head is not None:
                fully_shard(head, **kwargs)
    fully_shard(model, **kwargs)  # the root: everything else (connectors, injection, norms)
    for method in STEP_METHODS:  # Lightning calls these, not forward, on the root
        register_fsdp_forward_method(model, method)
    loose = [n for n, p in model.named_parameters() if not _is_dtensor(p) and p not in scalars]
    if loose:
        raise ValueError(
            f"fully_shard_generator left {len(loose)} parameters unsharded (e.g. {loose[0]}): "
            "their gradients would not be reduced; put them in a module of their own"
        )


def _replicate_scalars(model: nn.Module, mesh: DeviceMesh) -> set[nn.Parameter]:
    """FSDP2 cannot shard 0-d parameters (the injections' gates and scales): they stay
    replicated, and each trainable one averages its gradient over ``mesh`` after every
    accumulation (averaging a sum that is already common plus a local part is exact)."""
    import torch.distributed as dist

    group = mesh.get_group()
    scalars = {p for p in model.parameters() if p.ndim == 0}
    for param in scalars:
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(
                lambda p: dist.all_reduce(p.grad, op=dist.ReduceOp.AVG, group=group)
            )
    return scalars


def _is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


class GeneratorFSDPStrategy(ModelParallelStrategy):
    """FSDP2 for the zoo's generators: Lightning's ``ModelParallelStrategy`` with one
    data-parallel group of every rank (all nodes × devices) and no tensor parallelism.

    Args:
        wrap_classes: class names sharded one unit each (default: the LLM's decoder layers and
            the vision blocks, found on the model).
        param_dtype: compute dtype of the gathered parameters (``bfloat16`` on GPUs; None keeps
            the stored dtype, e.g. on CPUs).
        reduce_dtype: dtype of the gradient reduce-scatter.
        reshard_after_forward: ZeRO-3 (True) or keep the gathered parameters until the backward.
        save_distributed_checkpoint: a folder of shards per checkpoint (True) or one file
            gathered on rank 0.
        process_group_backend: ``nccl`` on GPUs (the default there), ``gloo`` on CPUs.
    """

    def __init__(
        self,
        wrap_classes: list[str] | None = None,
        param_dtype: Literal["bfloat16", "float16", "float32"] | None = "bfloat16",
        reduce_dtype: Literal["bfloat16", "float32"] | None = "float32",
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
    ) -> None:
        super().__init__(
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
        )
        self.wrap_classes = wrap_classes
        self.param_dtype = param_dtype
        self.reduce_dtype = reduce_dtype
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def shard(self, model: nn.Module) -> None:
        """Apply :func:`fully_shard_generator` with this strategy's settings."""
        fully_shard_generator(
            model,
            model.device_mesh["data_parallel"],
            self.wrap_classes,
            self.param_dtype,
            self.reduce_dtype,
            self.reshard_after_forward,
        )
