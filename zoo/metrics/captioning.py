"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) as a DDP-aware torchmetrics metric.

Scores are computed with ``pycocoevalcap``, the implementation the remote-sensing captioning
literature reports (RSICD, UCM-Captions, Sydney-Captions, NWPU-Captions): captions are lower-cased
and tokenized with the Stanford PTBTokenizer wrapper and punctuation tokens are removed, exactly as
the COCO evaluation server does, then ``Bleu(4)``, ``Meteor``, ``Rouge`` and ``Cider`` score the
whole corpus at once. Values use pycocoevalcap's scale: ``[0, 1]`` for BLEU, METEOR and ROUGE-L,
CIDEr usually in ``[0, 10]``.

Java is required by the PTBTokenizer and by METEOR. Without it (:func:`java_available` is false)
METEOR is skipped and captions are tokenized with :func:`simple_tokenize`, a pure-Python
approximation of the PTB tokenization; a warning says so once per metric instance.

DDP: strings cannot be tensor states, so captions are kept as UTF-8 bytes in list states reduced
with ``dist_reduce_fx="cat"``. torchmetrics concatenates a list state into one tensor before
gathering, so per-caption boundaries are kept in separate states:

* ``text_bytes`` -- ``uint8`` bytes of every caption of a sample, the prediction first, then its
  references, back to back;
* ``text_lengths`` -- byte length of each of those captions;
* ``num_refs`` -- number of references of each sample.

All three are concatenated in the same rank order, so :meth:`CaptionMetrics.compute` decodes the
gathered corpus by walking the lengths. Each update appends one tensor per state, not one per
caption. A rank that saw no sample contributes typed empty tensors (so every rank must still call
``compute``, as for any synced metric), and samples that a ``DistributedSampler`` duplicates to
even out ranks are scored twice.

Use ``update`` then ``compute`` (e.g. ``self.log_dict(metric.compute())`` at epoch end, then
``reset``); ``forward`` would score every batch on its own, which is slow (one Java call per batch)
and not what the corpus-level scores mean.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

__all__ = ["CAPTION_METRIC_KEYS", "CaptionMetrics", "java_available", "simple_tokenize"]

#: Keys returned by :meth:`CaptionMetrics.compute` (METEOR is absent without Java or when disabled).
CAPTION_METRIC_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")

_NO_JAVA_MESSAGE = (
    "Java was not found on PATH: METEOR is skipped and captions are tokenized with a Python "
    "approximation of the PTBTokenizer, so scores may differ slightly from the COCO toolkit."
)


def java_available() -> bool:
    """Whether a ``java`` executable is on ``PATH`` (needed by PTBTokenizer and METEOR).

    Returns:
        True when ``java`` is found.
    """
    return shutil.which("java") is not None


# --------------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------------

# Punctuation tokens dropped after tokenization: pycocoevalcap's list plus raw double quotes (PTB
# rewrites them to ``/'', which that list drops) and brackets. PTB rewrites brackets to "-lrb-" etc.
# and pycocoevalcap keeps those (its list spells them in upper case), a quirk not reproduced here.
_DROPPED_TOKENS = frozenset(
    ["''", "'", "``", "`", '"', ".", "?", "!", ",", ":", "-", "--", "...", ";"]
    + ["(", ")", "[", "]", "{", "}"]
)
# Zero-width split points before English clitics, as PTB does: "don't" -> "do n't".
_CLITIC_SPLIT = re.compile(r"(?<=\w)(?=n't\b|'(?:s|re|ve|ll|d|m)\b)")
# Clitics, words with inner hyphens/periods/commas/slashes ("well-known", "3.5", "1,000"), and
# runs of one repeated symbol ("...", "--", "%").
_TOKEN = re.compile(r"n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-.,/&']\w+)*|([^\w\s])\1*")


def simple_tokenize(text: str) -> str:
    """Pure-Python approximation of pycocoevalcap's PTB tokenization, used when Java is missing.

    Lower-cases, splits English clitics (``"it's"`` -> ``"it 's"``), separates punctuation from
    words while keeping hyphenated words and numbers such as ``"3.5"`` whole, drops punctuation
    tokens (pycocoevalcap's list, plus quotes and brackets) and joins the tokens with single
    spaces. Unlike the Java tokenizer it does not rewrite words such as ``"cannot"``.

    Args:
        text: A caption.

    Returns:
        The caption's tokens joined by single spaces.
    """
    text = _CLITIC_SPLIT.sub(" ", text.lower())
    tokens = (m.group(0) for m in _TOKEN.finditer(text))
    return " ".join(tok for tok in tokens if tok not in _DROPPED_TOKENS)


def _ptb_tokenize(samples: list[list[str]]) -> list[list[str]]:
    """Tokenize every sample's captions with pycocoevalcap's PTBTokenizer in one Java call."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {i: [{"caption": c} for c in caps] for i, caps in enumerate(samples)}
    tokenized = PTBTokenizer().tokenize(captions)
    out = [tokenized.get(i, []) for i in range(len(samples))]
    if any(len(tok) != len(caps) for tok, caps in zip(out, samples, strict=True)):
        raise RuntimeError(
            "PTBTokenizer returned a different number of captions than it was given."
        )
    return out


# --------------------------------------------------------------------------------------------
# Shared METEOR scorer
# --------------------------------------------------------------------------------------------

_METEOR_LOCK = threading.Lock()
_METEOR: tuple[int, Any] | None = None  # (owning pid, pycocoevalcap Meteor)


def _get_meteor() -> Any:
    """The process-wide METEOR scorer, started on first use.

    Starting METEOR launches a JVM that loads the paraphrase tables (several seconds), so one
    scorer is reused by every metric and every ``compute`` of this process. The owning pid is
    recorded so that a forked child never talks to its parent's subprocess.
    """
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is None or _METEOR[0] != os.getpid():
            from pycocoevalcap.meteor.meteor import Meteor

            _METEOR = (os.getpid(), Meteor())
        return _METEOR[1]


def _discard_meteor(scorer: Any) -> None:
    """Kill a failed METEOR subprocess and forget it, so that the next call starts a fresh one."""
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is not None and _METEOR[1] is scorer:
            _METEOR = None
    scorer.meteor_p.kill()
    scorer.meteor_p.wait()
    # pycocoevalcap keeps its lock held when scoring raises; its __del__ would then block forever.
    if scorer.lock.locked():
        scorer.lock.release()


def _meteor_once(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    scorer = _get_meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    except (OSError, ValueError):  # broken pipe, or no/garbled output from a dead process
        _discard_meteor(scorer)
        raise


def _meteor_score(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """Corpus METEOR with the shared scorer, restarting its subprocess once if it has died."""
    try:
        return _meteor_once(gts, res)
    except (OSError, ValueError):
        return _meteor_once(gts, res)


# --------------------------------------------------------------------------------------------
# Metric
# --------------------------------------------------------------------------------------------


def _encode(texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """UTF-8 bytes of ``texts`` back to back as a ``uint8`` tensor, and each text's byte length."""
    encoded = [t.encode("utf-8") for t in texts]
    data = b"".join(encoded)
    if data:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    else:
        buf = torch.empty(0, dtype=torch.uint8)
    return buf, torch.tensor([len(e) for e in encoded], dtype=torch.long)


def _decode(buf: Tensor, lengths: Tensor) -> list[str]:
    """Inverse of :func:`_encode`."""
    data = buf.to(device="cpu", dtype=torch.uint8).numpy().tobytes()
    texts, start = [], 0
    for n in lengths.long().tolist():
        texts.append(data[start : start + n].decode("utf-8"))
        start += n
    if start != len(data):
        raise RuntimeError("Corrupted caption state: byte lengths do not add up to the buffer.")
    return texts


_STATE_DTYPES = {"text_bytes": torch.uint8, "text_lengths": torch.long, "num_refs": torch.long}


def _has_samples(state: list[Tensor] | Tensor) -> bool:
    """Whether a ``cat`` state (a list before sync, a tensor after) holds any sample."""
    return state.numel() > 0 if isinstance(state, Tensor) else len(state) > 0


class CaptionMetrics(Metric):
    """Corpus-level COCO caption metrics computed with pycocoevalcap, gathered across DDP ranks.

    Example::

        metric = CaptionMetrics()
        metric.update(["a plane parked at the airport"], [["a plane is at the airport", "..."]])
        metric.compute()  # {"BLEU-1": ..., "BLEU-4": ..., "METEOR": ..., "ROUGE-L": ..., "CIDEr": ...}

    Args:
        meteor: compute METEOR (needs Java; starts one JVM per process, ~2 GB heap, several
            seconds on first use). Set to ``False`` to skip it.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    text_bytes: list[Tensor] | Tensor
    text_lengths: list[Tensor] | Tensor
    num_refs: list[Tensor] | Tensor

    def __init__(self, meteor: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.meteor = meteor
        self._warned_no_java = False
        self.add_state("text_bytes", default=[], dist_reduce_fx="cat")
        self.add_state("text_lengths", default=[], dist_reduce_fx="cat")
        self.add_state("num_refs", default=[], dist_reduce_fx="cat")

    def _sync_dist(
        self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any = None
    ) -> None:
        """Gather the states, giving a rank without samples empty states of the right dtypes.

        torchmetrics would substitute a floating-point empty tensor for an empty list state, which
        cannot be gathered together with the other ranks' ``uint8``/``int64`` tensors.
        """
        for attr, dtype in _STATE_DTYPES.items():
            if isinstance(getattr(self, attr), list) and not getattr(self, attr):
                setattr(self, attr, [torch.empty(0, dtype=dtype, device=self.device)])
        super()._sync_dist(dist_sync_fn, process_group=process_group)

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add a batch: one predicted caption and one or more reference captions per sample.

        Args:
            predictions: ``B`` generated captions.
            references: ``B`` lists of reference captions (each non-empty).

        Raises:
            ValueError: If the counts differ or a sample has no reference.
            TypeError: If a caption is not a string.
        """
        if isinstance(predictions, str) or len(predictions) != len(references):
            raise ValueError(
                "predictions must be a list of strings with one entry per sample, matching "
                f"references; got {type(predictions).__name__} of length {len(predictions)} and "
                f"{len(references)} reference lists."
            )
        texts: list[str] = []
        counts: list[int] = []
        for i, (pred, refs) in enumerate(zip(predictions, references, strict=True)):
            if isinstance(refs, str) or len(refs) == 0:
                raise ValueError(
                    f"references[{i}] must be a non-empty list of strings, got {refs!r}."
                )
            if not isinstance(pred, str) or not all(isinstance(r, str) for r in refs):
                raise TypeError(f"Sample {i}: captions must be strings.")
            texts.append(pred)
            texts.extend(refs)
            counts.append(len(refs))
        if not counts:
            return
        buf, lengths = _encode(texts)
        self.text_bytes.append(buf.to(self.device))
        self.text_lengths.append(lengths.to(self.device))
        self.num_refs.append(torch.tensor(counts, dtype=torch.long, device=self.device))

    def samples(self) -> tuple[list[str], list[list[str]]]:
        """Decode the (gathered) state into predictions and reference lists, in update order.

        Returns:
            The predicted captions and, for each, its reference captions.

        Raises:
            ValueError: If no sample was seen.
        """
        if not _has_samples(self.num_refs):
            raise ValueError("CaptionMetrics has no samples: call update() before compute().")
        texts = _decode(dim_zero_cat(self.text_bytes), dim_zero_cat(self.text_lengths))
        predictions: list[str] = []
        references: list[list[str]] = []
        pos = 0
        for n in dim_zero_cat(self.num_refs).long().tolist():
            predictions.append(texts[pos])
            references.append(texts[pos + 1 : pos + 1 + n])
            pos += 1 + n
        if pos != len(texts):
            raise RuntimeError("Corrupted caption state: reference counts do not match captions.")
        return predictions, references

    def compute(self) -> dict[str, Tensor]:
        """Score the whole corpus.

        Returns:
            ``BLEU-1`` .. ``BLEU-4``, ``METEOR`` (only with Java and ``meteor=True``), ``ROUGE-L``
            and ``CIDEr`` as scalar float tensors.
        """
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        predictions, references = self.samples()
        # Every whitespace run (including "\r" and other line breaks, which would shift the
        # tokenizer's line-per-caption output) becomes a single space.
        samples = [
            [" ".join(p.split())] + [" ".join(r.split()) for r in refs]
            for p, refs in zip(predictions, references, strict=True)
        ]
        use_java = java_available()
        if use_java:
            tokenized = _ptb_tokenize(samples)
        else:
            if not self._warned_no_java:
                warnings.warn(_NO_JAVA_MESSAGE, RuntimeWarning, stacklevel=2)
                self._warned_no_java = True
            tokenized = [[simple_tokenize(c) for c in caps] for caps in samples]
        res = {i: caps[:1] for i, caps in enumerate(tokenized)}
        gts = {i: caps[1:] for i, caps in enumerate(tokenized)}

        scores: dict[str, float] = {}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for n, value in enumerate(bleu, start=1):
            scores[f"BLEU-{n}"] = float(value)
        if use_java and self.meteor:
            scores["METEOR"] = _meteor_score(gts, res)
        scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
        return {key: torch.tensor(val, dtype=self.dtype) for key, val in scores.items()}
