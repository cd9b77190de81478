"""Exact resume of a streamed epoch on two CPU processes (gloo), through the real ``zoo`` CLI.

``zoo optimize`` writes the embedded data as LitData shards (small chunks, so LitData's
shuffling mixes them); a 2-process FLAVARS fit reads them with ``--data.init_args.streaming``
(:class:`zoo.data.streaming.StreamingLoader`), and :class:`tests.streaming_probe.SampleIds`
logs every rank's sample ids per step. A fit stopped by SIGTERM mid-epoch and resumed with
``--ckpt_path last`` sees, rank by rank and step by step, the ids of the straight fit; resumed on
one process instead, the rest of the epoch still gives every sample exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow  # four 2-process fits: about five minutes on two cores

TRAIN = 32  # samples; batches of 4 on 2 ranks: 4 steps an epoch
STOP = 2  # SIGTERM once global step 2 has run: mid-epoch 0


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }


def _zoo(*args: str, log: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "zoo", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    log.write_text(done.stdout + done.stderr)
    return done


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("streaming-resume")
    override = work / "tiny.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 2,
                    "limit_val_batches": 1,
                    "num_sanity_val_steps": 0,
                    "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "logger": False,
                    "accelerator": "cpu",
                },
                "model": {
                    "init_args": {
                        "embed_dim": 32,
                        "fusion": {"width": 32, "layers": 1},
                        "location": {"hidden": 32, "layers": 1},
                    }
                },
                "data": {
                    "init_args": {
                        "root": str(work / "embedded"),
                        "splits": {"train": TRAIN, "val": 8, "test": 4},
                        "batch_size": 4,
                    }
                },
            }
        )
    )
    shards = work / "shards"
    done = _zoo(
        "optimize",
        "--config",
        "configs/flavars.yaml",
        "--config",
        str(override),
        "--output",
        str(shards),
        "--workers",
        "2",
        "--chunk_bytes",
        "40KB",  # a few samples a chunk: LitData shuffles chunks and samples within them
        log=work / "optimize.log",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"work": work, "override": override, "shards": shards}


def _fit(
    setup: dict[str, Path], name: str, devices: int, *args: str
) -> subprocess.CompletedProcess:
    runs, ids = setup["work"] / f"runs-{name}", setup["work"] / f"ids-{name}"
    return _zoo(
        "fit",
        "--config",
        "configs/flavars.yaml",
        "--config",
        str(setup["override"]),
        f"--data.init_args.streaming={setup['shards']}",
        f"--trainer.devices={devices}",
        "--trainer.strategy=ddp" if devices > 1 else "--trainer.strategy=auto",
        f"--trainer.default_root_dir={runs}",
        "--trainer.callbacks+=tests.streaming_probe.SampleIds",
        f"--trainer.callbacks.folder={ids}",
        *args,
        log=setup["work"] / f"{name}-{len(list(setup['work'].glob('*.log')))}.log",
    )


def _ids(folder: Path) -> dict[int, list[tuple[int, int, list[int]]]]:
    """Per rank, the (epoch, step, ids) of every training batch, in order."""
    out = {}
    for path in sorted(folder.glob("ids-rank*.jsonl")):
        rank = int(path.stem.removeprefix("ids-rank"))
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        out[rank] = [(r["epoch"], r["step"], r["ids"]) for r in rows]
    return out


def _signal(step: int) -> list[str]:
    return [
        "--trainer.callbacks+=tests.faults.SignalAt",
        f"--trainer.callbacks.step={step}",
    ]


def test_killed_mid_epoch_and_resumed_reads_what_the_straight_run_reads(setup):
    straight = _fit(setup, "straight", 2)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = _fit(setup, "split", 2, *_signal(STOP))
    assert first.returncode == 143, first.stderr[-3000:]
    assert f"interrupted by SIGTERM at step {STOP}" in first.stderr
    checkpoint = (
        setup["work"] / "runs-split" / "flavars" / "version_0" / "checkpoints" / "last.ckpt"
    )
    shutil.copy(checkpoint, setup["work"] / "interrupted.ckpt")  # for the 1-process resume
    second = _fit(setup, "split", 2, "--ckpt_path", "last")
    assert second.returncode == 0, second.stderr[-3000:]

    a, b = _ids(setup["work"] / "ids-straight"), _ids(setup["work"] / "ids-split")
    assert sorted(a) == sorted(b) == [0, 1]
    for rank in (0, 1):
        assert len(a[rank]) == 8  # 2 epochs of 4 steps
        assert b[rank] == a[rank], rank  # the resume's steps are the straight run's
    for epoch in (0, 1):  # the two ranks share each epoch: every sample once
        seen = [i for rank in (0, 1) for e, _, ids in a[rank] if e == epoch for i in ids]
        assert sorted(seen) == list(range(TRAIN))
    # LitData's shuffling: the epochs' orders differ
    assert [r[2] for r in a[0] if r[0] == 0] != [r[2] for r in a[0] if r[0] == 1]


def test_resumed_on_one_process_sees_every_sample_of_the_epoch_once(setup):
    if not (setup["work"] / "interrupted.ckpt").is_file():
        pytest.skip("needs the interrupted 2-process checkpoint of the test above")
    runs = setup["work"] / "runs-elastic" / "flavars" / "version_0" / "checkpoints"
    runs.mkdir(parents=True)
    shutil.copy(setup["work"] / "interrupted.ckpt", runs / "last.ckpt")
    before = _ids(setup["work"] / "ids-split")
    seen = [i for rank in (0, 1) for e, step, ids in before[rank] if step < STOP for i in ids]
    done = _fit(setup, "elastic", 1, "--ckpt_path", "last", "--trainer.max_epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    after = _ids(setup["work"] / "ids-elastic")
    assert list(after) == [0]
    rest = [i for e, _, ids in after[0] if e == 0 for i in ids]
    assert len(rest) == TRAIN - len(seen)
    assert sorted(seen + rest) == list(range(TRAIN))
