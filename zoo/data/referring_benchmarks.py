"""The referring remote-sensing segmentation benchmarks RRSIS-D and RefSegRS, for GeoPix.

Both read into the samples and batch of :mod:`zoo.data.referring` (a segmentation conversation
per sample, ``mask`` ``B×K×H×W`` with ``mask_valid``, ``category``, ``input_ids``, ``labels``,
``prompt_ids`` ...). Their protocol is one expression and one mask per sample: training uses
each referred object once (a random expression of it), evaluation each expression once.

* RRSIS-D keeps the refer-API layout of RefCOCO: a pickled list of refs (``refs(unc).p``) over
  one COCO ``instances.json`` for all splits; :class:`RRSISDDataset` loads the pickle with a
  restricted unpickler (builtin containers, strings and numbers only) and reuses
  :class:`~zoo.data.referring.CocoReferringDataset`.
* RefSegRS is a folder of images and binary masks with one ``<id> <expression>`` line per
  sample; it has no categories (one class, ``"object"``).

torchgeo 0.8.1 has neither dataset; the classes follow its conventions (``root``, ``split``,
``transforms``, ``download`` where a public download exists).
"""

from __future__ import annotations

import logging
import pickle
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from zoo.data.coco_refs import CocoReferringDataset, ReferringSegmentationDataModule, load_coco
from zoo.data.image_text import caption_words, load_image
from zoo.data.referring import ReferringDataset, template_words
from zoo.io import require_dir

__all__ = [
    "RRSISDDataModule",
    "RRSISDDataset",
    "RefSegRSDataModule",
    "RefSegRSDataset",
    "load_refs_pickle",
    "read_phrases",
]

log = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")

RRSISD_URL = "https://github.com/Lsan2401/RMSIN"
_RRSISD_HOW = (
    f"RRSIS-D is not downloadable automatically: get it from {RRSISD_URL} (the links in its "
    "README), and arrange it as <root>/rrsisd/refs(unc).p, <root>/rrsisd/instances.json and "
    "<root>/images/rrsisd/JPEGImages/*.jpg"
)

REFSEGRS_REPO = "JessicaYuan/RefSegRS"
REFSEGRS_URL = f"https://huggingface.co/datasets/{REFSEGRS_REPO}"
_REFSEGRS_HOW = (
    f"download RefSegRS from {REFSEGRS_URL} (or pass download=True) so that root holds "
    "images/<id>.tif, masks/<id>.tif and output_phrase_{train,val,test}.txt"
)

#: Globals a refs pickle may name: builtin containers and scalars, numpy scalars (and the
#: ``_codecs.encode`` that protocol-2 pickles use for their bytes). Nothing that runs code.
_PICKLE_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "str"),
        ("builtins", "bytes"),
        ("builtins", "bool"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
    }
)
_REF_KEYS = ("ref_id", "ann_id", "split", "sentences")


class _Refused(pickle.UnpicklingError):
    """A global the refs pickle may not name."""


class _RefsUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside :data:`_PICKLE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise _Refused(f"global '{module}.{name}' is not allowed")
        return super().find_class(module, name)


def _plain(value: Any) -> Any:
    """Numpy scalars -> Python scalars, recursively through lists, tuples and dicts."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_refs_pickle(path: Path) -> list[dict[str, Any]]:
    """Read a refer-API refs pickle (``refs(unc).p``) safely and check its refs.

    Only builtin containers, strings, numbers and numpy scalars may be in the file: loading a
    pickle otherwise runs whatever code it names, so anything else is refused with an error.
    Python 2 pickles decode their strings as UTF-8.

    Args:
        path: the refs pickle.

    Returns:
        The refs, as plain Python objects.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds anything else than plain data, is not a readable pickle, or a
            ref lacks a field.
    """
    if not path.is_file():
        raise FileNotFoundError(f"refs file {path} does not exist. {_RRSISD_HOW}")
    try:
        with path.open("rb") as file:
            refs = _RefsUnpickler(file, encoding="utf-8").load()
    except _Refused as error:
        raise ValueError(
            f"{path}: refused to load: {error}. A refs pickle holds only lists, dicts, strings "
            "and numbers; this file is not a refer-API refs file, or it was altered"
        ) from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a readable refs pickle: {error}") from error
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, found {type(refs).__name__}")
    refs = _plain(refs)
    for n, ref in enumerate(refs):
        missing = [k for k in _REF_KEYS if not isinstance(ref, dict) or k not in ref]
        if missing:
            raise ValueError(f"{path}, ref {n}: missing field(s) {missing}")
        if not isinstance(ref["sentences"], list) or not all(
            isinstance(s, dict) for s in ref["sentences"]
        ):
            raise ValueError(
                f"{path}, ref {n} (ref_id {ref['ref_id']!r}): 'sentences' must be a list of "
                "{'raw', 'sent', ...} dicts"
            )
    return refs


def _clause(text: str) -> str:
    """An expression as a clause inside a sentence: a capitalized first word (not an acronym)
    in lower case."""
    text = text.strip()
    if text[:1].isupper() and not text[1:2].isupper():
        text = text[0].lower() + text[1:]
    return text


def _rrsisd_sentences(ref: dict[str, Any]) -> dict[str, Any]:
    """The ref with each sentence's text in ``sent``: the ``raw`` expression (as RMSIN feeds
    its text encoder), else the tokenized ``sent``, as a clause (:func:`_clause`)."""
    sentences = [
        {"sent": _clause(str(s.get("raw") or s.get("sent") or ""))} for s in ref["sentences"]
    ]
    return {**ref, "sentences": sentences}


def _check_root(root: Path, name: str, how: str) -> None:
    require_dir(root, how, f"{name} not found: dataset root")


class RRSISDDataset(CocoReferringDataset):
    """RRSIS-D: 17,402 referring expressions, masks and images (800×800 px, 20 categories).

    Liu, S., Ma, Y., Zhang, X., Wang, H., Ji, J., Sun, X., Ji, R.: "Rotated Multi-Scale
    Interaction Network for Referring Remote Sensing Image Segmentation", CVPR 2024. Built on
    the images and boxes of RSVGD / DIOR-RSVG (Zhan et al., IEEE TGRS 2023), masks by SAM with
    manual correction; 12,181 train, 1,740 val and 3,481 test triplets.

    Data: https://github.com/Lsan2401/RMSIN (download links in its README; no automatic
    download). Licence: none stated by the authors; the DIOR images are for academic research
    only. Layout (the refer API's, as for RefCOCO)::

        <root>/rrsisd/refs(unc).p        pickled list of {"ref_id", "ann_id", "image_id",
                                         "split", "category_id", "file_name",
                                         "sentences": [{"raw", "sent", "sent_id", "tokens"}],
                                         "sent_ids"}
        <root>/rrsisd/instances.json     COCO instances (RLE or polygons), all splits
        <root>/images/rrsisd/JPEGImages/*.jpg

    The expression of a sentence is its ``raw`` text (RMSIN's input), else ``sent``, with a
    capitalized first word in lower case (it is a clause of the conversation).

    Args:
        root: folder of ``rrsisd/`` and ``images/``.
        split: ``train``, ``val`` or ``test`` (the refs' ``split`` field).
        image_size: images (bilinear) and masks (nearest) are resized to this square size.
        max_targets: at most this many objects per sample (``per_ref=False`` only).
        per_ref: one ref per sample, the benchmark's protocol (``val``/``test``: one sample per
            ref and sentence); False groups the refs of an image into one multi-target sample.
        split_by: the refs file is ``refs({split_by}).p``.
        **kwargs: ``num_scales``, ``per_scale``, ``seed`` (of the target and training sentence
            selection), ``transforms`` of :class:`~zoo.data.referring.ReferringDataset`.

    Samples as in :class:`~zoo.data.referring.ReferringDataset`; ``category`` is the position
    of the COCO category id among the sorted ids of ``instances.json``.
    """

    def __init__(
        self,
        root: str | Path = "data/rrsisd",
        split: str = "train",
        image_size: int = 336,
        max_targets: int = 1,
        per_ref: bool = True,
        split_by: str = "unc",
        **kwargs: Any,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        self.root = Path(root)
        _check_root(self.root, "RRSIS-D", _RRSISD_HOW)
        self.refs_path = self.root / "rrsisd" / f"refs({split_by}).p"
        self.instances_path = self.root / "rrsisd" / "instances.json"
        self.image_root = self.root / "images" / "rrsisd" / "JPEGImages"
        for path in (self.refs_path, self.instances_path, self.image_root):
            if not path.exists():
                raise FileNotFoundError(f"RRSIS-D: {path} does not exist. {_RRSISD_HOW}")
        refs = load_refs_pickle(self.refs_path)
        found = sorted({str(r["split"]) for r in refs})
        unknown = [s for s in found if s not in _SPLITS]
        if unknown:
            raise ValueError(
                f"{self.refs_path}: unknown split value(s) {unknown}; RRSIS-D refs are split "
                f"into {list(_SPLITS)}"
            )
        chosen = [_rrsisd_sentences(r) for r in refs if r["split"] == split]
        if not chosen:
            raise ValueError(f"{self.refs_path}: no ref has split {split!r} (found {found})")
        super().__init__(
            load_coco(self.instances_path),
            chosen,
            self.image_root,
            per_ref,
            f"{self.refs_path} (split {split!r})",
            str(self.instances_path),
            split=split,
            image_size=image_size,
            max_targets=max_targets,
            **kwargs,
        )


def read_phrases(path: Path) -> list[tuple[str, str]]:
    """The ``(id, expression)`` lines of a RefSegRS ``output_phrase_{split}.txt``.

    Each line is ``<id> <expression>``, split at the first whitespace; blank lines are allowed,
    a line without an expression is an error naming the file and line.

    Args:
        path: the phrase file.

    Returns:
        The ``(id, expression)`` pairs in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line has no expression, or the file has no line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"RefSegRS: {path} does not exist. {_REFSEGRS_HOW}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2 or not parts[1].strip().rstrip(".").strip():
            raise ValueError(
                f"{path}, line {number}: expected '<id> <expression>', found {line.strip()!r}"
            )
        pairs.append((parts[0], parts[1].strip()))
    if not pairs:
        raise ValueError(f"{path}: no '<id> <expression>' line")
    return pairs


class RefSegRSDataset(ReferringDataset):
    """RefSegRS: 4,420 referring expressions with binary masks on 512×512 aerial images.

    Yuan, Z., Mou, L., Hua, Y., Zhu, X. X.: "RRSIS: Referring Remote Sensing Image
    Segmentation", IEEE Transactions on Geoscience and Remote Sensing (TGRS), 2024. Images
    cropped from SkyScapes (Azimi et al., ICCV 2019), 13 cm resolution.

    Data: https://huggingface.co/datasets/JessicaYuan/RefSegRS (``download=True`` fetches it
    with ``huggingface_hub``). Licence: CC BY 4.0 (github.com/zhu-xlab/rrsis). Layout::

        <root>/images/<id>.tif                   RGB images
        <root>/masks/<id>.tif                    binary masks, 0 / 255
        <root>/output_phrase_{train,val,test}.txt  one "<id> <expression>" per line

    One target per sample (``K = 1``): a mask pixel is foreground above 50, as in the
    authors' loader. The files carry no category, so every target is class 0 (``"object"``);
    GeoPix's class-wise memory then has a single class. ``id`` is the line's id.

    Args:
        root: folder of ``images/``, ``masks/`` and the phrase files.
        split: ``train``, ``val`` or ``test``.
        image_size: images (bilinear) and masks (nearest) are resized to this square size.
        download: fetch the dataset into ``root`` when its files are missing.
        **kwargs: ``num_scales``, ``per_scale``, ``seed``, ``transforms`` of
            :class:`~zoo.data.referring.ReferringDataset`.

    Samples as in :class:`~zoo.data.referring.ReferringDataset`.
    """

    #: Mask pixels above this value are foreground (the authors' loader uses ``> 50``).
    threshold = 50

    def __init__(
        self,
        root: str | Path = "data/refsegrs",
        split: str = "train",
        image_size: int = 336,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(split, image_size, max_targets=1, **kwargs)
        self.root = Path(root)
        self.download = download
        self.phrases_path = self.root / f"output_phrase_{split}.txt"
        if not self.phrases_path.is_file() and download:
            self._download()
        _check_root(self.root, "RefSegRS", _REFSEGRS_HOW)
        pairs = read_phrases(self.phrases_path)
        ids = [i for i, _ in pairs]
        self.image_paths = [self.root / "images" / f"{i}.tif" for i in ids]
        self.mask_paths = [self.root / "masks" / f"{i}.tif" for i in ids]
        for kind, paths in (("mask", self.mask_paths), ("image", self.image_paths)):
            missing = [(n, p) for n, p in enumerate(paths) if not p.is_file()]
            if missing:
                n, p = missing[0]
                raise FileNotFoundError(
                    f"RefSegRS: {kind} file {p} of id {ids[n]!r} ({self.phrases_path}, entry "
                    f"{n + 1}) does not exist ({len(missing)} {kind}(s) missing in all). "
                    f"{_REFSEGRS_HOW}"
                )
        refs = [
            {"ref_id": n, "id": i, "sentences": [{"sent": text}]}
            for n, (i, text) in enumerate(pairs)
        ]
        self._set_samples([[ref] for ref in refs], per_ref=False)

    def _download(self) -> None:
        """Fetch the dataset from the Hugging Face hub and unpack any archives into root."""
        from huggingface_hub import snapshot_download
        from torchgeo.datasets.utils import extract_archive

        log.info("downloading RefSegRS from %s into %s", REFSEGRS_URL, self.root)
        snapshot_download(repo_id=REFSEGRS_REPO, repo_type="dataset", local_dir=self.root)
        for pattern in ("*.zip", "*.tar", "*.tar.gz", "*.tgz"):
            for archive in sorted(self.root.rglob(pattern)):
                extract_archive(str(archive), str(archive.parent))
        if not self.phrases_path.is_file():  # unpacked into one folder: move it up to root
            found = sorted(self.root.rglob(self.phrases_path.name))
            if len(found) == 1:
                for item in found[0].parent.iterdir():
                    if not (self.root / item.name).exists():
                        shutil.move(str(item), str(self.root / item.name))

    def _image(self, index: int) -> Tensor:
        ref = self.refs[index][0]
        return load_image(
            self.image_paths[index],
            f" (id {ref['id']!r} of {self.phrases_path}, sample {index})",
            self.band_choice,
        )

    def _mask(self, index: int, ref: dict[str, Any]) -> np.ndarray:
        path = self.mask_paths[index]
        try:
            with Image.open(path) as img:
                mask = np.asarray(img.convert("L")) > self.threshold
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise RuntimeError(
                f"could not read mask file {path} (id {ref['id']!r} of {self.phrases_path}): "
                f"{error}"
            ) from error
        if not mask.any():
            raise ValueError(
                f"mask file {path} (id {ref['id']!r} of {self.phrases_path}) has no foreground "
                f"pixel (none above {self.threshold})"
            )
        return mask

    def _category(self, ref: dict[str, Any]) -> int:
        return 0

    def _sample_name(self, index: int) -> str:
        return str(self.refs[index][0]["id"])


class ReferringBenchmarkDataModule(ReferringSegmentationDataModule):
    """The referring benchmarks' protocol defaults, written once: one expression, one mask,
    batches of 8 at 336 px (the LLaVA-1.5 input size).

    Args:
        root: the benchmark's folder.
        max_targets: masks are padded to this many targets.
        batch_size: samples per batch and device.
        image_size: images and masks are resized to this square size.
        **kwargs: ``seed``, ``max_length``, ``num_scales``, ``per_scale``, ``mix_file``,
            ``mix_ratio`` of :class:`~zoo.data.coco_refs.ReferringSegmentationDataModule`;
            ``num_workers``, ``tokenizer`` (the LLM's; None builds a word-level tokenizer from the
            training expressions), ``mean``, ``std`` of
            :class:`~zoo.data.datamodules.ZooDataModule`.
    """

    def __init__(
        self,
        root: str,
        max_targets: int = 1,
        batch_size: int = 8,
        image_size: int = 336,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root, max_targets=max_targets, batch_size=batch_size, image_size=image_size, **kwargs
        )


class RRSISDDataModule(ReferringBenchmarkDataModule):
    """RRSIS-D (:class:`RRSISDDataset`) as GeoPix segmentation conversations.

    The batch of :class:`~zoo.data.coco_refs.ReferringSegmentationDataModule`: ``image``,
    ``mask`` (``B×max_targets×H×W``) with ``mask_valid``, ``category``, ``input_ids``,
    ``attention_mask``, ``labels``, ``prompt_ids``, ``prompt_attention_mask``, ``question``,
    ``reference``, ``sentences``, ``id``, ``task``. ``class_names`` are the 20 categories of
    ``instances.json`` in id order.

    Args:
        root: folder of ``rrsisd/`` and ``images/`` (see :class:`RRSISDDataset`).
        per_image: group the refs of an image into one multi-target sample (GeoPix-style
            training); False (default) is the benchmark's one-expression-one-mask protocol.
        split_by: the refs file is ``rrsisd/refs({split_by}).p``.
        **kwargs: ``max_targets`` (with ``per_image``, at most this many objects per sample),
            ``batch_size``, ``image_size`` of :class:`ReferringBenchmarkDataModule`; the
            referring and loader arguments of
            :class:`~zoo.data.coco_refs.ReferringSegmentationDataModule`.
    """

    def __init__(
        self,
        root: str = "data/rrsisd",
        per_image: bool = False,
        split_by: str = "unc",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.dataset_class = RRSISDDataset
        self.per_image = per_image
        self.split_by = split_by

    @cached_property
    def class_names(self) -> list[str]:
        """The categories of ``instances.json`` in id order (the memory's classes)."""
        root = self.dataset_root
        _check_root(root, "RRSIS-D", _RRSISD_HOW)
        path = root / "rrsisd" / "instances.json"
        if not path.is_file():
            raise FileNotFoundError(f"RRSIS-D: {path} does not exist. {_RRSISD_HOW}")
        coco = load_coco(path)
        return [coco.cats[c]["name"] for c in sorted(coco.cats)]

    def vocabulary(self) -> list[str]:
        """Words of the training expressions and the answer templates.

        Returns:
            The sorted vocabulary.
        """
        _check_root(self.dataset_root, "RRSIS-D", _RRSISD_HOW)
        refs = load_refs_pickle(self.dataset_root / "rrsisd" / f"refs({self.split_by}).p")
        sentences = [
            s["sent"]
            for r in refs
            if r["split"] == "train"
            for s in _rrsisd_sentences(r)["sentences"]
        ]
        return caption_words([*sentences, *template_words()])

    def _referring_dataset(self, split: str) -> RRSISDDataset:
        return RRSISDDataset(
            self.dataset_root,
            split,
            per_ref=not self.per_image,
            split_by=self.split_by,
            **self._sample_args(),
        )


class RefSegRSDataModule(ReferringBenchmarkDataModule):
    """RefSegRS (:class:`RefSegRSDataset`) as GeoPix segmentation conversations.

    The batch of :class:`~zoo.data.coco_refs.ReferringSegmentationDataModule` with one target
    per sample (``mask`` ``B×max_targets×H×W``, ``mask_valid`` true for the first) and
    ``category`` 0: ``class_names`` is ``["object"]``, the files having no categories.

    Args:
        root: folder of ``images/``, ``masks/`` and ``output_phrase_{split}.txt``.
        download: fetch the dataset from the Hugging Face hub into ``root`` if missing.
        **kwargs: as for :class:`RRSISDDataModule` (each sample has one target).
    """

    def __init__(self, root: str = "data/refsegrs", download: bool = False, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.dataset_class = RefSegRSDataset
        self.download = download

    @cached_property
    def class_names(self) -> list[str]:
        """One class: RefSegRS has no categories."""
        return ["object"]

    def prepare_data(self) -> None:
        """Download the dataset (once, on one process) when ``download`` is set."""
        if self.download:
            RefSegRSDataset(self.dataset_root, "train", download=True)

    def vocabulary(self) -> list[str]:
        """Words of the training expressions and the answer templates.

        Returns:
            The sorted vocabulary.
        """
        _check_root(self.dataset_root, "RefSegRS", _REFSEGRS_HOW)
        pairs = read_phrases(self.dataset_root / "output_phrase_train.txt")
        return caption_words([*(text for _, text in pairs), *template_words()])

    def _referring_dataset(self, split: str) -> RefSegRSDataset:
        args = self._sample_args()
        del args["max_targets"]  # one target per sample
        return RefSegRSDataset(self.dataset_root, split, **args)
