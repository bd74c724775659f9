"""colorize's results carry a mark, so that a later colorize of a folder holding them skips
them (unless --include-outputs) instead of colorizing them again; a run where every file
succeeds ends with one line, a run with failures or skips with a table of those alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from makers import noise
from PIL import Image
from test_colorize import invoke, make_checkpoint

from zhangcolor.colorize_files import is_colorized, plan_jobs
from zhangcolor.images import OUTPUT_MARK, write_image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_results_carry_the_mark_and_other_images_do_not(tmp_path, fmt):
    result = tmp_path / f"result.{fmt}"
    write_image(Image.new("RGB", (8, 8), (200, 30, 30)), result, fmt)
    with Image.open(result) as image:
        mark = image.info.get("Software" if fmt == "png" else "comment")
    assert mark in (OUTPUT_MARK, OUTPUT_MARK.encode())
    assert is_colorized(result)
    photo = tmp_path / f"photo.{fmt}"
    Image.new("RGB", (8, 8), (20, 30, 200)).save(photo, comment=b"a holiday")
    (tmp_path / "notes.png").write_text("not an image")
    assert not is_colorized(photo) and not is_colorized(tmp_path / "notes.png")


def test_a_folder_holding_earlier_results_colorizes_only_the_photos(checkpoint, tmp_path):
    """The trap: colorize one photo into a folder inside the photo folder, then colorize the
    photo folder: the earlier result is reported as skipped, not colorized again."""
    photos = tmp_path / "photos"
    for i in range(3):
        noise(photos / f"{i}.jpg", size=(40, 32), seed=i)
    first = invoke("colorize", photos / "0.jpg", "-o", photos / "colorized", "--model", checkpoint)
    assert first.exit_code == 0, first.output
    assert (photos / "colorized" / "0.png").is_file()
    again = invoke("colorize", photos, "-o", tmp_path / "out", "--model", checkpoint)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["0.png", "1.png", "2.png"]
    assert "3 done, 1 skipped, 0 failed" in again.output
    assert "colorized by zhangcolor already" in again.output
    jobs, outcomes = plan_jobs([str(photos)], tmp_path / "o", "png", include_outputs=True)
    assert len(jobs) == 4 and not outcomes


def test_include_outputs_colorizes_them_again(checkpoint, tmp_path):
    result = tmp_path / "earlier.png"
    write_image(Image.new("RGB", (40, 32), (120, 120, 120)), result, "png")
    args = ["colorize", result, "-o", tmp_path / "out", "--model", checkpoint]
    assert "skipped" in invoke(*args).output
    assert invoke(*args, "--include-outputs").exit_code == 0
    assert (tmp_path / "out" / "earlier.png").is_file()


def test_all_done_is_one_line_and_only_problems_get_a_table(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    for i in range(12):
        noise(photos / f"{i:02d}.png", size=(24, 24), seed=i)
    done = invoke("colorize", photos, "-o", tmp_path / "out", "--model", checkpoint)
    assert done.exit_code == 0
    lines = [x for x in done.output.splitlines() if x.strip() and "colorizing" not in x]
    assert lines == [f"colorized 12 photos → {tmp_path / 'out'}"], done.output
    (photos / "broken.png").write_bytes(b"not a png")
    mixed = invoke("colorize", photos, "-o", tmp_path / "out", "--model", checkpoint)
    assert mixed.exit_code == 1
    assert "0 done, 12 skipped, 1 failed" in mixed.output and "broken.png" in mixed.output
    assert "… and" not in mixed.output and mixed.output.count("skipped") == 13  # title + rows


def test_the_model_option_names_every_kind_of_model_file():
    from click.testing import CliRunner

    from zhangcolor.cli import main

    text = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["colorize", "--help"]).output
    assert ".onnx" in text and ".safetensors" in text
