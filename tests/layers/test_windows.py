"""Tests for the sliding-window cut / stitch helpers and FUSE's multi-scale window features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.layers.windows import (
    SlidingWindowFeatures,
    extract_windows,
    stitch_windows,
    window_offsets,
    window_weights,
)


# ----------------------------------------------------------------------------- window_offsets
@pytest.mark.parametrize(
    ("size", "window", "stride", "expected"),
    [
        (672, 336, 168, [0, 168, 336]),
        (672, 168, 84, [0, 84, 168, 252, 336, 420, 504]),
        (10, 4, 3, [0, 3, 6]),
        (11, 4, 3, [0, 3, 6, 7]),
        (13, 4, 3, [0, 3, 6, 9]),
        (4, 4, 1, [0]),
        (5, 4, 4, [0, 1]),
    ],
)
def test_window_offsets_cover_and_flush(size: int, window: int, stride: int, expected: list[int]):
    offsets = window_offsets(size, window, stride)
    assert offsets == expected
    assert offsets[0] == 0 and offsets[-1] == size - window
    assert all(0 < b - a <= stride for a, b in zip(offsets, offsets[1:], strict=False))
    covered = torch.zeros(size, dtype=torch.bool)
    for o in offsets:
        covered[o : o + window] = True
    assert covered.all()


@pytest.mark.parametrize(
    ("size", "window", "stride", "match"),
    [
        (10, 12, 4, "larger than the length"),
        (10, 4, 0, "stride must be positive"),
        (10, 4, -1, "stride must be positive"),
        (10, 4, 5, "leave gaps"),
        (10, 0, 1, "window must be positive"),
    ],
)
def test_window_offsets_errors(size: int, window: int, stride: int, match: str):
    with pytest.raises(ValueError, match=match):
        window_offsets(size, window, stride)


# ----------------------------------------------------------------------------- extract_windows
def test_extract_windows_matches_slicing_loop():
    image = torch.randn(2, 3, 11, 13)
    window, stride = 4, 3
    rows, cols = [0, 3, 6, 7], [0, 3, 6, 9]  # both end with a flush window
    expected = torch.stack(
        [image[b, :, r : r + window, c : c + window] for b in range(2) for r in rows for c in cols]
    )
    out = extract_windows(image, window, stride)
    assert out.shape == (2 * 4 * 4, 3, window, window)
    assert torch.equal(out, expected)


def test_extract_windows_gradient_and_errors():
    image = torch.randn(1, 2, 8, 8, requires_grad=True)
    extract_windows(image, 4, 2).sum().backward()
    # Each pixel's gradient counts the windows covering it (3 x 3 windows, offsets 0, 2, 4).
    count = torch.tensor([1, 1, 2, 2, 2, 2, 1, 1], dtype=torch.float32)
    assert torch.equal(image.grad[0, 0], torch.outer(count, count))
    with pytest.raises(ValueError, match="B×C×H×W"):
        extract_windows(torch.randn(3, 8, 8), 4, 2)
    with pytest.raises(ValueError, match="larger than the length"):
        extract_windows(torch.randn(1, 1, 8, 3), 4, 2)


# ----------------------------------------------------------------------------- window_weights
@pytest.mark.parametrize("kind", ["hann", "triangular"])
@pytest.mark.parametrize("size", [1, 4, 7, 24])
def test_window_weights_smooth_positive(kind: str, size: int):
    w = window_weights(size, kind)
    assert w.shape == (size, size)
    assert (w > 0).all()
    assert w.max() == 1.0
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))  # exactly symmetric
    assert torch.equal(w, w.T)
    centre = (size - 1) // 2
    assert w[centre, centre] == 1.0
    if size > 2:
        assert w[0, 0] < w[centre, centre]  # smaller towards the border
        assert torch.allclose(w, torch.outer(w[centre], w[centre]))  # separable


def test_window_weights_uniform_and_errors():
    assert torch.equal(window_weights(5, "uniform"), torch.ones(5, 5))
    assert window_weights(3, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="unknown window weighting"):
        window_weights(4, "gaussian")
    with pytest.raises(ValueError, match="must be positive"):
        window_weights(0)


# ----------------------------------------------------------------------------- stitch_windows
def _stitch_loop(tokens, batch, canvas, offsets_h, offsets_w, weights):
    """Reference: plain accumulation of sum w x and sum w, cell by cell."""
    _, dim, h, w = tokens.shape
    num = torch.zeros(batch, dim, *canvas, dtype=torch.float64)
    den = torch.zeros(*canvas, dtype=torch.float64)
    k = 0
    for b in range(batch):
        for oh in offsets_h:
            for ow in offsets_w:
                for a in range(h):
                    for c in range(w):
                        wt = float(weights[a, c])
                        num[b, :, oh + a, ow + c] += wt * tokens[k, :, a, c].double()
                        if b == 0:
                            den[oh + a, ow + c] += wt
                k += 1
    return num / den


def test_stitch_windows_matches_loop_with_irregular_offsets():
    gen = torch.Generator().manual_seed(0)
    batch, dim, h, w = 2, 3, 4, 4
    offsets_h, offsets_w = [0, 3, 6, 7], [0, 3, 6, 9]  # flush final windows: irregular steps
    canvas = (11, 13)
    tokens = torch.randn(batch * 4 * 4, dim, h, w, generator=gen)
    weights = torch.rand(h, w, generator=gen) + 0.1
    out = stitch_windows(tokens, batch, canvas, offsets_h, offsets_w, weights)
    expected = _stitch_loop(tokens, batch, canvas, offsets_h, offsets_w, weights)
    assert out.shape == (batch, dim, *canvas) and out.dtype == tokens.dtype
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=1e-6)
    # Default weights are uniform: a plain mean of the covering windows.
    uniform = _stitch_loop(tokens, batch, canvas, offsets_h, offsets_w, torch.ones(h, w))
    out = stitch_windows(tokens, batch, canvas, offsets_h, offsets_w)
    torch.testing.assert_close(out.double(), uniform, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["hann", "triangular", "uniform"])
def test_stitch_of_own_windows_reproduces_canvas(kind: str):
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, 17, dtype=torch.float64),
        torch.linspace(0, 1, 14, dtype=torch.float64),
        indexing="ij",
    )
    smooth = torch.stack([torch.sin(3 * ys + xs), ys * xs, torch.cos(2 * xs) - ys])  # 3, 17, 14
    canvas = torch.stack([smooth, 2 * smooth + 1])  # B = 2
    window, stride = 6, 4
    tokens = extract_windows(canvas, window, stride)  # the canvas's own sub-blocks
    out = stitch_windows(
        tokens,
        2,
        (17, 14),
        window_offsets(17, window, stride),
        window_offsets(14, window, stride),
        window_weights(window, kind, dtype=torch.float64),
    )
    torch.testing.assert_close(out, canvas, atol=1e-12, rtol=0)


def test_stitch_windows_half_precision_keeps_dtype():
    tokens = torch.randn(4, 2, 3, 3).to(torch.bfloat16)
    out = stitch_windows(tokens, 1, (5, 5), [0, 2], [0, 2], window_weights(3))
    assert out.dtype == torch.bfloat16
    ref = stitch_windows(tokens.float(), 1, (5, 5), [0, 2], [0, 2], window_weights(3))
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)


def test_stitch_windows_errors():
    tokens = torch.randn(4, 2, 3, 3)
    with pytest.raises(ValueError, match="got 4 windows but batch=2"):
        stitch_windows(tokens, 2, (5, 5), [0, 2], [0, 2])
    with pytest.raises(ValueError, match="covered by no window"):
        stitch_windows(tokens, 1, (7, 5), [0, 4], [0, 2])  # rows 3 and 7.. uncovered
    with pytest.raises(ValueError, match="covered by no window"):
        stitch_windows(tokens, 1, (6, 5), [0, 2], [0, 2])  # last row uncovered
    with pytest.raises(ValueError, match="outside the canvas"):
        stitch_windows(tokens, 1, (5, 5), [0, 3], [0, 2])
    with pytest.raises(ValueError, match="weights must be 3×3"):
        stitch_windows(tokens, 1, (5, 5), [0, 2], [0, 2], torch.ones(4, 4))
    with pytest.raises(ValueError, match="strictly positive"):
        stitch_windows(tokens, 1, (5, 5), [0, 2], [0, 2], torch.zeros(3, 3))
    with pytest.raises(ValueError, match="D×h×w"):
        stitch_windows(tokens[0], 1, (5, 5), [0, 2], [0, 2])


# ------------------------------------------------------------------------ SlidingWindowFeatures
PATCH = 8  # the toy encoder's patch: 32 px inputs -> 4 x 4 tokens


class PatchifyEncoder:
    """Identity-like encoder: average-pool patches; depth 0 = pooled pixels, depth 1 = 2 x + 1."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, windows: torch.Tensor) -> list[torch.Tensor]:
        self.calls.append(tuple(windows.shape))
        tokens = F.avg_pool2d(windows, PATCH)
        return [tokens, 2 * tokens + 1]


def _module(**kwargs) -> SlidingWindowFeatures:
    config = dict(
        window_sizes=(32, 16), canvas_size=64, input_size=32, grid_size=4, detail_tokens="pool"
    )
    return SlidingWindowFeatures(**(config | kwargs))


def test_sliding_window_features_shape_and_one_encoder_call():
    module = _module()
    encoder = PatchifyEncoder()
    image = torch.rand(2, 3, 64, 64)
    out = module(image, encoder)
    # Offsets 0, 16, 32 (3 x 3 windows) and 0, 8, ..., 48 (7 x 7 windows), all in one call.
    assert module.windows_per_image == [9, 49]
    assert encoder.calls == [(2 * (9 + 49), 3, 32, 32)]
    assert out.shape == (2, 2 * 2, 4 * 4, 3)
    # Scale 0 (32 px windows) is patch-aligned: the stitched 8 x 8 token canvas is the canvas's
    # own 8 px average pool, then area-averaged to the 4 x 4 grid.
    pooled = F.avg_pool2d(image, 16).flatten(2).transpose(1, 2)  # B, 16, 3
    torch.testing.assert_close(out[:, 0], pooled, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[:, 1], 2 * pooled + 1, atol=1e-6, rtol=1e-6)
    # Scale 1 (16 px windows upsampled to 32 px) is close to the same average.
    torch.testing.assert_close(out[:, 2], pooled, atol=0.1, rtol=0)


def test_sliding_window_features_resizes_and_keeps_constants():
    module = _module(weighting="triangular")
    image = torch.full((1, 3, 50, 70), 0.25)  # resized to the 64 px canvas
    out = module(image, PatchifyEncoder())
    assert out.shape == (1, 4, 16, 3)
    expected = torch.tensor([0.25, 1.5, 0.25, 1.5]).view(1, 4, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("detail_tokens", ["pool", "interleave"])
@pytest.mark.parametrize("weighting", ["uniform", "triangular"])
def test_sliding_window_features_gradient_is_the_derivative(detail_tokens, weighting):
    """With the patchify encoder the windows' features are an affine map of the image (resize,
    cut, resize, pool, weighted stitch), so the gradient of ``<w, f(x)>`` paired with any
    direction ``v`` is what the forward pass changes by, ``<w, f(x + v) - f(x)>``: every window
    of every scale passes its gradient back to its own pixels."""
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    _module()(image, PatchifyEncoder()).sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
    assert image.grad.abs().sum() > 0
    module = _module(detail_tokens=detail_tokens, weighting=weighting)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 50, 70, generator=gen, dtype=torch.float64).requires_grad_()
    out = module(image, PatchifyEncoder())
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((w * out).sum(), image)
    for _ in range(3):
        v = torch.randn(image.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            change = (w * (module(image + v, PatchifyEncoder()) - out)).sum()
        torch.testing.assert_close((grad * v).sum(), change, atol=1e-9, rtol=1e-9)


def test_interleaved_split_keeps_a_one_cell_detail():
    """A detail one token cell wide on the 8 x 8 shared canvas (a 64 px canvas, 8 px cells)
    reaches exactly one of the four interleaved 4 x 4 sub-grids at full strength; pooling to
    the 4 x 4 grid averages it with three neighbours."""
    interleave = _module(detail_tokens="interleave")
    encoder = PatchifyEncoder()
    image = torch.zeros(1, 3, 64, 64)
    r, c = 5, 2  # cell (5, 2) of the 8 x 8 canvas: sub-grid (1, 0), position (2, 1)
    image[:, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = 1.0
    out = interleave(image, encoder)
    assert encoder.calls == [(9 + 49, 3, 32, 32)]  # all windows of both scales in one call
    # 2 scales x 2 depths x 4 sub-grids, each 4 x 4 tokens.
    assert interleave.num_stacks(2, 4) == 16 and out.shape == (1, 16, 16, 3)
    cell = (r // 2) * 4 + c // 2
    sub = (r % 2) * 2 + c % 2
    stacks = out[0, :4, :, 0]  # scale 0 (32 px windows: patch aligned), depth 0, 4 sub-grids
    torch.testing.assert_close(stacks[sub, cell], torch.tensor(1.0), atol=1e-6, rtol=0)
    assert stacks[sub].sum() == pytest.approx(1.0, abs=1e-5)  # nothing leaks to other cells
    assert torch.all(stacks[[i for i in range(4) if i != sub]].abs() < 1e-6)
    # Scale 1 (16 px windows enlarged to 32 px and pooled back to 2 x 2 cells) keeps it too.
    assert out[0, 8 + sub, cell, 0] > 0.9
    pooled = _module()(image, PatchifyEncoder())
    assert pooled[0, 0, cell, 0] == pytest.approx(0.25, abs=1e-5)


def test_whole_canvas_window_is_the_global_view():
    """A window as large as the canvas is the image itself: it is not cut and encoded again but
    stitched from the global view's maps, with the same result as encoding it (canvas = input
    size, so the window equals the global view) and one encoder call."""
    for detail_tokens in ("interleave", "pool"):
        module = _module(window_sizes=(32, 16), canvas_size=32, detail_tokens=detail_tokens)
        assert module.whole_canvas_scales == [0] and module.cut_per_image == 9
        image = torch.rand(2, 3, 32, 32)
        encoder = PatchifyEncoder()
        out = module(image, encoder)
        assert encoder.calls == [(2 + 2 * 9, 3, 32, 32)]  # the global view + nine 16 px windows
        assert module.cut(image).shape == (2 * 9, 3, 32, 32)
        # The reference: the whole-canvas window encoded as a window of its own.
        windows = torch.cat([image, module.cut(image)])
        maps = encoder(windows)
        ref = []
        for depth in range(2):
            ref += module._stacks(0, maps[depth][:2], 2)
        for depth in range(2):
            ref += module._stacks(1, maps[depth][2:], 2)
        ref = torch.stack(ref, 1).flatten(3).transpose(2, 3)
        torch.testing.assert_close(out, ref)
        with pytest.raises(ValueError, match="whole canvas: stitch needs whole="):
            module.stitch(encoder(module.cut(image)), 2)


def test_sliding_window_features_paper_geometry():
    interleave = SlidingWindowFeatures()  # the authors': 48 x 48 shared canvas, 2 x 2 split
    assert interleave.detail_tokens == "interleave" and interleave.split_factor(24) == 2
    assert interleave._shared_geometry(0, 24) == (48, 24, [0, 12, 24])
    assert interleave._shared_geometry(1, 24) == (48, 12, [0, 6, 12, 18, 24, 30, 36])
    assert interleave.num_stacks(3, 24) == 24
    with pytest.raises(ValueError, match="not a whole multiple of grid_size=24"):
        SlidingWindowFeatures(canvas_size=504).split_factor(24)
    module = SlidingWindowFeatures(detail_tokens="pool")
    assert module.strides == [168, 84]
    assert module.offsets == [[0, 168, 336], [0, 84, 168, 252, 336, 420, 504]]
    assert module.windows_per_image == [9, 49]
    # 24 tokens a window side: 48 x 48 and 96 x 96 token canvases, integer offsets.
    assert module._token_geometry(0, 24) == (48, [0, 12, 24])
    assert module._token_geometry(1, 24) == (96, [0, 12, 24, 36, 48, 60, 72])


def test_sliding_window_features_errors():
    with pytest.raises(ValueError, match="larger than the length"):
        _module(window_sizes=(80,))
    with pytest.raises(ValueError, match="stride_fraction"):
        _module(stride_fraction=0.0)
    with pytest.raises(ValueError, match="unknown weighting"):
        _module(weighting="box")
    with pytest.raises(ValueError, match="at least one"):
        _module(window_sizes=())
    module = _module()
    image = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="B×C×H×W"):
        module(image[0], PatchifyEncoder())
    with pytest.raises(ValueError, match="expected 58×D×h×w"):
        module(image, lambda w: [F.avg_pool2d(w[:-1], PATCH)])
    with pytest.raises(ValueError, match="non-empty list"):
        module(image, lambda w: [])
    with pytest.raises(ValueError, match="one D for all depths"):
        module(image, lambda w: [F.avg_pool2d(w, PATCH), F.avg_pool2d(w, PATCH)[:, :2]])
    # 32 px windows encoded to 3 x 3 tokens: a 16 px offset is 1.5 tokens.
    with pytest.raises(ValueError, match="not whole numbers of tokens"):
        module(image, lambda w: [F.adaptive_avg_pool2d(w, 3)])
