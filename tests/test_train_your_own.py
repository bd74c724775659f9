"""docs/train-your-own.md's five commands, as the page gives them, take a folder of generated
photos to a packaged model with its calibrated T, and that model colorizes a photo. Only options
that make them fast are added (tiny crops and working sizes, two steps)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from zhangcolor.cli import main
from zhangcolor.model_file import read_model
from zhangcolor.split import split_files

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "train-your-own.md"
#: Per command, what makes it fast enough for a test.
FAST = {
    "build-bins": ["--size", "32"],
    "train": ["--epochs", "1", "--max-steps", "2", "--crop", "32", "--batch-size", "4",
              "--workers", "0"],
    "calibrate": ["--size", "32"],
    "package-model": [],
    "colorize": ["--size", "32"],
}  # fmt: skip


def page_commands() -> list[list[str]]:
    """The commands of the page's first shell block (as benchmarks/bench_train_your_own.py
    reads them)."""
    block = re.search(r"```sh\n(.*?)```", PAGE.read_text(), re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("zhangcolor ")]


def photos(folder: Path, n: int = 40, size: int = 48) -> Path:
    """Smooth colour gradients, each with its own hues."""
    folder.mkdir(parents=True)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(n):
        rgb = np.stack([(x * 5 + 40 * i) % 256, (y * 5) % 256, ((x + y) * 3 + 25 * i) % 256], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"photo-{i:02d}.jpg", quality=95)
    return folder


def test_the_pages_five_commands_train_calibrate_package_and_colorize(tmp_path, monkeypatch):
    commands = page_commands()
    assert [c[1] for c in commands] == list(FAST)
    monkeypatch.chdir(tmp_path)
    _, val = split_files(photos(tmp_path / "my-photos"))
    assert val, "the generated folder must hold photos of the validation split"
    Image.fromarray(np.full((40, 56), 120, np.uint8)).save(tmp_path / "old-photo.jpg")
    runner = CliRunner(env={"COLUMNS": "400"})
    outputs = {}
    for command in commands:
        name = command[1]
        result = runner.invoke(main, [*command[1:], *FAST[name]])
        assert result.exit_code == 0, f"{shlex.join(command)}:\n{result.output}"
        outputs[name] = result.output

    # calibrate's advice is the page's next command, word for word.
    advice = outputs["calibrate"].split("Store T in the model:")[1].strip().splitlines()[0]
    assert shlex.split(advice) == commands[3]
    assert f"only {len(val)} photos were scored" in outputs["calibrate"]  # and T is uncertain

    calibration = json.loads(Path("runs/mine/calibration.json").read_text())
    model = read_model("mine.safetensors")
    assert model.record.temperature == calibration["temperature"]
    assert calibration["images"] == len(val) and calibration["data"] == "my-photos"
    # The training photos are named by what they are, not by this machine's path.
    names = sorted(p.name for p in (tmp_path / "my-photos").iterdir())
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    assert model.provenance["photos"] == {
        "folder": "my-photos",
        "images": 40,
        "paths_sha256": digest,
    }
    assert str(tmp_path) not in json.dumps(model.provenance)
    packaged = json.loads(Path("mine.json").read_text())
    assert str(tmp_path) not in json.dumps({k: v for k, v in packaged.items() if k != "source"})

    with Image.open("colorized/old-photo.png") as result:
        assert result.size == (56, 40) and result.mode == "RGB"
    assert outputs["colorize"].strip().endswith("colorized/old-photo.png")

    # The page's colour-point commands add the point layers to that model and package both.
    block = re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.S)[1]
    points = [shlex.split(line) for line in block.splitlines() if line.startswith("zhangcolor ")]
    assert [c[1] for c in points] == ["train", "package-model"]
    for command in points:
        result = runner.invoke(main, [*command[1:], *FAST[command[1]]])
        assert result.exit_code == 0, f"{shlex.join(command)}:\n{result.output}"
    guided = read_model("mine-points.safetensors")
    assert guided.record.network.hints and guided.record.temperature == calibration["temperature"]
    assert json.loads(Path("mine-points.json").read_text())["point_strength"] == 6
