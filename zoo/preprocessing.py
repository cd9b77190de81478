"""How a model's images are prepared: the size, the per-band statistics and the padding.

One :class:`Preprocessing` travels with a trained model (in its checkpoint and export,
:mod:`zoo.model_contents`): the datamodule that trained the model gives it
(:attr:`zoo.data.datamodules.ZooDataModule.preprocessing`), and :func:`zoo.load` hands back its
:class:`ImageTransform`, which prepares a PIL image or a ``C×H×W`` array exactly as the training
loader did (resize, optional pad to square, normalization), without a datamodule.

Shared by the data and the models (like :mod:`zoo.conversation_formats`), so it imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from zoo.data.batch import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ImageTransform", "Preprocessing", "pad_to_square"]


@dataclass(frozen=True)
class Preprocessing:
    """The image preparation a model was trained with.

    Pixels are read in [0, 255] (an 8-bit file's own values), padded to a square of the mean
    colour when ``pad_to_square`` (LLaVA's ``expand2square``), resized to ``image_size`` (bilinear,
    antialiased) and normalized per band: ``(x - 255·mean) / (255·std)``.

    Args:
        image_size: the square input size in pixels.
        mean: per-band mean of [0, 1] pixels.
        std: per-band standard deviation of [0, 1] pixels.
        pad_to_square: pad a non-square image to a square before resizing.
        bands: the names of the bands, in the order the model reads them (None: RGB).
    """

    image_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pad_to_square: bool = False
    bands: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(str(b) for b in self.bands))
        if self.image_size <= 0:
            raise ValueError(f"preprocessing.image_size must be > 0, got {self.image_size}")
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"preprocessing.mean has {len(self.mean)} bands but std has {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"preprocessing.std must be > 0 in every band, got {self.std}")
        if self.bands is not None and len(self.bands) != len(self.mean):
            raise ValueError(
                f"preprocessing.bands names {len(self.bands)} bands but mean has {len(self.mean)}"
            )

    @property
    def channels(self) -> int:
        """The number of bands the model reads."""
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """Plain types, as a checkpoint and ``config.json`` store them.

        Returns:
            The fields, tuples as lists.
        """
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        """Read :meth:`to_dict`'s output back (unknown keys are an error).

        Args:
            values: the stored fields.

        Returns:
            The preprocessing.
        """
        from zoo.groups import as_group

        return as_group(cls, dict(values), "preprocessing")

    def transform(self) -> ImageTransform:
        """This preprocessing as a callable on one image.

        Returns:
            The transform.
        """
        return ImageTransform(self)


class ImageTransform:
    """One image in, the normalized ``C×S×S`` float tensor the model reads out.

    Accepts a PIL image, a ``C×H×W`` NumPy array or tensor in the units the model was trained
    on (8-bit values for the zoo's RGB models), or a ``H×W`` single band. A grey image is
    repeated to three bands for an RGB model; any other band count that differs from the
    model's is an error.

    Args:
        preprocessing: the model's preprocessing.
    """

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing
        self.mean = torch.tensor(preprocessing.mean).view(-1, 1, 1) * 255.0
        self.std = torch.tensor(preprocessing.std).view(-1, 1, 1) * 255.0

    def __repr__(self) -> str:
        return f"ImageTransform({self.preprocessing})"

    def pixels(self, image: Any) -> Tensor:
        """The image as float ``C×H×W`` in its own units, before resizing.

        Args:
            image: a PIL image, a ``C×H×W`` (or ``H×W``) array or tensor.

        Returns:
            The float tensor.

        Raises:
            TypeError: neither a PIL image nor an array.
            ValueError: a band count the model cannot read.
        """
        if hasattr(image, "getbands") and hasattr(image, "convert"):  # a PIL image
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            array = np.asarray(image)
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            pixels = torch.from_numpy(np.ascontiguousarray(array))
        elif isinstance(image, np.ndarray | Tensor):
            pixels = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image)
            pixels = pixels[None] if pixels.ndim == 2 else pixels
            if pixels.ndim != 3:
                raise ValueError(
                    f"expected one C×H×W image, got an array of shape {tuple(pixels.shape)} "
                    "(give a batch one image at a time, or stack the transformed images)"
                )
        else:
            raise TypeError(f"expected a PIL image or a C×H×W array, got {type(image).__name__}")
        pixels = pixels.float()
        channels = self.preprocessing.channels
        if pixels.shape[0] == 1 and channels == 3:
            pixels = pixels.expand(3, -1, -1)
        if pixels.shape[0] != channels:
            hint = (
                " (an H×W×C array? transpose it to C×H×W)" if pixels.shape[-1] == channels else ""
            )
            raise ValueError(
                f"the image has {pixels.shape[0]} bands but the model reads {channels} "
                f"({', '.join(self.preprocessing.bands or ('R', 'G', 'B'))}){hint}: choose "
                "those bands first"
            )
        return pixels

    def __call__(self, image: Any) -> Tensor:
        """Prepare one image.

        Args:
            image: a PIL image, a ``C×H×W`` (or ``H×W``) array or tensor.

        Returns:
            The normalized float ``C×S×S`` tensor.
        """
        pixels = self.pixels(image)
        if self.preprocessing.pad_to_square:
            pixels = pad_to_square(pixels, self.mean.flatten().tolist())
        size = self.preprocessing.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(
                pixels[None], size=(size, size), mode="bilinear", antialias=True
            )[0]
        return (pixels - self.mean) / self.std


def pad_to_square(image: Tensor, color: Sequence[float]) -> Tensor:
    """Centre a ``C×H×W`` image on a square of side ``max(H, W)`` filled with ``color``.

    LLaVA's ``expand2square``, which FUSE's authors use with the vision tower's mean colour.

    Args:
        image: the ``C×H×W`` image.
        color: the fill, one value per band, in the image's units.

    Returns:
        The ``C×S×S`` padded image (``image`` itself when it is already square).
    """
    c, h, w = image.shape
    if h == w:
        return image
    side = max(h, w)
    out = torch.as_tensor(color, dtype=image.dtype).view(c, 1, 1).repeat(1, side, side)
    top, left = (side - h) // 2, (side - w) // 2
    out[:, top : top + h, left : left + w] = image
    return out
