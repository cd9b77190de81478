"""Overlapping sliding windows: cut an image into windows, stitch per-window token maps back.

FUSE (MF-RSVLM, Dang et al., 2025) gives its LLM detail features besides the global view: the
image is resized to a larger canvas (e.g. 672 px), cut into overlapping windows at several scales
(e.g. 336 px and 168 px windows, stride half a window), every window goes through the same ViT,
and for each (scale, depth) the windows' token maps are stitched back into one token canvas,
overlaps blended with smooth window weights, then split into interleaved sub-grids of the LLM's
visual token grid (or pooled to it).

* :func:`window_offsets` -- start offsets of windows covering a length, the last one flush.
* :func:`extract_windows` -- ``B×C×H×W -> (B n_h n_w) x C x win x win``, one gather.
* :func:`window_weights` -- smooth, strictly positive separable blending weights.
* :func:`stitch_windows` -- ``sum w x / sum w`` over the windows covering every canvas cell, one
  ``index_add`` over a flat canvas index (works with irregular, flush final offsets).
* :class:`SlidingWindowFeatures` -- the encoder-agnostic orchestration, all windows of all scales
  of a batch through the encoder in one call, the stitched maps split into interleaved
  sub-grids that keep the canvas's resolution (the authors' code) or pooled to the grid.

Windows are always row-major within an image and images are outermost, so window ``(i, j)`` of
image ``b`` is row ``(b n_h + i) n_w + j``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "WEIGHTINGS",
    "SlidingWindowFeatures",
    "extract_windows",
    "stitch_windows",
    "window_offsets",
    "window_weights",
]

WEIGHTINGS = ("hann", "triangular", "uniform")


def window_offsets(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of ``window``-long windows at ``stride`` that cover ``[0, size)``.

    Offsets are ``0, stride, 2 stride, ...`` while the window fits; if the last one stops short of
    ``size``, a final window flush with the end (offset ``size - window``) is added, so the final
    step may be shorter than ``stride``.

    Args:
        size: The length to cover.
        window: The length of a window.
        stride: The step between two windows' starts.

    Returns:
        The start offsets, increasing, the last one ``size - window``.

    Raises:
        ValueError: ``window <= 0``, ``window > size``, ``stride <= 0`` or ``stride > window``
            (windows would leave gaps).
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if window > size:
        raise ValueError(f"window ({window}) is larger than the length to cover ({size})")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if stride > window:
        raise ValueError(
            f"stride ({stride}) is larger than the window ({window}): windows would leave gaps"
        )
    offsets = list(range(0, size - window + 1, stride))
    if offsets[-1] + window < size:
        offsets.append(size - window)
    return offsets


def _window_index(offsets: Sequence[int], window: int, device: torch.device) -> Tensor:
    """``n x window`` positions covered by each window: ``offsets[i] + arange(window)``.

    Built on ``device`` from the Python offsets (a handful of windows), not copied from the host.
    """
    return torch.stack([torch.arange(o, o + window, device=device) for o in offsets])


def extract_windows(image: Tensor, window: int, stride: int) -> Tensor:
    """Cut ``B×C×H×W`` into ``(B n_h n_w) x C x window x window`` overlapping windows.

    Offsets along each axis come from :func:`window_offsets` (so the last window is flush with the
    border); windows are row-major per image. One advanced-indexing gather, no loop over windows.

    Args:
        image: The images, ``B×C×H×W``.
        window: The side of a square window, in pixels.
        stride: The step between two windows, in pixels.

    Returns:
        The windows, ``(B n_h n_w)×C×window×window``, window ``(i, j)`` of image ``b`` at row
        ``(b n_h + i) n_w + j``.

    Raises:
        ValueError: If ``image`` is not 4-D, or the window or stride does not fit the image
            (:func:`window_offsets`).
    """
    if image.ndim != 4:
        raise ValueError(f"expected a B×C×H×W image, got shape {tuple(image.shape)}")
    b, c, h, w = image.shape
    rows = _window_index(window_offsets(h, window, stride), window, image.device)  # n_h, win
    cols = _window_index(window_offsets(w, window, stride), window, image.device)  # n_w, win
    n_h, n_w = rows.shape[0], cols.shape[0]
    patches = image[:, :, rows[:, :, None, None], cols[None, None]]  # B, C, n_h, win, n_w, win
    patches = patches.permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b * n_h * n_w, c, window, window)


def _profile(
    size: int, kind: str, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """1-D weights of length ``size``, positive, symmetric, maximum exactly 1."""
    if size <= 0:
        raise ValueError(f"window weight size must be positive, got {size}")
    if kind not in WEIGHTINGS:
        raise ValueError(f"unknown window weighting {kind!r}; choose one of {WEIGHTINGS}")
    if kind == "uniform":
        return torch.ones(size, device=device, dtype=dtype)
    # Distance of each cell centre from the window centre, exactly symmetric (half-integers).
    d = (torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2).abs() / size
    # d < 1/2 everywhere, so both profiles stay > 0 at the border cells.
    profile = torch.cos(math.pi * d) ** 2 if kind == "hann" else 1.0 - 2.0 * d
    return (profile / profile.max()).to(dtype or torch.float32)


def window_weights(
    size: int,
    kind: str = "hann",
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``size x size`` separable blending weights, ``> 0`` everywhere, 1 at the centre.

    With ``d_i = |i - (size - 1) / 2| / size < 1/2`` the distance of cell ``i`` from the centre:
    ``"hann"`` is ``cos^2(pi d_i)`` (``= sin^2(pi (i + 1/2) / size)``, a Hann window sampled at cell
    centres, so the borders are small but positive), ``"triangular"`` a tent ``1 - 2 d_i``,
    ``"uniform"`` ones. Each 1-D profile is exactly symmetric and divided by its maximum (even
    sizes have two centre cells), then the two axes are multiplied.

    Args:
        size: The side of the square window, in cells.
        kind: The profile: ``"hann"``, ``"triangular"`` or ``"uniform"``.
        device: The device of the weights.
        dtype: The dtype of the weights (default ``float32``).

    Returns:
        The weights, ``size×size``.

    Raises:
        ValueError: If ``size`` is not positive or ``kind`` is unknown.
    """
    profile = _profile(size, kind, device, dtype)
    return torch.outer(profile, profile)


def _check_cover(offsets: Sequence[int], extent: int, size: int, axis: str) -> None:
    """Raise unless windows ``[o, o + extent)`` lie inside and cover ``[0, size)``."""
    if not offsets:
        raise ValueError(f"no window offsets along {axis}")
    reach = 0
    for o in sorted(offsets):
        if o < 0 or o + extent > size:
            raise ValueError(
                f"window at {axis} offset {o} (extent {extent}) lies outside the canvas [0, {size})"
            )
        if o > reach:
            raise ValueError(f"canvas {axis} cells {reach}..{o - 1} are covered by no window")
        reach = max(reach, o + extent)
    if reach < size:
        raise ValueError(f"canvas {axis} cells {reach}..{size - 1} are covered by no window")


def _stitch(
    tokens: Tensor,
    batch: int,
    canvas: tuple[int, int],
    offsets_h: Sequence[int],
    offsets_w: Sequence[int],
    weights: Tensor,
) -> Tensor:
    """:func:`stitch_windows` without the checks (geometry and weights assumed valid)."""
    n_h, n_w = len(offsets_h), len(offsets_w)
    _, dim, h, w = tokens.shape
    height, width = canvas
    device = tokens.device
    # Accumulate in at least float32 so half-precision features blend without rounding drift.
    acc = torch.promote_types(tokens.dtype, torch.float32)
    rows = _window_index(offsets_h, h, device)  # n_h, h
    cols = _window_index(offsets_w, w, device)  # n_w, w
    index = (rows[:, None, :, None] * width + cols[None, :, None, :]).reshape(-1)  # n_h n_w h w
    weights = weights.to(device=device, dtype=acc)
    src = tokens.to(acc).reshape(batch, n_h, n_w, dim, h, w) * weights
    src = src.permute(0, 3, 1, 2, 4, 5).reshape(batch, dim, -1)  # B, D, (n_h n_w h w)
    num = src.new_zeros(batch, dim, height * width).index_add(2, index, src)
    den = weights.new_zeros(height * width).index_add(
        0, index, weights.expand(n_h, n_w, h, w).reshape(-1)
    )
    return (num / den).reshape(batch, dim, height, width).to(tokens.dtype)


def stitch_windows(
    tokens: Tensor,
    batch: int,
    canvas: tuple[int, int],
    offsets_h: list[int],
    offsets_w: list[int],
    weights: Tensor | None = None,
) -> Tensor:
    """Blend per-window token maps into one ``B×D×canvas_h×canvas_w`` canvas.

    Args:
        tokens: ``(B n_h n_w)×D×h×w`` token maps, windows row-major per image.
        batch: ``B``.
        canvas: ``(canvas_h, canvas_w)`` in token cells.
        offsets_h: Window start offsets along the rows, in token cells (any order of steps,
            e.g. a flush final window); every canvas row must be covered by a window.
        offsets_w: Window start offsets along the columns, likewise.
        weights: ``h x w`` positive per-cell weights (default: uniform).

    Returns:
        Each cell is ``sum_k w_k x_k / sum_k w_k`` over the windows ``k`` covering it, computed with
        one ``index_add`` into a flat canvas (no loop over windows); the result has ``tokens``'
        dtype (accumulation is in at least float32).

    Raises:
        ValueError: wrong rank or number of windows, a window outside the canvas, an uncovered
            canvas cell, or weights of the wrong shape or not strictly positive.
    """
    if tokens.ndim != 4:
        raise ValueError(f"expected (B*n_h*n_w)×D×h×w tokens, got shape {tuple(tokens.shape)}")
    n_windows = batch * len(offsets_h) * len(offsets_w)
    if batch <= 0 or tokens.shape[0] != n_windows:
        raise ValueError(
            f"got {tokens.shape[0]} windows but batch={batch}×{len(offsets_h)} x "
            f"{len(offsets_w)} offsets = {n_windows}"
        )
    h, w = tokens.shape[-2:]
    _check_cover(offsets_h, h, canvas[0], "row")
    _check_cover(offsets_w, w, canvas[1], "column")
    if weights is None:
        weights = tokens.new_ones(h, w)
    elif tuple(weights.shape) != (h, w):
        raise ValueError(f"weights must be {h}×{w} like a window, got {tuple(weights.shape)}")
    elif not bool((weights > 0).all()):
        raise ValueError("window weights must be strictly positive")
    return _stitch(tokens, batch, canvas, offsets_h, offsets_w, weights)


def _to_grid(x: Tensor, grid: int) -> Tensor:
    """Resize ``B×D×H×W`` to ``grid x grid``: area average down, bilinear up."""
    if x.shape[-2:] == (grid, grid):
        return x
    if min(x.shape[-2:]) >= grid:
        return F.adaptive_avg_pool2d(x, grid)
    return F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)


def _resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize to ``size x size`` (anti-aliased when shrinking); no-op at that size."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = max(x.shape[-2:]) > size  # antialiasing only changes the shrunk axes
    return F.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    )


class SlidingWindowFeatures(nn.Module):
    """FUSE's multi-scale sliding-window detail features, for any encoder.

    ``forward(image, encode)`` resizes the image to a ``canvas_size`` square canvas (bilinear,
    anti-aliased when shrinking; the aspect ratio is not kept), cuts it at every window size with
    stride ``round(window * stride_fraction)`` (last window flush with the border), resizes every
    window to the encoder's ``input_size`` and calls ``encode`` once on all windows of all scales
    (scale-major, then image, then row-major window). ``encode`` returns one ``N×D×h×w``
    token map per depth. :meth:`cut` and :meth:`stitch` are the two halves, so a caller can put
    other images (FUSE's global view) into the same encoder call.

    A scale whose one window is the whole canvas (``window == canvas_size``) is the image
    itself, which a caller already encodes as its global view: :meth:`cut` leaves it out and
    :meth:`stitch` takes its maps from the global view's (``whole=``), the image at
    ``input_size`` (not resized to the canvas and back), so no window is encoded twice.

    ``detail_tokens`` says how the stitched maps become stacks of ``grid_size^2`` tokens:

    * ``"interleave"`` (the authors' code): with ``h`` tokens a side for an ``input_size``
      window, every scale is stitched on one token canvas of ``canvas_size h / input_size``
      cells a side (48 for a 672 px canvas and CLIP-L/14 at 336), each window's map first
      area-averaged (or bilinearly enlarged) to its ``window h / input_size`` cells. The canvas
      is then split into ``f^2`` interleaved sub-grids ``x[..., i::f, j::f]``, ``f = side /
      grid_size``, so the stacks keep the canvas's full resolution: ``S = scales x depths x
      f^2`` (2 x 3 x 4 = 24 in the paper).
    * ``"pool"``: each scale is stitched at its own native token resolution (``canvas_size h /
      window`` cells a side: 48 and 96 in the paper's geometry) and area-averaged
      (``adaptive_avg_pool2d``) to ``grid_size x grid_size``, or bilinearly upsampled if
      smaller: ``S = scales x depths``.

    Overlaps are blended with :func:`window_weights` (``weighting``; strictly positive, where the
    authors' symmetric Hann window is zero on the border cells). Returns ``B×S×grid_size^2×D``
    ordered scale-major, then depth, then sub-grid ``(i, j)`` row-major, tokens row-major.

    Args:
        window_sizes: The window side of each scale, in canvas pixels.
        canvas_size: The side of the square canvas the image is resized to.
        input_size: The side the encoder takes; every window is resized to it.
        grid_size: The side of the LLM's visual token grid each stack has.
        stride_fraction: The stride as a fraction of the window, in ``(0, 1]``.
        weighting: The blending profile of overlaps (:data:`WEIGHTINGS`).
        detail_tokens: ``"interleave"`` (the authors' code) or ``"pool"``, as above.

    Raises:
        ValueError: If no window size is given, a size is not positive, ``stride_fraction`` is
            outside ``(0, 1]``, or ``weighting`` or ``detail_tokens`` is unknown.
    """

    def __init__(
        self,
        window_sizes: Sequence[int] = (336, 168),
        canvas_size: int = 672,
        input_size: int = 336,
        grid_size: int = 24,
        stride_fraction: float = 0.5,
        weighting: str = "hann",
        detail_tokens: Literal["interleave", "pool"] = "interleave",
    ) -> None:
        super().__init__()
        if not window_sizes:
            raise ValueError("window_sizes must name at least one window size")
        for name, value in (
            ("canvas_size", canvas_size),
            ("input_size", input_size),
            ("grid_size", grid_size),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0.0 < stride_fraction <= 1.0:
            raise ValueError(f"stride_fraction must lie in (0, 1], got {stride_fraction}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
        if detail_tokens not in ("interleave", "pool"):
            raise ValueError(f"detail_tokens must be 'interleave' or 'pool', got {detail_tokens!r}")
        self.window_sizes = [int(s) for s in window_sizes]
        self.canvas_size = canvas_size
        self.input_size = input_size
        self.grid_size = grid_size
        self.stride_fraction = stride_fraction
        self.weighting = weighting
        self.detail_tokens = detail_tokens
        self.strides = [max(1, round(s * stride_fraction)) for s in self.window_sizes]
        # Pixel offsets per scale (the same along both axes of the square canvas).
        self.offsets = [
            window_offsets(canvas_size, s, t)
            for s, t in zip(self.window_sizes, self.strides, strict=True)
        ]

    @property
    def windows_per_image(self) -> list[int]:
        """Number of windows each image contributes at each scale."""
        return [len(o) ** 2 for o in self.offsets]

    @property
    def whole_canvas_scales(self) -> list[int]:
        """The scales whose one window is the whole canvas (the global view's maps serve)."""
        return [s for s, size in enumerate(self.window_sizes) if size == self.canvas_size]

    @property
    def cut_per_image(self) -> int:
        """Windows :meth:`cut` returns per image (every scale but the whole-canvas ones)."""
        whole = self.whole_canvas_scales
        return sum(n for s, n in enumerate(self.windows_per_image) if s not in whole)

    def global_view(self, image: Tensor) -> Tensor:
        """The image at the encoder's ``input_size``: the view whose maps :meth:`stitch` needs
        as ``whole`` for the whole-canvas scales.

        Args:
            image: The images, ``B×C×H×W``.

        Returns:
            The images resized to ``B×C×input_size×input_size``.
        """
        return _resize(image, self.input_size)

    def num_stacks(self, depths: int, tokens: int) -> int:
        """The number of detail stacks ``S`` :meth:`stitch` returns.

        Args:
            depths: The number of encoder depths (maps per window).
            tokens: The token cells a side of one encoded window.

        Returns:
            ``S``: scales × depths, times ``f^2`` sub-grids when interleaving.
        """
        if self.detail_tokens == "pool":
            return len(self.window_sizes) * depths
        return len(self.window_sizes) * depths * self.split_factor(tokens) ** 2

    def split_factor(self, tokens: int) -> int:
        """``f``: the shared token canvas is ``f x grid_size`` cells a side (interleave).

        Args:
            tokens: The token cells a side of one encoded window.

        Returns:
            The split factor ``f``.

        Raises:
            ValueError: If the canvas is not a whole multiple of ``grid_size`` token cells, or
                a window or offset is not a whole number of cells.
        """
        side = self._shared_geometry(0, tokens)[0]
        if side % self.grid_size:
            raise ValueError(
                f"detail_tokens='interleave': the {self.canvas_size} px canvas is {side} token "
                f"cells a side ({tokens} tokens per {self.input_size} px window), not a whole "
                f"multiple of grid_size={self.grid_size}; choose canvas_size = f x input_size "
                f"for an integer f, or detail_tokens='pool'"
            )
        return side // self.grid_size

    def _shared_geometry(self, scale: int, tokens: int) -> tuple[int, int, list[int]]:
        """Interleave: shared canvas side, the scale's window side and offsets, in cells."""
        pixels = [self.canvas_size, self.window_sizes[scale], *self.offsets[scale]]
        if any(p * tokens % self.input_size for p in pixels):
            raise ValueError(
                f"scale {scale}: a token cell is {self.input_size / tokens:g} px ({tokens} tokens "
                f"per {self.input_size} px window), but the canvas ({self.canvas_size} px), the "
                f"{self.window_sizes[scale]} px window or its offsets {self.offsets[scale]} are "
                f"not whole numbers of cells; choose sizes and stride_fraction so they are"
            )
        side, window, *offsets = (p * tokens // self.input_size for p in pixels)
        return side, window, offsets

    def _token_geometry(self, scale: int, tokens: int) -> tuple[int, list[int]]:
        """Pool: token-canvas side and token offsets of ``scale`` at its native resolution."""
        window = self.window_sizes[scale]
        pixels = [self.canvas_size, *self.offsets[scale]]
        if any(p * tokens % window for p in pixels):
            raise ValueError(
                f"scale {scale}: {window} px windows give {tokens} tokens a side (a token is "
                f"{window / tokens:g} px), but the canvas ({self.canvas_size} px) or the window "
                f"offsets {self.offsets[scale]} are not whole numbers of tokens; choose sizes "
                f"and stride_fraction so they are"
            )
        side, *offsets = (p * tokens // window for p in pixels)
        return side, offsets

    def cut(self, image: Tensor) -> Tensor:
        """Every window of every scale at ``input_size``, one batch (the whole-canvas scales
        left out: they are the global view).

        Args:
            image: The images, ``B×C×H×W``.

        Returns:
            The windows, scale-major, then image, then row-major window, each
            ``C×input_size×input_size``; empty (``0×C×input×input``) when every scale is a
            whole-canvas one.

        Raises:
            ValueError: If ``image`` is not 4-D.
        """
        if image.ndim != 4:
            raise ValueError(f"expected a B×C×H×W image, got shape {tuple(image.shape)}")
        canvas = _resize(image, self.canvas_size)
        whole = self.whole_canvas_scales
        windows = [
            _resize(extract_windows(canvas, size, stride), self.input_size)
            for s, (size, stride) in enumerate(zip(self.window_sizes, self.strides, strict=True))
            if s not in whole
        ]
        if not windows:
            return image.new_empty(0, image.shape[1], self.input_size, self.input_size)
        return torch.cat(windows) if len(windows) > 1 else windows[0]

    def stitch(
        self, features: Sequence[Tensor], batch: int, whole: Sequence[Tensor] | None = None
    ) -> Tensor:
        """Stitch the encoder's maps of :meth:`cut`'s windows into detail stacks.

        Args:
            features: The encoder's ``N×D×h×w`` maps of the windows, one per depth.
            batch: The number of images ``B``.
            whole: The encoder's ``B×D×h×w`` maps of :meth:`global_view` at the same depths,
                needed when a scale's one window is the whole canvas
                (:attr:`whole_canvas_scales`).

        Returns:
            The detail stacks, ``B×S×grid_size^2×D``.

        Raises:
            ValueError: If the maps do not match the windows of :meth:`cut` (count, rank or
                width), or ``whole`` is missing or mis-shaped where a scale needs it.
        """
        whole_scales = self.whole_canvas_scales
        counts = [batch * n for s, n in enumerate(self.windows_per_image) if s not in whole_scales]
        if isinstance(features, Tensor) or not features:
            raise ValueError("encode must return a non-empty list of N×D×h×w maps, one per depth")
        for d, f in enumerate(features):
            if f.ndim != 4 or f.shape[0] != sum(counts) or f.shape[1] != features[0].shape[1]:
                raise ValueError(
                    f"encode output {d} has shape {tuple(f.shape)}; expected {sum(counts)}×D"
                    f"×h×w ({counts} windows per scale) with one D for all depths"
                )
        if whole_scales and (
            whole is None
            or len(whole) != len(features)
            or any(
                w.shape[0] != batch or w.shape[1:] != f.shape[1:]
                for w, f in zip(whole, features, strict=True)
            )
        ):
            raise ValueError(
                f"scales {whole_scales} are the whole canvas: stitch needs whole=, the encoder's "
                f"{batch}×D×h×w maps of the global view at the {len(features)} depths"
            )
        per_depth = [iter(torch.split(f, counts)) for f in features]
        stacks = []
        for scale in range(len(self.window_sizes)):
            for depth in range(len(features)):
                if scale in whole_scales:
                    tokens = whole[depth]  # type: ignore[index]
                else:
                    tokens = next(per_depth[depth])
                stacks += self._stacks(scale, tokens, batch)
        return torch.stack(stacks, 1).flatten(3).transpose(2, 3)  # B, S, grid^2, D

    def _stacks(self, scale: int, tokens: Tensor, batch: int) -> list[Tensor]:
        """One scale and depth: ``B×D×grid×grid`` maps (one, or ``f^2`` interleaved)."""
        h, w = tokens.shape[-2:]
        device = tokens.device
        if self.detail_tokens == "pool":
            side_h, off_h = self._token_geometry(scale, h)
            side_w, off_w = self._token_geometry(scale, w)
            weights = torch.outer(
                _profile(h, self.weighting, device), _profile(w, self.weighting, device)
            )
            stitched = _stitch(tokens, batch, (side_h, side_w), off_h, off_w, weights)
            return [_to_grid(stitched, self.grid_size)]
        if h != w:
            raise ValueError(f"detail_tokens='interleave' needs square token maps, got {h}x{w}")
        f = self.split_factor(h)
        side, window, offsets = self._shared_geometry(scale, h)
        tokens = _to_grid(tokens, window)
        profile = _profile(window, self.weighting, device)
        stitched = _stitch(
            tokens, batch, (side, side), offsets, offsets, torch.outer(profile, profile)
        )
        return [stitched[:, :, i::f, j::f] for i in range(f) for j in range(f)]

    def forward(self, image: Tensor, encode: Callable[[Tensor], list[Tensor]]) -> Tensor:
        """The detail stacks of images, with one ``encode`` call (with a whole-canvas scale,
        the global view rides in it as the first ``B`` rows).

        Args:
            image: The images, ``B×C×H×W``.
            encode: The encoder: ``N×C×input_size×input_size`` windows to a list of
                ``N×D×h×w`` maps, one per depth.

        Returns:
            The detail stacks, ``B×S×grid_size^2×D``.
        """
        batch = image.shape[0]
        windows = self.cut(image)
        if not self.whole_canvas_scales:
            return self.stitch(encode(windows), batch)
        maps = encode(torch.cat([self.global_view(image).to(windows.dtype), windows]))
        return self.stitch([m[batch:] for m in maps], batch, whole=[m[:batch] for m in maps])

    def extra_repr(self) -> str:
        """The geometry, shown in the module's ``repr``.

        Returns:
            The window sizes, strides, canvas, input and grid sizes, weighting and token mode.
        """
        return (
            f"window_sizes={self.window_sizes}, strides={self.strides}, "
            f"canvas_size={self.canvas_size}, input_size={self.input_size}, "
            f"grid_size={self.grid_size}, weighting={self.weighting!r}, "
            f"detail_tokens={self.detail_tokens!r}"
        )
