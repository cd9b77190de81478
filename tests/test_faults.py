"""Faults through the real ``zoo`` command line, in a subprocess: a signal at a known step
(sent by :class:`tests.faults.SignalAt` from inside the run, as a scheduler or a user would),
then a resume; straight and resumed runs compared bit for bit.

CPU runs are bit-exact with one intra-op thread (``OMP_NUM_THREADS=1``): with several, a CPU
reduction may differ in its last bit between two straight runs too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).parents[1]
TRAINER = {
    "max_epochs": 3,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "log_every_n_steps": 1,
    "limit_val_batches": 1,
}
DATA = {"splits": {"train": 32, "val": 8, "test": 4}, "batch_size": 8}  # 4 steps per epoch
#: No captioning metrics in validation: their scorers (Java's PTB tokenizer and METEOR) cost
#: ~10 s a validation; the W&B samples callback still decodes answers there.
GENERATOR = {"generation": {"max_new_tokens": 3}, "val_generate_batches": 0}
FAMILIES = {
    "flavars": (
        "configs/flavars.yaml",
        {
            "embed_dim": 32,
            "fusion": {"width": 32, "layers": 1},
            "location": {"hidden": 32, "layers": 1},
        },
    ),
    "aquila": ("configs/aquila.yaml", GENERATOR),
    "fuse": ("configs/fuse.yaml", GENERATOR),
    "geopix": ("configs/geopix.yaml", GENERATOR),
}
NAMES = {
    "flavars": "flavars-embedded",
    "aquila": "aquila-embedded",
    "fuse": "fuse-embedded",
    "geopix": "geopix-embedded",
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedded")


def zoo(
    family: str,
    runs: Path,
    data: Path,
    *args: str,
    trainer: dict | None = None,
    env: dict | None = None,
    model: dict | None = None,
    splits: dict | None = None,
) -> subprocess.CompletedProcess:
    """``python -m zoo fit`` on the family's tiny config, W&B offline, one CPU thread;
    ``trainer``, ``model`` (``init_args``) and ``splits`` replace keys of the tiny config."""
    config, base = FAMILIES[family]
    override = runs.parent / f"{family}-tiny.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "trainer": {**TRAINER, **(trainer or {})},
                "model": {"init_args": {**base, **(model or {})}},
                "data": {
                    "init_args": {**DATA, "splits": splits or DATA["splits"], "root": str(data)}
                },
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "zoo",
        "fit",
        "--config",
        config,
        "--config",
        str(override),
        f"--trainer.default_root_dir={runs}",
        *args,
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        **(env or {}),
    }
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1200
    )
    (runs.parent / f"{family}-{len(list(runs.parent.glob('*.log')))}.log").write_text(
        done.stdout + done.stderr
    )
    return done


def signal_at(step: int, signum: int = signal.SIGTERM, times: int = 1) -> list[str]:
    return [
        "--trainer.callbacks+=tests.faults.SignalAt",
        f"--trainer.callbacks.step={step}",
        f"--trainer.callbacks.signum={int(signum)}",
        f"--trainer.callbacks.times={times}",
    ]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def no_temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_sigterm_saves_the_current_step_and_exits_143(tmp_path, data_root):
    """Row 'SIGTERM at step 34: exit code 0, no checkpoint'."""
    runs = tmp_path / "runs"
    done = zoo(
        "flavars",
        runs,
        data_root,
        "--trainer.logger=false",
        *signal_at(3),
        trainer={"max_epochs": 1},
    )
    assert done.returncode == 143, done.stderr[-3000:]
    assert "interrupted by SIGTERM at step 3" in done.stderr
    last = runs / "flavars" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = load(last)
    assert checkpoint["global_step"] == 3
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 0, "seed": 0, "batches": 3}
    ]
    assert {"ExactResume", "RunRecord"} <= set(checkpoint["callbacks"])
    # the process's first checkpoint already names its model (read when written, not after)
    assert checkpoint["callbacks"]["RunRecord"]["model_class"] == "zoo.models.flavars.FLAVARS"
    assert not no_temporaries(tmp_path)


#: The resume test's runs: two epochs of 16 training images in batches of 8, so FLAVARS and
#: GeoPix take 2 steps an epoch and Aquila and FUSE 4 (a caption and a VQA sample per image).
RESUME_SPLITS = {"train": 16, "val": 8, "test": 4}
STEPS_PER_EPOCH = {"flavars": 2, "aquila": 4, "fuse": 4, "geopix": 2}
#: What else a family's resume draws from the RNG: Aquila samples its validation answers
#: (top-k from the global torch RNG, also in the W&B samples), GeoPix trains LoRA adapters with
#: dropout (q/v, as its paper's stage 2) instead of the whole LLM; FLAVARS masks and drops out.
RESUME_MODEL = {
    "aquila": {"generation": {"max_new_tokens": 3, "do_sample": True, "top_k": 5}},
    "geopix": {
        "stage": {
            "train_vision": True,
            "train_connector": True,
            "train_llm": False,
            "lora_rank": 4,
            "lora_dropout": 0.1,
            "lora_target_modules": ["q_proj", "v_proj"],
        }
    },
}


def _records(run: Path) -> dict[str, dict]:
    """The RunRecord of every checkpoint of a run folder, by file name."""
    return {p.name: load(p)["callbacks"]["RunRecord"] for p in (run / "checkpoints").glob("*.ckpt")}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_interrupted_and_resumed_equals_straight(family, tmp_path, data_root):
    """Rows 'resume with --ckpt_path last' and '60 steps straight vs 20 + resume + 40': two
    epochs straight equal SIGTERM one step into the second epoch (after a validation, mid-epoch)
    + ``--ckpt_path last`` + the rest, bit for bit (every weight and every logged loss), in the
    same run folder and the same W&B run, whose id every checkpoint records."""
    straight, split = tmp_path / "straight" / "runs", tmp_path / "split" / "runs"
    straight.parent.mkdir(), split.parent.mkdir()
    per_epoch = STEPS_PER_EPOCH[family]

    def fit(runs: Path, *args: str) -> subprocess.CompletedProcess:
        return zoo(
            family,
            runs,
            data_root,
            f"--trainer.logger.init_args.save_dir={runs}",
            *args,
            # a validation after each epoch, whatever the family's config sets (FUSE's demo
            # validates every fourth): the resumed epoch follows a validation for every family
            trainer={"max_epochs": 2, "check_val_every_n_epoch": 1},
            model=RESUME_MODEL.get(family),
            splits=RESUME_SPLITS,
        )

    done = fit(straight)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Validation metrics of this fit (final and best)" in done.stdout
    first = fit(split, *signal_at(per_epoch + 1))
    assert first.returncode == 143, first.stderr[-3000:]
    assert f"interrupted by SIGTERM at step {per_epoch + 1}" in first.stderr
    second = fit(split, "--ckpt_path", "last")
    assert second.returncode == 0, second.stderr[-3000:]

    name = NAMES[family]
    run_a = straight / name / "version_0"  # <default_root_dir>/<W&B name>/version_N
    run_b = split / name / "version_0"
    assert not (split / name / "version_1").exists()  # the resume continued version_0
    assert (split / name / "latest").resolve() == run_b.resolve()
    a, b = load(run_a / "checkpoints" / "last.ckpt"), load(run_b / "checkpoints" / "last.ckpt")
    steps = a["global_step"]
    assert steps == b["global_step"] == 2 * per_epoch
    assert a["state_dict"].keys() == b["state_dict"].keys()
    if family == "geopix":
        assert any("lora_A" in k for k in a["state_dict"])
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, differ[:5]
    loss_a = pd.read_csv(run_a / "metrics.csv").dropna(subset=["train_loss"]).set_index("step")
    loss_b = pd.read_csv(run_b / "metrics.csv").dropna(subset=["train_loss"]).set_index("step")
    assert list(loss_b.index) == list(range(steps))
    assert loss_a["train_loss"].tolist() == loss_b["train_loss"].tolist()
    assert (run_b / "config.yaml").is_file()
    # One W&B run, resumed rather than opened anew, and every checkpoint (the best, the last,
    # the first one a process writes) names it and the model's class.
    ids = {p.name.rsplit("-", 1)[1] for p in (split / "wandb").glob("offline-run-*")}
    assert len(ids) == 1 and len(list((split / "wandb").glob("offline-run-*"))) == 2
    straight_id = a["callbacks"]["RunRecord"]["wandb_id"]
    assert straight_id is not None
    for run, expected in ((run_a, {straight_id}), (run_b, ids)):
        records = _records(run)
        assert {r["wandb_id"] for r in records.values()} == expected, records
        assert all(r["model_class"].rpartition(".")[2].lower() == family for r in records.values())
    assert not no_temporaries(tmp_path)


@pytest.mark.slow
def test_sigint_saves_and_exits_130_and_a_second_one_stops_at_once(tmp_path, data_root):
    runs = tmp_path / "runs"
    done = zoo(
        "flavars",
        runs,
        data_root,
        "--trainer.logger=false",
        *signal_at(2, signal.SIGINT),
        trainer={"max_epochs": 1},
    )
    assert done.returncode == 130, done.stderr[-3000:]
    assert load(runs / "flavars" / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 2
    again = zoo(
        "flavars",
        runs,
        data_root,
        "--trainer.logger=false",
        *signal_at(2, signal.SIGINT, times=2),
        trainer={"max_epochs": 1},
    )
    assert again.returncode == 130
    assert not (runs / "flavars" / "version_1" / "checkpoints" / "last.ckpt").exists()
    assert not no_temporaries(tmp_path)


@pytest.mark.slow
def test_slurm_requeue_signal_saves_requeues_and_the_requeued_job_resumes(tmp_path, data_root):
    """Preemption through Lightning's SLURMEnvironment: the requeue signal (SIGUSR1) saves
    hpc_ckpt_1.ckpt at the step, runs ``scontrol requeue <job>`` and exits 138; the requeued
    job (the same command) resumes from it in the same run folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.txt"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "zoo-test",
        "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    runs = tmp_path / "runs"
    args = ("--trainer.logger=false",)
    done = zoo(
        "flavars",
        runs,
        data_root,
        *args,
        *signal_at(2, signal.SIGUSR1),
        trainer={"max_epochs": 1},
        env=env,
    )
    assert done.returncode == 128 + signal.SIGUSR1, done.stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert load(runs / "hpc_ckpt_1.ckpt")["global_step"] == 2
    requeued = zoo("flavars", runs, data_root, *args, trainer={"max_epochs": 1}, env=env)
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert "SLURM requeue: resuming from" in requeued.stderr
    assert load(runs / "flavars" / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert not (runs / "flavars" / "version_1").exists()


def test_readable_error_through_the_command_line(tmp_path, data_root):
    """Row 'truncated --ckpt_path': one block, exit 1, no torch traceback."""
    truncated = tmp_path / "broken.ckpt"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    done = zoo("flavars", tmp_path / "runs", data_root, "--ckpt_path", str(truncated))
    assert done.returncode == 1
    assert f"zoo: error: could not read --ckpt_path {truncated}: it is truncated" in done.stderr
    assert "Traceback" not in done.stderr
