"""Tests for Aquila's Spatial Feature Integration and its convolutional-concatenation baseline."""

from __future__ import annotations

import inspect
from typing import Literal

import pytest
import torch

import zoo.layers.sfi as sfi_module
from zoo.layers.sfi import ConvConcatBaseline, SpatialFeatureIntegration, sfi_reference_loop

DIM = 16
L = 3


def _features(
    dims: tuple[int, ...], ks: tuple[int, ...], batch: int = 2, seed: int = 0
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, k * L, k * L, generator=gen) for c, k in zip(dims, ks, strict=True)
    ]


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values for every parameter (biases, norms, embeddings) so nothing hides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.mark.parametrize(
    ("dims", "ks", "heads", "window_pos"),
    [
        ((8, 12, 6), (1, 2, 4), 4, False),
        ((8, 12, 6), (1, 2, 4), 2, True),
        ((10, 6), (1, 2), 1, False),
        ((16, 16), (2, 4), 8, True),
    ],
)
@pytest.mark.parametrize("external", [False, True])
@pytest.mark.parametrize("block", ["rich", "paper"])
def test_vectorized_matches_reference_loop(
    dims: tuple[int, ...],
    ks: tuple[int, ...],
    heads: int,
    window_pos: bool,
    external: bool,
    block: Literal["rich", "paper"],
) -> None:
    torch.manual_seed(0)
    module = SpatialFeatureIntegration(
        DIM,
        L,
        dims,
        num_heads=heads if block == "rich" else 1,
        window_sizes=ks if window_pos else None,
        block=block,
    ).eval()
    _randomize(module)
    features = _features(dims, ks)
    queries = torch.randn(2, L * L, DIM) if external else None
    with torch.no_grad():
        fast = module(features, queries)
    slow = sfi_reference_loop(module, features, queries)
    assert fast.shape == (2, L * L, DIM)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("external", [False, True])
def test_paper_block_is_the_papers_equations(external: bool) -> None:
    """X_Q* = X_Q + softmax(X_Q X_K^T / sqrt(C)) X_V for one query, written out plainly."""
    dims, ks = (8, 12, 6), (1, 2, 4)
    module = SpatialFeatureIntegration(
        DIM, L, dims, num_heads=1, window_sizes=ks, block="paper"
    ).eval()
    _randomize(module, seed=3)
    # The paper's parameters only: W_Q, W_K^s, W_V^s, the query grid and the key positions.
    assert module.scale_embed is None and module.mlp is None and module.out_proj is None
    assert all(isinstance(n, torch.nn.Identity) for n in module.kv_norms)
    assert module.q_proj.bias is None and all(p.bias is None for p in module.kv_projs)
    features = _features(dims, ks, batch=2, seed=4)
    queries = torch.randn(2, L * L, DIM) if external else None
    with torch.no_grad():
        out = module(features, queries)
    b, i, j = 1, 2, 1
    x = (
        queries[b, i * L + j]
        if queries is not None
        else (module.query + module.pos_embed)[i * L + j]
    )
    w_q = module.q_proj.weight
    keys, values = [], []
    for s, (f, k) in enumerate(zip(features, ks, strict=True)):
        w_k, w_v = module.kv_projs[s].weight[:DIM], module.kv_projs[s].weight[DIM:]
        region = f[b, :, i * k : (i + 1) * k, j * k : (j + 1) * k].reshape(dims[s], k * k).T
        keys.append(region @ w_k.T + module.window_pos[s])
        values.append(region @ w_v.T)
    x_q = w_q @ x
    x_k, x_v = torch.cat(keys), torch.cat(values)  # sum_s k_s^2 keys
    expected = x_q + torch.softmax(x_q @ x_k.T / DIM**0.5, dim=0) @ x_v
    torch.testing.assert_close(out[b, i * L + j], expected.detach(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="num_heads=1"):
        SpatialFeatureIntegration(DIM, L, dims, num_heads=2, block="paper")


@pytest.mark.parametrize("block", ["rich", "paper"])
def test_key_positions_order_the_window(block: Literal["rich", "paper"]) -> None:
    """With window positions, permuting the keys inside a window changes the output; without
    them a window is a set and the permutation changes nothing."""
    dims, ks = (8, 6), (1, 2)
    heads = 2 if block == "rich" else 1
    features = _features(dims, ks, batch=1)
    permuted = [f.clone() for f in features]
    window = permuted[1][0, :, :2, :2].clone()  # cell (0, 0) of the 2 x 2-window scale
    permuted[1][0, :, :2, :2] = window.flip(-1).flip(-2)
    for positions in (ks, None):
        module = SpatialFeatureIntegration(
            DIM, L, dims, num_heads=heads, window_sizes=positions, block=block
        ).eval()
        _randomize(module, seed=5)
        with torch.no_grad():
            change = (module(features) - module(permuted)).abs().amax(-1)[0]
        assert change[1:].max() == 0  # other cells never see the window
        if positions is None:
            assert change[0] < 1e-5
        else:
            assert change[0] > 1e-3


def test_external_queries_without_learnable_grid() -> None:
    dims, ks = (8, 12, 6), (1, 2, 4)
    module = SpatialFeatureIntegration(DIM, L, dims, num_heads=4, learnable_queries=False).eval()
    _randomize(module, seed=1)
    assert module.query is None and module.pos_embed is None
    features, queries = _features(dims, ks), torch.randn(2, L * L, DIM)
    with torch.no_grad():
        torch.testing.assert_close(
            module(features, queries),
            sfi_reference_loop(module, features, queries),
            atol=1e-5,
            rtol=1e-5,
        )
    with pytest.raises(ValueError, match="learnable_queries=False"):
        module(features)
    # MDA: gradients reach the LLM hidden states used as queries.
    queries.requires_grad_()
    module(features, queries).sum().backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0


def test_learnable_grid_is_shared_over_batch() -> None:
    dims, ks = (8, 6), (1, 2)
    module = SpatialFeatureIntegration(DIM, L, dims, num_heads=2).eval()
    features = _features(dims, ks, batch=1)
    doubled = [torch.cat([f, f]) for f in features]
    with torch.no_grad():
        out = module(doubled)
    torch.testing.assert_close(out[0], out[1])
    assert module.num_tokens == L * L == out.shape[1]


@pytest.mark.parametrize("cell", [(0, 0), (1, 2), (2, 1)])
def test_locality(cell: tuple[int, int]) -> None:
    """Each output token depends on exactly its own windows, at every scale."""
    dims, ks = (8, 12, 6), (1, 2, 4)
    module = SpatialFeatureIntegration(DIM, L, dims, num_heads=4).eval()
    _randomize(module, seed=2)
    features = _features(dims, ks, batch=1)
    i, j = cell
    token = i * L + j
    with torch.no_grad():
        base = module(features)
        for s, k in enumerate(ks):
            # A random vector, not a constant: LayerNorm would cancel a shift of all channels.
            bump = 3.0 * torch.randn(dims[s], generator=torch.Generator().manual_seed(s))
            inside = [f.clone() for f in features]
            inside[s][0, :, i * k + k - 1, j * k] += bump
            changed = (module(inside) - base).abs().amax(dim=-1)[0]
            assert changed[token] > 1e-4, f"scale {s}: a pixel in the window did not matter"
            others = torch.arange(L * L) != token
            assert changed[others].max() == 0, f"scale {s}: a pixel leaked to other tokens"

            outside = [f.clone() for f in features]
            row = ((i + 1) % L) * k  # a pixel of the cell below (wrapping), same column band
            outside[s][0, :, row, j * k] += bump
            changed = (module(outside) - base).abs().amax(dim=-1)[0]
            assert changed[token] == 0, f"scale {s}: a pixel outside the window changed the token"

    # The gradient of the token is non-zero exactly on its windows.
    features = [f.requires_grad_() for f in features]
    module(features)[0, token].sum().backward()
    for s, (f, k) in enumerate(zip(features, ks, strict=True)):
        assert f.grad is not None
        mask = torch.zeros(k * L, k * L, dtype=torch.bool)
        mask[i * k : (i + 1) * k, j * k : (j + 1) * k] = True
        touched = f.grad[0].abs().sum(0) > 0
        assert torch.equal(touched, mask), f"scale {s}"


def test_gradients_reach_every_parameter_and_equal_the_reference_loops() -> None:
    """In training (dropout on) every parameter gets a gradient; without dropout, every
    parameter's and every feature map's gradient is the reference loop's (autograd through the
    literal SFI), so the vectorized backward routes each window's gradient to its own place."""
    dims, ks = (8, 12), (1, 2)
    module = SpatialFeatureIntegration(DIM, L, dims, num_heads=2, dropout=0.1, window_sizes=ks)
    module.train()
    features = [f.requires_grad_() for f in _features(dims, ks)]
    module(features).square().mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(f.grad is not None for f in features)

    module.eval()
    _randomize(module)
    weights = torch.randn(2, L * L, DIM)

    def gradients(forward) -> dict[str, torch.Tensor]:
        module.zero_grad()
        inputs = [f.detach().clone().requires_grad_() for f in features]
        (forward(module, inputs) * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in module.named_parameters()}
        return grads | {f"features[{s}]": f.grad for s, f in enumerate(inputs)}

    fast = gradients(lambda m, x: m(x))
    slow = gradients(inspect.unwrap(sfi_reference_loop))  # the loop without its no_grad
    assert fast.keys() == slow.keys()
    for name, grad in fast.items():
        torch.testing.assert_close(grad, slow[name], atol=1e-4, rtol=1e-4, msg=name)


def test_chunked_attention_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    dims, ks = (8, 6), (1, 2)
    module = SpatialFeatureIntegration(DIM, L, dims, num_heads=2).eval()
    features = _features(dims, ks)
    with torch.no_grad():
        whole = module(features)
        monkeypatch.setattr(sfi_module, "_SDPA_MAX_BATCH", 4)  # 2 * 9 rows -> 5 chunks
        torch.testing.assert_close(module(features), whole)


@pytest.mark.parametrize("side", [7, 10])
def test_non_multiple_map_raises_helpful_error(side: int) -> None:
    module = SpatialFeatureIntegration(DIM, L, (8, 6), num_heads=2)
    features = [torch.randn(1, 8, L, L), torch.randn(1, 6, side, side)]
    with pytest.raises(ValueError, match=rf"scale 1: feature map is {side}x{side}") as err:
        module(features)
    message = str(err.value)
    assert f"grid_size={L}" in message and "image size" in message and "resize" in message
    assert f"{side // L * L} or {side // L * L + L}" in message


def test_map_smaller_than_grid_and_non_square_raise() -> None:
    module = SpatialFeatureIntegration(DIM, L, (8,), num_heads=2)
    with pytest.raises(ValueError, match=r"scale 0: feature map is 2x2.*nearest valid sides: 3"):
        module([torch.randn(1, 8, 2, 2)])
    with pytest.raises(ValueError, match="must be square"):
        module([torch.randn(1, 8, 3, 6)])


def test_input_errors() -> None:
    module = SpatialFeatureIntegration(DIM, L, (8, 6), num_heads=2)
    good = [torch.randn(2, 8, L, L), torch.randn(2, 6, 2 * L, 2 * L)]
    with pytest.raises(ValueError, match="got 1 feature maps .* 2 scales"):
        module(good[:1])
    with pytest.raises(ValueError, match=r"scale 1: map has 7 channels but feature_dims\[1\] = 6"):
        module([good[0], torch.randn(2, 7, 2 * L, 2 * L)])
    with pytest.raises(ValueError, match="batch size 3"):
        module([good[0], torch.randn(3, 6, 2 * L, 2 * L)])
    with pytest.raises(ValueError, match="B×C×H×W"):
        module([good[0], torch.randn(6, 2 * L, 2 * L)])
    with pytest.raises(TypeError, match="sequence"):
        module(good[0])
    for bad in (
        torch.randn(2, L * L + 1, DIM),
        torch.randn(2, L * L, DIM + 1),
        torch.randn(L * L, DIM),
    ):
        with pytest.raises(
            ValueError, match=r"queries must have shape \(B, L\^2, dim\) = \(2, 9, 16\)"
        ):
            module(good, bad)


def test_constructor_and_window_size_errors() -> None:
    with pytest.raises(ValueError, match="num_heads=3"):
        SpatialFeatureIntegration(DIM, L, (8,), num_heads=3)
    with pytest.raises(ValueError, match="feature_dims"):
        SpatialFeatureIntegration(DIM, L, ())
    with pytest.raises(ValueError, match="window_sizes"):
        SpatialFeatureIntegration(DIM, L, (8, 6), window_sizes=(1,))
    module = SpatialFeatureIntegration(DIM, L, (8, 6), num_heads=2, window_sizes=(1, 2))
    with pytest.raises(ValueError, match=r"window_sizes\[1\]=2"):
        module([torch.randn(1, 8, L, L), torch.randn(1, 6, 4 * L, 4 * L)])


def conv_concat_reference_loop(
    module: ConvConcatBaseline, features: list[torch.Tensor]
) -> torch.Tensor:
    """:class:`ConvConcatBaseline` by a loop over samples and grid cells (row-major): each
    scale's window of the cell averaged (pooling, maps ``k_s L`` wide) or filtered channel by
    channel (the depthwise convolution), the scales' vectors concatenated in order, then the
    cell's own LayerNorm, projection and residual MLP.

    Args:
        module: the baseline whose weights the loop uses.
        features: its ``B×C_s×(k_s L)×(k_s L)`` maps.

    Returns:
        The ``B×L^2×dim`` tokens, row-major.
    """
    grid = module.grid_size
    out = torch.empty(features[0].shape[0], grid * grid, module.dim)
    for b in range(len(out)):
        for i in range(grid):
            for j in range(grid):
                cell = []
                for s, x in enumerate(features):
                    k = x.shape[-1] // grid
                    window = x[b, :, i * k : (i + 1) * k, j * k : (j + 1) * k]  # C×k×k
                    if module.downsample == "conv" and k > 1:
                        conv = module.reducers[s]
                        cell.append((conv.weight[:, 0] * window).sum((-2, -1)) + conv.bias)
                    else:
                        cell.append(window.mean((-2, -1)))
                x = module.in_proj(module.in_norm(torch.cat(cell)))
                out[b, i * grid + j] = x + module.mlp(module.mlp_norm(x))
    return out


@pytest.mark.parametrize("downsample", ["pool", "conv"])
def test_conv_concat_baseline(downsample: Literal["pool", "conv"]) -> None:
    dims, ks = (8, 12, 6), (1, 2, 4)
    baseline = ConvConcatBaseline(DIM, L, dims, downsample=downsample, window_sizes=ks)
    _randomize(baseline)
    features = [f.requires_grad_() for f in _features(dims, ks)]
    out = baseline(features)
    assert out.shape == (2, L * L, DIM) and baseline.num_tokens == L * L
    with torch.no_grad():  # the same as a loop over the cells
        reference = conv_concat_reference_loop(baseline, features)
    torch.testing.assert_close(out.detach(), reference, atol=1e-5, rtol=1e-5)
    out.square().mean().backward()
    for name, p in baseline.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)

    queries = torch.randn(2, L * L, DIM)
    with torch.no_grad():
        torch.testing.assert_close(baseline(features, queries) - baseline(features), queries)
    with pytest.raises(ValueError, match="queries must have shape"):
        baseline(features, torch.randn(2, L * L, DIM + 1))
    with pytest.raises(ValueError, match="got 2 feature maps"):
        baseline(features[:2])


def test_conv_concat_baseline_errors() -> None:
    with pytest.raises(ValueError, match="needs window_sizes"):
        ConvConcatBaseline(DIM, L, (8, 6), downsample="conv")
    conv = ConvConcatBaseline(DIM, L, (8,), downsample="conv", window_sizes=(2,))
    with pytest.raises(ValueError, match="scale 0: feature map is 7x7"):
        conv([torch.randn(1, 8, 7, 7)])
    pool = ConvConcatBaseline(DIM, L, (8,))  # pooling accepts any size
    assert pool([torch.randn(1, 8, 7, 7)]).shape == (1, L * L, DIM)
