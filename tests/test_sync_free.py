"""Training steps without host synchronization, and the checks that left the forward passes.

* GPU: one training step (forward, loss, backward) of each family (FLAVARS, Aquila, FUSE,
  GeoPix, their tiny defaults) under ``torch.cuda.set_sync_debug_mode("error")``, which turns
  any device-to-host copy (``.item()``, ``bool(tensor)``, ``nonzero``, boolean indexing,
  ``torch.unique``, ``multinomial`` ...) or blocking host-to-device copy into an error.
* CPU: the same steps run under a dispatch mode that records the operators that would
  synchronize on a GPU (a proxy, so that a machine without one still catches a regression),
  and with the tensor methods that read a value back to Python (``item``, ``tolist``,
  ``numpy``, ``cpu``, ``bool()``, ``int()``, ``float()``, ``index``) made to raise.
* CPU: the input checks moved out of the forward passes still fire, with their messages, where
  the batch is made (the collates and the datasets).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.models.conftest import prepared
from zoo.data import EmbeddedConversationDataModule, EmbeddedDataModule
from zoo.data.coco_refs import EmbeddedReferringDataModule
from zoo.data.conversations import ConversationCollate
from zoo.data.datamodules import EmbeddedSplits
from zoo.data.referring import ReferringCollate
from zoo.data.seg_targets import check_referring_batch
from zoo.encoders.zoo_encoders import FusionSpec
from zoo.models import (
    FLAVARS,
    FUSE,
    Aquila,
    FuseInjection,
    FuseViews,
    GeoPix,
    MemoryConfig,
    SFIConfig,
)


@pytest.fixture(scope="module")
def conversations(tmp_path_factory) -> EmbeddedConversationDataModule:
    root = tmp_path_factory.getbasetemp() / "embedded"
    return prepared(
        EmbeddedConversationDataModule(str(root), splits=EmbeddedSplits(8, 4, 4), batch_size=4)
    )


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> EmbeddedDataModule:
    root = tmp_path_factory.getbasetemp() / "embedded"
    return prepared(
        EmbeddedDataModule(str(root), splits=EmbeddedSplits(8, 4, 4), image_size=32, batch_size=8)
    )


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> EmbeddedReferringDataModule:
    return prepared(
        EmbeddedReferringDataModule(
            str(tmp_path_factory.mktemp("refs")), splits=EmbeddedSplits(8, 4, 4), batch_size=4
        )
    )


FAMILIES: dict[str, tuple[str, Callable[[Any], torch.nn.Module]]] = {
    "FLAVARS": (
        "captions",
        lambda dm: FLAVARS(
            image_size=dm.image_size,
            embed_dim=64,
            fusion=FusionSpec(width=64, layers=1),
            tokenizer=dm.tokenizer,
            class_names=dm.class_names,
        ),
    ),
    "Aquila": (
        "conversations",
        lambda dm: Aquila(tokenizer=dm.tokenizer, class_names=dm.class_names),
    ),
    "FUSE": ("conversations", lambda dm: FUSE(tokenizer=dm.tokenizer, class_names=dm.class_names)),
    "GeoPix": (
        "refs",
        lambda dm: GeoPix(
            tokenizer=dm.tokenizer,
            class_names=dm.class_names,
            memory=MemoryConfig(capacity=4),
        ),
    ),
    # The generators' other blocks: FUSE's per-position router and cross-attention injection
    # (pooled stacks, no whole-canvas window), Aquila's paper block and its conv baseline.
    "FUSE-token": (
        "conversations",
        lambda dm: FUSE(
            tokenizer=dm.tokenizer,
            class_names=dm.class_names,
            inject=FuseInjection(kind="token"),
        ),
    ),
    "FUSE-xattn-pool": (
        "conversations",
        lambda dm: FUSE(
            tokenizer=dm.tokenizer,
            class_names=dm.class_names,
            inject=FuseInjection(kind="xattn"),
            views=FuseViews(detail_tokens="pool", window_sizes=[64, 32], canvas_size=128),
        ),
    ),
    "Aquila-paper": (
        "conversations",
        lambda dm: Aquila(
            tokenizer=dm.tokenizer,
            class_names=dm.class_names,
            sfi=SFIConfig(block="paper", num_heads=1),
        ),
    ),
    "Aquila-conv": (
        "conversations",
        lambda dm: Aquila(
            tokenizer=dm.tokenizer,
            class_names=dm.class_names,
            sfi=SFIConfig(connector="conv"),
        ),
    ),
}


def _family(request, name: str, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A seeded tiny model of ``name`` in training mode and a training batch, on ``device``."""
    fixture, build = FAMILIES[name]
    dm = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    model = build(dm).to(device).train()
    batch = next(iter(dm.train_dataloader()))
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return model, dm.on_after_batch_transfer(batch, 0)


def _step(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    loss = model.training_step(batch, 0)
    loss.backward()
    return loss


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("name", list(FAMILIES))
def test_training_step_does_not_synchronize(request, name: str) -> None:
    model, batch = _family(request, name, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = _step(model, batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
    assert any(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------------- CPU proxy
_SYNCING = {
    "aten._local_scalar_dense.default",  # .item(), int(), float(), bool(), `if tensor:`
    "aten.nonzero.default",
    "aten._unique2.default",
    "aten.unique_dim.default",
    "aten.unique_consecutive.default",
    "aten.masked_select.default",
    "aten.multinomial.default",
    "aten.equal.default",
    "aten.is_nonzero.default",
    "aten.bincount.default",
    "aten.lift_fresh.default",  # torch.tensor(...) of host data: a copy to the device
}


class _SyncRecorder(TorchDispatchMode):
    """Records the operators that would synchronize with a GPU, and where the zoo called them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        syncing = name in _SYNCING
        if name.startswith(("aten.index.Tensor", "aten.index_put")):  # boolean indexing
            syncing = any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool
                for i in args[1]
                if i is not None
            )
        if name.startswith("aten.repeat_interleave") and kwargs.get("output_size") is None:
            syncing = True
        if syncing:
            frames = [f for f in traceback.extract_stack() if "/zoo/" in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "outside the zoo"
            self.found.append(f"{name} at {where}")
        return func(*args, **kwargs)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("name", list(FAMILIES))
def test_training_step_has_no_syncing_operator(request, name: str) -> None:
    model, batch = _family(request, name, "cpu")
    recorder = _SyncRecorder()
    with recorder:
        loss = _step(model, batch)
    assert torch.isfinite(loss)
    assert not recorder.found, "operators that synchronize on a GPU:\n" + "\n".join(recorder.found)


#: Tensor methods that hand a value to Python (on a GPU: a device-to-host copy and a wait).
_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


@contextmanager
def _reads_raise() -> Iterator[None]:
    """Make :data:`_READS` raise, naming the method and the zoo's line that called it."""
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def refuse(name: str):
        def method(self, *args, **kwargs):
            frames = [f for f in traceback.extract_stack() if "/zoo/" in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "outside the zoo"
            raise AssertionError(f"Tensor.{name} in a training step, at {where}")

        return method

    for name in _READS:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("name", list(FAMILIES))
def test_training_step_reads_no_value_back(request, name: str) -> None:
    model, batch = _family(request, name, "cpu")
    with _reads_raise():
        loss = _step(model, batch)
    assert torch.isfinite(loss)
    assert any(p.grad is not None for p in model.parameters())


def test_reads_raise_catches_planted_reads() -> None:
    x = torch.arange(3.0)
    for read in (
        lambda: x.sum().item(),
        lambda: x.tolist(),
        lambda: bool(x[0]),
        lambda: int(x[1]),
        lambda: range(10)[torch.tensor(1)],
    ):
        with _reads_raise(), pytest.raises(AssertionError, match="in a training step"):
            read()
    assert x.sum().item() == 3.0  # restored


# ------------------------------------------------------------ the checks, moved to the data
def _conversation(human: str, gpt: str = "a field") -> dict[str, Any]:
    turns = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    return {"image": torch.zeros(3, 8, 8), "id": "x", "task": "caption", "conversations": turns}


def test_conversation_collate_counts_image_tokens(conversations) -> None:
    collate = ConversationCollate(conversations.tokenizer)
    collate([_conversation("<image>\nDescribe the image.")])
    with pytest.raises(ValueError, match=r"sample 0 of the batch \('x'\) has 0 <image> tokens"):
        collate([_conversation("Describe the image.")])
    with pytest.raises(ValueError, match="has 2 <image> tokens; each needs exactly one"):
        collate([_conversation("<image>\nDescribe the image.", "<image> a field")])


def _referring_samples(refs: EmbeddedReferringDataModule) -> list[dict[str, Any]]:
    """Two training samples: one with several targets, one with the fewest (padded)."""
    samples = [refs.train_dataset[i] for i in range(len(refs.train_dataset))]
    samples.sort(key=lambda s: -len(s["mask"]))
    assert len(samples[0]["mask"]) > 1 and len(samples[-1]["mask"]) < refs.max_targets
    return [samples[0], samples[-1]]


def test_referring_collate_lays_out_the_targets(refs) -> None:
    samples = _referring_samples(refs)
    batch = refs.collate_fn(samples)
    counts = [len(s["mask"]) for s in samples]
    k = refs.max_targets
    assert batch["target_index"].tolist() == [
        b * k + j for b, n in enumerate(counts) for j in range(n)
    ]
    positions = batch["target_positions"]
    assert positions.shape == (sum(counts), len(refs.seg_tokens))
    image = batch["target_index"] // k
    ids = batch["input_ids"][image[:, None], positions]
    assert ids.tolist() == [refs.tokenizer.convert_tokens_to_ids(refs.seg_tokens)] * sum(counts)


def test_referring_collate_checks_phrases_and_categories(refs) -> None:
    samples = _referring_samples(refs)
    one_less = dict(samples[0], mask=samples[0]["mask"][:-1], category=samples[0]["category"][:-1])
    with pytest.raises(ValueError, match="segmentation phrases but the batch has"):
        refs.collate_fn([one_less, samples[1]])
    last = refs.seg_tokens[-1]
    question, answer = samples[0]["conversations"]
    cut = dict(answer, value=answer["value"][::-1].replace(last[::-1], "", 1)[::-1])
    with pytest.raises(ValueError, match="not a multiple of the 6 of a target phrase .*truncated"):
        refs.collate_fn([dict(samples[0], conversations=[question, cut]), samples[1]])
    collate = ReferringCollate(refs.tokenizer, max_targets=refs.max_targets)
    collate.num_classes = 3
    for bad in (3, -1):
        sample = dict(samples[0], category=torch.full_like(samples[0]["category"], bad))
        with pytest.raises(ValueError, match=f"category {bad} is out of range .* 3 classes"):
            collate([sample, samples[1]])


def test_referring_batch_targets_must_point_at_its_images(refs) -> None:
    batch = refs.collate_fn(_referring_samples(refs))
    check_referring_batch(batch, len(refs.class_names))
    k = refs.max_targets
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        check_referring_batch(dict(batch, target_index=torch.tensor([0, 2 * k, 1])))
    padded = (~batch["mask_valid"]).flatten().nonzero().flatten()
    with pytest.raises(ValueError, match="points at a padded target"):
        check_referring_batch(dict(batch, target_index=padded[:1]))


def test_sync_recorder_catches_planted_synchronizations() -> None:
    """The proxy is only worth its passes if it sees what it looks for."""
    x = torch.arange(6.0)
    recorder = _SyncRecorder()
    with recorder:
        _ = x.sum().item()
        _ = x[x > 2]
        _ = x.nonzero()
        _ = x * 2  # not a synchronization
    names = " ".join(recorder.found)
    assert "_local_scalar_dense" in names and "nonzero" in names
    assert any(n.startswith("aten.index.Tensor") for n in recorder.found)
    assert not any(n.startswith("aten.mul") for n in recorder.found)
