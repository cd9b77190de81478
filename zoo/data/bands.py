"""Which bands of an image file a model reads: the one rule, and the N-band reader.

A model reads ``channels`` bands (3 for the zoo's RGB models; the data's ``num_channels``,
linked to the model, otherwise). ``bands`` in a data config chooses them from each file:
1-based indices as rasterio numbers them (``[4, 3, 2]``: Sentinel-2's red, green, blue) or the
bands' names (the file's band descriptions, e.g. ``[B04, B03, B02]``). The rule
(:func:`select_bands`) never chooses silently:

* ``bands`` given: exactly those bands, in that order; one that does not exist (an index past
  the file's count, a name the file does not describe) is an error naming the file;
* ``bands`` not given: a file with exactly ``channels`` bands is read whole, as is one whose
  bands other than alpha are exactly ``channels`` (an RGBA PNG for an RGB model); a one-band
  (grey) file is repeated to three bands for an RGB model where the reader allows it (as PIL's
  ``convert("RGB")`` and :class:`~zoo.preprocessing.ImageTransform` do);
  any other count is an error naming the file, its band count, the model's channels and how to
  choose (``bands: [4, 3, 2]`` for Sentinel-2 RGB).

Pixel values (:func:`read_bands`): uint8 files keep their values (an 8-bit RGB file reads
bit-identical to PIL's ``convert("RGB")``); uint16 reflectance, other integers and floats are
kept as raw float32 values: no stretch and no clipping, since the per-band statistics (the data's
``mean`` / ``std``, e.g. from ``zoo stats``) do the normalization. Nodata pixels (in any chosen
band) are 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

__all__ = [
    "BandChoice",
    "RGB",
    "band_error",
    "bands_of",
    "read_bands",
    "select_bands",
]

#: How to choose bands, quoted by every band-count error.
HOW_TO_CHOOSE = (
    "data.init_args.bands takes 1-based indices, e.g. [4, 3, 2] for Sentinel-2's red, green, "
    "blue (an RGB model), [1, 2, 3, 4] for NAIP's R, G, B, NIR (a 4-band model: the data's "
    "num_channels reaches the model), or the bands' names (the file's band descriptions)"
)


@dataclass(frozen=True)
class BandChoice:
    """The bands a data config chooses and the channel count the model reads.

    Args:
        bands: 1-based band indices or band names, in the order the model reads them (None:
            the rule of :func:`select_bands`).
        channels: the model's input channels (``len(bands)`` when bands are given).
        names: a name for each channel, as the checkpoint stores them (None: from ``bands``
            where they are names, else none).
    """

    bands: tuple[int | str, ...] | None = None
    channels: int = 3
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.bands is not None:
            bands = tuple(b if isinstance(b, str) else int(b) for b in self.bands)
            object.__setattr__(self, "bands", bands)
            if not bands:
                raise ValueError("data.init_args.bands is empty: give the bands to read, or null")
            bad = [b for b in bands if isinstance(b, int) and b < 1]
            if bad:
                raise ValueError(f"data.init_args.bands {list(bands)}: bands are 1-based, {bad}")
            if self.channels != len(bands):
                object.__setattr__(self, "channels", len(bands))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))
            if len(self.names) != self.channels:
                raise ValueError(
                    f"data.init_args.band_names names {len(self.names)} bands but the data "
                    f"reads {self.channels} ({list(self.bands or [])}): give one name a band"
                )
        elif self.bands is not None and all(isinstance(b, str) for b in self.bands):
            object.__setattr__(self, "names", tuple(str(b) for b in self.bands))

    @classmethod
    def of(
        cls, bands: Sequence[int | str] | None = None, names: Sequence[str] | None = None
    ) -> BandChoice:
        """A choice from a config's ``bands`` and ``band_names``.

        Args:
            bands: 1-based indices or names (None: RGB by the rule).
            names: the channels' names (None: ``bands`` where they are names).

        Returns:
            The choice.
        """
        if bands is None:
            return cls(None, 3 if names is None else len(names), names)
        return cls(tuple(bands), len(bands), None if names is None else tuple(names))

    @property
    def is_default(self) -> bool:
        """Whether nothing was chosen: an RGB model reading RGB files as the zoo always did."""
        return self.bands is None and self.channels == 3 and self.names is None


#: An RGB model's default: three-band files read whole, grey repeated.
RGB = BandChoice()


def band_error(path: str | Path, count: int, channels: int, context: str = "") -> ValueError:
    """The error for a file whose band count the model cannot read without a choice.

    Args:
        path: the file.
        count: its bands.
        channels: the model's input channels.
        context: appended after the file (e.g. which table row names it).

    Returns:
        The error (raise it).
    """
    reason = (
        "fewer bands than it needs: repeat one, e.g. [1, 1, 1] for a grey image shown as RGB, "
        "or train a model on fewer channels"
        if count < channels
        else "the zoo never picks bands for you"
    )
    return ValueError(
        f"{path}{context} has {count} band(s): set bands to choose the {channels} the model "
        f"reads ({reason}). {HOW_TO_CHOOSE}"
    )


def select_bands(
    path: str | Path,
    count: int,
    choice: BandChoice = RGB,
    descriptions: Sequence[str | None] = (),
    alpha: Sequence[int] = (),
    repeat_grey: bool = True,
    context: str = "",
) -> list[int]:
    """The 1-based bands to read from a file, or an error that says how to choose.

    Args:
        path: the file (for the messages).
        count: its number of bands.
        choice: the data's band choice and the model's channel count.
        descriptions: each band's name (rasterio's ``descriptions``), for names in ``bands``.
        alpha: the 1-based bands that are alpha (left out when ``bands`` is not given and the
            file has more bands than the model reads).
        repeat_grey: a one-band file is read three times for a 3-channel model.
        context: appended after the file in messages.

    Returns:
        The 1-based band indices, one per model channel.

    Raises:
        ValueError: a band that does not exist, a name the file does not describe, or (no
            ``bands`` given) a band count other than the model's.
    """
    if choice.bands is not None:
        out = []
        names = {str(d): i + 1 for i, d in enumerate(descriptions) if d}
        for band in choice.bands:
            if isinstance(band, str):
                if band not in names:
                    described = sorted(names) or "none (the file has no band descriptions)"
                    raise ValueError(
                        f"{path}{context}: band name {band!r} is not one of the file's band "
                        f"names {described}; give 1-based indices instead (bands: [4, 3, 2])"
                    )
                out.append(names[band])
            else:
                if not 1 <= band <= count:
                    raise ValueError(
                        f"{path}{context} has bands 1..{count}; bands [{band}] do not exist "
                        "(bands are 1-based)"
                    )
                out.append(band)
        return out
    channels = choice.channels
    if count == channels:
        return list(range(1, count + 1))
    colour = [b for b in range(1, count + 1) if b not in set(alpha)]
    if len(colour) == channels:  # an RGBA file for an RGB model: the alpha is a mask, no band
        return colour
    if len(colour) == 1 and channels == 3 and repeat_grey:
        return colour * 3
    raise band_error(path, count, channels, context)


def bands_of(
    src: rasterio.DatasetReader,
    path: str | Path,
    choice: BandChoice = RGB,
    repeat_grey: bool = True,
    context: str = "",
) -> list[int]:
    """:func:`select_bands` for an open file (its band count, names and alpha bands).

    Args:
        src: the open file.
        path: the file (for the messages).
        choice: the data's band choice and the model's channel count.
        repeat_grey: a one-band file is read three times for a 3-channel model.
        context: appended after the file in messages.

    Returns:
        The 1-based band indices, one per model channel.

    Raises:
        ValueError: the band choice does not fit the file (:func:`select_bands`).
    """
    alpha = [i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha]
    return select_bands(path, src.count, choice, src.descriptions, alpha, repeat_grey, context)


def read_bands(
    path: str | Path,
    choice: BandChoice = RGB,
    repeat_grey: bool = True,
    context: str = "",
    window: Window | None = None,
) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """Read the chosen bands of any raster file (or one window of it) as float32 ``C×H×W``.

    uint8 values are kept as they are; other types are raw float32 values (see the module
    docstring); nodata pixels (in any chosen band) are 0.

    Args:
        path: the image file (GeoTIFF, PNG, JPEG: whatever rasterio reads).
        choice: the data's band choice and the model's channel count.
        repeat_grey: a one-band file is read three times for a 3-channel model.
        context: appended after the file in messages.
        window: read only this window (a rasterio windowed read: a tiled or Cloud-Optimized
            GeoTIFF is read block by block, so memory is the window's, not the file's); None
            reads the whole file.

    Returns:
        The pixels, the validity mask (bool ``H×W``) and the file's data type.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the band choice does not fit the file (:func:`select_bands`).
        RuntimeError: the file is corrupt or not a raster.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} is missing{context}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                indices = bands_of(src, path, choice, repeat_grey, context)
                data = src.read(indices, window=window, masked=True)
                dtype = np.dtype(src.dtypes[indices[0] - 1])
    except RasterioIOError as error:
        raise RuntimeError(
            f"could not read image file {path}{context}: {error}. The file is corrupt or not a "
            "raster: replace it, or remove it from the data"
        ) from error
    valid = ~np.ma.getmaskarray(data).any(0)
    pixels = np.ma.getdata(data).astype(np.float32)
    pixels[:, ~valid] = 0.0
    return pixels, valid, dtype
