"""FLAVARS checkpoints of zoo 0.1 in this version's layout.

zoo 0.1's FLAVARS took 31 flat arguments and kept the zoo's encoders, projections, logit scale
and heads at the top of its state dict (FLAVA's under ``flava.``, its pixel heads at the top);
this version groups the arguments (:class:`zoo.models.flavars.FLAVARS`) and keeps every encoder
under ``encoders.`` (:class:`zoo.encoders.encoder_set.EncoderSet`). The functions here map the
one onto the other: hyper-parameters (:func:`upgrade_hyperparameters`, which
``zoo.checkpoints.upgrade_hyperparameters`` reaches through the class), weights
(:func:`upgrade_state_dict`, applied by the model's load-state-dict pre-hook) and the
optimizer's state, whose parameter order changed (:func:`upgrade_optimizer_state`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["upgrade_hyperparameters", "upgrade_optimizer_state", "upgrade_state_dict"]

#: zoo 0.1's flat arguments: old key -> (group, key in the group).
_OLD_KEYS: dict[str, tuple[str, str]] = {
    "vision_encoder": ("vision", "name"),
    "vision_pretrained": ("vision", "pretrained"),
    "vision_checkpoint": ("vision", "checkpoint"),
    "text_encoder": ("text", "name"),
    "text_pretrained": ("text", "pretrained"),
    "codebook": ("flava", "codebook"),
    "fusion_width": ("fusion", "width"),
    "fusion_layers": ("fusion", "layers"),
    "fusion_heads": ("fusion", "heads"),
    "legendre_polys": ("location", "legendre_polys"),
    "location_hidden": ("location", "hidden"),
    "location_layers": ("location", "layers"),
    "location_checkpoint": ("location", "checkpoint"),
    **{
        key: ("objectives", key)
        for key in (
            "loss_weights",
            "mim_mask_ratio",
            "mim_masking",
            "mlm_probability",
            "itm_negatives",
            "itm_negative_probability",
            "itm_layout",
            "temperature",
        )
    },
    "knn_k": ("evaluation", "knn_k"),
    "prompt_templates": ("evaluation", "prompt_templates"),
}
#: zoo 0.1's top-level modules of the zoo's encoders, now under ``encoders.``.
_OLD_ENCODER_MODULES = (
    "vision_encoder",
    "text_encoder",
    "image_projection",
    "text_projection",
    "logit_scale",
    "fusion",
    "itm_head",
    "mlm_head",
    "mmm_text_head",
    "mim_head",
    "mmm_image_head",
)


def upgrade_hyperparameters(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """zoo 0.1's flat hyper-parameters (``vision_encoder``, ``fusion_width``,
    ``mim_mask_ratio``, ``flava: <folder>`` ...) in this version's groups.

    Args:
        hparams: a checkpoint's hyper-parameters (keys starting with ``_`` dropped).

    Returns:
        A copy with every flat key in its group (unchanged when there are none).
    """
    out = {k: v for k, v in hparams.items() if k not in _OLD_KEYS}
    if "flava" in out and not isinstance(out["flava"], Mapping):
        out["flava"] = {"folder": out["flava"]}
    for key, (group, name) in _OLD_KEYS.items():
        if key in hparams:
            out[group] = dict(out.get(group) or {}) | {name: hparams[key]}
    return out


def upgrade_state_dict(state: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A FLAVARS state dict of zoo 0.1 in this version's keys (others pass unchanged).

    zoo 0.1 kept the zoo's encoders, projections, logit scale and heads at the top and FLAVA's
    under ``flava.`` (its pixel heads at the top); all of them are under ``encoders.`` now.
    With pixel heads, FLAVA's own code heads (``flava.mim_head`` and ``flava.mmm_image_head``)
    are replaced, so theirs are dropped.

    Args:
        state: the state dict.
        prefix: where the model sits in ``state`` (``""`` for the model's own).

    Returns:
        The state dict in the current keys, in the same order.
    """
    top = {key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)}
    pixel_heads = "flava" in top and {"mim_head", "mmm_image_head"} & top
    out: dict[str, Any] = {}
    for key, value in state.items():
        local = key[len(prefix) :] if key.startswith(prefix) else None
        if local is None:
            out[key] = value
            continue
        head = local.split(".")[0]
        if head == "flava":
            if pixel_heads and local.split(".")[1] in ("mim_head", "mmm_image_head"):
                continue
            out[f"{prefix}encoders.{local.removeprefix('flava.')}"] = value
        elif head in _OLD_ENCODER_MODULES:
            out[f"{prefix}encoders.{local}"] = value
        else:
            out[key] = value
    return out


def _optimizer_order(model: nn.Module, names: list[str]) -> list[str]:
    """Parameter names in ``ZooTask.parameter_groups``' order (decayed, then not decayed)."""
    params = dict(model.named_parameters())

    def skip(name: str) -> bool:
        return params[name].ndim < 2 or any(key in name for key in model.no_decay_keys)

    return [n for n in names if not skip(n)] + [n for n in names if skip(n)]


def upgrade_optimizer_state(checkpoint: dict[str, Any], model: nn.Module) -> None:
    """Move a zoo 0.1 checkpoint's AdamW state, in place, to its parameters' new indices (the
    parameter order changed when the encoders moved under ``encoders.``), so ``fit`` resumes.
    A checkpoint of this version, or one with another optimizer layout, is left as it is.

    Args:
        checkpoint: the Lightning checkpoint being restored.
        model: the FLAVARS model it is restored into.
    """
    old = checkpoint.get("state_dict") or {}
    new = upgrade_state_dict(old)
    if list(new) == list(old) or len(checkpoint.get("optimizer_states") or []) != 1:
        return
    params = dict(model.named_parameters())
    names = {n for n, p in params.items() if p.requires_grad}
    old_order = _optimizer_order(model, [k for k in new if k in names])
    new_order = _optimizer_order(model, [k for k in params if k in names])
    if sorted(old_order) != sorted(new_order):
        return
    index = {name: i for i, name in enumerate(new_order)}
    optimizer = checkpoint["optimizer_states"][0]
    optimizer["state"] = {index[old_order[i]]: value for i, value in optimizer["state"].items()}
