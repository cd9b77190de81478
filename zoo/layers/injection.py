"""Injecting detail features into an LLM's hidden states at the visual positions.

The modules map ``hidden`` (``B×N×D_llm``, the hidden states at the ``N`` visual positions,
row-major grid order) and ``details`` (``B×S×N_d×D_detail``, ``S`` detail stacks such as
:class:`~zoo.layers.windows.SlidingWindowFeatures`' output) to updated hidden states. A
zero-initialized scale or ``tanh`` gate multiplies the update, so they can start as the identity
and inserting them before pretrained decoder layers does not change the model until training
opens them (the gradient with respect to that scale is non-zero at zero); the authors of FUSE
start their scale at 1 instead (``residual_init``).

* :class:`RecurrentInjection` -- FUSE's (MF-RSVLM) recurrent visual feature injection as the
  authors' code builds it: one routing softmax over the stacks per sample from mean-pooled
  queries and keys, a sigmoid gate on the normalized mixed stack and a scaled residual update.
* :class:`TokenRoutedInjection` -- a variant that routes every visual position separately,
  with value and output projections.
* :class:`GatedCrossAttentionInjection` -- a Flamingo-style (Alayrac et al., 2022) ablation:
  ``tanh``-gated cross-attention to all detail tokens, then a ``tanh``-gated feed-forward block.

Dtypes: the computation runs in the module's parameter dtype (``hidden`` and ``details`` are cast
to it; under autocast the linear layers follow autocast), and the output has ``hidden``'s dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GatedCrossAttentionInjection", "RecurrentInjection", "TokenRoutedInjection"]


def _check_inputs(
    name: str,
    hidden: Tensor,
    details: Tensor,
    hidden_dim: int,
    detail_dim: int,
    num_stacks: int | None = None,
    same_positions: bool = True,
) -> None:
    """Shape checks shared by both modules; messages name the offending sizes."""
    if hidden.ndim != 3 or hidden.shape[-1] != hidden_dim:
        raise ValueError(
            f"{name}: hidden must be B×N×{hidden_dim}, got shape {tuple(hidden.shape)}"
        )
    if details.ndim != 4 or details.shape[-1] != detail_dim:
        raise ValueError(
            f"{name}: details must be B×S×N×{detail_dim}, got shape {tuple(details.shape)}"
        )
    if details.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"{name}: details batch {details.shape[0]} differs from hidden's {hidden.shape[0]}"
        )
    if num_stacks is not None and details.shape[1] != num_stacks:
        raise ValueError(
            f"{name}: got {details.shape[1]} detail stacks but the module was built for "
            f"{num_stacks}"
        )
    if same_positions and details.shape[2] != hidden.shape[1]:
        raise ValueError(
            f"{name}: details have {details.shape[2]} positions per stack but hidden has "
            f"{hidden.shape[1]} visual positions"
        )


class RecurrentInjection(nn.Module):
    """FUSE's recurrent injection (the authors' block); one instance per chosen LLM layer.

    ``details`` are already in the LLM width (FUSE passes them through the shared multimodal
    projector). With ``h`` the ``B×N×D`` visual hidden states and ``d_s`` the ``S`` stacks::

        q   = W_q LN_q(mean_n h)                  k_s = W_k LN_k(mean_n d_s)
        w_s = softmax_s(<q, k_s> / sqrt(D))       (one routing over the stacks per sample)
        m   = sum_s w_s d_s                       (B×N×D)
        g   = sigmoid(W_g [LN_h(h) ; LN_m(m)])    (per position and channel)
        h'  = h + alpha * g * W_p LN_m(m)

    ``alpha`` (one scalar per layer) starts at ``residual_init``: 1 as the authors', 0 for the
    identity at initialization.

    Args:
        dim: LLM width ``D`` (of ``hidden`` and ``details``).
        num_stacks: number of detail stacks ``S`` (checked in ``forward``).
        residual_init: initial ``alpha``.

    Raises:
        ValueError: If ``dim`` or ``num_stacks`` is not positive.
    """

    def __init__(self, dim: int, num_stacks: int, residual_init: float = 0.0) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_stacks", num_stacks)):
            if value <= 0:
                raise ValueError(f"RecurrentInjection: {name} must be positive, got {value}")
        self.dim = dim
        self.num_stacks = num_stacks
        self.query = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.key = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.hidden_norm = nn.LayerNorm(dim)
        self.detail_norm = nn.LayerNorm(dim)
        self.gate = nn.Linear(2 * dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.full((), float(residual_init)))

    def routing(self, hidden: Tensor, details: Tensor) -> Tensor:
        """The routing weights over the stacks (one softmax per sample).

        Args:
            hidden: The LLM's hidden states at the visual positions, ``B×N×D``.
            details: The detail stacks, ``B×S×N×D``.

        Returns:
            The routing weights, ``B×S``, each row summing to 1.

        Raises:
            ValueError: If a shape does not match the module.
        """
        self._check(hidden, details)
        dtype = self.alpha.dtype
        return self._route(hidden.to(dtype), details.to(dtype))

    def _route(self, hidden: Tensor, details: Tensor) -> Tensor:
        q = self.query(hidden.mean(dim=1))  # B, D
        k = self.key(details.mean(dim=2))  # B, S, D
        return (torch.einsum("bd,bsd->bs", q, k) / math.sqrt(self.dim)).softmax(dim=1)

    def forward(self, hidden: Tensor, details: Tensor) -> Tensor:
        """Inject the routed mix of the detail stacks into the hidden states.

        Args:
            hidden: The LLM's hidden states at the visual positions, ``B×N×D``.
            details: The detail stacks in the LLM width, ``B×S×N×D``.

        Returns:
            The updated hidden states, ``B×N×D``, in ``hidden``'s dtype.

        Raises:
            ValueError: If a shape does not match the module.
        """
        self._check(hidden, details)
        dtype = self.alpha.dtype
        h, d = hidden.to(dtype), details.to(dtype)
        mixed = self.detail_norm(torch.einsum("bs,bsnd->bnd", self._route(h, d), d))
        gate = torch.sigmoid(self.gate(torch.cat([self.hidden_norm(h), mixed], dim=-1)))
        return hidden + (self.alpha * gate * self.proj(mixed)).to(hidden.dtype)

    def _check(self, hidden: Tensor, details: Tensor) -> None:
        _check_inputs("RecurrentInjection", hidden, details, self.dim, self.dim, self.num_stacks)

    def extra_repr(self) -> str:
        """The sizes, shown in the module's ``repr``.

        Returns:
            The module's widths and number of stacks (or heads).
        """
        return f"dim={self.dim}, num_stacks={self.num_stacks}"


class TokenRoutedInjection(nn.Module):
    """Recurrent injection with a router per visual position; one instance per LLM layer.

    With ``x = LN_h(h_n)`` and ``e_s = LN_d(d_{s,n})`` at visual position ``n``::

        w_{s,n} = softmax_s(<W_q x, W_k e_s> / sqrt(D))          (router over the S stacks)
        m_n     = sum_s w_{s,n} W_v e_s                          (mixed detail, D_llm)
        g_n     = sigmoid(W_g [x ; m_n] + b_g)                   (per-channel gate)
        h_n'    = h_n + alpha * g_n * (W_o m_n)

    ``alpha`` is a learnable scalar initialized at 0, so the module starts as the identity and
    ``d h' / d alpha = g * W_o m`` lets training open it. The LayerNorms (as in the reference
    implementation) keep the router and gate insensitive to the very different scales of LLM
    hidden states and ViT features. ``b_g`` starts at ``gate_bias_init``. ``D`` is the router width.

    Args:
        hidden_dim: LLM width ``D_llm``.
        detail_dim: detail feature width ``D_detail`` (e.g. the ViT width).
        num_stacks: number of detail stacks ``S`` (checked in ``forward``).
        gate_bias_init: initial gate bias (``sigmoid(0) = 0.5``).
        router_dim: width of the router's queries and keys (default ``hidden_dim``).

    Raises:
        ValueError: If a width or ``num_stacks`` is not positive.
    """

    def __init__(
        self,
        hidden_dim: int,
        detail_dim: int,
        num_stacks: int,
        gate_bias_init: float = 0.0,
        router_dim: int | None = None,
    ) -> None:
        super().__init__()
        router_dim = hidden_dim if router_dim is None else router_dim
        for name, value in (
            ("hidden_dim", hidden_dim),
            ("detail_dim", detail_dim),
            ("num_stacks", num_stacks),
            ("router_dim", router_dim),
        ):
            if value <= 0:
                raise ValueError(f"TokenRoutedInjection: {name} must be positive, got {value}")
        self.hidden_dim = hidden_dim
        self.detail_dim = detail_dim
        self.num_stacks = num_stacks
        self.router_dim = router_dim
        self.hidden_norm = nn.LayerNorm(hidden_dim)
        self.detail_norm = nn.LayerNorm(detail_dim)
        self.query = nn.Linear(hidden_dim, router_dim)
        self.key = nn.Linear(detail_dim, router_dim)
        self.value = nn.Linear(detail_dim, hidden_dim)
        self.gate = nn.Linear(2 * hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, hidden_dim)
        self.alpha = nn.Parameter(torch.zeros(()))
        nn.init.constant_(self.gate.bias, gate_bias_init)

    def _route(self, x: Tensor, e: Tensor) -> Tensor:
        """Softmax over stacks of the query-key scores: ``B×S×N`` from normed inputs."""
        logits = torch.einsum("bnr,bsnr->bsn", self.query(x), self.key(e))
        return (logits / math.sqrt(self.router_dim)).softmax(dim=1)

    def routing(self, hidden: Tensor, details: Tensor) -> Tensor:
        """The router's weights for these inputs (for inspection and logging).

        Args:
            hidden: The LLM's hidden states at the visual positions, ``B×N×D_llm``.
            details: The detail stacks, ``B×S×N×D_detail``.

        Returns:
            The weights ``B×S×N``, a softmax over the stacks at every position.

        Raises:
            ValueError: If a shape does not match the module.
        """
        self._check(hidden, details)
        dtype = self.alpha.dtype
        return self._route(self.hidden_norm(hidden.to(dtype)), self.detail_norm(details.to(dtype)))

    def forward(self, hidden: Tensor, details: Tensor) -> Tensor:
        """Inject the detail stacks into the hidden states at the visual positions.

        Args:
            hidden: The LLM's hidden states at the visual positions, ``B×N×D_llm``.
            details: The detail stacks, ``B×S×N×D_detail``.

        Returns:
            The updated hidden states, ``B×N×D_llm``, in ``hidden``'s dtype.

        Raises:
            ValueError: If a shape does not match the module (widths, stacks, positions).
        """
        self._check(hidden, details)
        dtype = self.alpha.dtype
        x = self.hidden_norm(hidden.to(dtype))  # B, N, D
        e = self.detail_norm(details.to(dtype))  # B, S, N, Dd
        mixed = torch.einsum("bsn,bsnd->bnd", self._route(x, e), self.value(e))  # B, N, D
        gate = torch.sigmoid(self.gate(torch.cat([x, mixed], dim=-1)))
        update = self.alpha * gate * self.out(mixed)
        return hidden + update.to(hidden.dtype)

    def _check(self, hidden: Tensor, details: Tensor) -> None:
        _check_inputs(
            "TokenRoutedInjection",
            hidden,
            details,
            self.hidden_dim,
            self.detail_dim,
            self.num_stacks,
        )

    def extra_repr(self) -> str:
        """The sizes, shown in the module's ``repr``.

        Returns:
            The module's widths and number of stacks (or heads).
        """
        return (
            f"hidden_dim={self.hidden_dim}, detail_dim={self.detail_dim}, "
            f"num_stacks={self.num_stacks}, router_dim={self.router_dim}"
        )


class GatedCrossAttentionInjection(nn.Module):
    """Flamingo-style gated cross-attention from the hidden states to all detail tokens::

        h = h + tanh(a_attn) * CrossAttn(LN(h), LN_d(details flattened over stacks and positions))
        h = h + tanh(a_ff) * FFN(LN(h))

    ``a_attn`` and ``a_ff`` are learnable scalars initialized at 0 (identity at init). The
    attention is multi-head, one :func:`~torch.nn.functional.scaled_dot_product_attention` call,
    without positional encoding of the detail tokens (they are a set, as in Flamingo). ``details``
    may be ``B×S×N_d×D_detail`` or already flat, ``B×M×D_detail``; ``N_d`` need not equal
    the number of visual positions. The FFN is ``Linear -> GELU -> Linear`` with
    ``ff_mult * hidden_dim`` hidden units.

    Args:
        hidden_dim: LLM width ``D_llm``.
        detail_dim: Detail feature width ``D_detail``.
        num_heads: The number of attention heads; must divide ``hidden_dim``.
        ff_mult: The feed-forward block's hidden units per ``hidden_dim``.

    Raises:
        ValueError: If a size is not positive or ``num_heads`` does not divide ``hidden_dim``.
    """

    def __init__(
        self, hidden_dim: int, detail_dim: int, num_heads: int = 8, ff_mult: int = 4
    ) -> None:
        super().__init__()
        for name, value in (
            ("hidden_dim", hidden_dim),
            ("detail_dim", detail_dim),
            ("num_heads", num_heads),
            ("ff_mult", ff_mult),
        ):
            if value <= 0:
                raise ValueError(
                    f"GatedCrossAttentionInjection: {name} must be positive, got {value}"
                )
        if hidden_dim % num_heads:
            raise ValueError(
                f"GatedCrossAttentionInjection: hidden_dim={hidden_dim} is not divisible by "
                f"num_heads={num_heads}"
            )
        self.hidden_dim = hidden_dim
        self.detail_dim = detail_dim
        self.num_heads = num_heads
        self.attn_norm = nn.LayerNorm(hidden_dim)
        self.detail_norm = nn.LayerNorm(detail_dim)
        self.query = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.key = nn.Linear(detail_dim, hidden_dim, bias=False)
        self.value = nn.Linear(detail_dim, hidden_dim, bias=False)
        self.attn_out = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.ff_norm = nn.LayerNorm(hidden_dim)
        self.ff = nn.Sequential(
            nn.Linear(hidden_dim, ff_mult * hidden_dim),
            nn.GELU(),
            nn.Linear(ff_mult * hidden_dim, hidden_dim),
        )
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ff_gate = nn.Parameter(torch.zeros(()))

    def _heads(self, x: Tensor) -> Tensor:
        """``B×L×D`` -> ``B×H×L×D/H``."""
        b, length, _ = x.shape
        return x.view(b, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, hidden: Tensor, details: Tensor) -> Tensor:
        """Cross-attend from the hidden states to all detail tokens, then the feed-forward step.

        Args:
            hidden: The LLM's hidden states at the visual positions, ``B×N×D_llm``.
            details: The detail tokens, ``B×S×N_d×D_detail`` or already flat ``B×M×D_detail``.

        Returns:
            The updated hidden states, ``B×N×D_llm``, in ``hidden``'s dtype.

        Raises:
            ValueError: If a shape does not match the module (widths or batch).
        """
        if details.ndim == 3:
            details = details.unsqueeze(1)
        _check_inputs(
            "GatedCrossAttentionInjection",
            hidden,
            details,
            self.hidden_dim,
            self.detail_dim,
            same_positions=False,
        )
        dtype = self.attn_gate.dtype
        h = hidden.to(dtype)
        e = self.detail_norm(details.to(dtype).flatten(1, 2))  # B, S N_d, Dd
        q = self._heads(self.query(self.attn_norm(h)))
        k, v = self._heads(self.key(e)), self._heads(self.value(e))
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        h = h + torch.tanh(self.attn_gate) * self.attn_out(attn)
        h = h + torch.tanh(self.ff_gate) * self.ff(self.ff_norm(h))
        return h.to(hidden.dtype)

    def extra_repr(self) -> str:
        """The sizes, shown in the module's ``repr``.

        Returns:
            The module's widths and number of stacks (or heads).
        """
        return (
            f"hidden_dim={self.hidden_dim}, detail_dim={self.detail_dim}, "
            f"num_heads={self.num_heads}"
        )
