"""Attention shared by the layers, and attention masks that need no host synchronization.

* :class:`Attention`: SAM-style multi-head attention with separate q/k/v projections and an
  optional internal down-projection; the mask decoder's two-way blocks and the class-wise memory
  both use it.
* :func:`sincos_pos_embed_2d`: the fixed 2-D sine-cosine position embedding of image tokens
  (the mask decoder's and the memory's attentions).
* :func:`dense_attention_mask`: the ``B×1×Q×K`` mask a Hugging Face model would build from a
  ``B×K`` padding mask, built here so that the model takes it as is. Given a 2-D mask, Hugging
  Face first asks whether it may skip the mask (``padding_mask.all()``), which copies a value
  from the device to the host at every forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "dense_attention_mask", "sincos_pos_embed_2d"]


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections and an optional internal down-projection.

    As in SAM, ``downsample_rate`` shrinks the internal width to ``dim // downsample_rate`` (used by
    the cross-attentions). Queries are ``B×N_q×dim``; keys and values ``B×N_k×kv_dim`` (``kv_dim``
    defaults to ``dim``; the class-wise memory's cross-attentions read a memory of another width),
    and share their length. The output has the queries' width.

    Args:
        dim: The width of the queries and of the output.
        num_heads: The number of attention heads; must divide ``dim // downsample_rate``.
        downsample_rate: The factor that shrinks the internal width to ``dim // downsample_rate``.
        kv_dim: The width of the keys and values (default ``dim``).

    Raises:
        ValueError: If ``dim // downsample_rate`` is not a positive multiple of ``num_heads``.
    """

    def __init__(
        self, dim: int, num_heads: int, downsample_rate: int = 1, kv_dim: int | None = None
    ) -> None:
        super().__init__()
        internal = dim // downsample_rate
        if internal <= 0 or internal % num_heads != 0:
            raise ValueError(
                f"internal width dim // downsample_rate = {internal} must be a positive multiple "
                f"of num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(kv_dim or dim, internal)
        self.v_proj = nn.Linear(kv_dim or dim, internal)
        self.out_proj = nn.Linear(internal, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attend from the queries to the keys and values.

        Args:
            q: The queries, ``B×N_q×dim``.
            k: The keys, ``B×N_k×kv_dim``.
            v: The values, ``B×N_k×kv_dim``.

        Returns:
            The attended queries, ``B×N_q×dim``.
        """
        out = F.scaled_dot_product_attention(
            self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))


def dense_attention_mask(
    padding_mask: Tensor, implementation: str | None, causal: bool, dtype: torch.dtype
) -> Tensor:
    """The 4-D attention mask of a Hugging Face model for a ``B×K`` padding mask (1 = token).

    Args:
        padding_mask: ``B×K``, non-zero on the real tokens.
        implementation: the model's ``config._attn_implementation``; ``"sdpa"`` gets a boolean
            mask (True = may attend), ``"eager"`` an additive one (0 or the dtype's minimum).
            Any other implementation (flash attention, flex) gets ``padding_mask`` back unchanged.
        causal: also mask the keys after each query (a decoder); else ``B×1×1×K``.
        dtype: the dtype of an additive mask (the model's computation dtype).

    Returns:
        ``B×1×K×K`` when ``causal``, else ``B×1×1×K``: the padding mask and, when causal, the
        lower triangle, which is what the model builds itself from a padding mask.
    """
    if implementation not in ("sdpa", "eager"):
        return padding_mask
    keep = padding_mask.bool()[:, None, None, :]
    if causal:
        position = torch.arange(padding_mask.shape[1], device=padding_mask.device)
        keep = keep & (position[None, :] <= position[:, None])
    if implementation == "sdpa":
        return keep
    return (~keep).to(dtype) * torch.finfo(dtype).min


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

    Args:
        height: The number of rows of the token grid.
        width: The number of columns of the token grid.
        dim: The embedding width, a multiple of 4.
        device: The device of the embedding (default: the CPU).
        dtype: The dtype of the embedding (default ``float32``).

    Returns:
        The embedding, ``(height * width)×dim``, row-major.

    Raises:
        ValueError: If ``dim`` is not a multiple of 4.
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
