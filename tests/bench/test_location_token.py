"""bench/location_token.py reads each run's last validation row and tabulates mean and spread
per question type and arm (the fits themselves are the bench's work, not the test's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import location_token

HEADER = "epoch,step,train_loss,val_loss,val_vqa_accuracy,val_vqa_accuracy_band,val_vqa_accuracy_hemisphere\n"


def _run(folder, band: float, hemisphere: float) -> None:
    version = folder / "aquila-embedded" / "version_0"
    version.mkdir(parents=True)
    (version / "metrics.csv").write_text(
        HEADER
        + "0,9,2.2,,,,\n"
        + "1,19,1.1,0.9,0.1,0.0,0.0\n"
        + f"2,29,0.8,0.7,0.5,{band},{hemisphere}\n"
    )


def test_summary_reads_the_last_validation_of_every_run(tmp_path, capsys):
    for seed, (band, hemisphere) in enumerate([(0.5, 0.9), (0.7, 0.8)]):
        _run(tmp_path / f"token_{seed}", band, hemisphere)
        _run(tmp_path / f"none_{seed}", 0.25, 0.5)
    text = location_token.main(["--seeds", "0", "1", "--output", str(tmp_path), "--summarize"])
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    assert "0.600 ± 0.141 (0.500, 0.700)" in rows["band"]
    assert "0.250 ± 0.000" in rows["band"] and "0.850 ± 0.071" in rows["hemisphere"]
    assert rows["all"].count("0.500 ± 0.000") == 2
    assert text in capsys.readouterr().out


def test_summary_of_a_missing_run_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="token_0"):
        location_token.main(["--seeds", "0", "--output", str(tmp_path), "--summarize"])


def test_the_flavars_arm_without_its_checkpoint_is_named(tmp_path):
    with pytest.raises(ValueError, match="'flavars' needs --flavars_checkpoint"):
        location_token.main(["--output", str(tmp_path), "--summarize", "--arms", "flavars"])


def test_the_flavars_arm_fits_with_the_token_and_its_checkpoint(tmp_path, monkeypatch):
    """The third arm's fit is the token arm's plus the FLAVARS checkpoint (absolute, since the
    fit runs from the repository root); ``--arms`` runs only the arms it names."""
    commands: list[list[str]] = []

    def call(command, cwd, stdout, stderr):
        commands.append(command)
        _run(Path(next(a for a in command if "default_root_dir" in a).split("=", 1)[1]), 0.5, 0.9)
        return 0

    monkeypatch.setattr(location_token.subprocess, "call", call)
    monkeypatch.chdir(tmp_path)
    checkpoint = Path("flavars.ckpt")
    argv = ["--seeds", "0", "--output", str(tmp_path / "runs"), "--arms", "flavars", "none"]
    printed = location_token.main([*argv, "--flavars_checkpoint", str(checkpoint)])
    flavars, none = commands
    assert "configs/aquila/location.yaml" in flavars and "configs/aquila/location.yaml" not in none
    assert f"--model.init_args.location.checkpoint={tmp_path / 'flavars.ckpt'}" in flavars
    assert not any("location.checkpoint" in a for a in none)
    assert "| question type | flavars | none |" in printed
