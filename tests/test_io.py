"""zoo.io: writes are all-or-nothing; weight files load with errors that name the file."""

from __future__ import annotations

import json
import stat

import pytest
import torch
from safetensors.torch import save_file

from zoo.io import (
    atomic_dir,
    atomic_path,
    atomic_write,
    atomic_write_text,
    load_checkpoint,
    read_state_dict,
    read_tensors,
)


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "out" / "a.txt"
    atomic_write_text(path, "first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as f:
        f.write("half a fi")
        raise RuntimeError("boom")
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]  # no temporary left
    with atomic_write(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_atomic_path_for_writers_that_take_a_file_name(tmp_path):
    path = tmp_path / "w.safetensors"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        save_file({"x": torch.arange(3.0)}, str(tmp))
        assert not path.exists()
    assert torch.equal(read_state_dict(path)["x"], torch.arange(3.0))
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_atomic_dir_appears_complete_with_mkdir_mode(tmp_path):
    target = tmp_path / "dataset"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    with pytest.raises(ValueError), atomic_dir(tmp_path / "failed") as tmp:
        (tmp / "b.txt").write_text("b")
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "plain"]


def test_load_checkpoint_names_the_file_and_the_problem(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, good)
    assert load_checkpoint(good)["epoch"] == 3
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path .*missing\.ckpt does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt", "--ckpt_path")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:50])
    with pytest.raises(RuntimeError, match=r"truncated\.ckpt: it is truncated or not a PyTorch"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(RuntimeError, match="notes.ckpt"):
        load_checkpoint(text)


class _Arbitrary:
    """A class a weights-only load must refuse to build."""


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": {}, "thing": _Arbitrary()}, path)  # not weights-only
    with pytest.raises(RuntimeError, match="weights_only=True"):
        load_checkpoint(path)


def test_read_state_dict_from_each_format(tmp_path):
    weights = {"a": torch.zeros(2), "b": torch.ones(1)}
    torch.save({"state_dict": weights, "hyper_parameters": {"lr": 1.0}}, tmp_path / "l.ckpt")
    torch.save(weights, tmp_path / "plain.pt")
    save_file(weights, str(tmp_path / "w.safetensors"))
    for name in ("l.ckpt", "plain.pt", "w.safetensors"):
        state = read_state_dict(tmp_path / name)
        assert set(state) == {"a", "b"} and torch.equal(state["b"], torch.ones(1))
    torch.save({"config": {"lr": 1.0}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither a Lightning checkpoint"):
        read_state_dict(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "none.safetensors")


def test_read_json_names_missing_and_broken_files(tmp_path):
    from zoo.io import read_json

    good = tmp_path / "a.json"
    good.write_text('{"images": []}')
    assert read_json(good) == {"images": []}
    with pytest.raises(FileNotFoundError, match=r"caption file .*b\.json does not exist"):
        read_json(tmp_path / "b.json", "caption file")
    broken = tmp_path / "c.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match=r"c\.json is not valid JSON"):
        read_json(broken)


def test_read_yaml_names_broken_files(tmp_path):
    from zoo.io import read_yaml

    good = tmp_path / "a.yaml"
    good.write_text("model: {lr: 1}")
    assert read_yaml(good) == {"model": {"lr": 1}}
    broken = tmp_path / "b.yaml"
    broken.write_text("model: [1, 2")
    with pytest.raises(ValueError, match=r"b\.yaml is not valid YAML"):
        read_yaml(broken)
    with pytest.raises(FileNotFoundError, match="evaluation config .* does not exist"):
        read_yaml(tmp_path / "c.yaml", "evaluation config")


def test_require_dir_names_the_folder_and_the_fix(tmp_path):
    from zoo.io import require_dir

    assert require_dir(str(tmp_path), "unused") == tmp_path
    with pytest.raises(FileNotFoundError, match=r"dataset root .*nowhere does not exist\. Get it"):
        require_dir(tmp_path / "nowhere", "Get it from the authors.")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="RRSIS-D not found: dataset root"):
        require_dir(tmp_path / "file", "", "RRSIS-D not found: dataset root")


def test_read_tensors_reads_only_the_named_shards(tmp_path):
    """A sharded Hugging Face folder: the index says which shard holds which tensor."""
    save_file(
        {"model.layers.0.w": torch.zeros(2)}, str(tmp_path / "model-00001-of-00002.safetensors")
    )
    save_file(
        {"model.mm_projector.0.weight": torch.ones(3)},
        str(tmp_path / "model-00002-of-00002.safetensors"),
    )
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "model.layers.0.w": "model-00001-of-00002.safetensors",
                    "model.mm_projector.0.weight": "model-00002-of-00002.safetensors",
                }
            }
        )
    )
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"not read")  # never opened
    out = read_tensors(tmp_path, ("model.mm_projector.",))
    assert (
        list(out) == ["model.mm_projector.0.weight"]
        and out["model.mm_projector.0.weight"].sum() == 3
    )
    torch.save(
        {"model.mm_projector.2.bias": torch.ones(1), "other": torch.zeros(1)}, tmp_path / "b.bin"
    )
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (tmp_path / "b.bin").rename(bin_folder / "pytorch_model.bin")
    assert list(read_tensors(bin_folder, ("model.mm_projector.",))) == ["model.mm_projector.2.bias"]
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        read_tensors(tmp_path / "bin" / "missing", ("x",))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Issue 21: every atomic write gets open()'s mode (0666 less the umask), not mkstemp's
    private 0600, so a colleague can read checkpoints, GeoJSON and answers."""
    import os

    previous = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_write(tmp_path / "b.bin", "wb") as f:
            f.write(b"\x00")
        with atomic_path(tmp_path / "c.safetensors") as tmp:  # a writer that takes a file name
            save_file({"w": torch.zeros(2)}, str(tmp))
        with atomic_dir(tmp_path / "d") as folder:
            (folder / "shard").write_bytes(b"")
    finally:
        os.umask(previous)
    for path in (text, tmp_path / "b.bin", tmp_path / "c.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask
