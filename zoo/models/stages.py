"""Training stages of the generators: what a stage trains, LoRA, and the checkpoint it starts from.

A stage is a :class:`TrainingStage` in the config (``stage:``). The generator core applies it
once every module exists (:meth:`~zoo.models.generator.VisionLanguageGenerator.__init__`):

1. the previous stage's weights (:func:`load_stage_checkpoint`, its LoRA merged first);
2. freezing by the parameter groups the family declares (:func:`freeze_groups`: ``vision``,
   ``connector``, ``llm``; every parameter in exactly one group);
3. token rows that train in every stage (:func:`train_token_rows`: GeoPix's ``[SEG]`` rows);
4. LoRA adapters on the LLM by peft (:func:`add_lora`).

:func:`merge_lora` folds the adapters back into the LLM (``zoo export``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from zoo.io import load_checkpoint, read_state_dict

__all__ = [
    "LLAMA_LORA_TARGETS",
    "STAGE_GROUPS",
    "TrainingStage",
    "add_lora",
    "freeze_groups",
    "load_stage_checkpoint",
    "merge_lora",
    "merge_lora_state",
    "train_token_rows",
    "unpeft_key",
]

LLAMA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: The parameter groups a family declares, each trained or frozen by one switch of the stage.
STAGE_GROUPS = ("vision", "connector", "llm")


@dataclass
class TrainingStage:
    """What a training stage trains (everything else is frozen).

    Attributes:
        train_vision: the vision encoder.
        train_connector: projectors, SFI/MDA, injection modules (everything but vision and LLM).
        train_llm: the whole LLM (full fine-tuning).
        lora_rank: LoRA rank on the LLM (0: no LoRA); LoRA adapters are always trained.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: dropout on the LoRA input.
        lora_target_modules: names of the LLM's linear layers that get adapters.
        init_checkpoint: a previous stage's checkpoint to start from (weights only).
    """

    train_vision: bool = False
    train_connector: bool = True
    train_llm: bool = False
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LORA_TARGETS))
    init_checkpoint: str | None = None

    def trains(self, group: str) -> bool:
        """Whether this stage trains a parameter group.

        Args:
            group: one of :data:`STAGE_GROUPS`.

        Returns:
            The stage's switch for that group.
        """
        return {"vision": self.train_vision, "connector": self.train_connector}.get(
            group, self.train_llm
        )


def freeze_groups(
    model: nn.Module, groups: Mapping[str, Sequence[nn.Module]], stage: TrainingStage
) -> None:
    """Set ``requires_grad`` of every parameter of ``model`` from the group that declares it.

    Args:
        model: the whole model.
        groups: the family's declared groups (keys of :data:`STAGE_GROUPS`), their modules.
        stage: the stage whose switches apply.

    Raises:
        ValueError: an unknown group, or a parameter in no group or in two (the message names
            it), so a new module cannot be frozen or trained by accident.
    """
    unknown = sorted(set(groups) - set(STAGE_GROUPS))
    if unknown:
        raise ValueError(f"parameter groups {unknown}: the groups are {list(STAGE_GROUPS)}")
    owner: dict[int, str] = {}
    for group, modules in groups.items():
        for module in modules:
            for param in module.parameters():
                if owner.setdefault(id(param), group) != group:
                    raise ValueError(f"a parameter is in the groups {owner[id(param)]} and {group}")
    for name, param in model.named_parameters():
        if id(param) not in owner:
            raise ValueError(
                f"{type(model).__name__}.{name} is in no parameter group: declare it in "
                "parameter_groups_for_stage (vision, connector or llm)"
            )
        param.requires_grad = stage.trains(owner[id(param)])


def add_lora(llm: nn.Module, stage: TrainingStage) -> nn.Module:
    """The LLM with peft LoRA adapters per the stage (unchanged when ``lora_rank`` is 0).

    Args:
        llm: the (frozen or trained) LLM.
        stage: rank, alpha, dropout and target modules; ``train_llm`` keeps the base trained.

    Returns:
        The peft model, or ``llm`` itself without LoRA.
    """
    if stage.lora_rank <= 0:
        return llm
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=stage.lora_rank,
        lora_alpha=stage.lora_alpha,
        lora_dropout=stage.lora_dropout,
        target_modules=list(stage.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    llm = get_peft_model(llm, config)
    if stage.train_llm:
        for param in llm.parameters():
            param.requires_grad = True
    return llm


def merge_lora(llm: nn.Module) -> nn.Module:
    """Fold peft's LoRA adapters into the LLM's weights.

    Args:
        llm: the LLM, peft-wrapped or not.

    Returns:
        The plain model (``llm`` itself when it has no adapters).
    """
    return llm.merge_and_unload() if hasattr(llm, "merge_and_unload") else llm


def train_token_rows(owner: nn.Module, llm: nn.Module, token_ids: Tensor) -> None:
    """Make the rows of ``token_ids`` in the input embeddings and ``lm_head`` trainable.

    Both tables get ``requires_grad`` and a gradient hook that zeroes every other row, so only
    those tokens' rows move (LoRA or a frozen LLM; give them no weight decay either).

    Args:
        owner: the module that keeps the row mask (a non-persistent ``token_rows`` buffer, so it
            moves with the model).
        llm: the LLM whose tables hold the rows.
        token_ids: the trained tokens' ids.
    """
    tables = [llm.get_input_embeddings().weight, llm.get_output_embeddings().weight]
    rows = torch.zeros(tables[0].shape[0], 1)
    rows[token_ids] = 1.0
    owner.register_buffer("token_rows", rows, persistent=False)
    for weight in {id(w): w for w in tables}.values():  # one table when they are tied
        weight.requires_grad_(True)
        weight.register_hook(lambda grad: grad * owner.token_rows.to(grad.dtype))


def load_stage_checkpoint(model: nn.Module, path: str) -> None:
    """Weights of a previous stage (a Lightning checkpoint or a safetensors file) into ``model``.

    LoRA adapters of that stage are merged into the LLM's weights first (W + s·B·A with
    s = alpha / r from its hyper-parameters), so a new stage can add its own adapters. The
    model's ``stage_state`` picks what this stage reads.

    Args:
        model: the new stage's model (before its own LoRA).
        path: the previous stage's checkpoint.

    Raises:
        ValueError: the file holds weights the model does not have.
    """
    file = Path(path)
    scaling = 1.0
    if file.suffix == ".safetensors":
        state = read_state_dict(file, "stage.init_checkpoint")
    else:
        checkpoint = load_checkpoint(file, "stage.init_checkpoint")
        state = checkpoint["state_dict"]
        previous = checkpoint.get("hyper_parameters", {}).get("stage") or {}
        if previous.get("lora_rank"):
            scaling = previous["lora_alpha"] / previous["lora_rank"]
    state = {unpeft_key(k): v for k, v in merge_lora_state(state, scaling).items()}
    missing, unexpected = model.load_state_dict(model.stage_state(state), strict=False)
    rank_zero_info(
        f"loaded {len(state) - len(unexpected)} tensors from {file}"
        + (f"; {len(missing)} not in it (e.g. {missing[0]})" if missing else "")
    )
    if unexpected:
        raise ValueError(
            f"{file} holds weights this model does not have (e.g. {unexpected[0]}): is it a "
            "checkpoint of the same model family and size?"
        )


def merge_lora_state(state: dict[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """Fold peft LoRA pairs of a state dict into their base weights: W + scaling · B @ A.

    Args:
        state: a state dict with peft's ``lora_A``/``lora_B`` keys.
        scaling: LoRA's ``alpha / rank``.

    Returns:
        The state dict without LoRA keys, the base weights updated.
    """
    out = {k: v for k, v in state.items() if ".lora_" not in k}
    for key, a in state.items():
        if ".lora_A." not in key:
            continue
        prefix, adapter = key.split(".lora_A.")
        b = state[f"{prefix}.lora_B.{adapter}"]
        base = f"{prefix}.base_layer.weight"
        out[base] = out[base] + scaling * (b.float() @ a.float()).to(out[base].dtype)
    return out


def unpeft_key(key: str) -> str:
    """A peft-wrapped LLM's parameter name as the plain model's.

    Args:
        key: a state-dict key.

    Returns:
        The key without peft's ``base_model.model`` and ``base_layer`` parts.
    """
    return key.replace("llm.base_model.model.", "llm.").replace(".base_layer.", ".")
