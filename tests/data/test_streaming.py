"""Streaming shards (zoo optimize + LitData): the same samples and batches as the file readers,
the manifest, clear errors for a missing or corrupt shard folder, the loader's resumed state,
token counts and length-grouped batches, and the s3:// path against a local moto server."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from litdata import StreamingDataset
from torch.utils.data import DataLoader

from tests.conftest import write_table_dataset
from tests.geotiffs import write_band_table
from zoo.data.datamodules import (
    EmbeddedConversationDataModule,
    EmbeddedSplits,
    ImageTextLocationDataModule,
)
from zoo.data.streaming import MANIFEST, Shards, StreamingLoader, folder_checksum
from zoo.optimize import write_shards

ROOT = Path(__file__).parents[2]


def assert_same_batch(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict:
    """A SkyScript-format table (32 px images, read at 24 px: the resize path) and its shards
    written by two workers; the shards are read with the source folder gone."""
    work = tmp_path_factory.mktemp("streaming")
    root = write_table_dataset(work / "table", n=8, size=32)
    source = ImageTextLocationDataModule(str(root), image_size=24, batch_size=4)
    write_shards(source, str(work / "shards"), workers=2, chunk_bytes="4KB")
    copy = work / "table-copy"  # the file reader's, while the shards' source is gone
    shutil.copytree(root, copy)
    shutil.rmtree(root)
    files = ImageTextLocationDataModule(str(copy), image_size=24, batch_size=4)
    streamed = ImageTextLocationDataModule(
        str(work / "absent"), image_size=24, batch_size=4, streaming=str(work / "shards")
    )
    for dm in (files, streamed):
        dm.prepare_data()
        dm.setup("fit")
    return {"work": work, "copy": copy, "files": files, "streamed": streamed}


def test_streamed_batches_equal_the_file_readers(table):
    files, streamed = table["files"], table["streamed"]
    # the vocabulary and class names came from the manifest (the source folder is gone)
    assert streamed.class_names == files.class_names == ["forest", "water"]
    assert streamed.tokenizer.get_vocab() == files.tokenizer.get_vocab()
    # unshuffled: the same batches in the same order, every key of the contract
    stream = streamed.shards.dataset("train", shuffle=False)
    assert len(json.loads((table["work"] / "shards/train/index.json").read_text())["chunks"]) > 2
    loader = StreamingLoader(stream, batch_size=4, collate_fn=streamed.collate_fn)
    reference = DataLoader(files.train_dataset, batch_size=4, collate_fn=files.collate_fn)
    pairs = list(zip(reference, loader, strict=True))
    assert len(pairs) == 2
    for a, b in pairs:
        assert {"image", "caption", "input_ids", "location", "label", "index"} <= a.keys()
        assert_same_batch(a, b)
    for a, b in zip(files.val_dataloader(), streamed.val_dataloader(), strict=True):
        assert_same_batch(a, b)
    # training: LitData's shuffled loader, every sample once an epoch
    train = streamed.train_dataloader()
    assert isinstance(train, StreamingLoader)
    seen = [i for batch in train for i in batch["index"].tolist()]
    assert sorted(seen) == list(range(8)) and seen != list(range(8))


def test_images_are_stored_as_their_files_bytes_and_the_manifest(table):
    work = table["work"]
    raw = StreamingDataset(str(work / "shards" / "train"))
    assert raw[0]["image"] == (table["copy"] / "images" / "train_0.png").read_bytes()
    manifest = json.loads((work / "shards" / MANIFEST).read_text())
    for split in ("train", "val", "test"):
        entry = manifest["splits"][split]
        assert entry["count"] == 8
        assert entry["image_storage"] == "file bytes"
        assert entry["checksum"] == "sha256:" + folder_checksum(work / "shards" / split)
    assert "licence" in manifest["licence"] and manifest["class_names"] == ["forest", "water"]
    assert manifest["source"]["datamodule"] == "ImageTextLocationDataModule"


def test_a_missing_or_corrupt_shard_folder_is_a_clear_error(table, tmp_path):
    with pytest.raises(FileNotFoundError, match="zoo optimize"):
        ImageTextLocationDataModule(str(tmp_path), streaming=str(tmp_path / "nothing"))
    bad = tmp_path / "bad"
    shutil.copytree(table["work"] / "shards", bad)
    chunk = sorted((bad / "train").glob("*.bin"))[0]
    chunk.write_bytes(chunk.read_bytes()[:-7])
    with pytest.raises(RuntimeError, match=f"{chunk.name}.*corrupt"):
        Shards(str(bad)).dataset("train")
    (bad / "val" / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="index.json is missing"):
        Shards(str(bad)).dataset("val")
    with pytest.raises(ValueError, match="not 'predict'"):
        Shards(str(bad)).dataset("predict")
    (bad / MANIFEST).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Shards(str(bad))


def test_a_resumed_state_applies_to_the_resumed_epoch_only(table):
    """Lightning stops an epoch at the loader's length, so LitData never clears its restore
    flag itself: the epoch after a resumed one must still be a whole epoch."""
    streamed = table["streamed"]
    epoch = {"now": 0}

    def loader() -> StreamingLoader:
        stream = streamed.shards.dataset("train", shuffle=True, seed=3)
        return StreamingLoader(
            stream, epoch=lambda: epoch["now"], batch_size=2, collate_fn=streamed.collate_fn
        )

    straight = loader()
    order = {e: [] for e in (0, 1)}
    for e in (0, 1):
        epoch["now"] = e
        order[e] = [b["index"].tolist() for b in straight]
    assert len(order[0]) == 4 and order[0] != order[1]

    first = loader()
    epoch["now"] = 0
    batches = iter(first)
    head = [next(batches)["index"].tolist() for _ in range(2)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    batches = iter(resumed)
    tail = [next(batches)["index"].tolist() for _ in range(len(resumed) - 2)]  # as Lightning
    assert head + tail == order[0]
    epoch["now"] = 1
    assert [b["index"].tolist() for b in resumed] == order[1]
    # a loader built anew after an end-of-epoch checkpoint (Lightning restores no state then)
    # reads the trainer's epoch, not LitData's own first one again
    assert [b["index"].tolist() for b in loader()] == order[1]


def test_conversations_keep_token_counts_and_length_grouped_batches(tmp_path):
    kwargs = dict(splits=EmbeddedSplits(12, 4, 4), batch_size=4, group_by_length=True)
    files = EmbeddedConversationDataModule(str(tmp_path / "data"), **kwargs)
    manifest = write_shards(files, str(tmp_path / "shards"), workers=1)
    files.setup("fit")
    expected = files.train_dataset.lengths(
        files.tokenizer, files.short_answer_tasks, files.max_length, files.conversation
    )
    assert manifest["splits"]["train"]["lengths"] == expected
    streamed = EmbeddedConversationDataModule(
        str(tmp_path / "data"), streaming=str(tmp_path / "shards"), **kwargs
    )
    streamed.setup("fit")
    torch.manual_seed(0)
    a = list(files.train_dataloader())
    torch.manual_seed(0)
    b = list(streamed.train_dataloader())
    assert len(a) == len(b) == 6  # 12 images, a caption and a VQA conversation each
    for x, y in zip(a, b, strict=True):
        assert_same_batch(x, y)
    other = EmbeddedConversationDataModule(
        str(tmp_path / "data"), streaming=str(tmp_path / "shards"), max_length=64, **kwargs
    )
    other.setup("fit")
    with pytest.raises(ValueError, match="run zoo optimize again"):
        other.train_dataloader()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_s3(monkeypatch) -> str:
    """moto's S3 server on 127.0.0.1 (offline), the AWS clients pointed at it."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    # LitData downloads chunks with obstore, whose client refuses plain http (real object
    # stores are https) and reads no AWS_ALLOW_HTTP from the environment: allow it here.
    from litdata.streaming import downloader

    monkeypatch.setitem(downloader._OBSTORE_CLIENT_OPTIONS, "allow_http", "true")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.2)
        import boto3

        boto3.client("s3").create_bucket(Bucket="zoo")
        yield "s3://zoo"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_s3_shards_against_a_local_moto_server(moto_s3, table, tmp_path):
    files = table["files"]
    source = ImageTextLocationDataModule(str(table["copy"]), image_size=24, batch_size=4)
    write_shards(source, f"{moto_s3}/table", workers=1, splits=("train", "val"))
    shards = Shards(f"{moto_s3}/table", cache_dir=str(tmp_path / "cache"))
    assert shards.splits["train"]["count"] == 8
    streamed = ImageTextLocationDataModule(
        str(tmp_path / "absent"), image_size=24, batch_size=4, streaming=f"{moto_s3}/table"
    )
    streamed.shards = shards  # its chunk cache inside the test's folder
    streamed.setup("fit")
    for a, b in zip(files.val_dataloader(), streamed.val_dataloader(), strict=True):
        assert_same_batch(a, b)
    seen = [i for batch in streamed.train_dataloader() for i in batch["index"].tolist()]
    assert sorted(seen) == list(range(8))
    with pytest.raises(FileNotFoundError, match="zoo optimize"):
        Shards(f"{moto_s3}/nothing")


OVERRIDE = {
    "trainer": {
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "check_val_every_n_epoch": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
    },
    "data": {"init_args": {"splits": {"train": 16, "val": 4, "test": 4}, "batch_size": 4}},
}
MODEL = {
    "flavars": {"embed_dim": 32, "fusion": {"width": 32, "layers": 1}},
    "aquila": {"generation": {"max_new_tokens": 3}, "val_generate_batches": 0},
    "geopix": {"generation": {"max_new_tokens": 3}, "val_generate_batches": 0},
}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow  # two processes each (zoo optimize, zoo fit): over 30 s
@pytest.mark.parametrize("family", ["flavars", "aquila", "geopix"])
def test_optimize_then_fit_on_the_shards_offline(family, tmp_path):
    """The acceptance: ``zoo optimize`` then ``zoo fit --data.init_args.streaming``."""
    override = tmp_path / "tiny.yaml"
    config = {**copy.deepcopy(OVERRIDE), "model": {"init_args": MODEL[family]}}
    config["data"]["init_args"]["root"] = str(tmp_path / "data")
    override.write_text(yaml.safe_dump(config))
    configs = ["--config", str(ROOT / f"configs/{family}.yaml"), "--config", str(override)]
    done = _run("optimize", *configs, "--output", str(tmp_path / "shards"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "shards" / MANIFEST).is_file()
    shutil.rmtree(tmp_path / "data")  # the fit reads the shards alone
    done = _run(
        "fit",
        *configs,
        f"--data.init_args.streaming={tmp_path / 'shards'}",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Validation metrics of this fit" in done.stdout
    assert not (tmp_path / "data").exists()  # nothing regenerated the embedded data


def test_a_band_choice_streams_the_pixels_the_file_reader_gives(tmp_path):
    """13-band uint16 GeoTIFFs read as bands [4, 3, 2]: the stream's decoder cannot rebuild that
    choice from the file's bytes, so the shards hold the chosen pixels, equal to the files'."""
    root = write_band_table(tmp_path / "s2", 13, "uint16", per_split=4)
    kwargs = {"image_size": 24, "batch_size": 4, "bands": [4, 3, 2]}
    source = ImageTextLocationDataModule(str(root), **kwargs)
    write_shards(source, str(tmp_path / "shards"), workers=1)
    streamed = ImageTextLocationDataModule(
        str(tmp_path / "absent"), streaming=str(tmp_path / "shards"), **kwargs
    )
    files = ImageTextLocationDataModule(str(root), **kwargs)
    for dm in (files, streamed):
        dm.prepare_data()
        dm.setup("fit")
    stream = streamed.shards.dataset("train", shuffle=False)
    loader = StreamingLoader(stream, batch_size=4, collate_fn=streamed.collate_fn)
    reference = DataLoader(files.train_dataset, batch_size=4, collate_fn=files.collate_fn)
    ((a, b),) = zip(reference, loader, strict=True)
    assert a["image"].shape[1] == 3 and a["image"].max() > 255  # raw reflectance, 3 bands
    assert_same_batch(a, b)
