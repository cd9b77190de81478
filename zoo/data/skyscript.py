"""SkyScript image-caption pairs, optionally with coordinates, for FLAVARS-style pretraining.

The batch is exactly :class:`~zoo.data.ImageTextLocationDataModule`'s: ``image``, ``caption``,
``input_ids``, ``attention_mask``, ``index`` and, with a coordinates file, ``location``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch.utilities import rank_zero_warn
from torchgeo.datasets import SkyScript
from torchgeo.datasets.errors import DatasetNotFoundError

from zoo.data.datamodules import TextCollate, ZooDataModule
from zoo.data.image_text import (
    ImageTextLocationDataset,
    caption_words,
    csv_lines,
    read_table,
    validate_location,
)
from zoo.data.scenes import DatasetMissingError

__all__ = ["SkyScriptDataModule", "SkyScriptDataset", "join_coordinates", "read_coordinates"]

HOW_TO_GET = (
    "SkyScript: download=True fetches images2.zip ... images7.zip and the caption CSVs from "
    "https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/ (see "
    "https://github.com/wangzhecheng/SkyScript), or put the extracted images2/ ... images7/ "
    "folders and the CSVs under root"
)


def read_coordinates(path: str | Path) -> pd.DataFrame:
    """Read a ``filepath,lat,lon`` CSV.

    lat/lon are checked as in a caption table, and each filepath must appear once. Errors name
    the file, the line(s) and the column.

    Args:
        path: the coordinates CSV.

    Returns:
        The ``filepath``, ``lat``, ``lon`` columns (float64 coordinates).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a column is missing, a coordinate is invalid, or a filepath repeats.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"coordinates file {path} does not exist: give a CSV with columns filepath,lat,lon "
            "(filepath as in SkyScript's CSVs), or coordinates_file=None to train without "
            "locations"
        )
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if not {"filepath", "lat", "lon"} <= set(table.columns):
        raise ValueError(
            f"{path}: a coordinates file needs the columns 'filepath', 'lat' and 'lon'; found "
            f"{list(table.columns)}"
        )
    table = validate_location(table[["filepath", "lat", "lon"]].copy(), path)
    repeated = table["filepath"].duplicated(keep=False)
    if repeated.any():
        raise ValueError(
            f"{path}: filepath {table['filepath'][repeated].iloc[0]!r} appears on line(s) "
            f"{csv_lines(repeated)}; give each image one location"
        )
    return table


def join_coordinates(
    table: pd.DataFrame, table_path: Path, coordinates: pd.DataFrame, coordinates_path: Path
) -> pd.DataFrame:
    """Add ``lat``/``lon`` to a caption table by ``filepath``.

    A row without coordinates is an error naming both files, the line and the filepath (rows are
    never dropped).

    Args:
        table: the caption table.
        table_path: its file, for the messages.
        coordinates: the coordinates (:func:`read_coordinates`).
        coordinates_path: their file, for the messages.

    Returns:
        The table with ``lat`` and ``lon``.

    Raises:
        ValueError: the table already has coordinates, or a row has none in ``coordinates``.
    """
    if "lat" in table.columns or "lon" in table.columns:
        raise ValueError(
            f"{table_path} already has 'lat'/'lon' columns: drop them, or the coordinates file "
            f"{coordinates_path}"
        )
    joined = table.merge(coordinates, on="filepath", how="left", validate="many_to_one")
    missing = joined["lat"].isna()
    if missing.any():
        raise ValueError(
            f"{coordinates_path} has no coordinates for {int(missing.sum())} row(s) of "
            f"{table_path}: line(s) {csv_lines(missing)}, e.g. filepath "
            f"{joined['filepath'][missing].iloc[0]!r}"
        )
    return joined


class SkyScriptDataset(ImageTextLocationDataset, SkyScript):
    """torchgeo's :class:`~torchgeo.datasets.SkyScript` (its image folders, caption CSVs and
    download) read like the zoo's image-text tables: the ``title`` column is the caption,
    images are RGB resized to ``image_size``, samples carry ``index`` and, when coordinates
    are given, ``location`` (lat, lon). Errors name the file, line and column.

    Args:
        root: folder holding ``images2/`` ... ``images7/`` and the caption CSVs.
        split: ``train``, ``val`` or ``test``.
        coordinates_file: a ``filepath,lat,lon`` CSV giving every image's location.
        coordinates: ``coordinates_file`` as :func:`read_coordinates` read it (saves reading
            it again for each split).
        image_size: resize every image to this square size (None keeps the file's size).
        transforms: a function applied to each sample dict.
        download: fetch the images and caption CSVs when missing.
        checksum: check the downloaded archives' MD5.
    """

    def __init__(
        self,
        root: str | Path = "data/skyscript",
        split: str = "train",
        coordinates_file: str | Path | None = None,
        coordinates: pd.DataFrame | None = None,
        image_size: int | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        download: bool = False,
        checksum: bool = False,
    ) -> None:
        if split not in self.caption_files:
            raise ValueError(f"split must be one of {tuple(self.caption_files)}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.download = download
        self.checksum = checksum
        try:
            self._verify()
        except DatasetNotFoundError as error:
            raise DatasetMissingError(f"{error} {HOW_TO_GET}") from error
        self.table_path = self.root / self.caption_files[split]
        if not self.table_path.is_file():
            raise DatasetMissingError(
                f"SkyScript caption table {self.table_path} is missing. {HOW_TO_GET}"
            )
        table = read_table(self.table_path)
        if coordinates_file is not None:
            if coordinates is None:
                coordinates = read_coordinates(coordinates_file)
            table = join_coordinates(table, self.table_path, coordinates, Path(coordinates_file))
        self.table = table
        self.has_location = "lat" in table.columns
        self.has_label = False
        self.image_size = image_size
        self.transforms = transforms


class SkyScriptDataModule(ZooDataModule):
    """SkyScript (5.2 M remote-sensing image-caption pairs from OpenStreetMap tags over
    Google/USGS imagery) for image-text(-location) pretraining.

    Reads torchgeo's :class:`~torchgeo.datasets.SkyScript` layout and its train (top 30 %),
    val (5 K) and test (30 K) CSVs filtered by CLIP similarity. SkyScript's CSVs carry no
    coordinates: ``coordinates_file`` (``filepath,lat,lon``, joined on filepath; every row
    must have one) adds ``location``; without it the location losses are off.

    Paper: Z. Wang, R. Prabha, T. Huang, J. Wu, R. Rajagopal, "SkyScript: A Large and
    Semantically Diverse Vision-Language Dataset for Remote Sensing", AAAI 2024.
    Licence: the captions are derived from OpenStreetMap (ODbL); the images come from Google
    Earth Engine sources (NAIP, Sentinel-2, ...), each under its provider's terms; see
    https://github.com/wangzhecheng/SkyScript. Data: ``download=True`` or
    https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/.

    Args:
        root: folder holding ``images2/`` ... ``images7/`` and the caption CSVs.
        coordinates_file: CSV ``filepath,lat,lon`` (degrees) for every image of the splits
            used; None trains without locations.
        max_text_length: captions are truncated to this many tokens.
        download: download the images and CSVs into ``root`` when missing.
        batch_size: samples per batch and device.
        **kwargs: ``num_workers``, ``image_size``, ``tokenizer`` (the text encoder's own; None
            builds a word-level vocabulary from the training captions), ``mean``, ``std`` of
            :class:`~zoo.data.datamodules.ZooDataModule`.
    """

    def __init__(
        self,
        root: str = "data/skyscript",
        coordinates_file: str | None = None,
        max_text_length: int = 64,
        download: bool = False,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(SkyScriptDataset, root=root, batch_size=batch_size, **kwargs)
        self.coordinates_file = coordinates_file
        self.max_text_length = max_text_length
        self.download = download

    @property
    def class_names(self) -> list[str]:
        """SkyScript has no scene classes (linked to the model: no zero-shot metric)."""
        return []

    @cached_property
    def coordinates(self) -> pd.DataFrame | None:
        """The validated coordinates file, read once for all splits."""
        if self.coordinates_file is None:
            return None
        return read_coordinates(self.coordinates_file)

    def vocabulary(self) -> list[str]:
        """Words of the training captions, for the word-level tokenizer.

        Returns:
            The sorted vocabulary.

        Raises:
            DatasetMissingError: the training caption table is missing.
        """
        path = self.dataset_root / SkyScript.caption_files["train"]
        if not path.is_file():
            raise DatasetMissingError(
                f"SkyScript caption table {path} is missing (needed for the word-level "
                f"vocabulary). {HOW_TO_GET}"
            )
        return caption_words(read_table(path)["caption"].tolist())

    def prepare_data(self) -> None:
        """With ``download=True``, fetch the image archives and every split's CSV."""
        if self.download:
            for split in SkyScript.caption_files:
                SkyScript(self.root, split, download=True)

    def _dataset(self, split: str) -> SkyScriptDataset:
        return SkyScriptDataset(
            self.dataset_root,
            split,
            self.coordinates_file,
            self.coordinates,
            self.image_size,
            download=self.download,
        )

    def _collate(self) -> TextCollate:
        return TextCollate(self.tokenizer, self.max_text_length)

    def setup(self, stage: str) -> None:
        """Build the split datasets; warn when the training batches will carry no location.

        Args:
            stage: ``fit``, ``validate``, ``test`` or ``predict``.
        """
        super().setup(stage)
        if stage == "fit" and self.coordinates is None:
            rank_zero_warn(
                "SkyScript has no coordinates and no coordinates_file was given: batches carry "
                "no 'location', so the image-location losses are switched off"
            )
