"""The command line as a whole: its thread policy, and usage errors that name the option the
user actually gave (never another command's, never an object's repr)."""

from __future__ import annotations

import importlib.util
import os
import re

import click
import pytest
import yaml
from click.testing import CliRunner

from zhangcolor.cli import main


def invoke(*args: str, env: dict | None = None):
    return CliRunner(env={"COLUMNS": "400", **(env or {})}).invoke(main, list(args))


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_every_command_sets_the_passive_thread_policy_unless_the_user_did(monkeypatch, given):
    """The group sets it before any command runs (and so before torch loads: the command line
    starts without torch, tests/test_structure.py); a user's value stands."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if given is not None:
        monkeypatch.setenv("OMP_WAIT_POLICY", given)
    assert invoke("models", "--json").exit_code == 0
    assert os.environ["OMP_WAIT_POLICY"] == (given or "PASSIVE")


def test_the_thread_policy_is_in_the_help():
    assert "OMP_WAIT_POLICY=PASSIVE" in invoke("--help").output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["colorize", "x.jpg", "-t", "0"], "--temperature"),
        (["colorize", "x.jpg", "--size", "250"], "--size"),
        (["evaluate", ".", "--size", "250"], "--size"),
        (["calibrate", ".", "--model", "m.safetensors", "--size", "250"], "--size"),
        (["export", "onnx", "--size", "250"], "--size"),
        (["build-bins", ".", "-o", "bins", "--lambda", "2"], "--lambda"),
        (["train", "--data", ".", "--crop", "30"], "--crop"),
        (["train", "--data", ".", "--width", "0"], "--width"),
        (["serve", "--port", "70000"], "--port"),
    ],
)
def test_a_bad_value_names_the_flag_it_came_from(args, flag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert re.search(rf"Invalid value for [^:]*'{flag}'", text), text
    assert "--config / flags" not in text and "Config:" not in text  # no class names
    assert " at 0x" not in text


def test_a_bad_value_in_a_yaml_names_the_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": str(tmp_path), "crop": 30}))
    result = invoke("train", "--config", str(bad))
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "Invalid value for --config" in text and "crop=30" in text


def test_train_needs_a_folder_of_photos_unless_the_config_names_one_that_exists(
    tmp_path, monkeypatch
):
    """The shipped recipe names no folder of photos, so train asks for --data; a config that
    names a folder which is not there is told so. Neither writes anything."""
    monkeypatch.chdir(tmp_path)
    result = invoke("train")
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "Missing option '--data'" in text, text
    assert "is not a folder here" not in text  # the recipe names none
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"data": "absent-photos"}))
    result = invoke("train", "--config", str(mine))
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "Missing option '--data'" in text, text
    assert "absent-photos is not a folder here" in text
    assert not (tmp_path / "runs").exists()


def test_train_without_config_starts_from_the_shipped_recipe():
    from zhangcolor.config import shipped_configs

    param = next(p for p in main.commands["train"].params if p.name == "config_path")
    assert param.default == "default"
    assert (
        param.process_value(click.Context(main.commands["train"]), "default")
        == (shipped_configs()["default"])
    )


def test_tensorboard_without_its_package_is_refused_before_a_run_folder_exists(
    tmp_path, monkeypatch
):
    (tmp_path / "photos").mkdir()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name)
    )
    out = tmp_path / "run"
    result = invoke("train", "--data", str(tmp_path / "photos"), "--out", str(out), "--tensorboard")
    assert result.exit_code == 2 and "zhangcolor[tensorboard]" in result.output
    assert not out.exists()


def test_a_combination_names_the_flags_involved_and_not_the_default_config(tmp_path):
    """train always reads a config (the shipped recipe by default): a problem of the user's
    flags is theirs, not --config's."""
    result = invoke("train", "--data", str(tmp_path), "--head", "regression", "--loss", "ce")
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "Invalid value for '--head'" in text, text
    assert "--config" not in text
    result = invoke("train", "--data", str(tmp_path), "--crop", "30", "--lr", "-1")
    text = " ".join(result.output.replace("│", " ").split())
    assert "'--lr', '--crop'" in text and "crop=30" in text and "lr=-1" in text
