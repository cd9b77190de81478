"""GeoPix's class-wise learnable memory (CLM) refining the mask decoder's image tokens.

Every scale ``s`` holds a learnable bank ``C x N x D x H_s x W_s`` (``C`` classes, ``N`` entries
of class-specific ``D x H_s x W_s`` feature maps, small initialisation). For a target of class
``c`` the slice ``bank[c]`` (``N x D x H x W``) is fused over its ``N`` entries into one
``D x H x W`` map by one of three modes:

* ``"conv3d"``: ``Conv3d(D, D, kernel_size=(N, 1, 1))`` with ``D`` as channels and the entries as
  depth; the kernel spans all ``N`` entries, collapsing them position by position.
* ``"conv2d"``: the entries are concatenated into ``N * D`` channels and mapped to ``D`` by a
  ``3 x 3`` Conv2d (padding 1). (A ``1 x 1`` kernel would be the same function as ``"conv3d"``; the
  ``3 x 3`` kernel also mixes neighbouring positions.)
* ``"argmax"``: the entry whose flattened map is most similar (cosine) to the target's current
  image tokens is picked (no parameters; the gradient reaches only the chosen entry).

A memory encoder ``Conv2d(1, D/4, 3) -> GELU -> Conv2d(D/4, D, 1)`` embeds ``sigmoid`` of the
initial mask; ``kv = fused memory + encoded mask`` (``T x HW x D``). With ``x`` the image tokens::

    x_sa = LN_1(x + SelfAttn(x))
    r    = LN_2(x_sa + CrossAttn(x_sa, kv, kv))
    out  = x + alpha * (r - x)

``alpha`` (a learnable scalar, ``memory.alpha``, initialised at ``alpha_init``) gates the whole
refinement: ``alpha = 0`` returns the input tokens exactly (the decoder then predicts the same
masks as without memory) and ``alpha = 1`` returns the refined tokens ``r``.

Everything is batched over targets: the slices of the classes present are gathered with
``index_select`` and fused once per class, then scattered to the targets with the inverse index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from zoo.layers.mask_decoder import Attention

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
        if category.shape != (num_targets,) or category.dtype != torch.long:
            raise ValueError(
                f"category must be a ({num_targets},) long tensor, got "
                f"{tuple(category.shape)} {category.dtype}"
            )
        if num_targets == 0:
            return
        lo, hi = int(category.min()), int(category.max())
        bad = lo if lo < 0 else hi
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(
                f"category {bad} is out of range for a memory of {self.num_classes} classes"
            )

    def fuse(self, scale: int, category: Tensor, image_tokens: Tensor | None = None) -> Tensor:
        """Fused memory ``T x D x H x W`` of every target's class at ``scale``.

        ``image_tokens`` (``T x HW x D``) is needed only by the ``"argmax"`` fusion.
        """
        bank = self.banks[scale]  # C x N x D x H x W
        side = self.sizes[scale]
        if self.fusion == "argmax":
            if image_tokens is None:
                raise ValueError("the argmax fusion needs the image tokens")
            index = self.argmax_entry(scale, image_tokens, category)
            return bank[category, index]
        classes, inverse = torch.unique(category, return_inverse=True)
        chosen = bank.index_select(0, classes)  # U x N x D x H x W
        assert self.fusers is not None
        if self.fusion == "conv3d":
            fused = self.fusers[scale](chosen.transpose(1, 2)).squeeze(2)
        else:
            fused = self.fusers[scale](chosen.reshape(len(classes), -1, side, side))
        return fused[inverse]

    def argmax_entry(self, scale: int, image_tokens: Tensor, category: Tensor) -> Tensor:
        """Index ``(T,)`` of the entry of each target's class most similar (cosine) to its tokens."""
        bank = self.banks[scale].flatten(2)  # C x N x (D H W)
        x = image_tokens.transpose(1, 2).flatten(1)  # T x (D H W), same order as the bank
        classes, inverse = torch.unique(category, return_inverse=True)
        entries = bank.index_select(0, classes)  # U x N x K
        dots = (x @ entries.flatten(0, 1).T).unflatten(1, entries.shape[:2])  # T x U x N
        dots = dots[torch.arange(len(x), device=x.device), inverse]  # T x N
        norms = entries.norm(dim=-1)[inverse] * x.norm(dim=-1, keepdim=True)
        return (dots / norms.clamp_min(1e-12)).argmax(dim=-1)

    def forward(
        self, scale: int, image_tokens: Tensor, initial_mask: Tensor, category: Tensor
    ) -> Tensor:
        """Refine ``image_tokens`` (``T x HW x D``) with the memory of each target's class.

        Args:
            scale: scale index ``s``.
            image_tokens: ``T x H_s W_s x D`` tokens (row-major).
            initial_mask: ``T x H_s x W_s`` initial mask logits.
            category: ``(T,)`` long class of every target.

        Returns:
            ``T x H_s W_s x D`` refined tokens, ``x + alpha * (r - x)``.
        """
        if not 0 <= scale < self.num_scales:
            raise ValueError(f"scale {scale} is out of range for {self.num_scales} scales")
        side = self.sizes[scale]
        t = image_tokens.shape[0]
        if image_tokens.shape[1:] != (side * side, self.dim):
            raise ValueError(
                f"image_tokens at scale {scale} must be T x {side * side} x {self.dim}, got "
                f"{tuple(image_tokens.shape)}"
            )
        if initial_mask.shape != (t, side, side):
            raise ValueError(
                f"initial_mask at scale {scale} must be {t} x {side} x {side}, got "
                f"{tuple(initial_mask.shape)}"
            )
        self._check_category(category, t)

        x = image_tokens
        x_sa = self.norm_sa[scale](x + self.self_attn[scale](x, x, x))
        memory = self.fuse(scale, category, x)  # T x D x H x W
        encoded = self.mask_encoders[scale](initial_mask.sigmoid()[:, None].to(x.dtype))
        kv = (memory.to(x.dtype) + encoded).flatten(2).transpose(1, 2)  # T x HW x D
        refined = self.norm_ca[scale](x_sa + self.cross_attn[scale](x_sa, kv, kv))
        return x + self.alpha.to(x.dtype) * (refined - x)
