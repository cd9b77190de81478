"""Aquila's Spatial Feature Integration (SFI) and its convolutional-concatenation ablation.

SFI turns a pyramid of feature maps into ``L×L`` visual tokens. A grid of ``L×L`` queries
cross-attends, query by query, only to the part of every scale that lies under it: if scale ``s``
is a ``(k_s L) x (k_s L)`` map, query ``(i, j)`` sees the ``k_s x k_s`` window at rows
``i k_s .. (i+1) k_s - 1`` and columns ``j k_s .. (j+1) k_s - 1``, and its keys are those windows
concatenated over scales (``sum_s k_s^2`` keys). The design is close to the Spatial Vision
Aggregator of Cambrian-1 (Tong et al., 2024); the block used here is, per query ``x``::

    x = x + Dropout(OutProj(Attention(Q(LN(x)), K_s(LN_s(f_s)) + e_s [+ p_s], V_s(LN_s(f_s)))))
    x = x + MLP(LN(x))

where ``x`` starts as the learnable grid query plus its learnable absolute position embedding
(or as external queries, below). Each scale has its own LayerNorm ``LN_s`` and key/value
projections ``K_s``, ``V_s`` (stored fused as ``kv_projs[s]``: output rows ``[:dim]`` are keys,
``[dim:]`` values), a learnable embedding ``e_s`` added to its keys (so the attention logits can
tell the scales apart) and, optionally, learnable within-window positions ``p_s`` (see
``window_sizes``). Both sublayers are pre-norm with a residual.

In Aquila's Multi-layer Deep Alignment (MDA) the same block runs inside LLM decoder layers with
the LLM's hidden states at the visual positions as queries (``B×L^2×D``, row-major grid
order); pass them as ``queries=`` (no position embedding is added to them) and write the output
back at the same positions, e.g. ``h = torch.cat([h[:, :a], sfi(maps, h[:, a:a + L * L]),
h[:, a + L * L:]], 1)``.

The attention over all ``B L^2`` queries is one batched
:func:`~torch.nn.functional.scaled_dot_product_attention` call with one query per batch row: every
map is cut into its windows by a single reshape/permute, ``B×C×(k L) x (k L) ->
(B L^2) x k^2×C``. :func:`sfi_reference_loop` is a deliberately slow per-query version kept as the
reference for the tests and ``bench/sfi_vs_loop.py``.

``block="paper"`` is the block of the Aquila paper (§3.3) as written, per query ``x``::

    X_Q = W_Q x,   X_K = [W_K^s f_s(i_s) (+ p_s)]_s,   X_V = [W_V^s f_s(i_s)]_s
    X_Q* = X_Q + softmax(X_Q X_K^T / sqrt(C)) X_V

one head, bias-free projections, no norms, no output projection, no MLP and no scale embedding,
the keys of all scales concatenated; ``p_s`` are the within-window absolute positions (the
paper's "absolute positional encodings in the cross-attention"), present when ``window_sizes``
is given. The default ``block="rich"`` is the block above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvConcatBaseline", "SpatialFeatureIntegration", "sfi_reference_loop"]

# SDPA's CUDA kernels put the batch on a grid axis limited to 65535 (pytorch/pytorch#146704), so
# larger batches of query rows (B * L^2) are split; the split is harmless on other devices.
_SDPA_MAX_BATCH = 65535


def _validate_features(
    features: Sequence[Tensor],
    feature_dims: Sequence[int],
    grid_size: int,
    window_sizes: Sequence[int] | None = None,
    require_multiple: bool = True,
    name: str = "SFI",
) -> list[int]:
    """Check the feature pyramid and return each scale's window size ``k_s = side / grid_size``.

    Every map must be ``B×C_s×H_s×W_s`` with the module's ``C_s`` and a common ``B``. With
    ``require_multiple``, ``H_s = W_s = k_s * grid_size`` for an integer ``k_s >= 1`` (and, when
    ``window_sizes`` is given, ``k_s == window_sizes[s]``); otherwise the returned ``k_s`` is 0.

    Raises:
        TypeError: ``features`` is a single tensor instead of a sequence of them.
        ValueError: wrong number of scales, wrong rank, channels or batch size, or a map whose
            size does not fit the grid; the message names the scale and the sizes.
    """
    if isinstance(features, Tensor):
        raise TypeError(f"{name}: features must be a sequence of B×C×H×W maps, one per scale")
    if len(features) != len(feature_dims):
        raise ValueError(
            f"{name}: got {len(features)} feature maps but the module was built for "
            f"{len(feature_dims)} scales (feature_dims={list(feature_dims)})"
        )
    L = grid_size
    batch = None
    windows = []
    for s, (x, channels) in enumerate(zip(features, feature_dims, strict=True)):
        if x.ndim != 4:
            raise ValueError(
                f"{name} scale {s}: expected a B×C×H×W map, got shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        if c != channels:
            raise ValueError(
                f"{name} scale {s}: map has {c} channels but feature_dims[{s}] = {channels}"
            )
        if batch is None:
            batch = b
        elif b != batch:
            raise ValueError(f"{name} scale {s}: batch size {b} differs from scale 0's {batch}")
        if not require_multiple:
            windows.append(0)
            continue
        if h != w:
            raise ValueError(
                f"{name} scale {s}: feature map is {h}x{w} but must be square (side k*{L}); "
                f"use a square image or resize the map to a square k*{L} side"
            )
        if h < L or h % L:
            lower, upper = (h // L) * L, (h // L + 1) * L
            nearest = f"{lower} or {upper}" if lower >= L else f"{upper}"
            raise ValueError(
                f"{name} scale {s}: feature map is {h}x{w}, but its side must be a whole multiple "
                f"k*{L} (k >= 1) of grid_size={L}; nearest valid sides: {nearest}. Fix: choose the "
                f"image size so that this stage's map side is a multiple of {L} (image side = "
                f"stage stride x map side, so the image side must be a multiple of stride x {L}), "
                f"resize the map (F.interpolate / F.adaptive_avg_pool2d) to a valid side, or "
                f"use a smaller grid_size"
            )
        k = h // L
        if window_sizes is not None and k != window_sizes[s]:
            expected = window_sizes[s] * L
            raise ValueError(
                f"{name} scale {s}: feature map is {h}x{w} (window {k}x{k}) but the module was "
                f"built with window_sizes[{s}]={window_sizes[s]}, i.e. for a {expected}x{expected} "
                f"map; change the image size or window_sizes"
            )
        windows.append(k)
    return windows


def _windows(x: Tensor, grid_size: int, k: int) -> Tensor:
    """Cut ``B×C×(k L) x (k L)`` into ``(B L^2) x k^2×C``, grid and window both row-major."""
    b, c = x.shape[:2]
    L = grid_size
    x = x.reshape(b, c, L, k, L, k).permute(0, 2, 4, 3, 5, 1)  # B, i, j, a, b, C
    return x.reshape(b * L * L, k * k, c)


class _Mlp(nn.Sequential):
    """``Linear -> GELU -> Dropout -> Linear -> Dropout``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )


class SpatialFeatureIntegration(nn.Module):
    """Windowed multi-scale cross-attention from an ``L×L`` query grid (Aquila's SFI / MDA).

    Args:
        dim: width of the queries and of the output tokens; keys/values are projected to it.
        grid_size: ``L``; the module returns ``L^2`` tokens.
        feature_dims: channels ``C_s`` of each scale's map, in the order ``forward`` gets them.
        num_heads: attention heads; must divide ``dim``.
        mlp_ratio: hidden width of the MLP block as a multiple of ``dim``.
        learnable_queries: hold a learnable ``L×L`` query grid plus learnable absolute position
            embeddings (used when ``forward`` gets no ``queries``). ``False`` for MDA layers that
            always receive external queries; ``forward`` then requires them.
        dropout: attention-weight dropout and dropout on both residual branches (training only).
        window_sizes: optional ``k_s`` per scale, fixing each map's side to ``k_s * L``. When
            given, a learnable position embedding per window cell (``k_s^2 x dim`` per scale, as
            in Cambrian's SVA) is added to the keys, so attention also knows *where* in the window
            a key lies; without it a window's keys are an unordered set apart from the scale
            embedding, and any integer ``k_s`` is accepted.
        block: ``"rich"`` (pre-norm multi-head block with output projection, scale embeddings
            and MLP) or ``"paper"`` (the paper's equations: one head, ``X_Q + softmax(X_Q X_K^T /
            sqrt(C)) X_V``; needs ``num_heads=1``).

    Shapes:
        ``features[s]``: ``B×C_s x (k_s L) x (k_s L)``; ``queries``: ``B×L^2 x dim`` in
        row-major grid order (token ``i * L + j`` is grid cell ``(i, j)``); output: ``B×L^2 x
        dim`` in the same order.

    Raises:
        ValueError: If a size is not positive, ``num_heads`` does not divide ``dim`` (or is not
            1 for ``block="paper"``), ``block`` is unknown, or ``window_sizes`` does not give one
            integer ``>= 1`` per scale.
    """

    def __init__(
        self,
        dim: int,
        grid_size: int,
        feature_dims: Sequence[int],
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        learnable_queries: bool = True,
        dropout: float = 0.0,
        window_sizes: Sequence[int] | None = None,
        block: Literal["rich", "paper"] = "rich",
    ) -> None:
        super().__init__()
        if dim <= 0 or grid_size <= 0:
            raise ValueError(f"dim and grid_size must be positive, got {dim} and {grid_size}")
        if block not in ("rich", "paper"):
            raise ValueError(f"SFI block must be 'rich' or 'paper', got {block!r}")
        if block == "paper" and num_heads != 1:
            raise ValueError(
                f"SFI block='paper' is the paper's single-head attention; set num_heads=1 "
                f"(got {num_heads}) or use block='rich'"
            )
        if num_heads <= 0 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must be positive and divide dim={dim}")
        if not feature_dims or any(c <= 0 for c in feature_dims):
            raise ValueError(f"feature_dims must list positive channel counts, got {feature_dims}")
        if window_sizes is not None and (
            len(window_sizes) != len(feature_dims) or any(k < 1 for k in window_sizes)
        ):
            raise ValueError(
                f"window_sizes={list(window_sizes)} must give one integer >= 1 per scale "
                f"({len(feature_dims)} scales)"
            )
        self.dim = dim
        self.grid_size = grid_size
        self.feature_dims = tuple(int(c) for c in feature_dims)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.window_sizes = None if window_sizes is None else tuple(int(k) for k in window_sizes)
        self.block = block
        rich = block == "rich"

        n = grid_size * grid_size
        if learnable_queries:
            self.query = nn.Parameter(torch.empty(n, dim))
            self.pos_embed = nn.Parameter(torch.empty(n, dim))
        else:
            self.register_parameter("query", None)
            self.register_parameter("pos_embed", None)

        self.kv_norms = nn.ModuleList(
            nn.LayerNorm(c) if rich else nn.Identity() for c in self.feature_dims
        )
        # Per-scale key and value projections, fused: rows [:dim] give keys, [dim:] values.
        self.kv_projs = nn.ModuleList(nn.Linear(c, 2 * dim, bias=rich) for c in self.feature_dims)
        if rich:
            self.scale_embed: nn.Parameter | None = nn.Parameter(
                torch.empty(len(self.feature_dims), dim)
            )
        else:
            self.register_parameter("scale_embed", None)
        if self.window_sizes is not None:
            self.window_pos: nn.ParameterList | None = nn.ParameterList(
                nn.Parameter(torch.empty(k * k, dim)) for k in self.window_sizes
            )
        else:
            self.window_pos = None

        self.q_norm = nn.LayerNorm(dim) if rich else nn.Identity()
        self.q_proj = nn.Linear(dim, dim, bias=rich)
        self.attn_drop = nn.Dropout(dropout)
        if rich:
            self.out_proj: nn.Module | None = nn.Linear(dim, dim)
            self.mlp_norm: nn.Module | None = nn.LayerNorm(dim)
            self.mlp: nn.Module | None = _Mlp(dim, int(dim * mlp_ratio), dropout)
        else:
            self.out_proj = self.mlp_norm = self.mlp = None
        self.reset_parameters()

    @property
    def num_tokens(self) -> int:
        """Number of output tokens, ``L^2``."""
        return self.grid_size * self.grid_size

    @property
    def num_scales(self) -> int:
        """Number of feature maps ``forward`` expects."""
        return len(self.feature_dims)

    def reset_parameters(self) -> None:
        """Truncated normal (std 0.02) for linear weights and embeddings; zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        embeddings = [self.query, self.pos_embed, self.scale_embed]
        embeddings += list(self.window_pos) if self.window_pos is not None else []
        for p in embeddings:
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)

    def extra_repr(self) -> str:
        """The configuration, shown in the module's ``repr``.

        Returns:
            The widths, grid, heads, query mode, window sizes and block.
        """
        return (
            f"dim={self.dim}, grid_size={self.grid_size}, feature_dims={self.feature_dims}, "
            f"num_heads={self.num_heads}, learnable_queries={self.query is not None}, "
            f"window_sizes={self.window_sizes}, block={self.block!r}"
        )

    def initial_queries(self, batch_size: int, queries: Tensor | None = None) -> Tensor:
        """Validated ``B×L^2 x dim`` queries: ``queries`` or the learnable grid + positions.

        Args:
            batch_size: ``B``.
            queries: External queries ``B×L^2×dim`` (MDA), or ``None`` for the learnable grid.

        Returns:
            The queries, ``B×L^2×dim`` in row-major grid order.

        Raises:
            ValueError: ``queries`` is ``None`` on a module without learnable queries, or it is
                not ``batch_size x L^2 x dim``.
        """
        expected = (batch_size, self.num_tokens, self.dim)
        if queries is None:
            if self.query is None or self.pos_embed is None:
                raise ValueError(
                    "SFI was built with learnable_queries=False, so forward needs queries "
                    f"of shape (B, L^2, dim) = {expected}"
                )
            return (self.query + self.pos_embed).unsqueeze(0).expand(batch_size, -1, -1)
        if not isinstance(queries, Tensor) or tuple(queries.shape) != expected:
            got = tuple(queries.shape) if isinstance(queries, Tensor) else type(queries).__name__
            raise ValueError(
                f"SFI: queries must have shape (B, L^2, dim) = {expected} with grid cells in "
                f"row-major order (grid_size={self.grid_size}), got {got}"
            )
        return queries

    def forward(self, features: Sequence[Tensor], queries: Tensor | None = None) -> Tensor:
        """Integrate ``features`` (one map per scale) into ``B×L^2 x dim`` tokens.

        Args:
            features: ``features[s]`` is ``B×C_s x (k_s L) x (k_s L)`` with integer ``k_s >= 1``.
            queries: ``None`` for the learnable grid (+ position embeddings) expanded over the
                batch, or external ``B×L^2 x dim`` queries (MDA), row-major grid order.

        Returns:
            The integrated tokens, ``B×L^2×dim`` in row-major grid order.

        Raises:
            ValueError: see :func:`_validate_features` and :meth:`initial_queries`.
        """
        ks = _validate_features(features, self.feature_dims, self.grid_size, self.window_sizes)
        batch = features[0].shape[0]
        x = self.initial_queries(batch, queries)
        rows = batch * self.num_tokens
        h, d = self.num_heads, self.head_dim

        kv = []
        for s, (feature, k) in enumerate(zip(features, ks, strict=True)):
            window = self.kv_norms[s](_windows(feature, self.grid_size, k))  # rows, k^2, C_s
            proj = self.kv_projs[s]
            bias = None
            if self.scale_embed is not None:
                # The scale embedding rides on the key bias: no extra pass over the keys.
                bias = torch.cat(
                    [proj.bias[: self.dim] + self.scale_embed[s], proj.bias[self.dim :]]
                )
            kv_s = F.linear(window, proj.weight, bias)  # rows, k^2, 2 dim
            if self.window_pos is not None:
                kv_s[..., : self.dim] += self.window_pos[s]
            kv.append(kv_s)
        n_keys = sum(k * k for k in ks)
        kv_all = torch.cat(kv, dim=1) if len(kv) > 1 else kv[0]
        # One unbind (its backward stacks once), not two selects (each zero-fills the buffer).
        kv_all = kv_all.view(rows, n_keys, 2, h, d).permute(2, 0, 3, 1, 4)  # 2, rows, h, n, d
        key, value = kv_all.unbind(0)
        q = self.q_proj(self.q_norm(x))
        attn = self._attention(q.reshape(rows, h, 1, d), key, value)  # rows, h, 1, d
        attn = attn.reshape(batch, self.num_tokens, self.dim)
        if self.out_proj is None or self.mlp is None or self.mlp_norm is None:  # the paper's
            return q + self.attn_drop(attn)
        x = x + self.attn_drop(self.out_proj(attn))
        return x + self.mlp(self.mlp_norm(x))

    def _attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """One SDPA call over all query rows (in chunks past the CUDA kernels' grid limit)."""
        p = self.dropout if self.training else 0.0
        if q.shape[0] <= _SDPA_MAX_BATCH:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        chunks = zip(
            q.split(_SDPA_MAX_BATCH),
            k.split(_SDPA_MAX_BATCH),
            v.split(_SDPA_MAX_BATCH),
            strict=True,
        )
        return torch.cat([F.scaled_dot_product_attention(*c, dropout_p=p) for c in chunks])


@torch.no_grad()
def sfi_reference_loop(
    module: SpatialFeatureIntegration,
    features: Sequence[Tensor],
    queries: Tensor | None = None,
) -> Tensor:
    """Slow, literal SFI: one Python iteration per batch item, grid cell and head.

    A reference for the tests and ``bench/sfi_vs_loop.py`` only. It slices each query's windows
    explicitly, projects them with ``module``'s own per-scale weights and does the softmax
    attention by hand, then the same residual and MLP block (or, for ``block="paper"``, the
    residual on the projected query). It equals ``module(features,
    queries)`` when dropout is inactive (``module.eval()`` or ``dropout=0``).

    Args:
        module: The SFI module whose weights it uses.
        features: ``features[s]`` is ``B×C_s x (k_s L) x (k_s L)``, as for
            :meth:`SpatialFeatureIntegration.forward`.
        queries: External ``B×L^2×dim`` queries, or ``None`` for the module's learnable grid.

    Returns:
        The integrated tokens, ``B×L^2×dim``, as ``module(features, queries)``.

    Raises:
        ValueError: As :meth:`SpatialFeatureIntegration.forward`.
    """
    ks = _validate_features(features, module.feature_dims, module.grid_size, module.window_sizes)
    batch = features[0].shape[0]
    L, h, d, dim = module.grid_size, module.num_heads, module.head_dim, module.dim
    if queries is None and module.query is not None and module.pos_embed is not None:
        grid = (module.query + module.pos_embed).expand(batch, -1, -1)
    else:
        grid = module.initial_queries(batch, queries)  # validates / raises
    out = grid.new_empty(batch, module.num_tokens, module.dim)
    for b in range(batch):
        for i in range(L):
            for j in range(L):
                keys, values = [], []
                for s, (fmap, k) in enumerate(zip(features, ks, strict=True)):
                    patch = fmap[b, :, i * k : (i + 1) * k, j * k : (j + 1) * k]  # C, k, k
                    pixels = module.kv_norms[s](patch.reshape(patch.shape[0], k * k).T)
                    w, bias = module.kv_projs[s].weight, module.kv_projs[s].bias
                    key_bias = None if bias is None else bias[:dim]
                    key = F.linear(pixels, w[:dim], key_bias)
                    if module.scale_embed is not None:
                        key = key + module.scale_embed[s]
                    if module.window_pos is not None:
                        key = key + module.window_pos[s]
                    keys.append(key)
                    values.append(F.linear(pixels, w[dim:], None if bias is None else bias[dim:]))
                key, value = torch.cat(keys), torch.cat(values)  # N, dim
                x = grid[b, i * L + j]
                q = F.linear(module.q_norm(x), module.q_proj.weight, module.q_proj.bias)
                heads = []
                for head in range(h):
                    part = slice(head * d, (head + 1) * d)
                    scores = key[:, part] @ q[part] / math.sqrt(d)
                    heads.append(torch.softmax(scores, dim=0) @ value[:, part])
                if module.out_proj is None or module.mlp is None or module.mlp_norm is None:
                    out[b, i * L + j] = q + torch.cat(heads)  # the paper's block
                    continue
                x = x + module.out_proj(torch.cat(heads))
                out[b, i * L + j] = x + module.mlp(module.mlp_norm(x))
    return out


class ConvConcatBaseline(nn.Module):
    """Ablation baseline for SFI (Aquila, Table 5: "SFI vs a convolutional concatenation").

    Every scale is brought to ``L×L`` (adaptive average pooling, or a depthwise ``k_s x k_s``
    convolution with stride ``k_s``), the maps are concatenated along channels, and each grid cell
    is mapped to ``dim`` by ``LayerNorm -> Linear`` (a 1x1 convolution) followed by a pre-norm
    residual MLP block. No attention: every cell mixes its own region only, by a fixed average
    (or a learned per-channel filter) instead of a query-dependent one.

    Args:
        dim: Width of the output tokens, as for :class:`SpatialFeatureIntegration`.
        grid_size: ``L``; the module returns ``L^2`` tokens.
        feature_dims: Channels ``C_s`` of each scale's map, in the order ``forward`` gets them.
        mlp_ratio: Hidden width of the MLP block as a multiple of ``dim``.
        dropout: Dropout in the MLP block (training only).
        downsample: ``"pool"`` (any map size; adaptive pooling) or ``"conv"`` (needs
            ``window_sizes``; maps must be exactly ``k_s L`` wide).
        window_sizes: ``k_s`` per scale, required for ``downsample="conv"``.

    ``forward(features, queries=None)`` takes the same arguments as SFI and returns
    ``B×L^2 x dim``; given ``queries`` (``B×L^2 x dim``), it returns ``queries + tokens`` so
    that it can stand in for SFI in MDA layers too.

    Raises:
        ValueError: If a size is not positive, ``downsample`` is unknown, or
            ``downsample="conv"`` comes without one window size per scale.
    """

    def __init__(
        self,
        dim: int,
        grid_size: int,
        feature_dims: Sequence[int],
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        downsample: Literal["pool", "conv"] = "pool",
        window_sizes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if dim <= 0 or grid_size <= 0:
            raise ValueError(f"dim and grid_size must be positive, got {dim} and {grid_size}")
        if not feature_dims or any(c <= 0 for c in feature_dims):
            raise ValueError(f"feature_dims must list positive channel counts, got {feature_dims}")
        if downsample not in ("pool", "conv"):
            raise ValueError(f"downsample must be 'pool' or 'conv', got {downsample!r}")
        if downsample == "conv" and (
            window_sizes is None
            or len(window_sizes) != len(feature_dims)
            or any(k < 1 for k in window_sizes)
        ):
            raise ValueError(
                "downsample='conv' needs window_sizes: one integer k_s >= 1 per scale "
                f"({len(feature_dims)} scales), got {window_sizes}"
            )
        self.dim = dim
        self.grid_size = grid_size
        self.feature_dims = tuple(int(c) for c in feature_dims)
        self.downsample = downsample
        self.window_sizes = None if window_sizes is None else tuple(int(k) for k in window_sizes)
        if downsample == "conv":
            assert self.window_sizes is not None
            self.reducers = nn.ModuleList(
                nn.Conv2d(c, c, kernel_size=k, stride=k, groups=c) if k > 1 else nn.Identity()
                for c, k in zip(self.feature_dims, self.window_sizes, strict=True)
            )
        else:
            self.reducers = nn.ModuleList(
                nn.AdaptiveAvgPool2d(grid_size) for _ in self.feature_dims
            )
        total = sum(self.feature_dims)
        self.in_norm = nn.LayerNorm(total)
        self.in_proj = nn.Linear(total, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), dropout)

    @property
    def num_tokens(self) -> int:
        """Number of output tokens, ``L^2``."""
        return self.grid_size * self.grid_size

    def forward(self, features: Sequence[Tensor], queries: Tensor | None = None) -> Tensor:
        """Pool/convolve, concatenate and project ``features`` to ``B×L^2 x dim`` tokens.

        Args:
            features: One ``B×C_s×H_s×W_s`` map per scale (``k_s L`` a side for ``"conv"``).
            queries: Optional ``B×L^2×dim`` queries the tokens are added to (MDA).

        Returns:
            The tokens ``B×L^2×dim``, plus ``queries`` when given.

        Raises:
            ValueError: If the maps do not match the module, or ``queries`` has another shape.
        """
        _validate_features(
            features,
            self.feature_dims,
            self.grid_size,
            self.window_sizes if self.downsample == "conv" else None,
            require_multiple=self.downsample == "conv",
            name="ConvConcatBaseline",
        )
        batch = features[0].shape[0]
        expected = (batch, self.num_tokens, self.dim)
        if queries is not None and tuple(queries.shape) != expected:
            raise ValueError(
                f"ConvConcatBaseline: queries must have shape (B, L^2, dim) = {expected}, "
                f"got {tuple(queries.shape)}"
            )
        grid = torch.cat([r(x) for r, x in zip(self.reducers, features, strict=True)], dim=1)
        x = self.in_proj(self.in_norm(grid.flatten(2).transpose(1, 2)))  # B, L^2, dim
        x = x + self.mlp(self.mlp_norm(x))
        return x if queries is None else queries + x
