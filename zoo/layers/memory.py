"""GeoPix's class-wise learnable memory (CLM), Eqs. 1-3 of the paper.

**Bank (Eq. 1).** Every scale ``ℓ`` holds a learnable bank ``K×N×D_m×H×W``: ``K`` classes,
capacity ``N`` entries per class, each a ``D_m×H×W`` map of its own width ``memory_dim = D_m``
(independent of the mask decoder's width; the paper's ``N`` is 64). A target of class ``c``
retrieves ``h = bank[c]`` (``N×D_m×H×W``).

**Memory encoder.** ``I`` embeds ``sigmoid`` of the target's initial mask (at the mask's own
resolution, ``mask_stride`` times the token grid) into ``D_m×H×W``: stride-2 convolutions (one
per factor of 2, as SAM 2's mask downsampler), then a ``1×1`` convolution.

**Fusion over N (Table IX).** ``F`` reduces ``h`` to one ``D_m×H×W`` map:

* ``"conv3d"``: ``h`` as a volume with the ``N`` entries as channels and ``D_m×H×W`` as depth,
  height and width; pointwise ``Conv3d`` ``N -> 32 -> 16 -> 1`` with BatchNorm and ReLU (the
  authors' release), shared across ``D_m``, ``H``, ``W``: 2,721 parameters at ``N = 64``.
* ``"conv2d"``: ``h`` reshaped to ``(K D_m)×N×H×W`` (the paper's layout), pointwise ``Conv2d``
  ``N -> 32 -> 16 -> 1`` with BatchNorm: the same count. Both are networks over the capacity
  axis only; they differ in the tensor layout the paper names (and in BatchNorm's axes, which
  here gather the same statistics).
* ``"argmax"``: the entry whose ``D_m×H×W`` map is most similar (cosine) to the encoded mask
  ``I(m)`` is taken (no parameters; the gradient reaches only the chosen entry).
* ``"attention"``: the encoded mask attends over the positions of the entries: query
  ``I(m)`` (``HW×D_m`` per target), key and value ``h`` as ``HW×N D_m`` (the paper's
  ``HW × K × ND``, sequence-first): ``2 D_m² + 2 N D_m² + 4 D_m`` parameters, 532,736 at
  ``D_m = N = 64`` (the paper: 532.8 K).
* ``"dual_attention"``: first ``h`` (``HW×N D_m``) attends to ``I(m)`` (``h' = h + Attn(h, I,
  I)``), then ``I(m)`` attends to ``h'`` as in ``"attention"``: 34,627,840 parameters at
  ``D_m = N = 64`` (the paper: 34.6 M).

**Memory attention (Eqs. 2-3).** With ``x = SA(P^ℓ(F^ℓ))`` the self-attended projected visual
features of the target's image (``T×HW×D``, computed by the mask decoder)::

    kv   = F(h) + I(m_init)                         # T×HW×D_m
    H_me = x + alpha * CA(x + pe, kv + pe, kv)      # T×HW×D, a residual with learnable alpha

``alpha`` (``memory.alpha``, initialized at ``alpha_init``) scales the cross-attention only:
``alpha = 0`` returns ``x`` exactly, so a decoder that predicts its final masks from ``H_me``
predicts its initial masks again (the decoder without memory).

Batched over targets, in shapes known on the host (no ``torch.unique``): for the convolutional
fusions with at least as many targets as classes the whole bank is fused once per class and each
target picks its class; otherwise each target's slice is gathered. The conv fusions' pointwise
layers run as batched matrix products. The category's values are not checked here (that would
copy them to the host at every step): the data checks them
(:func:`zoo.data.seg_targets.check_referring_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from zoo.layers.attention import Attention, sincos_pos_embed_2d

__all__ = ["FUSIONS", "ClassWiseMemory", "Fusion", "fusion_parameters"]

Fusion = Literal["conv3d", "conv2d", "argmax", "attention", "dual_attention"]
FUSIONS: tuple[Fusion, ...] = ("conv3d", "conv2d", "argmax", "attention", "dual_attention")

#: Widths of the pointwise fusion network over the capacity axis (the authors' release).
FUSION_WIDTHS = (32, 16)


def _pointwise(capacity: int, conv: type[nn.Module], norm: type[nn.Module]) -> nn.Sequential:
    """``capacity -> 32 -> 16 -> 1`` pointwise convolutions with BatchNorm and ReLU."""
    layers: list[nn.Module] = []
    width = capacity
    for hidden in FUSION_WIDTHS:
        layers += [conv(width, hidden, kernel_size=1), norm(hidden), nn.ReLU()]
        width = hidden
    layers.append(conv(width, 1, kernel_size=1))
    return nn.Sequential(*layers)


class _AttentionFusion(nn.Module):
    """The ``"attention"`` and ``"dual_attention"`` fusions (see the module docstring)."""

    def __init__(self, memory_dim: int, capacity: int, num_heads: int, dual: bool) -> None:
        super().__init__()
        wide = capacity * memory_dim
        self.first = Attention(wide, num_heads, kv_dim=memory_dim) if dual else None
        self.attn = Attention(memory_dim, num_heads, kv_dim=wide)

    def forward(self, entries: Tensor, encoded: Tensor, pe: Tensor, wide_pe: Tensor) -> Tensor:
        """``entries`` ``T×HW×N D_m`` and ``encoded`` ``T×HW×D_m`` -> ``T×HW×D_m``."""
        if self.first is not None:
            entries = entries + self.first(entries + wide_pe, encoded + pe, encoded)
        return self.attn(encoded + pe, entries + wide_pe, entries)


_NORMS = nn.modules.batchnorm._BatchNorm


def _pointwise_over_capacity(network: nn.Sequential, entries: Tensor) -> Tensor:
    """The conv fusions' pointwise network run on ``K×N×L`` entries as matrix products.

    A ``1×1(×1)`` convolution over the ``N`` channels is the product of its ``out×N`` weight
    with every ``N×L`` slice; BatchNorm takes its statistics over all ``K·L`` positions of a
    channel either way, so ``"conv3d"`` (``L = D_m·H·W`` as a volume) and ``"conv2d"`` (``D_m``
    folded into the batch) compute the same function of the same weights. On CPU this is
    faster than ``Conv3d``, which has no pointwise fast path there (``slow_conv3d``).
    The layers are the modules of ``network`` (their weights and BatchNorm's running statistics
    and counters, so its state dict is unchanged).

    Args:
        network: the ``N -> 32 -> 16 -> 1`` network of :func:`_pointwise`.
        entries: ``K×N×L`` entries (``L`` positions per class slice).

    Returns:
        ``K×1×L``: the fused entries.
    """
    x = entries
    layers = list(network)
    for i, layer in enumerate(layers):
        if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
            weight = layer.weight.flatten(1)  # out×in
            x = torch.baddbmm(layer.bias[:, None], weight.expand(len(x), -1, -1), x)
        elif isinstance(layer, _NORMS):
            # The module itself (running statistics, momentum, num_batches_tracked), on the
            # ``K×C×L`` map viewed with the trailing unit axes its input check wants; a ReLU
            # after it runs in place on its output (BatchNorm's backward needs its input only).
            shape = x.shape
            x = layer(x.view(*shape, *[1] * (2 if isinstance(layer, nn.BatchNorm3d) else 1)))
            if i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU):
                x = torch.relu_(x)
            x = x.view(shape)
        elif not (isinstance(layer, nn.ReLU) and i > 0 and isinstance(layers[i - 1], _NORMS)):
            x = layer(x)
    return x


def _mask_encoder(memory_dim: int, stride: int) -> nn.Sequential:
    """``1×(stride H)×(stride W)`` mask -> ``D_m×H×W``: one stride-2 conv per factor of 2."""
    hidden = max(1, memory_dim // 4)
    layers: list[nn.Module] = []
    width = 1
    for _ in range(int(math.log2(stride))):
        layers += [nn.Conv2d(width, hidden, kernel_size=3, stride=2, padding=1), nn.GELU()]
        width = hidden
    if not layers:
        layers += [nn.Conv2d(1, hidden, kernel_size=3, padding=1), nn.GELU()]
    layers.append(nn.Conv2d(hidden, memory_dim, kernel_size=1))
    return nn.Sequential(*layers)


class ClassWiseMemory(nn.Module):
    """Class-wise learnable memory producing memory-enhanced features (see the module docstring).

    Args:
        num_classes: number of classes ``K``.
        num_scales: number of scales ``L``.
        dim: width ``D`` of the visual features it enhances (the mask decoder's; a multiple of
            ``num_heads``).
        size: side ``H = W`` of each scale's token grid, one int for all scales or one per scale.
        capacity: entries ``N`` per class and scale.
        fusion: how the ``N`` entries are fused (Table IX): ``"conv3d"``, ``"conv2d"``,
            ``"argmax"``, ``"attention"`` or ``"dual_attention"``.
        num_heads: attention heads (memory attention and the attention fusions).
        memory_dim: width ``D_m`` of the bank (a multiple of 4 and of ``num_heads``).
        mask_stride: the initial masks' resolution over the token grid (a power of 2).
        alpha_init: initial value of the residual weight ``alpha``.
        init_std: standard deviation of the bank's normal initialization.

    Raises:
        ValueError: If ``size`` does not give one side per scale, a count or side is not
            positive, ``fusion`` is unknown, ``memory_dim`` does not suit ``num_heads``, or
            ``mask_stride`` is not a power of 2.
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
        memory_dim: int = 64,
        mask_stride: int = 1,
        alpha_init: float = 0.1,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        sizes = [size] * num_scales if isinstance(size, int) else [int(s) for s in size]
        if len(sizes) != num_scales:
            raise ValueError(f"got {len(sizes)} sizes for {num_scales} scales")
        if num_classes < 1 or capacity < 1 or min(sizes) < 1:
            raise ValueError("num_classes, capacity and sizes must be positive")
        if fusion not in FUSIONS:
            raise ValueError(
                f"fusion must be one of {', '.join(map(repr, FUSIONS))}, got {fusion!r}"
            )
        if memory_dim % 4 or memory_dim % num_heads:
            raise ValueError(
                f"memory_dim={memory_dim} must be a multiple of 4 and of num_heads={num_heads}"
            )
        if mask_stride < 1 or mask_stride & (mask_stride - 1):
            raise ValueError(f"mask_stride must be a power of 2, got {mask_stride}")
        self.num_classes = num_classes
        self.num_scales = num_scales
        self.dim = dim
        self.memory_dim = memory_dim
        self.sizes = sizes
        self.capacity = capacity
        self.fusion = fusion
        self.mask_stride = mask_stride
        self.banks = nn.ParameterList(
            nn.Parameter(torch.randn(num_classes, capacity, memory_dim, s, s) * init_std)
            for s in sizes
        )
        self.fusers: nn.ModuleList | None = None
        if fusion == "conv3d":
            self.fusers = nn.ModuleList(
                _pointwise(capacity, nn.Conv3d, nn.BatchNorm3d) for _ in sizes
            )
        elif fusion == "conv2d":
            self.fusers = nn.ModuleList(
                _pointwise(capacity, nn.Conv2d, nn.BatchNorm2d) for _ in sizes
            )
        elif fusion in ("attention", "dual_attention"):
            self.fusers = nn.ModuleList(
                _AttentionFusion(memory_dim, capacity, num_heads, fusion == "dual_attention")
                for _ in sizes
            )
        self.mask_encoders = nn.ModuleList(_mask_encoder(memory_dim, mask_stride) for _ in sizes)
        self.cross_attn = nn.ModuleList(Attention(dim, num_heads, kv_dim=memory_dim) for _ in sizes)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def _check_category(self, category: Tensor, num_targets: int) -> None:
        """Shape and dtype only (the values' range is the data's check)."""
        if category.shape != (num_targets,) or category.dtype != torch.long:
            raise ValueError(
                f"category must be a ({num_targets},) long tensor, got "
                f"{tuple(category.shape)} {category.dtype}"
            )

    def _class_slices(self, scale: int, category: Tensor) -> tuple[Tensor, Tensor]:
        """Bank slices ``K×N×D_m×H×W`` and the row of each target in them, ``(T,)``.

        ``K = C`` (the whole bank, no copy) when there are at least as many targets as classes,
        else ``K = T`` (each target's slice): in shapes known without reading ``category``. (In
        training, the conv fusions' BatchNorm then takes its statistics over the fused slices:
        over the whole bank, the classes absent from the batch get gradient through those
        statistics only. Fusing per target instead costs ``T / C`` times more.)
        """
        bank = self.banks[scale]
        if len(category) >= self.num_classes:
            return bank, category
        return bank.index_select(0, category), torch.arange(len(category), device=category.device)

    def encode_mask(self, scale: int, initial_mask: Tensor) -> Tensor:
        """``I(m_init)``: the memory encoder's embedding of the initial masks.

        Args:
            scale: The scale index ``ℓ``.
            initial_mask: The initial mask logits, ``T×(s H)×(s W)`` (``s = mask_stride``).

        Returns:
            The encoded masks, ``T×D_m×H×W``.
        """
        return self.mask_encoders[scale](initial_mask.sigmoid()[:, None])

    def fuse(self, scale: int, category: Tensor, encoded: Tensor | None = None) -> Tensor:
        """``F(h)``: the fused memory ``T×D_m×H×W`` of every target's class at ``scale``.

        Args:
            scale: The scale index ``ℓ``.
            category: ``(T,)`` long class of every target.
            encoded: ``I(m_init)``, ``T×D_m×H×W``; needed by the argmax and attention fusions.

        Returns:
            The fused memory, ``T×D_m×H×W``.

        Raises:
            ValueError: If the argmax or an attention fusion gets no ``encoded``.
        """
        side, dm = self.sizes[scale], self.memory_dim
        if self.fusion in ("conv3d", "conv2d"):
            assert self.fusers is not None
            chosen, row = self._class_slices(scale, category)  # K×N×D_m×H×W
            fused = _pointwise_over_capacity(self.fusers[scale], chosen.flatten(2))  # K×1×L
            return fused.view(len(fused), dm, side, side)[row]
        if encoded is None:
            raise ValueError(f"the {self.fusion} fusion needs the encoded initial mask")
        if self.fusion == "argmax":
            return self.banks[scale][category, self.argmax_entry(scale, encoded, category)]
        assert self.fusers is not None
        entries = self.banks[scale].index_select(0, category)  # T×N×D_m×H×W
        entries = entries.flatten(3).permute(0, 3, 1, 2).flatten(2)  # T×HW×N D_m
        query = encoded.flatten(2).transpose(1, 2)  # T×HW×D_m
        pe = _pos_embed(side, dm, encoded)
        wide_pe = pe.repeat(1, self.capacity)  # each entry's slot gets the position
        fused = self.fusers[scale](entries, query, pe, wide_pe)
        return fused.transpose(1, 2).reshape(len(category), dm, side, side)

    def argmax_entry(self, scale: int, encoded: Tensor, category: Tensor) -> Tensor:
        """The entry of each target's class most similar (cosine) to its encoded mask.

        Args:
            scale: The scale index ``ℓ``.
            encoded: The encoded masks ``I(m_init)``, ``T×D_m×H×W``.
            category: ``(T,)`` long class of every target.

        Returns:
            The index of the chosen entry of every target, ``(T,)``.
        """
        chosen, row = self._class_slices(scale, category)
        entries = chosen.flatten(2)  # K×N×(D_m H W)
        x = encoded.flatten(1)  # T×(D_m H W), same order as the bank
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
        """Memory-enhanced features ``H_me`` (Eq. 3) of every target.

        Args:
            scale: scale index ``ℓ``.
            image_tokens: ``T×HW×D`` self-attended projected visual features ``SA(P(F))``
                (row-major).
            initial_mask: ``T×(s H)×(s W)`` initial mask logits (``s = mask_stride``).
            category: ``(T,)`` long class of every target, each in ``[0, K)`` (not checked
                here: see the module docstring).

        Returns:
            ``T×HW×D``: ``x + alpha · CA(x, F(h) + I(m_init))``.

        Raises:
            ValueError: If ``scale`` is out of range, or a shape or dtype does not match.
        """
        if not 0 <= scale < self.num_scales:
            raise ValueError(f"scale {scale} is out of range for {self.num_scales} scales")
        side, stride = self.sizes[scale], self.mask_stride
        t = image_tokens.shape[0]
        if image_tokens.shape[1:] != (side * side, self.dim):
            raise ValueError(
                f"image_tokens at scale {scale} must be T×{side * side}×{self.dim}, got "
                f"{tuple(image_tokens.shape)}"
            )
        if initial_mask.shape != (t, side * stride, side * stride):
            raise ValueError(
                f"initial_mask at scale {scale} must be {t}×{side * stride}×{side * stride}, got "
                f"{tuple(initial_mask.shape)}"
            )
        self._check_category(category, t)
        x = image_tokens
        encoded = self.encode_mask(scale, initial_mask.to(x.dtype))  # T×D_m×H×W
        memory = self.fuse(scale, category, encoded)
        kv = (memory.to(x.dtype) + encoded).flatten(2).transpose(1, 2)  # T×HW×D_m
        attended = self.cross_attn[scale](
            x + _pos_embed(side, self.dim, x), kv + _pos_embed(side, self.memory_dim, kv), kv
        )
        return x + self.alpha.to(x.dtype) * attended


def _pos_embed(side: int, dim: int, like: Tensor) -> Tensor:
    """The fixed sine-cosine embedding of a ``side×side`` grid, ``HW×dim``."""
    return sincos_pos_embed_2d(side, side, dim, like.device, like.dtype)


def fusion_parameters(
    fusion: Fusion, capacity: int = 64, memory_dim: int = 64, num_heads: int = 8
) -> int:
    """Learnable parameters of one scale's fusion ``F`` (the count Table IX reports).

    Args:
        fusion: The fusion (:data:`FUSIONS`).
        capacity: The entries ``N`` per class.
        memory_dim: The bank's width ``D_m``.
        num_heads: The attention heads of the attention fusions.

    Returns:
        The number of learnable parameters.
    """
    memory = ClassWiseMemory(1, 1, num_heads * 4, 1, capacity, fusion, num_heads, memory_dim)
    return 0 if memory.fusers is None else sum(p.numel() for p in memory.fusers.parameters())
