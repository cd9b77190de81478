"""Scene classification benchmarks for frozen-feature evaluation (k-NN, zero-shot, linear probe).

Datamodules over torchgeo's EuroSAT, RESISC45, UC Merced and PatternNet datasets, subclassing
torchgeo's own datamodules (same datasets, splits and dataloaders) but producing the zoo's batch
contract: ``image`` float ``B×3×S×S`` (resized per sample, antialiased bilinear, then normalized
on the device with ImageNet mean/std by default) and ``label`` long ``B``. No random
augmentation. Each exposes ``class_names`` (human-readable, in label order, for zero-shot
prompts) and ``num_classes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset
from torchgeo.datamodules import (
    EuroSATDataModule,
    PatternNetDataModule,
    RESISC45DataModule,
    UCMercedDataModule,
)
from torchgeo.datasets import EuroSAT
from torchgeo.datasets.errors import DatasetNotFoundError

from zoo.data.datamodules import IMAGENET_MEAN, IMAGENET_STD, Normalize

__all__ = [
    "DatasetMissingError",
    "EuroSATScenesDataModule",
    "PatternNetScenesDataModule",
    "RESISC45ScenesDataModule",
    "SceneTransform",
    "UCMercedScenesDataModule",
    "readable_class_name",
]


class DatasetMissingError(DatasetNotFoundError):
    """torchgeo's ``DatasetNotFoundError`` with the zoo's hint on where to get the data.

    Args:
        message: the whole message (what is missing and where to get it).
    """

    def __init__(self, message: str) -> None:
        FileNotFoundError.__init__(self, message)


def readable_class_name(folder: str) -> str:
    """A scene folder's name as words: ``AnnualCrop`` -> ``annual crop``.

    ``baseball_diamond`` -> ``baseball diamond``.

    Args:
        folder: the class folder's name (CamelCase or snake_case).

    Returns:
        The lower-case words separated by single spaces.
    """
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", folder).replace("_", " ")
    return " ".join(words.lower().split())


class SceneTransform:
    """Per-sample: optionally scale reflectance to [0, 255], then resize to ``size``×``size``.

    Args:
        size: output side in pixels (antialiased bilinear; deterministic).
        reflectance_max: when given, pixels become ``clip(x / reflectance_max, 0, 1) * 255``.
    """

    def __init__(self, size: int, reflectance_max: float | None = None) -> None:
        self.size = size
        self.reflectance_max = reflectance_max

    def __call__(self, sample: dict[str, Tensor]) -> dict[str, Tensor]:
        image = sample["image"].float()
        if self.reflectance_max is not None:
            image = (image / self.reflectance_max).clamp(0, 1) * 255.0
        if image.shape[-2:] != (self.size, self.size):
            image = F.interpolate(
                image[None],
                size=(self.size, self.size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
        sample["image"] = image
        return sample


class _NamedLoader:
    """Wrap an image loader so a corrupt or wrong file is named in the error."""

    def __init__(self, loader: Callable[[Any], Any], dataset: str, bands: int | None) -> None:
        self.loader = loader
        self.dataset = dataset
        self.bands = bands

    def __call__(self, path: Any) -> Any:
        try:
            image = self.loader(path)
        except Exception as error:  # PIL and rasterio raise many types
            raise RuntimeError(
                f"could not read {self.dataset} image file {path}: {error}. The file is corrupt or "
                "not an image: replace it (re-extract the archive)"
            ) from error
        if self.bands is not None and getattr(image, "shape", (0,))[-1] != self.bands:
            raise ValueError(
                f"{self.dataset} image file {path} has {image.shape[-1]} band(s); expected "
                f"{self.bands} (the multispectral GeoTIFF)"
            )
        return image


class _SceneClassification:
    """What the scene datamodules share: the transform, the class names, the checks on the data
    and ImageNet-style normalization in ``on_after_batch_transfer`` (also outside a Trainer).

    Subclasses set the class attributes and their ``root`` default; the loader, size and
    normalization arguments live here once and reach torchgeo's datamodule by keyword.

    Args:
        root: the dataset folder.
        batch_size: samples per batch.
        num_workers: data-loading processes.
        image_size: images are resized to this square size.
        download: download the data into ``root`` when missing.
        mean: per-band mean of [0, 1] pixels, for normalization.
        std: per-band standard deviation of [0, 1] pixels.
    """

    #: Class folder names in label order (ImageFolder sorts them).
    folders: ClassVar[tuple[str, ...]]
    #: Human-readable names for zero-shot prompts, in the same order (default: from folders).
    readable: ClassVar[tuple[str, ...] | None] = None
    #: Dataset name in messages.
    title: ClassVar[str]
    #: Where to get the data.
    source: ClassVar[str]
    #: Bands the loader must return (only checked where the file format varies).
    bands: ClassVar[int | None] = None
    #: The split files under ``root``, ``{split}`` standing for train/val/test (None: none).
    split_files: ClassVar[str | None] = None
    #: Reflectance scale of multispectral data (pixels become ``clip(x / it, 0, 1) * 255``).
    reflectance_max: ClassVar[float | None] = None

    root: str
    image_size: int
    kwargs: dict[str, Any]
    dataset_class: type
    train_dataset: Any
    val_dataset: Any
    test_dataset: Any

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 224,
        download: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **dataset_args: Any,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]  (torchgeo's datamodule, next in the MRO)
            batch_size=batch_size,
            num_workers=num_workers,
            root=root,
            download=download,
            transforms=SceneTransform(image_size, self.reflectance_max),
            **dataset_args,
        )
        self.root = root
        self.image_size = image_size
        self.aug = Normalize(mean, std)
        self.train_aug = None  # no random augmentation: these are evaluation datasets

    @property
    def class_names(self) -> list[str]:
        """Human-readable class names in label order."""
        return list(self.readable or [readable_class_name(f) for f in self.folders])

    @property
    def num_classes(self) -> int:
        return len(self.folders)

    def prepare_data(self) -> None:
        """With ``download=True``, fetch the archive and every split file (torchgeo's own
        ``prepare_data`` builds only the train split, leaving the others to each rank)."""
        if not self.kwargs.get("download", False):
            return
        if self._split_file("train") is None:
            self.dataset_class(**self.kwargs)
            return
        for split in ("train", "val", "test"):
            self.dataset_class(split=split, **self.kwargs)

    def _split_file(self, split: str) -> Path | None:
        """The split file of ``split`` (None where the dataset has none)."""
        if self.split_files is None:
            return None
        return Path(self.root) / self.split_files.format(split=split)

    def _split_name(self, line: str) -> str:
        """The image file name a split-file line stands for."""
        return line

    def setup(self, stage: str) -> None:
        """torchgeo's setup, with the zoo's hint when the data is missing and checks that the
        class folders are the expected ones and every image a split file lists was found."""
        try:
            super().setup(stage)  # type: ignore[misc]
        except DatasetNotFoundError as error:
            raise DatasetMissingError(f"{error} {self.title}: {self.source}") from error
        except FileNotFoundError as error:  # a split file or a whole class missing
            raise FileNotFoundError(
                f"{self.title} under {self.root} is incomplete: {error} Re-extract it, or "
                f"{self.source}"
            ) from error
        for split in ("train", "val", "test"):
            dataset = getattr(self, f"{split}_dataset", None)
            if dataset is not None:
                self._check(dataset, split)

    def _check(self, dataset: Dataset[Any], split: str) -> None:
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        if not isinstance(base.loader, _NamedLoader):
            base.loader = _NamedLoader(base.loader, self.title, self.bands)
        if tuple(base.classes) != self.folders:
            raise ValueError(
                f"{self.title} under {base.root}: found the class folders {base.classes}, expected "
                f"the {len(self.folders)} folders {list(self.folders)}"
            )
        split_file = self._split_file(split)
        if split_file is None:
            return
        listed = {self._split_name(line.strip()) for line in split_file.read_text().splitlines()}
        listed.discard("")
        found = {os.path.basename(path) for path, _ in base.samples}
        missing = sorted(listed - found)
        if missing:
            raise FileNotFoundError(
                f"{split_file} lists {len(missing)} image(s) that are not under {base.root}, e.g. "
                f"{missing[:3]}: the dataset is incomplete; re-extract it or download it again"
            )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Normalize the images once they are on the device (also outside a Trainer)."""
        return self.aug(batch)


class EuroSATScenesDataModule(_SceneClassification, EuroSATDataModule):
    """EuroSAT (Sentinel-2, 10 land-use classes, 64×64 px) as RGB scene classification.

    Reads torchgeo's :class:`~torchgeo.datasets.EuroSAT` (the 13-band GeoTIFFs and the
    train/val/test split files of Neumann et al. 2019) and keeps the RGB bands B04, B03, B02,
    scaled to [0, 255] as ``clip(reflectance / 3000, 0, 1) * 255`` (torchgeo's
    ``EuroSAT.plot`` rendering), then resized and normalized like an RGB photo.

    Paper: P. Helber, B. Bischke, A. Dengel, D. Borth, "EuroSAT: A Novel Dataset and Deep
    Learning Benchmark for Land Use and Land Cover Classification", IEEE J-STARS, 2019.
    Licence: MIT. Data: ``download=True`` fetches ``EuroSATallBands.zip`` and the split files
    from https://hf.co/datasets/torchgeo/eurosat (or https://github.com/phelber/EuroSAT).

    Args:
        root: folder holding the split files and the extracted archive.
        **kwargs: ``batch_size``, ``num_workers``, ``image_size``, ``download``, ``mean``,
            ``std`` (see :class:`_SceneClassification`).
    """

    folders = (
        "AnnualCrop",
        "Forest",
        "HerbaceousVegetation",
        "Highway",
        "Industrial",
        "Pasture",
        "PermanentCrop",
        "Residential",
        "River",
        "SeaLake",
    )
    readable = (
        "annual crop",
        "forest",
        "herbaceous vegetation",
        "highway",
        "industrial",
        "pasture",
        "permanent crop",
        "residential",
        "river",
        "sea or lake",
    )
    title = "EuroSAT"
    source = (
        "get it with download=True (EuroSATallBands.zip and eurosat-{train,val,test}.txt from "
        "https://hf.co/datasets/torchgeo/eurosat), or put the split files and the extracted "
        "ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/*.tif under root"
    )
    bands = len(EuroSAT.all_band_names)
    reflectance_max = 3000.0

    def __init__(self, root: str = "data/eurosat", **kwargs: Any) -> None:
        super().__init__(root, bands=EuroSAT.rgb_bands, **kwargs)

    def _split_file(self, split: str) -> Path:
        return Path(self.root) / EuroSAT.split_filenames[split]

    def _split_name(self, line: str) -> str:
        return line.replace(".jpg", ".tif")


class RESISC45ScenesDataModule(_SceneClassification, RESISC45DataModule):
    """NWPU-RESISC45 (Google Earth RGB, 45 scene classes, 256×256 px) scene classification.

    Reads torchgeo's :class:`~torchgeo.datasets.RESISC45` with the train/val/test split files of
    Neumann et al. 2019 (60/20/20).

    Paper: G. Cheng, J. Han, X. Lu, "Remote Sensing Image Scene Classification: Benchmark and
    State of the Art", Proceedings of the IEEE, 2017.
    Licence: research use (no explicit licence; see the authors' page). Data: ``download=True``
    fetches ``NWPU-RESISC45.zip`` and the split files from
    https://hf.co/datasets/isaaccorley/resisc45.

    Args:
        root: folder holding the split files and the extracted ``NWPU-RESISC45`` folder.
        **kwargs: ``batch_size``, ``num_workers``, ``image_size``, ``download``, ``mean``,
            ``std`` (see :class:`_SceneClassification`).
    """

    folders = (
        "airplane",
        "airport",
        "baseball_diamond",
        "basketball_court",
        "beach",
        "bridge",
        "chaparral",
        "church",
        "circular_farmland",
        "cloud",
        "commercial_area",
        "dense_residential",
        "desert",
        "forest",
        "freeway",
        "golf_course",
        "ground_track_field",
        "harbor",
        "industrial_area",
        "intersection",
        "island",
        "lake",
        "meadow",
        "medium_residential",
        "mobile_home_park",
        "mountain",
        "overpass",
        "palace",
        "parking_lot",
        "railway",
        "railway_station",
        "rectangular_farmland",
        "river",
        "roundabout",
        "runway",
        "sea_ice",
        "ship",
        "snowberg",
        "sparse_residential",
        "stadium",
        "storage_tank",
        "tennis_court",
        "terrace",
        "thermal_power_station",
        "wetland",
    )
    title = "RESISC45"
    split_files = "resisc45-{split}.txt"
    source = (
        "get it with download=True (NWPU-RESISC45.zip and resisc45-{train,val,test}.txt from "
        "https://hf.co/datasets/isaaccorley/resisc45), or put the split files and the extracted "
        "NWPU-RESISC45/<class>/*.jpg under root"
    )

    def __init__(self, root: str = "data/resisc45", **kwargs: Any) -> None:
        super().__init__(root, **kwargs)


class UCMercedScenesDataModule(_SceneClassification, UCMercedDataModule):
    """UC Merced Land Use (USGS aerial RGB, 21 classes, 256×256 px) scene classification.

    Reads torchgeo's :class:`~torchgeo.datasets.UCMerced` (which resizes the few 256×247 images
    to 256×256) with the train/val/test split files of Neumann et al. 2019.

    Paper: Y. Yang, S. Newsam, "Bag-of-Visual-Words and Spatial Extensions for Land-Use
    Classification", ACM SIGSPATIAL GIS, 2010.
    Licence: public domain imagery (USGS National Map); research use. Data: ``download=True``
    fetches ``UCMerced_LandUse.zip`` and the split files from
    https://hf.co/datasets/torchgeo/ucmerced (originally
    http://weegee.vision.ucmerced.edu/datasets/landuse.html).

    Args:
        root: folder holding the split files and the extracted ``UCMerced_LandUse`` folder.
        **kwargs: ``batch_size``, ``num_workers``, ``image_size``, ``download``, ``mean``,
            ``std`` (see :class:`_SceneClassification`).
    """

    folders = (
        "agricultural",
        "airplane",
        "baseballdiamond",
        "beach",
        "buildings",
        "chaparral",
        "denseresidential",
        "forest",
        "freeway",
        "golfcourse",
        "harbor",
        "intersection",
        "mediumresidential",
        "mobilehomepark",
        "overpass",
        "parkinglot",
        "river",
        "runway",
        "sparseresidential",
        "storagetanks",
        "tenniscourt",
    )
    readable = (
        "agricultural",
        "airplane",
        "baseball diamond",
        "beach",
        "buildings",
        "chaparral",
        "dense residential",
        "forest",
        "freeway",
        "golf course",
        "harbor",
        "intersection",
        "medium residential",
        "mobile home park",
        "overpass",
        "parking lot",
        "river",
        "runway",
        "sparse residential",
        "storage tanks",
        "tennis court",
    )
    title = "UC Merced"
    split_files = "uc_merced-{split}.txt"
    source = (
        "get it with download=True (UCMerced_LandUse.zip and uc_merced-{train,val,test}.txt from "
        "https://hf.co/datasets/torchgeo/ucmerced), or put the split files and the extracted "
        "UCMerced_LandUse/Images/<class>/*.tif under root"
    )

    def __init__(self, root: str = "data/ucmerced", **kwargs: Any) -> None:
        super().__init__(root, **kwargs)


class PatternNetScenesDataModule(_SceneClassification, PatternNetDataModule):
    """PatternNet (Google Earth / Maps RGB, 38 classes, 256×256 px) scene classification.

    PatternNet has no official split: as torchgeo's datamodule, the whole dataset is split at
    random into train/val/test by ``val_split_pct``/``test_split_pct`` with a fixed generator
    seed (0), so the splits are the same on every run and machine.

    Paper: W. Zhou, S. Newsam, C. Li, Z. Shao, "PatternNet: A Benchmark Dataset for Performance
    Evaluation of Remote Sensing Image Retrieval", ISPRS J. Photogramm. Remote Sens., 2018.
    Licence: research use (see https://sites.google.com/view/zhouwx/dataset). Data:
    ``download=True`` fetches ``PatternNet.zip`` from https://hf.co/datasets/torchgeo/PatternNet.

    Args:
        root: folder holding the extracted ``PatternNet`` folder.
        val_split_pct: fraction of the images used for validation.
        test_split_pct: fraction of the images used for testing.
        **kwargs: ``batch_size``, ``num_workers``, ``image_size``, ``download``, ``mean``,
            ``std`` (see :class:`_SceneClassification`).
    """

    folders = (
        "airplane",
        "baseball_field",
        "basketball_court",
        "beach",
        "bridge",
        "cemetery",
        "chaparral",
        "christmas_tree_farm",
        "closed_road",
        "coastal_mansion",
        "crosswalk",
        "dense_residential",
        "ferry_terminal",
        "football_field",
        "forest",
        "freeway",
        "golf_course",
        "harbor",
        "intersection",
        "mobile_home_park",
        "nursing_home",
        "oil_gas_field",
        "oil_well",
        "overpass",
        "parking_lot",
        "parking_space",
        "railway",
        "river",
        "runway",
        "runway_marking",
        "shipping_yard",
        "solar_panel",
        "sparse_residential",
        "storage_tank",
        "swimming_pool",
        "tennis_court",
        "transformer_station",
        "wastewater_treatment_plant",
    )
    title = "PatternNet"
    source = (
        "get it with download=True (PatternNet.zip from "
        "https://hf.co/datasets/torchgeo/PatternNet), or put the extracted "
        "PatternNet/images/<class>/*.jpg under root"
    )

    def __init__(
        self,
        root: str = "data/patternnet",
        val_split_pct: float = 0.2,
        test_split_pct: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, val_split_pct=val_split_pct, test_split_pct=test_split_pct, **kwargs)
