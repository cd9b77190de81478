"""Image-caption(-location) tables: torchgeo's SkyScript CSV format and its superset.

A table is a CSV with a ``filepath`` column (relative to the root) and a caption column
(``title`` as in SkyScript, or ``caption``); optional ``lat``/``lon`` columns (degrees) and a
``label`` column (scene class name). The embedded dataset writes exactly this format, so the
loader that reads it is the one that reads SkyScript.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F
from torchgeo.datasets import NonGeoDataset

from zoo.data.bands import RGB, BandChoice, read_bands
from zoo.encoders.location import validate_locations
from zoo.io import require_dir

__all__ = [
    "ImageTextLocationDataset",
    "caption_words",
    "csv_lines",
    "load_image",
    "read_table",
    "validate_location",
]

CAPTION_COLUMNS = ("title", "caption")

#: Files read with rasterio whatever the band choice (an N-band GeoTIFF is no PIL image).
GEOTIFF_SUFFIXES = (".tif", ".tiff")


def load_image(path: Path, context: str = "", bands: BandChoice = RGB) -> Tensor:
    """Read an image file as float ``C×H×W``: RGB files, or the chosen bands of any raster.

    An RGB model's PNG / JPEG (``bands`` the default) is read by PIL as RGB, in [0, 255] as
    always; a GeoTIFF, or any file when bands are chosen or the model reads other than three
    channels, by rasterio with :mod:`zoo.data.bands`' rule (never a silent band choice; uint8
    values as they are, uint16 / float as raw values for the per-band statistics).

    Args:
        path: the image file.
        context: appended to error messages (e.g. which table row names the file).
        bands: the data's band choice and the model's channel count.

    Returns:
        The image, one band per model channel.

    Raises:
        FileNotFoundError: the file is missing (the message names it).
        ValueError: the file's bands do not fit the choice (the message names the file).
        RuntimeError: the file is corrupt or not an image.
    """
    if not bands.is_default or Path(path).suffix.lower() in GEOTIFF_SUFFIXES:
        pixels, _, _ = read_bands(path, bands, context=context)
        return torch.from_numpy(pixels)
    try:
        with Image.open(path) as img:
            array = np.array(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"image file {path} is missing{context}") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise RuntimeError(
            f"could not read image file {path}{context}: {error}. The file is corrupt or not an "
            "image: replace it, or remove its row from the table"
        ) from error
    return torch.from_numpy(array).permute(2, 0, 1).float()


def csv_lines(bad: Any) -> str:
    """The CSV line numbers (header = line 1) of the first five rows flagged in ``bad``.

    Args:
        bad: a boolean mask over the table's rows.

    Returns:
        The line numbers, comma-separated.
    """
    return ", ".join(str(i + 2) for i in np.flatnonzero(bad)[:5])


def validate_location(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check the optional ``lat``/``lon`` columns of a table and make them float64.

    Both or neither; numbers within [-90, 90] and [-180, 180] degrees. Errors name the file, the
    line(s) and the column.

    Args:
        table: the table read from ``path``.
        path: the table's file, for the messages.

    Returns:
        The table, with float64 ``lat``/``lon`` when present.

    Raises:
        ValueError: only one of the columns exists, or a value is not a number in range.
    """
    if ("lat" in table.columns) != ("lon" in table.columns):
        raise ValueError(f"{path}: give both 'lat' and 'lon' columns, or neither")
    if "lat" in table.columns:
        for column, bound in (("lat", 90.0), ("lon", 180.0)):
            values = pd.to_numeric(table[column], errors="coerce")
            bad = values.isna() | (values.abs() > bound)
            if bad.any():
                first = table[column][bad].iloc[0]
                first = float(first) if isinstance(first, (int, float, np.number)) else first
                raise ValueError(
                    f"{path}: {'latitude' if column == 'lat' else 'longitude'} {first!r} on line(s) "
                    f"{csv_lines(bad)} is not a number in [-{bound:g}, {bound:g}] degrees (column '{column}')"
                )
            table[column] = values.astype(np.float64)
    return table


def read_table(path: Path, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Read and validate an image-text(-location) CSV; errors name the file, row and column.

    Args:
        path: the CSV file.
        class_names: scene classes; when given, ``label`` becomes the class index.

    Returns:
        A frame with columns ``filepath``, ``caption`` and, where present, ``lat``, ``lon`` and
        ``label`` (the class index when ``class_names`` is given).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a column is missing, a caption is empty, a location is invalid, or a label
            is not one of ``class_names``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"caption table {path} does not exist")
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    caption_column = next((c for c in CAPTION_COLUMNS if c in table.columns), None)
    if "filepath" not in table.columns or caption_column is None:
        raise ValueError(
            f"{path}: a caption table needs the columns 'filepath' and 'title' (or 'caption'); "
            f"found {list(table.columns)}"
        )
    table = table.rename(columns={caption_column: "caption"})
    missing = table["caption"].isna() | (table["caption"].astype(str).str.strip() == "")
    if missing.any():
        raise ValueError(
            f"{path}: caption missing on line(s) {csv_lines(missing)} (column '{caption_column}')"
        )
    table = validate_location(table, path)
    if "label" in table.columns and class_names is not None:
        index = {name: i for i, name in enumerate(class_names)}
        labels = table["label"].astype(str).map(index)
        if labels.isna().any():
            bad = labels.isna()
            raise ValueError(
                f"{path}: label {table['label'][bad].iloc[0]!r} on line(s) {csv_lines(bad)} is not one "
                f"of the class names {list(class_names)}"
            )
        table["label"] = labels.astype(np.int64)
    return table


class ImageTextLocationDataset(NonGeoDataset):
    """Images with captions and, when the table has them, locations and scene labels.

    Args:
        root: folder holding ``{split}.csv`` and the images it names.
        split: ``train``, ``val`` or ``test``.
        class_names: scene classes, in label order; required to return ``label``.
        image_size: resize every image to this square size (None keeps the file's size).
        transforms: a function applied to each sample dict.
    """

    splits = ("train", "val", "test")
    #: The bands read from each file (the datamodule sets its own, :mod:`zoo.data.bands`).
    band_choice: BandChoice = RGB

    def __init__(
        self,
        root: str | Path = "data",
        split: str = "train",
        class_names: Sequence[str] | None = None,
        image_size: int | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if split not in self.splits:
            raise ValueError(f"split must be one of {self.splits}, got {split!r}")
        self.root = require_dir(
            root,
            f"Point root at a folder holding {split}.csv and its images (SkyScript's "
            "layout), or use zoo.data.EmbeddedDataModule, which writes the embedded dataset there",
        )
        self.split = split
        self.table_path = self.root / f"{split}.csv"
        self.table = read_table(self.table_path, class_names)
        self.has_location = "lat" in self.table.columns
        self.has_label = "label" in self.table.columns and class_names is not None
        self.image_size = image_size
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.table.iloc[index]
        path = self.root / row["filepath"]
        image = load_image(path, f" (line {index + 2} of {self.table_path})", self.band_choice)
        if self.image_size is not None and image.shape[-1] != self.image_size:
            image = F.interpolate(
                image[None],
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
            )[0]
        sample: dict[str, Any] = {"image": image, "caption": str(row["caption"]), "index": index}
        if self.has_location:
            sample["location"] = torch.tensor([row["lat"], row["lon"]], dtype=torch.float32)
        if self.has_label:
            sample["label"] = torch.tensor(row["label"], dtype=torch.long)
        if self.transforms is not None:
            sample = self.transforms(sample)
        if "location" in sample:  # here, on the host: the location encoder checks no values
            validate_locations(
                sample["location"].reshape(1, -1),
                f"location of line {index + 2} of {self.table_path}",
                first_row=index,
            )
        return sample


_WORD = re.compile(r"\w+|[^\w\s]")


def caption_words(captions: Sequence[str]) -> list[str]:
    """Sorted lower-case words and punctuation of ``captions`` (a word-level vocabulary).

    Args:
        captions: the texts.

    Returns:
        The sorted distinct tokens.
    """
    return sorted({w for c in captions for w in _WORD.findall(str(c).lower())})
