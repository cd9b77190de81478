"""GeoPix's multi-scale mask predictor: SAM-style two-way transformers conditioned on LLM tokens.

GeoPix (Ou et al., Sec. III-A, Fig. 2) answers a referring request with segmentation tokens;
their hidden states, mapped by an MLP (done elsewhere), give each target ``N_tok`` conditioning
embeddings per scale, ``cond: T×S×N_tok×D``. The vision encoder gives a pyramid
``features[s]: B×D×H_s×W_s`` already projected to ``D`` (``P^ℓ(F^ℓ)``). ``target_image: (T,)``
maps each of the ``T`` targets (several may share an image) to its image.

Scales run coarse to fine: from the last (deepest) to the first. For every scale ``s`` (each
with its own weights)::

    x       = LN(f + SelfAttn(f + pos))          # SA(P(F)), per image: B×H_s W_s×D
    x       = x[target_image]                    # T×H_s W_s×D
    x       = x + x * sigmoid(coarser mask)      # coarse-to-fine (PixelLM), not at the first scale
    initial = predict(x)                         # T×(4 H_s)×(4 W_s)
    final   = predict(memory(x, initial))        # Eqs. 2-3; without memory: final = initial

    predict(x):
        queries, keys = TwoWayBlock_depth(... TwoWayBlock_1(cond[:, s], x) ...)
        queries = LN(queries + Attn(queries + cond[:, s], keys + pos, keys))  # SAM's final attention
        e       = MLP(pool over N_tok of queries)       # T×D/8, SAM's hypernetwork MLP
        up      = Upscale(keys as T×D×H_s×W_s)          # T×D/8×4H_s×4W_s, two transposed convs
        mask    = e . up                                 # T×4H_s×4W_s logits

**Resolution.** ``Upscale`` is SAM's (``ConvTranspose2d`` 2×, LayerNorm, GELU,
``ConvTranspose2d`` 2×, GELU), so every scale's masks come out at ``2 ** upscale_stages`` (4 by
default) times its token grid: 96×96 for CLIP ViT-L/14 at 336 px (24×24 tokens), then bilinear
to ``mask_size``. ``upscale_stages = 0`` keeps the token grid (the decoder before this change).

**Pooling the N tokens.** ``token_pooling = "learned"`` (PixelLM) weighs a scale's ``N_tok``
queries with ``softmax(w_s)`` (learnable, starting at zero: equal weights); ``"mean"`` is the
plain mean (the decoder before this change).

**The memory** (a :class:`~zoo.layers.memory.ClassWiseMemory`, built by the caller and given to
the constructor) returns ``H_me = x + alpha · CA(x, F(h) + I(m_init))``; the scale's final mask is
the same predictor run on ``H_me``, so at ``alpha = 0`` the final masks are the initial ones: the
decoder without memory. The scales' masks are upsampled (bilinear) to the largest one and summed
with learnable weights, ``P = sum_s beta_s P_s`` with ``beta = softmax(w)`` (``w`` starts at
zero: equal weights).

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
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.layers.attention import Attention, sincos_pos_embed_2d

__all__ = [
    "MaskOutput",
    "MultiScaleMaskDecoder",
    "TokenMemory",
    "TwoWayBlock",
    "sincos_pos_embed_2d",
]

TokenPooling = Literal["learned", "mean"]


class TokenMemory(Protocol):
    """What the decoder needs of a memory (e.g. :class:`~zoo.layers.memory.ClassWiseMemory`).

    The decoder is given its memory (it builds none and imports no memory module): any module
    with these attributes turning ``T×H_s W_s×D`` image tokens and ``T×(k H_s)×(k W_s)`` initial
    masks (``k = mask_stride``) into enhanced tokens fits.
    """

    num_scales: int
    dim: int
    mask_stride: int

    def __call__(
        self, scale: int, image_tokens: Tensor, initial_mask: Tensor, category: Tensor
    ) -> Tensor: ...


@dataclass
class MaskOutput:
    """Mask logits of a :class:`MultiScaleMaskDecoder`.

    Attributes:
        logits: ``T×H×W`` final logits (``H×W``: the largest scale's mask resolution, or
            ``mask_size``).
        per_scale: ``T×S×H_0×W_0`` final logits of every scale at the largest scale's mask
            resolution (``2 ** upscale_stages`` times its token grid).
        initial: ``T×S×H_0×W_0`` logits before the memory (equal to ``per_scale`` without a
            memory).
    """

    logits: Tensor
    per_scale: Tensor
    initial: Tensor


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``B×C×H×W`` map (SAM's)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _upscaler(dim: int, stages: int) -> tuple[nn.Module, int]:
    """SAM's output upscaling (2× per stage, widths D/4, D/8, ...) and its output width."""
    if stages == 0:
        return nn.Identity(), dim
    layers: list[nn.Module] = []
    width = dim
    for i in range(stages):
        out = dim // (4 * 2**i)
        layers.append(nn.ConvTranspose2d(width, out, kernel_size=2, stride=2))
        if i < stages - 1:
            layers.append(LayerNorm2d(out))
        layers.append(nn.GELU())
        width = out
    return nn.Sequential(*layers), width


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

    Args:
        dim: The width of the tokens and image tokens.
        num_heads: The number of attention heads.
        mlp_dim: The hidden width of the token MLP (default ``4 * dim``).
        attention_downsample_rate: The cross-attentions' internal down-projection.
        skip_first_layer_pe: Skip the position embedding in the self-attention and replace the
            tokens by its output (SAM's first block).
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
        """Update the tokens and the image tokens.

        Args:
            queries: The tokens, ``b×n×dim``.
            keys: The image tokens, ``b×hw×dim``.
            query_pe: The tokens' position embedding, the shape of ``queries``.
            key_pe: The image tokens' position embedding, broadcast to ``keys``.

        Returns:
            The updated tokens and image tokens, the shapes of ``queries`` and ``keys``.
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
    """GeoPix's mask predictor: per-scale two-way transformers, memory, weighted fusion.

    Args:
        dim: width ``D`` of the features and conditioning tokens (a multiple of 4, of
            ``num_heads`` and, with upscaling, of ``4 · 2 ** (upscale_stages - 1)``).
        num_scales: number of scales ``S``.
        depth: two-way blocks per scale.
        num_heads: attention heads.
        mask_size: if set, the final logits are upsampled (bilinear) to ``mask_size x mask_size``;
            ``per_scale`` and ``initial`` stay at the native mask resolution.
        memory: the memory producing ``H_me`` (a module, e.g.
            :class:`~zoo.layers.memory.ClassWiseMemory`, built by the caller and registered here
            as the submodule ``memory``); None decodes without one. Its scales, width and
            ``mask_stride`` must be the decoder's.
        upscale_stages: transposed-convolution stages (2× each) from the token grid to the
            native mask resolution (SAM, LISA: 2, i.e. 4×).
        tokens_per_scale: ``N_tok``, the segmentation tokens of a scale (for the learned
            pooling weights).
        token_pooling: ``"learned"`` (PixelLM) or ``"mean"`` over a scale's ``N_tok`` queries.
        coarse_to_fine: modulate each scale's features by the next coarser scale's mask.

    Raises:
        ValueError: If ``dim`` does not suit ``num_heads`` or ``upscale_stages``, a count or
            ``mask_size`` is not positive, ``token_pooling`` is unknown, or the memory's scales,
            width or ``mask_stride`` differ from the decoder's.
    """

    def __init__(
        self,
        dim: int,
        num_scales: int,
        depth: int = 2,
        num_heads: int = 4,
        mask_size: int | None = None,
        memory: TokenMemory | None = None,
        upscale_stages: int = 2,
        tokens_per_scale: int = 3,
        token_pooling: TokenPooling = "learned",
        coarse_to_fine: bool = True,
    ) -> None:
        super().__init__()
        if dim % 4 != 0 or dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be a multiple of 4 and of num_heads={num_heads}")
        if num_scales < 1 or depth < 1:
            raise ValueError(f"num_scales and depth must be >= 1, got {num_scales} and {depth}")
        if mask_size is not None and mask_size < 1:
            raise ValueError(f"mask_size must be positive, got {mask_size}")
        if upscale_stages < 0 or (upscale_stages and dim % (4 * 2 ** (upscale_stages - 1))):
            raise ValueError(
                f"upscale_stages={upscale_stages} needs dim={dim} to be a multiple of "
                f"{4 * 2 ** max(0, upscale_stages - 1)} (each stage halves the width)"
            )
        if token_pooling not in ("learned", "mean"):
            raise ValueError(f"token_pooling must be 'learned' or 'mean', got {token_pooling!r}")
        self.upscale = 2**upscale_stages
        if memory is not None and (
            memory.num_scales != num_scales
            or memory.dim != dim
            or memory.mask_stride != self.upscale
        ):
            raise ValueError(
                f"memory has {memory.num_scales} scales of width {memory.dim} and mask_stride "
                f"{memory.mask_stride}, the decoder {num_scales} of width {dim} and masks at "
                f"{self.upscale}× the token grid"
            )
        self.dim = dim
        self.num_scales = num_scales
        self.mask_size = mask_size
        self.memory = memory
        self.token_pooling = token_pooling
        self.coarse_to_fine = coarse_to_fine
        self.image_attn = nn.ModuleList(Attention(dim, num_heads) for _ in range(num_scales))
        self.image_norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_scales))
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
        upscalers = [_upscaler(dim, upscale_stages) for _ in range(num_scales)]
        self.upscalers = nn.ModuleList(u for u, _ in upscalers)
        out_dim = upscalers[0][1]
        self.mask_mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_dim))
            for _ in range(num_scales)
        )
        self.token_weights = nn.Parameter(torch.zeros(num_scales, tokens_per_scale))
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
                raise ValueError(f"features[{s}] must be B×{self.dim}×H×W, got {tuple(f.shape)}")
            if batch is not None and f.shape[0] != batch:
                raise ValueError(f"features[{s}] has batch {f.shape[0]}, features[0] has {batch}")
            batch = f.shape[0]
        n_tok = self.token_weights.shape[1]
        if cond.ndim != 4 or cond.shape[1] != self.num_scales or cond.shape[3] != self.dim:
            raise ValueError(
                f"cond must be T×{self.num_scales}×N_tok×{self.dim}, got {tuple(cond.shape)}"
            )
        if self.token_pooling == "learned" and cond.shape[2] != n_tok:
            raise ValueError(
                f"cond has {cond.shape[2]} tokens per scale, the decoder's learned pooling "
                f"{n_tok} (tokens_per_scale)"
            )
        if target_image.shape != (cond.shape[0],) or target_image.dtype != torch.long:
            raise ValueError(
                f"target_image must be a ({cond.shape[0]},) long tensor, got "
                f"{tuple(target_image.shape)} {target_image.dtype}"
            )
        if self.memory is not None and category is None:
            raise ValueError("a memory needs the targets' category")

    def self_attend(self, scale: int, feature: Tensor) -> Tensor:
        """``SA(P(F))``: self-attention over the image tokens of a projected map.

        Args:
            scale: The scale whose weights are used.
            feature: The projected map, ``B×D×H×W``.

        Returns:
            The image tokens, ``B×HW×D``.
        """
        h, w = feature.shape[-2:]
        tokens = feature.flatten(2).transpose(1, 2)
        pe = sincos_pos_embed_2d(h, w, self.dim, feature.device, feature.dtype)
        q = tokens + pe
        return self.image_norm[scale](tokens + self.image_attn[scale](q, q, tokens))

    def predict(self, scale: int, keys: Tensor, cond: Tensor, size: tuple[int, int]) -> Tensor:
        """Mask logits of one scale from its image tokens and conditioning tokens.

        Args:
            scale: The scale whose weights are used.
            keys: The image tokens of each target, ``T×HW×D``.
            cond: The conditioning tokens of the scale, ``T×N_tok×D``.
            size: ``(H, W)``, the token grid of the scale.

        Returns:
            The mask logits ``T×(k H)×(k W)``, ``k = 2 ** upscale_stages``.
        """
        h, w = size
        key_pe = sincos_pos_embed_2d(h, w, self.dim, keys.device, keys.dtype)
        queries = cond
        for block in self.blocks[scale]:
            queries, keys = block(queries, keys, cond, key_pe)
        attn = self.final_attn[scale](queries + cond, keys + key_pe, keys)
        queries = self.final_norm[scale](queries + attn)
        if self.token_pooling == "learned":
            weights = self.token_weights[scale].softmax(dim=0).to(queries.dtype)
            pooled = torch.einsum("n,tnd->td", weights, queries)
        else:
            pooled = queries.mean(dim=1)
        embed = self.mask_mlp[scale](pooled)  # T×D'
        grid = keys.transpose(1, 2).unflatten(2, (h, w))  # T×D×H×W
        return torch.einsum("td,tdhw->thw", embed, self.upscalers[scale](grid))

    def forward(
        self,
        features: Sequence[Tensor],
        cond: Tensor,
        target_image: Tensor,
        category: Tensor | None = None,
    ) -> MaskOutput:
        """Predict mask logits for ``T`` targets.

        Args:
            features: ``S`` maps ``B×D×H_s×W_s``, the finest first, the coarsest (deepest)
                last; the largest (by area) sets the output size.
            cond: ``T×S×N_tok×D`` conditioning tokens.
            target_image: ``(T,)`` long, image index of every target (each in ``[0, B)``).
            category: ``(T,)`` long class of every target (needed with a memory).

        Returns:
            The final, per-scale and initial mask logits.

        Raises:
            ValueError: If a shape or dtype does not match the decoder, or a memory gets no
                ``category``.
        """
        self._validate(features, cond, target_image, category)
        sizes = [tuple(f.shape[-2:]) for f in features]
        out_size = max(sizes, key=lambda hw: hw[0] * hw[1])
        out_size = (out_size[0] * self.upscale, out_size[1] * self.upscale)
        initial: list[Tensor] = [cond.new_zeros(0)] * self.num_scales
        final: list[Tensor] = [cond.new_zeros(0)] * self.num_scales
        coarser: Tensor | None = None
        for s in reversed(range(self.num_scales)):  # coarse (deepest) to fine
            h, w = sizes[s]
            x = self.self_attend(s, features[s])[target_image]  # T×HW×D
            if self.coarse_to_fine and coarser is not None:
                gate = F.interpolate(
                    coarser[:, None], size=(h, w), mode="bilinear", align_corners=False
                )
                x = x + x * gate.flatten(1).sigmoid()[..., None]
            initial[s] = self.predict(s, x, cond[:, s], (h, w))
            final[s] = initial[s]
            if self.memory is not None:
                enhanced = self.memory(s, x, initial[s], category)
                final[s] = self.predict(s, enhanced, cond[:, s], (h, w))
            coarser = final[s]

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
