"""Streaming shards (LitData): the samples of any data config, written once by ``zoo optimize``
and read back with :class:`litdata.StreamingDataset` from a local folder or an object store.

Layout of a shard folder (``<root>`` a folder or an ``s3://`` URI)::

    <root>/manifest.json          source config, count per split, checksums, licence note, the
                                  word-level vocabulary and class names, token counts
    <root>/<split>/index.json     LitData's index of the split's chunks
    <root>/<split>/chunk-*.bin    the chunks

Every stored item is ``{"image": bytes, "fields": bytes, "length": int}``: ``image`` is the
sample's image file as encoded on disk (a PNG, a JPEG, a GeoTIFF with all its bands; or, where
the dataset made the image some other way, the array itself in ``.npy`` format), ``fields``
every other field of the sample as the dataset returns it (pickled: strings, tensors, lists of
the batch contract), ``length`` the conversation's token count (-1 where there is none).
:class:`DecodeSample` turns an item back into the very sample the file reader gives: the
image decoded as :func:`zoo.data.image_text.load_image` does, padded and resized as the
dataset did (the recipe is checked against every sample when the shards are written).

Training reads the shards with :class:`StreamingLoader` (LitData's loader: LitData's
shuffling, its ``state_dict`` in every checkpoint, resumable on another number of
processes); validation, test and length-grouped training read them by index
(:class:`ShardSamples`), through the same samplers and collates as the file readers.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from litdata import StreamingDataLoader, StreamingDataset
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from zoo.preprocessing import pad_to_square

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "DecodeSample",
    "ShardSamples",
    "Shards",
    "StreamingLoader",
    "decode_image",
    "join",
    "read_bytes",
    "write_bytes",
]

#: The manifest's name inside a shard folder.
MANIFEST = "manifest.json"
#: Version of the stored item layout; a reader refuses shards of another version.
FORMAT_VERSION = 1


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an object store (``s3://...``) rather than a local folder.

    Args:
        uri: a folder or URI.

    Returns:
        True for a URI with a scheme other than ``file``.
    """
    scheme = urlparse(str(uri)).scheme
    return len(scheme) > 1 and scheme != "file"


def join(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended (``/`` separated for URIs and folders alike).

    Args:
        uri: a folder or URI.
        *parts: the path parts to append.

    Returns:
        The joined path or URI.
    """
    if not is_remote(uri):
        return str(Path(uri).joinpath(*parts))
    return "/".join([str(uri).rstrip("/"), *parts])


def _s3(uri: str) -> tuple[Any, str, str]:
    import boto3  # LitData's own S3 client (it honours AWS_ENDPOINT_URL and the AWS profile)

    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"{uri}: only s3:// URIs and local folders are supported")
    return boto3.client("s3"), parsed.netloc, parsed.path.lstrip("/")


def read_bytes(uri: str) -> bytes:
    """The content of a file or an ``s3://`` object.

    Args:
        uri: the file path or object URI.

    Returns:
        Its bytes.

    Raises:
        FileNotFoundError: it does not exist.
    """
    if not is_remote(uri):
        return Path(uri).read_bytes()
    client, bucket, key = _s3(uri)
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey as error:
        raise FileNotFoundError(uri) from error
    except client.exceptions.NoSuchBucket as error:
        raise FileNotFoundError(f"{uri} (no bucket {bucket!r})") from error


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file (its folder made) or an ``s3://`` object.

    Args:
        uri: the file path or object URI.
        data: the content.
    """
    if not is_remote(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_bytes(data)
        return
    client, bucket, key = _s3(uri)
    client.put_object(Bucket=bucket, Key=key, Body=data)


def upload_folder(folder: Path, uri: str) -> None:
    """Copy every file under ``folder`` to ``uri`` (an ``s3://`` prefix), keeping the layout.

    Args:
        folder: the local folder.
        uri: the destination prefix.
    """
    client, bucket, key = _s3(uri)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(
            str(path), bucket, "/".join([key.rstrip("/"), *path.relative_to(folder).parts])
        )


def folder_checksum(folder: Path) -> str:
    """SHA-256 over a split folder's files (names and contents, in name order).

    Args:
        folder: the split folder (``index.json`` and its chunks).

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def decode_image(data: bytes, where: str = "") -> Tensor:
    """Decode a stored image: an encoded file as :func:`zoo.data.image_text.load_image` reads
    it (RGB, float ``C×H×W`` in [0, 255]), or an ``.npy`` array as it was stored.

    Args:
        data: the stored bytes.
        where: names the sample in errors.

    Returns:
        The image.

    Raises:
        RuntimeError: the bytes are no image (a corrupt shard).
    """
    if data[:6] == b"\x93NUMPY":
        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
    try:
        with Image.open(io.BytesIO(data)) as img:
            array = np.array(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise RuntimeError(
            f"could not decode the stored image{where}: {error}. The shard is corrupt: run "
            "zoo optimize again"
        ) from error
    return torch.from_numpy(array).permute(2, 0, 1).float()


def apply_recipe(image: Tensor, recipe: dict[str, Any]) -> Tensor:
    """What the file readers do to a decoded image: pad to a square, then resize.

    Args:
        image: float ``C×H×W``.
        recipe: ``{"pad": per-band colour or None, "size": [H, W]}``.

    Returns:
        The prepared image.
    """
    if recipe.get("pad") is not None:
        image = pad_to_square(image, recipe["pad"])
    size = tuple(recipe["size"])
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
    return image


class DecodeSample:
    """Turn a stored item back into the sample (a LitData ``transform``; picklable)."""

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        """Decode one item.

        Args:
            item: ``{"image": bytes, "fields": bytes, "length": int}``.

        Returns:
            The sample, as the file reader returns it.
        """
        fields = pickle.loads(item["fields"])  # noqa: S301 (the zoo's own shards)
        for key, value in fields.items():
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "__tensor__":
                fields[key] = torch.from_numpy(value[1])
        recipe = fields.pop("__image__")
        where = f" of sample {fields.get('id', fields.get('index', '?'))!r}"
        image = decode_image(item["image"], where)
        if recipe is not None:
            image = apply_recipe(image, recipe)
        return {"image": image, **fields}


class Shards:
    """A shard folder (local or ``s3://``), its manifest read and checked.

    Args:
        uri: the folder or URI ``zoo optimize`` wrote.
        cache_dir: where LitData keeps downloaded chunks of a remote folder (None: LitData's
            default).

    Raises:
        FileNotFoundError: no manifest (not a shard folder, or an interrupted conversion).
        ValueError: the manifest is unreadable or of another format version.
    """

    def __init__(self, uri: str, cache_dir: str | None = None) -> None:
        self.uri = str(uri)
        self.cache_dir = cache_dir
        where = join(self.uri, MANIFEST)
        try:
            text = read_bytes(where)
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"data.init_args.streaming {self.uri!r}: no {MANIFEST} there ({error}). Point it "
                "at a folder written by `zoo optimize --config <data config> --output <folder>` "
                "(a conversion that did not finish writes no manifest: run it again)"
            ) from None
        try:
            self.manifest: dict[str, Any] = json.loads(text)
        except ValueError as error:
            raise ValueError(
                f"{where} is not valid JSON ({error}): the shard folder is corrupt, run zoo "
                "optimize again"
            ) from None
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{where}: shard format {version!r}, this zoo reads {FORMAT_VERSION}: run zoo "
                "optimize again with this version"
            )

    @property
    def splits(self) -> dict[str, dict[str, Any]]:
        """Per split: ``count``, ``checksum``, ``keys``, ``lengths`` (conversations)."""
        return self.manifest["splits"]

    @property
    def vocabulary(self) -> list[str] | None:
        """The word-level tokenizer's words at conversion (None where a named tokenizer)."""
        return self.manifest.get("vocabulary")

    @property
    def class_names(self) -> list[str] | None:
        """The data's class names at conversion."""
        return self.manifest.get("class_names")

    def split(self, split: str) -> dict[str, Any]:
        """The manifest entry of ``split``, its chunks checked (local folders).

        Args:
            split: ``train``, ``val`` or ``test``.

        Returns:
            The entry.

        Raises:
            ValueError: the split was not converted.
            FileNotFoundError: its index or a chunk is missing.
            RuntimeError: a chunk's size differs from its index (truncated or replaced).
        """
        if split not in self.splits:
            raise ValueError(
                f"{self.uri} holds the splits {sorted(self.splits)}, not {split!r}: run zoo "
                f"optimize with --splits including {split}"
            )
        entry = self.splits[split]
        if not is_remote(self.uri):
            folder = Path(self.uri) / split
            index = folder / "index.json"
            if not index.is_file():
                raise FileNotFoundError(
                    f"{index} is missing: the shard folder {self.uri} is incomplete, run zoo "
                    "optimize again"
                )
            for chunk in json.loads(index.read_text())["chunks"]:
                path = folder / chunk["filename"]
                if not path.is_file():
                    raise FileNotFoundError(
                        f"chunk {path} is missing (named by {index}): run zoo optimize again"
                    )
                if path.stat().st_size != chunk["chunk_bytes"]:
                    raise RuntimeError(
                        f"chunk {path} has {path.stat().st_size} bytes, its index says "
                        f"{chunk['chunk_bytes']}: the shard is corrupt, run zoo optimize again"
                    )
        return entry

    def dataset(self, split: str, shuffle: bool = False, seed: int = 0) -> ShardSamples:
        """The samples of ``split``, decoded.

        Args:
            split: ``train``, ``val`` or ``test``.
            shuffle: LitData's shuffling (chunks, then samples within chunks, per epoch).
            seed: the shuffling's seed.

        Returns:
            The streaming dataset.
        """
        entry = self.split(split)
        return ShardSamples(
            join(self.uri, split),
            entry,
            shuffle=shuffle,
            seed=seed,
            cache_dir=self.cache_dir,
        )


class ShardSamples(StreamingDataset):
    """One split's shards as a :class:`litdata.StreamingDataset` whose items are the samples.

    Iterated (by :class:`StreamingLoader`) it streams in LitData's order; indexed
    (``dataset[i]``, :meth:`as_map`) it gives sample ``i`` of the file reader's order.

    Args:
        uri: the split's folder or URI.
        entry: its manifest entry.
        shuffle: LitData's shuffling.
        seed: the shuffling's seed.
        cache_dir: LitData's chunk cache of a remote split.
    """

    def __init__(
        self,
        uri: str,
        entry: dict[str, Any],
        shuffle: bool = False,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        try:
            super().__init__(
                uri, cache_dir=cache_dir, shuffle=shuffle, seed=seed, transform=DecodeSample()
            )
        except Exception as error:  # LitData raises many types for a bad folder
            raise RuntimeError(
                f"LitData cannot open the shards at {uri}: {error}. Check the folder or URI "
                "(and, for s3://, the credentials and AWS_ENDPOINT_URL), or run zoo optimize again"
            ) from error
        self.entry = entry
        #: Where the samples come from (errors and warnings name it, as a table's path).
        self.table_path = uri
        #: Whether the samples carry ``location`` (the image-text tables' lat/lon).
        self.has_location = "location" in entry.get("keys", [])

    def lengths(
        self,
        tokenizer: Any,
        short_answer_tasks: Sequence[str] = ("vqa",),
        max_length: int | None = None,
        conversation: str | None = None,
    ) -> list[int]:
        """The token counts ``zoo optimize`` stored, checked to be the ones asked for.

        Args:
            tokenizer: the data's tokenizer.
            short_answer_tasks: tasks whose questions get the short-answer prompt.
            max_length: cap on each count.
            conversation: the conversation format.

        Returns:
            One token count per sample.

        Raises:
            ValueError: the shards hold no counts, or counts of another tokenization.
        """
        stored = self.entry.get("lengths")
        if stored is None:
            raise ValueError(
                f"{self.table_path}: the shards hold no token counts (not conversations)"
            )
        expected = {
            "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "short_answer_tasks": sorted(short_answer_tasks),
            "max_length": max_length,
            "conversation": conversation,
        }
        if self.entry.get("tokenization") != expected:
            raise ValueError(
                f"{self.table_path}: its token counts were computed for {self.entry.get('tokenization')}, "
                f"this data tokenizes as {expected}: run zoo optimize again with this config"
            )
        return list(stored)

    def as_map(self) -> MapSamples:
        """The same samples as a map-style dataset (sample ``i`` of the file reader's order).

        Returns:
            The map-style view.
        """
        return MapSamples(self)


class MapSamples(Dataset):
    """A :class:`ShardSamples` read by index: any sampler (the zoo's resumable and
    length-grouped ones, Lightning's distributed one) and the plain evaluation loaders.

    Args:
        stream: the streaming dataset.
    """

    def __init__(self, stream: ShardSamples) -> None:
        self.stream = stream
        self.table_path = stream.table_path
        self.has_location = stream.has_location

    def __len__(self) -> int:
        return int(self.stream.entry["count"])  # every sample (the stream's is per rank)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stream = self.stream
        # Whole chunks into LitData's cache, not one sample's byte range per read: consecutive
        # indices share a chunk (and moto's S3 server answered LitData's range reads with
        # empty bodies).
        if stream.cache is None:
            stream._on_demand_bytes = False
        elif stream.on_demand_bytes:
            stream.on_demand_bytes = False
        return stream[int(index)]

    def lengths(self, *args: Any, **kwargs: Any) -> list[int]:
        """See :meth:`ShardSamples.lengths`.

        Args:
            *args: its positional arguments.
            **kwargs: its keyword arguments.

        Returns:
            One token count per sample.
        """
        return self.stream.lengths(*args, **kwargs)


class StreamingLoader(StreamingDataLoader):
    """LitData's :class:`~litdata.StreamingDataLoader`, its epoch the trainer's.

    Lightning saves its ``state_dict`` in every checkpoint and restores it before a resumed
    epoch (mid-epoch: LitData skips the samples already handed out, on every rank, and
    re-stripes them when the number of processes changed). What Lightning does not do is
    tell it the epoch: a loader built anew after an end-of-epoch checkpoint would count from
    its own first epoch and repeat that epoch's order; ``epoch`` (the trainer's current epoch)
    fixes the order of each epoch instead (LitData counts epochs from 1). And LitData's resumed
    state is dropped after the resumed epoch (see ``__iter__``).

    Args:
        dataset: the split's :class:`ShardSamples`.
        epoch: returns the trainer's current epoch (None: LitData's own count).
        **kwargs: :class:`~litdata.StreamingDataLoader`'s arguments.
    """

    def __init__(
        self, dataset: ShardSamples, epoch: Callable[[], int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.epoch = epoch

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """Resume from a saved state (Lightning calls this before a resumed epoch).

        Args:
            obj: a :meth:`state_dict`.
        """
        saved = obj.get("dataset", {}).get("drop_last")
        if saved is not None and saved != self.dataset.drop_last:
            # LitData drops the last samples on several processes, not on one, and refuses a
            # state of the other kind: the resumed epoch keeps the checkpoint's rule.
            self._own_drop_last = self.dataset.drop_last
            self.dataset.set_drop_last(bool(saved))
        super().load_state_dict(obj)
        self._resuming = self.restore

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # LitData clears ``restore`` only when an epoch runs to its end; Lightning stops at the
        # epoch's known length instead, so ``restore`` would outlive the resumed epoch and the
        # next one would replay the restored state (in LitData 0.2.76: yield nothing at all).
        # The restore applies to the first epoch after load_state_dict alone.
        if self.restore and not getattr(self, "_resuming", False):
            self.restore = False
        self._resuming = False
        own = getattr(self, "_own_drop_last", None)
        if not self.restore and own is not None:  # the resumed epoch is over: this run's rule
            self.dataset.set_drop_last(own)
            self._own_drop_last = None
        if not self.restore and self.epoch is not None:
            self.current_epoch = int(self.epoch())  # LitData adds 1 as the epoch starts
        yield from super().__iter__()
