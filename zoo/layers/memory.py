"""GeoPix's class-wise learnable memory (CLM) refining the mask decoder's image tokens.

Every scale ``s`` holds a learnable bank ``C×N×D×H_s×W_s`` (``C`` classes, ``N`` entries
of class-specific ``D×H_s×W_s`` feature maps, small initialisation). For a target of class
``c`` the slice ``bank[c]`` (``N×D×H×W``) is fused over its ``N`` entries into one
``D×H×W`` map by one of three modes:

* ``"conv3d"``: ``Conv3d(D, D, kernel_size=(N, 1, 1))`` with ``D`` as channels and the entries as
  depth; the kernel spans all ``N`` entries, collapsing them position by position.
* ``"conv2d"``: the entries are concatenated into ``N * D`` channels and mapped to ``D`` by a
  ``3×3`` Conv2d (padding 1). (A ``1×1`` kernel would be the same function as ``"conv3d"``; the
  ``3×3`` kernel also mixes neighbouring positions.)
* ``"argmax"``: the entry whose flattened map is most similar (cosine) to the target's current
  image tokens is picked (no parameters; the gradient reaches only the chosen entry).

A memory encoder ``Conv2d(1, D/4, 3) -> GELU -> Conv2d(D/4, D, 1)`` embeds ``sigmoid`` of the
initial mask; ``kv = fused memory + encoded mask`` (``T×HW×D``). With ``x`` the image tokens::

    x_sa = LN_1(x + SelfAttn(x))
    r    = LN_2(x_sa + CrossAttn(x_sa, kv, kv))
    out  = x + alpha * (r - x)

``alpha`` (a learnable scalar, ``memory.alpha``, initialised at ``alpha_init``) gates the whole
refinement: ``alpha = 0`` returns the input tokens exactly (the decoder then predicts the same
masks as without memory) and ``alpha = 1`` returns the refined tokens ``r``.

Everything is batched over targets, in shapes known on the host (no ``torch.unique``, whose
output size would have to be copied from the device): with at least as many targets as classes
the whole bank is fused, once per class, and each target picks its class; with fewer, each
target's slice is gathered and fused. The category's values are not checked here (that would
copy them to the host at every step): the data checks them (:func:`zoo.data.seg_targets.check_referring_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from zoo.layers.attention import Attention

__all__ = ["ClassWiseMemory", "Fusion"]

Fusion = Literal["conv3d", "argmax", "conv2d"]


class ClassWiseMemory(nn.Module):
    """Class-wise learnable memory refining per-target image tokens (see the module docstring).

    Args:
        num_classes: number of classes ``C``.
        num_scales: number of scales ``S``.
        dim: token width ``D`` (a multiple of ``num_heads``).
        size: side ``H_s = W_s`` of each scale's map, one int for all scales or one per scale.
        capacity: entries ``N`` per class and scale.
        fusion: how the ``N`` entries are fused: ``"conv3d"``, ``"argmax"`` or ``"conv2d"``.
        num_heads: attention heads.
        alpha_init: initial value of the gate ``alpha``.
        init_std: standard deviation of the bank's normal initialisation.
    """

    def __init__(
        self,
        num_classes: int,
        num_scales: int,
        dim: int,
        size: int | Sequence[int],
        capacity: int = 64,
        fusion: Fusion = "conv3d",
        num_heads: int = 4,
        alpha_init: float = 0.1,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        sizes = [size] * num_scales if isinstance(size, int) else [int(s) for s in size]
        if len(sizes) != num_scales:
            raise ValueError(f"got {len(sizes)} sizes for {num_scales} scales")
        if num_classes < 1 or capacity < 1 or min(sizes) < 1:
            raise ValueError("num_classes, capacity and sizes must be positive")
        if fusion not in ("conv3d", "argmax", "conv2d"):
            raise ValueError(f"fusion must be 'conv3d', 'argmax' or 'conv2d', got {fusion!r}")
        self.num_classes = num_classes
        self.num_scales = num_scales
        self.dim = dim
        self.sizes = sizes
        self.capacity = capacity
        self.fusion = fusion
        self.banks = nn.ParameterList(
            nn.Parameter(torch.randn(num_classes, capacity, dim, s, s) * init_std) for s in sizes
        )
        if fusion == "conv3d":
            self.fusers = nn.ModuleList(
                nn.Conv3d(dim, dim, kernel_size=(capacity, 1, 1)) for _ in sizes
            )
        elif fusion == "conv2d":
            self.fusers = nn.ModuleList(
                nn.Conv2d(capacity * dim, dim, kernel_size=3, padding=1) for _ in sizes
            )
        else:
            self.fusers = None
        hidden = max(1, dim // 4)
        self.mask_encoders = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(1, hidden, kernel_size=3, padding=1),
                nn.GELU(),
                nn.Conv2d(hidden, dim, kernel_size=1),
            )
            for _ in sizes
        )
        self.self_attn = nn.ModuleList(Attention(dim, num_heads) for _ in sizes)
        self.norm_sa = nn.ModuleList(nn.LayerNorm(dim) for _ in sizes)
        self.cross_attn = nn.ModuleList(Attention(dim, num_heads) for _ in sizes)
        self.norm_ca = nn.ModuleList(nn.LayerNorm(dim) for _ in sizes)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def _check_category(self, category: Tensor, num_targets: int) -> None:
        """Shape and dtype only (the values' range is the data's check)."""
        if category.shape != (num_targets,) or category.dtype != torch.long:
            raise ValueError(
                f"category must be a ({num_targets},) long tensor, got "
                f"{tuple(category.shape)} {category.dtype}"
            )

    def _class_slices(self, scale: int, category: Tensor) -> tuple[Tensor, Tensor]:
        """Bank slices ``K×N×D×H×W`` and the row of each target in them, ``(T,)``.

        ``K = C`` (the whole bank, no copy) when there are at least as many targets as classes,
        else ``K = T`` (each target's slice): at most ``min(T, C)`` slices to fuse, in shapes
        known without reading ``category``.
        """
        bank = self.banks[scale]
        if len(category) >= self.num_classes:
            return bank, category
        return bank.index_select(0, category), torch.arange(len(category), device=category.device)

    def fuse(self, scale: int, category: Tensor, image_tokens: Tensor | None = None) -> Tensor:
        """Fused memory ``T×D×H×W`` of every target's class at ``scale``.

        ``image_tokens`` (``T×HW×D``) is needed only by the ``"argmax"`` fusion.
        """
        side = self.sizes[scale]
        if self.fusion == "argmax":
            if image_tokens is None:
                raise ValueError("the argmax fusion needs the image tokens")
            index = self.argmax_entry(scale, image_tokens, category)
            return self.banks[scale][category, index]
        chosen, row = self._class_slices(scale, category)  # K×N×D×H×W
        assert self.fusers is not None
        if self.fusion == "conv3d":
            fused = self.fusers[scale](chosen.transpose(1, 2)).squeeze(2)
        else:
            fused = self.fusers[scale](chosen.reshape(len(chosen), -1, side, side))
        return fused[row]

    def argmax_entry(self, scale: int, image_tokens: Tensor, category: Tensor) -> Tensor:
        """Index ``(T,)`` of the entry of each target's class most similar (cosine) to its tokens."""
        chosen, row = self._class_slices(scale, category)
        entries = chosen.flatten(2)  # K×N×(D H W)
        x = image_tokens.transpose(1, 2).flatten(1)  # T×(D H W), same order as the bank
        if len(x) < self.num_classes:  # K = T: each target's own slice
            dots = torch.einsum("tk,tnk->tn", x, entries)
        else:  # the whole bank: every target against every class, then its own
            dots = (x @ entries.flatten(0, 1).T).unflatten(1, entries.shape[:2])  # T×C×N
            dots = dots[torch.arange(len(x), device=x.device), row]  # T×N
        norms = entries.norm(dim=-1)[row] * x.norm(dim=-1, keepdim=True)
        return (dots / norms.clamp_min(1e-12)).argmax(dim=-1)

    def forward(
        self, scale: int, image_tokens: Tensor, initial_mask: Tensor, category: Tensor
    ) -> Tensor:
        """Refine ``image_tokens`` (``T×HW×D``) with the memory of each target's class.

        Args:
            scale: scale index ``s``.
            image_tokens: ``T×H_s W_s×D`` tokens (row-major).
            initial_mask: ``T×H_s×W_s`` initial mask logits.
            category: ``(T,)`` long class of every target, each in ``[0, C)`` (not checked
                here: see the module docstring).

        Returns:
            ``T×H_s W_s×D`` refined tokens, ``x + alpha * (r - x)``.
        """
        if not 0 <= scale < self.num_scales:
            raise ValueError(f"scale {scale} is out of range for {self.num_scales} scales")
        side = self.sizes[scale]
        t = image_tokens.shape[0]
        if image_tokens.shape[1:] != (side * side, self.dim):
            raise ValueError(
                f"image_tokens at scale {scale} must be T×{side * side}×{self.dim}, got "
                f"{tuple(image_tokens.shape)}"
            )
        if initial_mask.shape != (t, side, side):
            raise ValueError(
                f"initial_mask at scale {scale} must be {t}×{side}×{side}, got "
                f"{tuple(initial_mask.shape)}"
            )
        self._check_category(category, t)

        x = image_tokens
        x_sa = self.norm_sa[scale](x + self.self_attn[scale](x, x, x))
        memory = self.fuse(scale, category, x)  # T×D×H×W
        encoded = self.mask_encoders[scale](initial_mask.sigmoid()[:, None].to(x.dtype))
        kv = (memory.to(x.dtype) + encoded).flatten(2).transpose(1, 2)  # T×HW×D
        refined = self.norm_ca[scale](x_sa + self.cross_attn[scale](x_sa, kv, kv))
        return x + self.alpha.to(x.dtype) * (refined - x)
