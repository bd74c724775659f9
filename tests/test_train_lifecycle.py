"""A training run's life beyond its steps: one run per folder at a time, SIGTERM
saves like Ctrl-C, --resume says what changed and refuses what breaks the exact continuation,
and a full disk ends with a clean message."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_train import _run_cli, _wait_for_step, invoke, photos, tiny_config

import zhangcolor.train as train_module


def words(output: str) -> str:
    """CLI output as one line of words, the error box's borders left out."""
    return " ".join(output.replace("│", " ").split())


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


# ----------------------------------------------------------------------------- one run a folder


def test_a_second_run_on_a_folder_in_use_is_refused_and_a_dead_runs_lock_is_taken(tmp_path):
    """Two train processes on the same --out both reported success and
    interleaved metrics.jsonl. While one runs, another (new, --overwrite or --resume) is
    refused with the holder's pid, host and start time; once it is killed (SIGKILL leaves its
    lock file behind), --resume takes the lock over."""
    config = tiny_config(tmp_path, epochs=100, save_every=1)
    run = tmp_path / "run"
    first = _run_cli(["train", "--config", config])
    try:
        _wait_for_step(run / "metrics.jsonl", 2, first)
        holder = f"pid {first.pid} on {socket.gethostname()}, started"
        for args in (["--config", config, "--overwrite"], ["--resume", run]):
            result = invoke("train", *args)
            assert result.exit_code == 1, result.output
            assert f"{run} is in use by another training run ({holder}" in words(result.output)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert json.loads((run / "train.lock").read_text())["pid"] == first.pid  # left behind
    steps = [m["step"] for m in metrics(run) if "loss" in m]
    assert steps == sorted(set(steps))  # one run's metrics, not two interleaved
    result = invoke("train", "--resume", run, "--override", "--epochs", 1, "--max-steps", 1)
    assert result.exit_code == 0, result.output
    assert not (run / "train.lock").exists()


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_saves_exits_143_and_resumes_exactly(tmp_path):
    """Docker stop, Slurm and Kubernetes send SIGTERM, which killed the run
    without a checkpoint. It saves as Ctrl-C does and exits with 143; sent to the whole process
    group, as Slurm does, it reaches the loader's workers too, which leave it to the run. The
    resumed run's weights equal an unbroken run's."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data = photos(tmp_path / "photos")
    for side in ("a", "b"):
        tiny_config(tmp_path / side, epochs=20, max_steps=12, save_every=3, workers=1)
        path = tmp_path / side / "tiny.yaml"
        values = yaml.safe_load(path.read_text()) | {"data": str(data)}
        path.write_text(yaml.safe_dump(values))
    unbroken = _run_cli(["train", "--config", tmp_path / "a" / "tiny.yaml"])
    assert unbroken.wait(timeout=300) == 0, unbroken.stdout.read()

    stopped = _run_cli(["train", "--config", tmp_path / "b" / "tiny.yaml"], start_new_session=True)
    _wait_for_step(tmp_path / "b" / "run" / "metrics.jsonl", 5, stopped)
    os.killpg(stopped.pid, signal.SIGTERM)
    output, _ = stopped.communicate(timeout=120)
    assert stopped.returncode == 143, output
    assert "terminated (SIGTERM); resume with" in output and "Traceback" not in output
    state = torch.load(tmp_path / "b" / "run" / "checkpoints" / "last.state.pt", weights_only=True)
    assert 5 <= state["progress"]["step"] < 12
    resumed = _run_cli(["train", "--resume", tmp_path / "b" / "run"])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    a = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- --resume


@pytest.fixture
def stopped_run(tmp_path, monkeypatch) -> Path:
    """A run of 3 epochs (8 photos to train on, batches of 4: 6 steps) stopped after step 2,
    as Ctrl-C stops it."""
    real = train_module.train_step

    def stop_at_2(trainer, batch):
        loss = real(trainer, batch)
        if trainer.state.step == 2:
            trainer.stop.set()
        return loss

    monkeypatch.setattr(train_module, "train_step", stop_at_2)
    result = invoke("train", "--config", tiny_config(tmp_path, epochs=3, save_every=100))
    assert result.exit_code == 130, result.output
    monkeypatch.undo()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.state.pt", weights_only=True)
    assert state["progress"]["total_steps"] == 6
    return tmp_path / "run"


def test_resume_refuses_changes_that_break_the_exact_continuation_unless_overridden(stopped_run):
    """--resume with another --lr, --seed or --batch-size went on silently and
    rewrote config.yaml. Such changes are refused with what changed (config.yaml untouched);
    --override goes on with them and says so; --config beside --resume is a usage error."""
    config = (stopped_run / "config.yaml").read_bytes()
    result = invoke("train", "--resume", stopped_run, "--lr", 0.1, "--seed", 3)
    assert result.exit_code == 1, result.output
    said = words(result.output)
    assert f"cannot resume {stopped_run} exactly" in said
    assert "lr 0.0003 → 0.1" in said and "seed 0 → 3" in said and "--override" in said
    assert (stopped_run / "config.yaml").read_bytes() == config

    result = invoke("train", "--resume", stopped_run, "--config", stopped_run / "config.yaml")
    assert result.exit_code == 2 and "keeps its own config.yaml" in words(result.output)

    result = invoke("train", "--resume", stopped_run, "--lr", 0.1, "--override")
    assert result.exit_code == 0, result.output
    assert "resuming with changed options: lr 0.0003 → 0.1 (config.yaml now holds them" in words(
        result.output
    )
    assert yaml.safe_load((stopped_run / "config.yaml").read_text())["lr"] == 0.1


def test_resume_with_more_photos_keeps_the_runs_steps_and_says_the_photos_changed(stopped_run):
    """The total steps were computed again from the photos found on --resume,
    which stretched the cosine schedule (and, with fewer photos, ended the run with a phantom
    "reached --max-steps"). They are kept; the change of photos is said."""
    data = Path(yaml.safe_load((stopped_run / "config.yaml").read_text())["data"])
    photos(data / "more", n=8)
    result = invoke("train", "--resume", stopped_run)
    assert result.exit_code == 0, result.output
    said = words(result.output)
    assert "the training photos changed since the run started (8 →" in said
    assert "its 6 steps in all stay" in said and "--max-steps" not in said
    assert "reached its last step" in said
    assert max(m["step"] for m in metrics(stopped_run) if "loss" in m) == 6


def test_resume_with_only_safe_changes_goes_on_and_says_them(stopped_run):
    result = invoke("train", "--resume", stopped_run, "--epochs", 4, "--workers", 1)
    assert result.exit_code == 0, result.output
    said = words(result.output)
    assert "resuming with changed options: epochs 3 → 4, workers 0 → 1" in said
    assert "8 steps in all" in said  # the length changed: computed again
    assert max(m["step"] for m in metrics(stopped_run) if "loss" in m) == 8


@pytest.mark.parametrize("kind", [".safetensors", ".pt"])
def test_a_full_disk_while_checkpointing_gives_the_clean_message(tmp_path, monkeypatch, kind):
    """A full disk while writing the weights ended in SafetensorError, and while
    writing the training state in RuntimeError: [enforce fail ...]. The temporary files of
    checkpoints/ are made links to /dev/full, where every write fails with ENOSPC as on a full
    disk; the run ends with status 1 and `cannot write FILE: No space left on device`."""
    import tempfile

    import zhangcolor.files as files

    real = tempfile.mkstemp

    def onto_a_full_disk(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        if f"{os.sep}checkpoints{os.sep}" in name and name.endswith(kind):
            os.close(fd)
            os.unlink(name)
            os.symlink("/dev/full", name)
            fd = os.open(os.devnull, os.O_RDONLY)  # closed by the caller, as mkstemp's fd
        return fd, name

    monkeypatch.setattr(files.tempfile, "mkstemp", onto_a_full_disk)
    result = invoke("train", "--config", tiny_config(tmp_path, epochs=1))
    assert result.exit_code == 1, result.output
    target = "best.safetensors" if kind == ".safetensors" else "last.state.pt"  # the first
    words = "".join(result.output.replace("│", "").split())  # the box wraps it anywhere
    expected = f"cannot write {tmp_path / 'run' / 'checkpoints' / target}: No space left on device"
    assert "".join(expected.split()) in words, result.output
    assert "Traceback" not in result.output
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.is_symlink()]
