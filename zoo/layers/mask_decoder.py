"""GeoPix's multi-scale mask decoder: SAM-style two-way transformers conditioned on LLM tokens.

GeoPix (Ou et al.) answers a referring/grounding request with segmentation tokens; their
last-layer hidden states, mapped by an MLP (done elsewhere), give each target ``N_tok`` conditioning
embeddings per scale, ``cond: T×S×N_tok×D``. The visual encoder gives a pyramid
``features[s]: B×D×H_s×W_s`` already projected to ``D``. ``target_image: (T,)`` maps each of
the ``T`` targets (several may share an image) to its image.

For every scale ``s`` (each scale has its own weights)::

    keys    = features[s][target_image]                      # T×H_s W_s×D
    queries = cond[:, s]                                      # T×N_tok×D
    queries, keys = TwoWayBlock_depth(... TwoWayBlock_1(queries, keys) ...)
    queries = LN(queries + Attn(queries + cond[:, s], keys + pos, keys))   # SAM's final attention
    e       = MLP(mean over N_tok of queries)                 # T×D
    initial = e . keys^T                                      # T×H_s×W_s logits

With a memory (a :class:`~zoo.layers.memory.ClassWiseMemory`, built by the caller and given to
the constructor) the keys are refined by the memory (conditioned on the target's category and
``sigmoid(initial)``) and the mask is recomputed from the refined keys with the same ``e``;
without one the final mask of the scale is the initial mask. Every scale's
masks are upsampled (bilinear) to the largest scale and mixed with learnable weights,
``logits = sum_s softmax(w)_s mask_s`` (``w`` starts at zero: equal weights).

The position embedding of the image tokens is a fixed 2-D sine-cosine embedding (it works for any
``H_s×W_s``), added to the keys inside every attention, as in SAM; the initial conditioning tokens
play the role of SAM's query position embedding. All targets of a scale go through one batched
:func:`~torch.nn.functional.scaled_dot_product_attention` call per attention.

The forward pass checks shapes only, never values (that would copy them from the device to the
host at every step): the data guarantees that ``target_image`` and ``category`` are in range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers.attention import Attention

__all__ = ["MaskOutput", "MultiScaleMaskDecoder", "TokenMemory", "TwoWayBlock", "sincos_pos_embed_2d"]


class TokenMemory(Protocol):
    """What the decoder needs of a memory (e.g. :class:`~zoo.layers.memory.ClassWiseMemory`).

    The decoder is given its memory (it builds none and imports no memory module): any module
    with these attributes refining ``T×H_s W_s×D`` image tokens fits.
    """

    num_scales: int
    dim: int

    def __call__(
        self, scale: int, image_tokens: Tensor, initial_mask: Tensor, category: Tensor
    ) -> Tensor: ...


@dataclass
class MaskOutput:
    """Mask logits of a :class:`MultiScaleMaskDecoder`.

    Attributes:
        logits: ``T×H×W`` final logits (``H×W`` is the largest scale, or ``mask_size``).
        per_scale: ``T×S×H_0×W_0`` final logits of every scale, upsampled to the largest scale.
        initial: ``T×S×H_0×W_0`` logits before the memory refinement (equal to ``per_scale``
            without a memory).
    """

    logits: Tensor
    per_scale: Tensor
    initial: Tensor


def sincos_pos_embed_2d(
    height: int,
    width: int,
    dim: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Fixed 2-D sine-cosine position embedding, ``(height * width) x dim``, row-major order.

    A quarter of the channels each holds ``sin``/``cos`` of the row and of the column index at
    ``dim / 4`` geometric frequencies; ``dim`` must be a multiple of 4.
    """
    if dim % 4 != 0:
        raise ValueError(f"the sine-cosine position embedding needs dim % 4 == 0, got dim={dim}")
    quarter = dim // 4
    freqs = 1.0 / (10000.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] * freqs  # H×D/4
    xs = torch.arange(width, device=device, dtype=torch.float32)[:, None] * freqs  # W×D/4
    y = torch.cat([ys.sin(), ys.cos()], dim=-1)[:, None].expand(height, width, 2 * quarter)
    x = torch.cat([xs.sin(), xs.cos()], dim=-1)[None].expand(height, width, 2 * quarter)
    return torch.cat([y, x], dim=-1).reshape(height * width, dim).to(dtype or torch.float32)


class TwoWayBlock(nn.Module):
    """SAM's two-way attention block (post-norm, residual sublayers).

    1. self-attention of the tokens (with the token position embedding added to queries/keys;
       in the first block of SAM the position embedding is skipped and the output replaces the
       tokens, ``skip_first_layer_pe=True``);
    2. cross-attention tokens -> image;
    3. MLP on the tokens;
    4. cross-attention image -> tokens (updates the image tokens).

    Every sublayer is followed by a LayerNorm. The cross-attentions use SAM's internal
    down-projection ``attention_downsample_rate``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        mlp_dim = mlp_dim or 4 * dim
        self.skip_first_layer_pe = skip_first_layer_pe
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, attention_downsample_rate)
        self.norm4 = nn.LayerNorm(dim)

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Update ``queries`` (``b×n×dim``) and image ``keys`` (``b×hw×dim``).

        ``query_pe`` has the shape of ``queries``; ``key_pe`` broadcasts to ``keys``.
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class MultiScaleMaskDecoder(nn.Module):
    """GeoPix's mask predictor: per-scale two-way transformers, optional memory, weighted fusion.

    Args:
        dim: width ``D`` of the features and conditioning tokens (a multiple of 4 and of
            ``num_heads``).
        num_scales: number of scales ``S``.
        depth: two-way blocks per scale.
        num_heads: attention heads.
        mask_size: if set, the final logits are upsampled (bilinear) to ``mask_size x mask_size``;
            ``per_scale`` and ``initial`` stay at the largest scale's size.
        memory: the memory refining the image tokens (a module, e.g.
            :class:`~zoo.layers.memory.ClassWiseMemory`, built by the caller and registered here
            as the submodule ``memory``); None decodes without one. Its scales and width must
            be the decoder's.
    """

    def __init__(
        self,
        dim: int,
        num_scales: int,
        depth: int = 2,
        num_heads: int = 4,
        mask_size: int | None = None,
        memory: TokenMemory | None = None,
    ) -> None:
        super().__init__()
        if dim % 4 != 0 or dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be a multiple of 4 and of num_heads={num_heads}")
        if num_scales < 1 or depth < 1:
            raise ValueError(f"num_scales and depth must be >= 1, got {num_scales} and {depth}")
        if mask_size is not None and mask_size < 1:
            raise ValueError(f"mask_size must be positive, got {mask_size}")
        if memory is not None and (memory.num_scales != num_scales or memory.dim != dim):
            raise ValueError(
                f"memory has {memory.num_scales} scales of width {memory.dim}, the decoder "
                f"{num_scales} of width {dim}"
            )
        self.dim = dim
        self.num_scales = num_scales
        self.mask_size = mask_size
        self.memory = memory
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                TwoWayBlock(dim, num_heads, skip_first_layer_pe=(i == 0)) for i in range(depth)
            )
            for _ in range(num_scales)
        )
        self.final_attn = nn.ModuleList(
            Attention(dim, num_heads, downsample_rate=2) for _ in range(num_scales)
        )
        self.final_norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_scales))
        self.mask_mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
            for _ in range(num_scales)
        )
        self.scale_weights = nn.Parameter(torch.zeros(num_scales))

    def _validate(
        self,
        features: Sequence[Tensor],
        cond: Tensor,
        target_image: Tensor,
        category: Tensor | None,
    ) -> None:
        """Shapes and dtypes only: reading values (e.g. the range of ``target_image``) would copy
        them to the host at every step; the data guarantees them (see
        :func:`zoo.data.seg_targets.check_referring_batch`)."""
        if len(features) != self.num_scales:
            raise ValueError(f"expected {self.num_scales} feature maps, got {len(features)}")
        batch = None
        for s, f in enumerate(features):
            if f.ndim != 4 or f.shape[1] != self.dim:
                raise ValueError(
                    f"features[{s}] must be B×{self.dim}×H×W, got {tuple(f.shape)}"
                )
            if batch is not None and f.shape[0] != batch:
                raise ValueError(f"features[{s}] has batch {f.shape[0]}, features[0] has {batch}")
            batch = f.shape[0]
        if cond.ndim != 4 or cond.shape[1] != self.num_scales or cond.shape[3] != self.dim:
            raise ValueError(
                f"cond must be T×{self.num_scales}×N_tok×{self.dim}, got {tuple(cond.shape)}"
            )
        if target_image.shape != (cond.shape[0],) or target_image.dtype != torch.long:
            raise ValueError(
                f"target_image must be a ({cond.shape[0]},) long tensor, got "
                f"{tuple(target_image.shape)} {target_image.dtype}"
            )
        if self.memory is not None and category is None:
            raise ValueError("a memory needs the targets' category")

    def forward(
        self,
        features: Sequence[Tensor],
        cond: Tensor,
        target_image: Tensor,
        category: Tensor | None = None,
    ) -> MaskOutput:
        """Predict mask logits for ``T`` targets.

        Args:
            features: ``S`` maps ``B×D×H_s×W_s``; the first largest (by area) sets the output
                size.
            cond: ``T×S×N_tok×D`` conditioning tokens.
            target_image: ``(T,)`` long, image index of every target (each in ``[0, B)``).
            category: ``(T,)`` long class of every target (needed with a memory).
        """
        self._validate(features, cond, target_image, category)
        sizes = [tuple(f.shape[-2:]) for f in features]
        out_size = max(sizes, key=lambda hw: hw[0] * hw[1])
        initial, final = [], []
        for s, f in enumerate(features):
            h, w = sizes[s]
            keys = f.flatten(2).transpose(1, 2)[target_image]  # T×HW×D
            key_pe = sincos_pos_embed_2d(h, w, self.dim, f.device, f.dtype)
            query_pe = cond[:, s]
            queries = query_pe
            for block in self.blocks[s]:
                queries, keys = block(queries, keys, query_pe, key_pe)
            attn = self.final_attn[s](queries + query_pe, keys + key_pe, keys)
            queries = self.final_norm[s](queries + attn)
            embed = self.mask_mlp[s](queries.mean(dim=1))  # T×D
            mask = torch.einsum("td,tpd->tp", embed, keys).unflatten(1, (h, w))
            initial.append(mask)
            if self.memory is not None:
                refined = self.memory(s, keys, mask, category)
                mask = torch.einsum("td,tpd->tp", embed, refined).unflatten(1, (h, w))
            final.append(mask)

        initial_t = torch.stack([_resize(m, out_size) for m in initial], dim=1)
        per_scale = torch.stack([_resize(m, out_size) for m in final], dim=1)
        weights = self.scale_weights.softmax(dim=0).to(per_scale.dtype)
        logits = torch.einsum("s,tshw->thw", weights, per_scale)
        if self.mask_size is not None:
            logits = _resize(logits, (self.mask_size, self.mask_size))
        return MaskOutput(logits=logits, per_scale=per_scale, initial=initial_t)


def _resize(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``T×H×W`` logits (a no-op when the size already matches)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
