"""Tests for FUSE's recurrent injection and the Flamingo-style gated cross-attention ablation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from zoo.layers.injection import (
    GatedCrossAttentionInjection,
    RecurrentInjection,
    TokenRoutedInjection,
)

B, N, S, D, DD = 2, 5, 3, 16, 12


def _inputs(
    seed: int = 0, positions: int = N, width: int = DD
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = 3 * torch.randn(B, N, D, generator=gen)
    details = torch.randn(B, S, positions, width, generator=gen)
    return hidden, details


def _randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial values for every parameter (norms and biases too) so nothing hides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen) + (1.0 if p.ndim == 1 else 0.0))


def _modules() -> list[torch.nn.Module]:
    return [
        TokenRoutedInjection(D, DD, S),
        GatedCrossAttentionInjection(D, DD, num_heads=4),
        RecurrentInjection(D, S),
    ]


# ----------------------------------------------------------------------------- identity at init
@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identity_at_initialization(index: int, dtype: torch.dtype):
    module = _modules()[index]
    hidden, details = _inputs(width=D if index == 2 else DD)
    hidden = hidden.to(dtype)
    out = module(hidden, details)
    assert out.dtype == dtype
    assert torch.equal(out, hidden)


def _opened(module: torch.nn.Module, gate: str, hidden, details) -> torch.Tensor:
    """The update the reference loop makes with ``gate`` opened (``alpha`` 1, or ``tanh`` of a
    gate 1/2, counted twice) and every other gate shut: what the gate's derivative at 0 is."""
    opened = copy.deepcopy(module)
    with torch.no_grad():
        if isinstance(opened, GatedCrossAttentionInjection):
            opened.attn_gate.zero_()
            opened.ff_gate.zero_()
            getattr(opened, gate).fill_(math.atanh(0.5))
            return 2 * (_gated_reference(opened, hidden, details) - hidden)
        opened.alpha.fill_(1.0)
        loop = _authors_loop if isinstance(opened, RecurrentInjection) else _token_routed_loop
        return loop(opened, hidden, details) - hidden


@pytest.mark.parametrize("index", [0, 1, 2])
def test_gate_gradient_at_initialization_is_the_update_it_opens(index: int):
    """Shut gates still learn: the gradient of ``<r, out>`` with respect to a gate at 0 is
    ``<r, update>``, the update the reference loop makes with that gate opened."""
    module = _modules()[index]
    hidden, details = _inputs(width=D if index == 2 else DD)
    out = module(hidden, details)
    r = torch.randn_like(out)
    (out * r).sum().backward()
    names = ["alpha"] if not isinstance(module, GatedCrossAttentionInjection) else []
    names = names or ["attn_gate", "ff_gate"]
    gates = (
        [module.alpha]
        if isinstance(module, (TokenRoutedInjection, RecurrentInjection))
        else [module.attn_gate, module.ff_gate]
    )
    for name, gate in zip(names, gates, strict=True):
        assert gate.grad is not None and gate.grad.abs() > 1e-6
        expected = (r * _opened(module, name, hidden, details)).sum()
        torch.testing.assert_close(gate.grad, expected, atol=1e-4, rtol=1e-4, msg=name)


# ------------------------------------------------------------------- RecurrentInjection (authors')
def _authors_loop(m: RecurrentInjection, hidden: torch.Tensor, details: torch.Tensor):
    """Reference: sample by sample, the routing written out stack by stack."""
    out = torch.empty_like(hidden)
    for b in range(hidden.shape[0]):
        q = m.query(hidden[b].mean(0))
        scores = [float(q @ m.key(details[b, s].mean(0))) / math.sqrt(D) for s in range(S)]
        exps = [math.exp(v - max(scores)) for v in scores]
        weights = [e / sum(exps) for e in exps]
        mixed = m.detail_norm(sum(w * details[b, s] for s, w in enumerate(weights)))
        for n in range(hidden.shape[1]):
            gate = torch.sigmoid(m.gate(torch.cat([m.hidden_norm(hidden[b, n]), mixed[n]])))
            out[b, n] = hidden[b, n] + m.alpha * gate * m.proj(mixed[n])
    return out


def test_recurrent_injection_is_the_authors_block():
    module = RecurrentInjection(D, S, residual_init=1.0)
    assert module.alpha.item() == 1.0  # the authors' lambda starts at 1
    _randomize(module)
    with torch.no_grad():
        module.alpha.fill_(0.7)
    hidden, details = _inputs(width=D)
    with torch.no_grad():
        out = module(hidden, details)
        expected = _authors_loop(module, hidden, details)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    weights = module.routing(hidden, details)
    assert weights.shape == (B, S)  # one routing per sample, shared by every position
    torch.testing.assert_close(weights.sum(1), torch.ones(B))
    with pytest.raises(ValueError, match="got 2 detail stacks but the module was built for 3"):
        module(hidden, details[:, :2])
    with pytest.raises(ValueError, match=f"details must be B×S×N×{D}"):
        module(hidden, details[..., :-1])


# ----------------------------------------------------------------------------- TokenRoutedInjection
def _token_routed_loop(m: TokenRoutedInjection, hidden: torch.Tensor, details: torch.Tensor):
    """Reference: position by position, stack by stack."""
    out = torch.empty_like(hidden)
    for b in range(hidden.shape[0]):
        for n in range(hidden.shape[1]):
            x = m.hidden_norm(hidden[b, n])
            q = m.query(x)
            scores = []
            for s in range(details.shape[1]):
                k = m.key(m.detail_norm(details[b, s, n]))
                scores.append(float(q @ k) / math.sqrt(m.router_dim))
            top = max(scores)
            exps = [math.exp(v - top) for v in scores]
            weights = [e / sum(exps) for e in exps]
            mixed = sum(w * m.value(m.detail_norm(details[b, s, n])) for s, w in enumerate(weights))
            gate = torch.sigmoid(m.gate(torch.cat([x, mixed])))
            out[b, n] = hidden[b, n] + m.alpha * gate * m.out(mixed)
    return out


@pytest.mark.parametrize("router_dim", [None, 8])
def test_token_routed_injection_matches_loop(router_dim: int | None):
    module = TokenRoutedInjection(D, DD, S, router_dim=router_dim)
    _randomize(module)
    with torch.no_grad():
        module.alpha.fill_(0.7)
    hidden, details = _inputs()
    with torch.no_grad():
        out = module(hidden, details)
        expected = _token_routed_loop(module, hidden, details)
    assert out.shape == (B, N, D)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, hidden)
    weights = module.routing(hidden, details)
    assert weights.shape == (B, S, N)
    torch.testing.assert_close(weights.sum(1), torch.ones(B, N))


def test_token_routed_injection_gate_bias_and_repr():
    module = TokenRoutedInjection(D, DD, S, gate_bias_init=-2.0)
    assert torch.equal(module.gate.bias, torch.full((D,), -2.0))
    assert module.alpha.shape == () and module.alpha.item() == 0.0
    assert "num_stacks=3" in repr(module)


def test_token_routed_injection_dtypes():
    hidden, details = _inputs()
    module = TokenRoutedInjection(D, DD, S)
    _randomize(module)
    with torch.no_grad():
        module.alpha.fill_(0.5)
    ref = module(hidden, details)
    # float32 module, bfloat16 hidden (and float64 details): computed in float32, bf16 out.
    out = module(hidden.bfloat16(), details.double())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    # A bfloat16 module with bfloat16 hidden and float32 details.
    out = module.to(torch.bfloat16)(hidden.bfloat16(), details)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.25, rtol=0.05)


def test_token_routed_injection_errors():
    module = TokenRoutedInjection(D, DD, S)
    hidden, details = _inputs()
    with pytest.raises(ValueError, match="got 2 detail stacks but the module was built for 3"):
        module(hidden, details[:, :2])
    with pytest.raises(ValueError, match=f"details must be B×S×N×{DD}"):
        module(hidden, details[..., :-1])
    with pytest.raises(ValueError, match=f"hidden must be B×N×{D}"):
        module(hidden[..., :-1], details)
    with pytest.raises(ValueError, match="hidden must be"):
        module(hidden[0], details)
    with pytest.raises(ValueError, match="4 positions per stack but hidden has 5"):
        module(hidden, details[:, :, :4])
    with pytest.raises(ValueError, match="details batch 1 differs"):
        module(hidden, details[:1])
    with pytest.raises(ValueError, match="num_stacks must be positive"):
        TokenRoutedInjection(D, DD, 0)


# ----------------------------------------------------------------------------- gated cross-attn
def _gated_reference(m: GatedCrossAttentionInjection, hidden: torch.Tensor, details: torch.Tensor):
    """Reference with an explicit softmax per head."""
    heads, dh = m.num_heads, D // m.num_heads
    e = m.detail_norm(details.flatten(1, 2))
    q = m.query(m.attn_norm(hidden)).view(B, -1, heads, dh)
    k = m.key(e).view(B, -1, heads, dh)
    v = m.value(e).view(B, -1, heads, dh)
    attn = torch.einsum("bnhc,bmhc->bhnm", q, k).div(math.sqrt(dh)).softmax(-1)
    ctx = torch.einsum("bhnm,bmhc->bnhc", attn, v).reshape(B, -1, D)
    h = hidden + torch.tanh(m.attn_gate) * m.attn_out(ctx)
    ff = m.ff[2](F.gelu(m.ff[0](m.ff_norm(h))))
    return h + torch.tanh(m.ff_gate) * ff


def test_gated_cross_attention_matches_reference():
    module = GatedCrossAttentionInjection(D, DD, num_heads=4, ff_mult=2)
    _randomize(module)
    with torch.no_grad():
        module.attn_gate.fill_(0.6)
        module.ff_gate.fill_(-0.4)
    hidden, details = _inputs(positions=7)  # detail positions need not match N
    with torch.no_grad():
        out = module(hidden, details)
        expected = _gated_reference(module, hidden, details)
        flat = module(hidden, details.flatten(1, 2))  # already-flat details
    assert out.shape == (B, N, D)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat, out)
    assert module(hidden.bfloat16(), details).dtype == torch.bfloat16


def test_gated_cross_attention_errors():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        GatedCrossAttentionInjection(D, DD, num_heads=3)
    module = GatedCrossAttentionInjection(D, DD, num_heads=4)
    hidden, details = _inputs()
    with pytest.raises(ValueError, match=f"details must be B×S×N×{DD}"):
        module(hidden, details[..., :-1])
    with pytest.raises(ValueError, match=f"hidden must be B×N×{D}"):
        module(hidden[..., :-2], details)
    with pytest.raises(ValueError, match="details batch 1 differs"):
        module(hidden, details[:1])
