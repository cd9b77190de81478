"""Datamodules producing the batch contract of docs/architecture.md (torchgeo
``NonGeoDataModule``s)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import default_collate
from torchgeo.datamodules import NonGeoDataModule
from transformers import PreTrainedTokenizerBase

from zoo.conversation_formats import resolve_conversation
from zoo.data import embedded
from zoo.data.bands import BandChoice
from zoo.data.batch import IMAGENET_MEAN, IMAGENET_STD, ImageTextBatch
from zoo.data.conversations import SHORT_ANSWER_PROMPT, ConversationCollate, ConversationDataset
from zoo.data.geo_splits import GeoSplit
from zoo.data.image_text import ImageTextLocationDataset, caption_words, read_table
from zoo.data.sampling import ResumableLoader, train_loader
from zoo.data.statistics import resolve_statistics
from zoo.data.tokenize import build_tokenizer
from zoo.encoders.llm import LLMSpec
from zoo.io import read_processor_settings
from zoo.preprocessing import Preprocessing

__all__ = [
    "ConversationDataModule",
    "EmbeddedSource",
    "EmbeddedSplits",
    "EmbeddedConversationDataModule",
    "EmbeddedDataModule",
    "ImageTextLocationDataModule",
]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)


class Normalize:
    """Scale ``batch['image']`` from [0, 255] to zero mean and unit variance per band.

    Args:
        mean: per-band mean, in [0, 1] units.
        std: per-band standard deviation, in [0, 1] units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std).view(1, -1, 1, 1) * 255.0

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Normalize the batch's images in place.

        Args:
            batch: a batch with ``image`` (``B×C×H×W`` in [0, 255]).

        Returns:
            The same batch, its ``image`` normalized.
        """
        image = batch["image"]
        batch["image"] = (image - self.mean.to(image)) / self.std.to(image)
        return batch


class TextCollate:
    """Stack tensors, keep strings as lists, and tokenize ``caption`` into ``input_ids``.

    Args:
        tokenizer: the text encoder's tokenizer.
        max_length: captions are truncated to this many tokens.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, samples: list[dict[str, Any]]) -> ImageTextBatch:
        """Collate samples and tokenize their captions.

        Args:
            samples: samples with ``image`` and ``caption``.

        Returns:
            The batch with ``input_ids`` and ``attention_mask`` added.
        """
        batch = default_collate(samples)
        tokens = self.tokenizer(
            batch["caption"],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["input_ids"] = tokens["input_ids"]
        batch["attention_mask"] = tokens["attention_mask"]
        return batch


class ZooDataModule(NonGeoDataModule):
    """What the zoo's datamodules share: normalization on the device, string-aware transfer,
    the tokenizer (linked to the model), and the split datasets per stage.

    Subclasses implement ``_dataset(split)``, ``_collate()`` and ``vocabulary()``, declare their
    own arguments (and any of these whose default differs) and forward the rest with
    ``**kwargs``: jsonargparse resolves them through this signature, so each is written once and
    every YAML is still validated and ``--data.help`` documents every field.

    Args:
        dataset_class: the dataset class (torchgeo's bookkeeping).
        root: the dataset folder.
        batch_size: samples per batch and device.
        num_workers: data-loading processes.
        image_size: images are resized to this square size (linked to the model).
        tokenizer: a Hugging Face tokenizer id or local folder (the text encoder's or the LLM's
            own); None builds a word-level tokenizer from the training texts.
        mean: per-band mean of [0, 1] pixels, for normalization.
        std: per-band standard deviation of [0, 1] pixels.
        llava: a LLaVA-1.5 checkpoint folder (linked from the model's ``llava``): its image
            processor's size and mean/std replace ``image_size``, ``mean`` and ``std``, and its
            tokenizer replaces ``tokenizer`` (the conversation format defaults to ``vicuna_v1``).
        processor: a model folder (FLAVA's) whose tokenizer, image size and mean / std the data
            must use (:func:`zoo.io.read_processor_settings`); the zoo CLI links FLAVARS'
            ``flava`` here. A ``tokenizer`` or ``image_size`` that disagrees with it is an error.
        bands: the bands each image file is read with, in the order the model reads them:
            1-based indices (rasterio's numbering, e.g. ``[4, 3, 2]`` for Sentinel-2's RGB) or
            the bands' names (the files' band descriptions); None reads RGB files as they are,
            and a file of any other band count is an error (:mod:`zoo.data.bands`). Their
            number is :attr:`num_channels`, linked to the model's ``in_channels``.
        band_names: a name for each band read (stored with the model; None: ``bands`` where
            they are names).
        compute_statistics: ``prepare_data`` computes the per-band statistics over the training
            split (as ``zoo stats`` does) when the data's ``band_stats.json`` has none for these
            bands; ``mean`` / ``std`` given in the config still win.
        llm: a generator's LLM (:class:`~zoo.encoders.llm.LLMSpec`, linked from the model's
            ``llm`` by the zoo CLI): its tokenizer and conversation format are the data's. A
            ``tokenizer`` that names another tokenizer is an error; with a random ``tiny`` /
            ``small`` LLM, ``tokenizer`` (else a word-level one) is used.
        streaming: a shard folder or ``s3://`` URI written by ``zoo optimize`` from this data
            config: the splits are read from it (:mod:`zoo.data.streaming`, LitData) instead of
            ``root``, with the same samples, collate and batch contract.
        geo_split: re-split the data by region from its samples' coordinates
            (:class:`~zoo.data.geo_splits.GeoSplit`: spatial blocks, continents or latitude
            bands); None keeps the dataset's own train / val / test.
    """

    #: Generators need an EOS, a pad and the ``<image>`` token (:func:`build_tokenizer`).
    chat_tokenizer = False

    def __init__(
        self,
        dataset_class: type,
        root: str,
        batch_size: int = 16,
        num_workers: int = 0,
        image_size: int = 224,
        tokenizer: str | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        llava: str | None = None,
        processor: str | None = None,
        bands: list[int | str] | None = None,
        band_names: list[str] | None = None,
        compute_statistics: bool = False,
        llm: LLMSpec | None = None,
        streaming: str | None = None,
        geo_split: GeoSplit | None = None,
    ) -> None:
        super().__init__(dataset_class, batch_size=batch_size, num_workers=num_workers)
        #: The geographic split replacing the dataset's own (:mod:`zoo.data.geo_splits`).
        self.geo_split = GeoSplit(**geo_split) if isinstance(geo_split, dict) else geo_split
        self.streaming = streaming
        self.shards = None
        if streaming is not None:  # LitData shards (zoo optimize) instead of root's files
            if self.geo_split is not None:
                raise ValueError(
                    "data.streaming and data.geo_split are both set: shards hold the splits they "
                    "were written with; give geo_split to `zoo optimize` instead and leave it out "
                    "when reading the shards"
                )
            from zoo.data.streaming import Shards

            self.shards = Shards(streaming)
            if self.shards.class_names is not None:  # what a subclass would read from root
                self.__dict__["class_names"] = list(self.shards.class_names)
            if self.shards.vocabulary is not None:
                words = list(self.shards.vocabulary)
                self.vocabulary = lambda: words  # the conversion's word-level vocabulary
        #: The bands read from each file and the channel count the model reads.
        self.band_choice = BandChoice.of(bands, band_names)
        self.compute_statistics = compute_statistics
        #: Where ``mean`` / ``std`` come from (None: not decided yet, see
        #: :func:`~zoo.data.statistics.resolve_statistics`).
        self.statistics_source: str | None = None
        self._statistics_given = (
            tuple(mean) != IMAGENET_MEAN
            or tuple(std) != IMAGENET_STD
            or llava is not None
            or processor is not None
        )
        #: The generator's LLM whose tokenizer and conversation format the data uses.
        self.llm = None if llm is None else LLMSpec.of(llm)
        self.llava = llava
        self._conversation: str | None = None
        if self.llm is not None and llava is None:
            source = self.llm.tokenizer_source()
            if source is not None and tokenizer is not None and tokenizer != source:
                raise ValueError(
                    f"data.init_args.tokenizer {tokenizer!r} but the model's LLM "
                    f"{self.llm.name!r} uses the tokenizer {source!r}: remove the data's "
                    "tokenizer (the data follows model.init_args.llm), or set llm.tokenizer"
                )
            tokenizer = source or tokenizer
        if llava is not None:
            from zoo.encoders.llava import llava_processor

            llava_settings = llava_processor(llava)
            if image_size != llava_settings.image_size:
                rank_zero_warn(
                    f"data image_size {image_size} -> {llava_settings.image_size}: the LLaVA "
                    f"checkpoint {llava}'s image processor sets it"
                )
            if tokenizer is not None and tokenizer != llava_settings.tokenizer:
                rank_zero_warn(f"data tokenizer {tokenizer!r} -> the LLaVA checkpoint {llava}'s")
            image_size, mean, std = (
                llava_settings.image_size,
                llava_settings.mean,
                llava_settings.std,
            )
            tokenizer = llava_settings.tokenizer
        if processor is not None:
            settings = read_processor_settings(processor, "data.init_args.processor")
            if tokenizer is not None and tokenizer != processor:
                raise ValueError(
                    f"data.init_args.tokenizer {tokenizer!r} but the model folder {processor!r} has its "
                    "own tokenizer: leave tokenizer unset (the folder's is used)"
                )
            if image_size != settings.image_size:
                raise ValueError(
                    f"data.init_args.image_size {image_size} but the model folder {processor!r} is "
                    f"trained at {settings.image_size} px: set image_size: {settings.image_size}"
                )
            tokenizer, mean, std = settings.tokenizer, settings.mean, settings.std
        self.root = root
        self.image_size = image_size
        self.tokenizer_name = tokenizer
        self.mean, self.std = tuple(mean), tuple(std)
        self.aug = Normalize(mean, std)
        #: Set when the zoo writes the data itself (the embedded dataset); None reads ``root``.
        self.source: EmbeddedSource | None = None

    @property
    def num_channels(self) -> int:
        """The bands the model reads (linked to its ``in_channels``)."""
        return self.band_choice.channels

    @property
    def band_names(self) -> tuple[str, ...] | None:
        """The name of each band read (None: RGB as the files have it)."""
        choice = self.band_choice
        if choice.is_default:
            return None
        return choice.names or tuple(f"band {b}" for b in choice.bands or range(1, 4))

    def resolve_statistics(self) -> None:
        """Decide the per-band ``mean`` / ``std`` once: given, else a ``band_stats.json``
        beside the data (``zoo stats``), else ImageNet's for RGB; it logs where they came from
        (:func:`~zoo.data.statistics.resolve_statistics`)."""
        if self.statistics_source is None:
            self.mean, self.std, self.statistics_source = resolve_statistics(self)
            self.aug = Normalize(self.mean, self.std)

    @property
    def preprocessing(self) -> Preprocessing:
        """How this data prepares images (size, mean / std, band names): the model keeps it
        from its fit and carries it in its checkpoint, so :func:`zoo.load`'s transform prepares
        images alike."""
        self.resolve_statistics()
        return Preprocessing(self.image_size, self.mean, self.std, bands=self.band_names)

    @property
    def dataset_root(self) -> Path:
        """The folder the data is read from."""
        return self.source.path if self.source is not None else Path(self.root)

    def prepare_data(self) -> None:
        """Write the embedded dataset on first use (when this datamodule has a source); with
        ``compute_statistics``, the per-band statistics when none are stored for these bands."""
        if self.source is not None and self.shards is None:
            self.source.prepare()
        if self.compute_statistics and not self._statistics_given:
            from zoo.data.statistics import has_statistics, write_statistics

            if not has_statistics(self):
                log.info("computing per-band statistics over %s", self.dataset_root)
                write_statistics(self)

    def vocabulary(self) -> list[str]:
        """Words of the word-level tokenizer used when ``tokenizer`` is None.

        Returns:
            The vocabulary (subclasses implement it).

        Raises:
            NotImplementedError: in the base class.
        """
        raise NotImplementedError

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The data's tokenizer (linked to the model, which sizes its embeddings from it)."""
        vocabulary = None if self.tokenizer_name is not None else self.vocabulary()
        return build_tokenizer(
            self.tokenizer_name,
            vocabulary,
            chat=self.chat_tokenizer,
            gguf_file=self.gguf_file,
        )

    @property
    def gguf_file(self) -> str | None:
        """The GGUF file inside the LLM's folder the tokenizer is read from (``llm.gguf_file``)."""
        if self.llm is None or self.llm.tokenizer is not None or self.llava is not None:
            return None
        return self.llm.gguf_file

    @property
    def conversation(self) -> str:
        """The conversation format of the chat collates: ``llm.conversation``, else the
        default for the tokenizer (:func:`~zoo.conversation_formats.resolve_conversation`);
        the evaluation runner sets the model's."""
        if self._conversation is None:
            choice = self.llm.conversation if self.llm is not None else None
            self._conversation = resolve_conversation(
                choice, self.tokenizer, self.llava is not None
            )
        return self._conversation

    @conversation.setter
    def conversation(self, value: str) -> None:
        self._conversation = value

    def _dataset(self, split: str) -> Any:
        raise NotImplementedError

    def _collate(self) -> Any:
        raise NotImplementedError

    def _split(self, split: str) -> Any:
        """``split``'s dataset: from the shards (``streaming``, which hold the bands they were
        written with), or re-split by region (``geo_split``) or the dataset's own
        (``_dataset``), both reading this data's bands (:meth:`banded`)."""
        if self.shards is not None:
            seed = torch.initial_seed() % 2**32  # seed_everything's (LitData takes 32 bits)
            return self.shards.dataset(split, shuffle=split == "train", seed=seed).as_map()
        if self.geo_split is not None:
            from zoo.data.geo_splits import geo_dataset

            return self.banded(geo_dataset(self, split))
        return self.banded(self._dataset(split))

    def setup(self, stage: str) -> None:
        """Build the split datasets for ``stage`` and the tokenizing collate function.

        Args:
            stage: ``fit``, ``validate``, ``test`` or ``predict``.
        """
        self.resolve_statistics()
        self.collate_fn = self._collate()
        if stage == "fit":
            self.train_dataset = self._split("train")
            self.val_dataset = self._split("val")
        elif stage == "validate":
            self.val_dataset = self._split("val")
        elif stage in ("test", "predict"):
            self.test_dataset = self._split("test")
            self.predict_dataset = self.test_dataset

    def banded(self, dataset: Any) -> Any:
        """Give a split dataset this data's band choice (its readers follow
        :mod:`zoo.data.bands`).

        Args:
            dataset: a split dataset; one that reads images has a ``band_choice`` attribute.

        Returns:
            The dataset.

        Raises:
            ValueError: bands are chosen but the dataset reads RGB images only.
        """
        if hasattr(dataset, "band_choice"):
            dataset.band_choice = self.band_choice
        elif not self.band_choice.is_default:
            raise ValueError(
                f"{type(dataset).__name__} reads RGB images only: remove data.init_args.bands"
            )
        return dataset

    def train_dataloader(self) -> Any:
        """The training loader, shuffled by ``(seed, epoch)`` and resumable mid-epoch.

        See :mod:`zoo.data.sampling`; the seed is ``seed_everything``'s (torch's initial seed), the
        ranks are the trainer's. With ``streaming``, LitData's loader over the shards
        (:class:`~zoo.data.streaming.StreamingLoader`: LitData's shuffling and resumable state).

        Returns:
            The resumable training loader.
        """
        trainer = self.trainer
        if self.shards is not None:
            from zoo.data.streaming import StreamingLoader

            return StreamingLoader(
                self._valid_attribute("train_dataset", "dataset").stream,
                epoch=(lambda: trainer.current_epoch) if trainer is not None else None,
                batch_size=self._valid_attribute("train_batch_size", "batch_size"),
                num_workers=self.num_workers,
                collate_fn=self.collate_fn,
                persistent_workers=self.num_workers > 0,
            )
        return train_loader(
            self._valid_attribute("train_dataset", "dataset"),
            self._valid_attribute("train_batch_size", "batch_size"),
            self.num_workers,
            self.collate_fn,
            seed=torch.initial_seed() % 2**63,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Normalize the images once they are on the device (also outside a Trainer).

        Args:
            batch: the batch on the device.
            dataloader_idx: index of the loader (unused).

        Returns:
            The normalized batch.
        """
        return self.aug(batch)

    def transfer_batch_to_device(
        self, batch: dict[str, Any], device: torch.device, idx: int
    ) -> Any:
        """Move tensors, leave the strings where they are.

        Args:
            batch: the collated batch.
            device: the target device.
            idx: index of the loader (unused).

        Returns:
            The batch with its tensors on ``device``.
        """
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


class ImageTextLocationDataModule(ZooDataModule):
    """Image-caption(-location) tables in SkyScript's CSV format (and its superset).

    Args:
        root: folder with ``train.csv``, ``val.csv``, ``test.csv`` and the images they name.
        max_text_length: captions are truncated to this many tokens.
        class_names: scene classes in label order (default: sorted labels of the train table).
        batch_size: samples per batch and device.
        **kwargs: ``num_workers``, ``image_size``, ``tokenizer``, ``mean``, ``std`` of
            :class:`ZooDataModule`.
    """

    def __init__(
        self,
        root: str = "data/skyscript",
        max_text_length: int = 64,
        class_names: list[str] | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(ImageTextLocationDataset, root=root, batch_size=batch_size, **kwargs)
        self.max_text_length = max_text_length
        self._class_names = class_names

    @cached_property
    def class_names(self) -> list[str]:
        """Scene classes in label order (linked to the model for zero-shot prompts)."""
        if self._class_names is not None:
            return list(self._class_names)
        table = read_table(self.dataset_root / "train.csv")
        if "label" not in table.columns:
            return []
        return sorted(table["label"].astype(str).unique())

    def vocabulary(self) -> list[str]:
        """Words of the training captions (``train.csv``), for the word-level tokenizer.

        Returns:
            The sorted vocabulary.
        """
        return caption_words(read_table(self.dataset_root / "train.csv")["caption"].tolist())

    def _dataset(self, split: str) -> ImageTextLocationDataset:
        return ImageTextLocationDataset(
            self.dataset_root, split, self.class_names or None, self.image_size
        )

    def _collate(self) -> TextCollate:
        return TextCollate(self.tokenizer, self.max_text_length)

    def setup(self, stage: str) -> None:
        """Build the split datasets; warn when the training table has no locations.

        Args:
            stage: ``fit``, ``validate``, ``test`` or ``predict``.
        """
        super().setup(stage)
        if stage == "fit" and not self.train_dataset.has_location:
            rank_zero_warn(
                f"{self.train_dataset.table_path} has no 'lat'/'lon' columns: batches carry "
                "no 'location', so the image-location losses are switched off"
            )


@dataclass(frozen=True)
class EmbeddedSplits:
    """Images per split of the embedded dataset (YAML: ``splits: {train: 2000, val: 250}``).

    Attributes:
        train: training images.
        val: validation images.
        test: test images.
    """

    train: int = 2000
    val: int = 250
    test: int = 250

    def __post_init__(self) -> None:
        if min(self.train, self.val, self.test) < 0 or self.train == 0:
            raise ValueError(f"splits need train > 0 and val, test >= 0 images, got {self}")


#: The default configs' embedded dataset.
DEFAULT_SPLITS = EmbeddedSplits()


class EmbeddedSource:
    """The embedded dataset as a datamodule's source, written under ``root/<parameters>``.

    Runs with different sizes or seeds never overwrite each other; a complete copy is reused.
    A datamodule holds one as ``self.source`` (composition: its ``dataset_root`` and
    ``prepare_data`` follow it), whatever format it reads the files in.

    Args:
        root: parent folder of the generated datasets.
        image_size: generated image size in pixels.
        seed: generator seed.
        splits: images per split.
        multispectral: the multispectral variant (5-band GeoTIFFs: R, G, B, NIR, SWIR).
    """

    def __init__(
        self,
        root: str,
        image_size: int,
        seed: int,
        splits: EmbeddedSplits | dict,
        multispectral: bool = False,
    ) -> None:
        self.root = Path(root)
        self.image_size = image_size
        self.seed = seed
        self.splits = EmbeddedSplits(**splits) if isinstance(splits, dict) else splits
        self.multispectral = multispectral

    @property
    def sizes(self) -> dict[str, int]:
        """The generator's keyword arguments for the split sizes."""
        n = self.splits
        return {"num_train": n.train, "num_val": n.val, "num_test": n.test}

    @property
    def path(self) -> Path:
        """The folder of this parameter set's copy."""
        n = self.splits
        version = f"v{embedded.DATASET_VERSION}-seed{self.seed}-{self.image_size}px"
        kind = "-multispectral" if self.multispectral else ""
        return self.root / f"{version}-{n.train}-{n.val}-{n.test}{kind}"

    def prepare(self) -> None:
        """Generate the dataset unless a complete copy with these parameters exists (the
        writer checks and reuses one), saying so in a log line first: a mistyped ``root`` is
        then seen at once."""
        params = {"image_size": self.image_size, "seed": self.seed, **self.sizes}
        if self.multispectral:
            params["multispectral"] = True
        if not embedded.is_complete(self.path, **params):
            where = (
                "does not exist"
                if not self.root.exists()
                else "holds no embedded copy with these parameters"
            )
            log.warning(
                "data root %s %s: generating the embedded dataset (%d images) at %s. If you "
                "meant an existing copy, check data.init_args.root.",
                self.root,
                where,
                sum(self.sizes.values()),
                self.path,
            )
        embedded.generate(self.path, **params)


def embedded_vocabulary() -> list[str]:
    """The embedded dataset's words and the short-answer instruction's.

    Returns:
        The words of the word-level tokenizer.
    """
    return [*embedded.vocabulary(), *caption_words([SHORT_ANSWER_PROMPT])]


class EmbeddedDataModule(ImageTextLocationDataModule):
    """The embedded synthetic dataset as image-caption-location tables.

    Args:
        root: parent folder of the generated datasets.
        splits: images per split.
        seed: generator seed.
        image_size: generated image size in pixels.
        max_text_length: captions are truncated to this many tokens.
        multispectral: the multispectral scenes (5-band GeoTIFFs: R, G, B, NIR, SWIR named in
            each file, :mod:`zoo.data.embedded.spectra`); choose the bands with ``bands``
            (e.g. ``[R, G, B, NIR, SWIR]``), the statistics with ``compute_statistics``.
        **kwargs: ``batch_size``, ``num_workers``, ``tokenizer`` (None: the generator's own
            vocabulary), ``mean``, ``std``, ``bands``, ``compute_statistics`` of
            :class:`ZooDataModule`.
    """

    def __init__(
        self,
        root: str = "data/embedded",
        splits: EmbeddedSplits = DEFAULT_SPLITS,
        seed: int = 0,
        image_size: int = 64,
        max_text_length: int = 48,
        multispectral: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root, max_text_length, list(embedded.SCENE_CLASSES), image_size=image_size, **kwargs
        )
        self.seed = seed
        self.source = EmbeddedSource(root, image_size, seed, splits, multispectral)

    def vocabulary(self) -> list[str]:
        """The embedded dataset's words (:func:`embedded_vocabulary`).

        Returns:
            The words of the word-level tokenizer.
        """
        return embedded_vocabulary()


class ConversationDataModule(ZooDataModule):
    """LLaVA-format conversations (captions, VQA, instructions) with their images.

    Training uses whole (multi-turn) conversations; validation, test and predict use one
    question per sample so every answer is generated and scored on its own.

    Args:
        root: folder of the images and the conversation files.
        train_file: training conversations (LLaVA JSON), relative to root.
        val_file: validation conversations.
        test_file: test conversations (also used by predict).
        tasks: keep only records with these ``task`` values (None keeps all).
        eval_tasks: tasks kept for validation/test/predict (None: same as ``tasks``).
        short_answer_tasks: tasks whose questions get the short-answer instruction.
        max_length: conversations are truncated to this many tokens.
        class_names: scene classes (for classification by generation).
        image_dir: sub-folder of root that the files' image paths are relative to.
        image_size: images are resized to this square size.
        group_by_length: training batches gather conversations of similar token length
            (:class:`~zoo.data.sampling.LengthGroupedSampler`, its order drawn from the global
            seed and the epoch; the batches come in a random order, not sorted by length), so
            padding to the batch's longest wastes little; every sample is seen once per epoch. Under several processes set
            ``trainer.use_distributed_sampler: false`` (the sampler shards by rank itself).
        pad_to_square: pad non-square images to a square of the ``mean`` colour before the
            resize (LLaVA's and FUSE's preprocessing) instead of stretching them.
        **kwargs: ``batch_size``, ``num_workers``, ``tokenizer`` (the LLM's; None builds a
            word-level tokenizer; a generator's comes from its ``llm``), ``mean``, ``std`` of
            :class:`ZooDataModule`.
    """

    chat_tokenizer = True

    def __init__(
        self,
        root: str = "data/llava",
        train_file: str = "train.json",
        val_file: str = "val.json",
        test_file: str = "test.json",
        tasks: list[str] | None = None,
        eval_tasks: list[str] | None = None,
        short_answer_tasks: list[str] = ["vqa"],  # noqa: B006 (jsonargparse shows the default)
        max_length: int = 256,
        class_names: list[str] | None = None,
        image_dir: str = "",
        image_size: int = 336,
        group_by_length: bool = False,
        pad_to_square: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(ConversationDataset, root=root, image_size=image_size, **kwargs)
        self.group_by_length = group_by_length
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.pad_to_square = pad_to_square
        self.image_dir = image_dir
        self.tasks = tasks
        self.eval_tasks = eval_tasks if eval_tasks is not None else tasks
        self.short_answer_tasks = list(short_answer_tasks)
        self.max_length = max_length
        self.class_names = list(class_names or [])

    @property
    def preprocessing(self) -> Preprocessing:
        """How this data prepares images: size, mean / std, the pad to a square, band names."""
        self.resolve_statistics()
        return Preprocessing(
            self.image_size, self.mean, self.std, self.pad_to_square, self.band_names
        )

    def vocabulary(self) -> list[str]:
        """Words of the training conversations and the short-answer prompt.

        Returns:
            The sorted vocabulary.
        """
        from zoo.data.conversations import read_conversations

        records = read_conversations(self.dataset_root / self.files["train"])
        texts = [str(t["value"]) for r in records for t in r["conversations"]]
        return caption_words([*texts, SHORT_ANSWER_PROMPT])

    def _dataset(self, split: str) -> ConversationDataset:
        train = split == "train"
        return ConversationDataset(
            self.dataset_root,
            self.files[split],
            self.image_size,
            tasks=self.tasks if train else self.eval_tasks,
            single_turn=not train,
            image_dir=self.image_dir,
            pad_color=self.aug.mean.flatten().tolist() if self.pad_to_square else None,
        )

    def _collate(self) -> ConversationCollate:
        return ConversationCollate(
            self.tokenizer, self.max_length, self.short_answer_tasks, self.conversation
        )

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled batches, resumable; with ``group_by_length``, batches of similar length.

        Returns:
            The resumable training loader.

        Raises:
            ValueError: ``group_by_length`` on several devices with Lightning's distributed sampler.
        """
        if not self.group_by_length:
            return super().train_dataloader()
        replicas, rank = 1, 0
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            if getattr(trainer._accelerator_connector, "use_distributed_sampler", False):
                raise ValueError(
                    "data.group_by_length shards its batches by rank itself (Lightning's sampler "
                    "would reshuffle them): set trainer.use_distributed_sampler: false, or "
                    "group_by_length: false"
                )
            replicas, rank = trainer.world_size, trainer.global_rank
        lengths = self.train_dataset.lengths(
            self.tokenizer, self.short_answer_tasks, self.max_length, self.conversation
        )
        return train_loader(
            self.train_dataset,
            self.batch_size,
            self.num_workers,
            self.collate_fn,
            seed=torch.initial_seed() % 2**63,
            num_replicas=replicas,
            rank=rank,
            lengths=lengths,
        )


class EmbeddedConversationDataModule(ConversationDataModule):
    """The embedded dataset's LLaVA conversations (captions, descriptions, VQA).

    Args:
        root: parent folder of the generated datasets (as for :class:`EmbeddedDataModule`).
        splits: images per split.
        seed: generator seed.
        tasks: training tasks among ``caption``, ``description``, ``vqa`` and ``location``
            (questions whose answer depends on where the scene is: its hemisphere and latitude
            band; short answers, as ``vqa``'s).
        eval_tasks: evaluation tasks (None: same as ``tasks``).
        image_size: generated image size in pixels.
        max_length: conversations are truncated to this many tokens.
        **kwargs: the loader and normalization arguments, as for :class:`EmbeddedDataModule`,
            and ``group_by_length`` (:class:`ConversationDataModule`).
    """

    def __init__(
        self,
        root: str = "data/embedded",
        splits: EmbeddedSplits = DEFAULT_SPLITS,
        seed: int = 0,
        tasks: list[str] | None = ["caption", "vqa"],  # noqa: B006
        eval_tasks: list[str] | None = None,
        image_size: int = 64,
        max_length: int = 192,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root,
            "conversations_train.json",
            "conversations_val.json",
            "conversations_test.json",
            tasks,
            eval_tasks,
            ["vqa", "location"],
            max_length,
            list(embedded.SCENE_CLASSES),
            image_dir="",
            image_size=image_size,
            **kwargs,
        )
        self.seed = seed
        self.source = EmbeddedSource(root, image_size, seed, splits)

    def vocabulary(self) -> list[str]:
        """The embedded dataset's words (:func:`embedded_vocabulary`).

        Returns:
            The words of the word-level tokenizer.
        """
        return embedded_vocabulary()
