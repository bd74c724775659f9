"""Every config dataclass checks its fields where they enter, naming the field and its range; each
field's help and rule live in its metadata, and the command line shows that help."""

import dataclasses

import pytest
import yaml
from click.testing import CliRunner

from zhangcolor.cli import main
from zhangcolor.config import load_config
from zhangcolor.options import (
    ColorizeConfig,
    Head,
    ModelConfig,
    PriorConfig,
    ServeConfig,
    TrainConfig,
)

BAD = [
    (TrainConfig, "temperature", 0.0, "[0.001, 1]"),
    (TrainConfig, "temperature", 1.5, "[0.001, 1]"),
    (TrainConfig, "lr", -1, "> 0"),
    (TrainConfig, "val_fraction", 1.5, "[0, 1)"),
    (TrainConfig, "workers", -3, "integer in [0, 32]"),
    (TrainConfig, "weight_decay", -1, "≥ 0"),
    (TrainConfig, "betas", (0.9, 1.2), "two numbers in [0, 1)"),
    (TrainConfig, "crop", 30, "multiple of 4"),
    (TrainConfig, "schedule", "linear", "valid: cosine, constant"),
    (TrainConfig, "patience", 0, "integer ≥ 1, or null"),
    (TrainConfig, "huber_delta", 0, "> 0"),
    (ModelConfig, "width", 0, "in (0, 8]"),
    (ModelConfig, "encoder", "vit", "valid: resnet18"),
    (ModelConfig, "pretrained", "", "weights file"),
    (PriorConfig, "lam", 1.5, "[0, 1]"),
    (PriorConfig, "size", 4, "integer ≥ 8"),
    (ServeConfig, "port", 70000, "[0, 65535]"),
    (ServeConfig, "device", "tpu", "valid: auto, cpu, cuda"),
    (ColorizeConfig, "size", 250, "multiple of 4"),
    (ColorizeConfig, "temperature", 0, "[0.001, 1], or null"),
    (ColorizeConfig, "format", "gif", "valid: png, jpg"),
    (ColorizeConfig, "png_compress", 10, "integer in [0, 9]"),
    (ColorizeConfig, "png_compress", 1.5, "integer in [0, 9]"),
    (ColorizeConfig, "workers", 0, "integer in [1, 64]"),
    (ColorizeConfig, "backend", "tensorrt", "valid: auto, torch, onnx"),
    # upper bounds, where the value cannot fit
    (ModelConfig, "width", 1000, "in (0, 8]"),  # tried to allocate 147 GB
    (TrainConfig, "workers", 64, "integer in [0, 32]"),  # 129 processes: two loaders
    (TrainConfig, "crop", 8192, "from 16 to 4096"),
    (TrainConfig, "load_size", 65536, "integer in [16, 8192]"),
    (ColorizeConfig, "size", 40000, "multiple of 4 from 16 to 4096"),
    (ColorizeConfig, "workers", 1000, "integer in [1, 64]"),
    (PriorConfig, "workers", 1000, "integer in [1, 64]"),
]


@pytest.mark.parametrize(("cls", "name", "value", "words"), BAD, ids=lambda x: str(x))
def test_a_bad_value_is_refused_naming_the_field_and_its_range(cls, name, value, words):
    with pytest.raises(ValueError) as caught:
        cls(**{name: value})
    message = str(caught.value)
    assert f"{name}={value!r}" in message and words in message


def test_every_bad_field_is_named_at_once():
    with pytest.raises(ValueError) as caught:
        TrainConfig(lr=-1, epochs=0, schedule="linear")
    assert str(caught.value) == (
        "invalid TrainConfig: epochs=0 (must be an integer ≥ 1); lr=-1 (must be a number > 0); "
        "schedule='linear' (unknown; valid: cosine, constant)"
    )


CONFIGS = (ModelConfig, TrainConfig, PriorConfig, ServeConfig, ColorizeConfig)


def test_every_field_carries_its_help_and_the_command_line_shows_it():
    """Each field's one-line help is in its metadata; an option that fills the field shows that
    help, not words of its own (an option that means something else is the exception:
    calibrate's --model takes a classification checkpoint only; colorize's names every kind of
    model file it reads, .onnx exports included)."""
    for cls in CONFIGS:
        for spec in dataclasses.fields(cls):
            assert spec.metadata.get("help"), f"{cls.__name__}.{spec.name} has no help"
    commands = {
        "build-bins": [PriorConfig],
        "train": [TrainConfig, ModelConfig],
        "colorize": [ColorizeConfig],
        "evaluate": [ColorizeConfig],
        "calibrate": [ColorizeConfig],
        "serve": [ServeConfig],
    }
    checked = 0
    for name, classes in commands.items():
        for param in main.commands[name].params:
            for cls in classes:
                fields = {f.name: f for f in dataclasses.fields(cls)}
                exception = (name, param.name) in {("calibrate", "model"), ("colorize", "model")}
                if param.name in fields and not exception:
                    assert param.help == fields[param.name].metadata["help"], (name, param.name)
                    checked += 1
    assert checked > 50


def test_the_defaults_are_valid_and_the_head_is_an_enum_that_reads_as_its_name():
    for cls in (TrainConfig, ModelConfig, PriorConfig, ServeConfig, ColorizeConfig):
        cls()
    config = TrainConfig(model={"backbone": "unet", "head": "regression"})
    assert config.model.head is Head.REGRESSION and config.loss_kind == "l2"
    from zhangcolor.config import config_dict

    assert "head: classification" in yaml.safe_dump(config_dict(ModelConfig()))
    with pytest.raises(ValueError, match="valid: classification, regression"):
        ModelConfig(head="gan")


def test_a_yaml_temperature_of_zero_stops_train_before_any_epoch(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": str(tmp_path), "temperature": 0}))
    result = CliRunner(env={"COLUMNS": "400"}).invoke(main, ["train", "--config", str(bad)])
    assert result.exit_code == 2 and "temperature=0" in result.output
    assert not (tmp_path / "runs").exists()


def test_cli_help_shows_the_defaults_of_the_config_dataclasses():
    runner = CliRunner(env={"COLUMNS": "200"})
    text = runner.invoke(main, ["train", "--help"]).output
    assert "0.0003" in text  # TrainConfig.lr
    text = runner.invoke(main, ["build-bins", "--help"]).output
    assert "0.5" in text and "5.0" in text  # PriorConfig.lam and sigma


def test_a_yaml_syntax_error_is_a_usage_error_that_says_where(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("crop: [32\nlr: 1\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x00\xff\xfe")
    runner = CliRunner(env={"COLUMNS": "400"})
    result = runner.invoke(main, ["train", "--config", str(bad)])
    assert result.exit_code == 2, result.output
    assert "not valid YAML (line 2, column 3" in result.output
    args = ["build-bins", str(tmp_path), "-o", str(tmp_path / "o"), "--config", str(binary)]
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and "not a UTF-8 text file" in result.output


def _alias_bomb(levels: int) -> str:
    """A YAML whose last key stands for 9**levels strings through nested aliases (9 levels: 331
    bytes for 387 M strings), each level an alias list of the one before."""
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nlr: *l{levels - 1}\n"


@pytest.mark.parametrize("command", ["train", "serve"])
def test_a_yaml_alias_bomb_is_refused_at_load(tmp_path, command):
    """A 331-byte --config of nested aliases made train and serve grow memory
    without bound (the field check's message was a repr of the expansion). Aliases are refused
    while the file is read. (Five levels here, so that today's main answers at all: a message
    of 600 KB.)"""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb(5))
    result = CliRunner(env={"COLUMNS": "400"}).invoke(main, [command, "--config", str(bomb)])
    assert result.exit_code == 2, result.output
    assert "aliases (*name) are not accepted in a config" in result.output
    assert len(result.output.replace("─", "").split()) < 100  # words: no expansion


def test_messages_never_show_an_unbounded_value(tmp_path):
    """A field check, an unknown key or a head's name shows at most a few dozen
    characters of what it got, however large."""
    huge = "9" * 100_000
    cases = [
        ({"lr": huge}, "lr='999"),
        ({"epochs": list(range(10_000))}, "epochs=a list of 10000"),
        ({f"key{i}_{huge[:100]}": 1 for i in range(1000)}, "unknown option(s)"),
        ({"model": {"head": [huge[:100]] * 1000}}, "unknown head a list of 1000"),
    ]
    for values, words in cases:
        path = tmp_path / "big.yaml"
        path.write_text(yaml.safe_dump(values))
        with pytest.raises(ValueError) as caught:
            load_config(TrainConfig, path)
        assert words in str(caught.value) and len(str(caught.value)) < 1500, str(caught.value)[:300]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("model: " + "[" * 20_000 + "]" * 20_000, "nested more than 32 levels deep"),
        ("model: eccv16\n", "model in {path} must be a mapping of its options"),
        ("hints: [1, 2]\n", "hints in {path} must be a mapping of its options"),
    ],
    ids=["deep", "model-string", "hints-list"],
)
def test_config_shapes_are_usage_errors(tmp_path, text, words):
    """A file nested 20,000 deep ended in a RecursionError, and `model: eccv16`
    (a string where a mapping belongs) in an AttributeError; both are usage errors (status 2)
    that say what is wrong."""
    path = tmp_path / "shape.yaml"
    path.write_text(text)
    result = CliRunner(env={"COLUMNS": "400"}).invoke(main, ["train", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert words.format(path=path) in " ".join(result.output.split()).replace("│ │", "")
    with pytest.raises(ValueError, match="must be a mapping of the network's options"):
        TrainConfig(model="eccv16")


def test_a_colorize_batch_whose_network_cannot_fit_in_memory_is_refused(monkeypatch):
    """The network's memory is batch × size² × about 220 bytes; what is over the
    machine's memory is refused with the estimate, before any model loads."""
    import zhangcolor.options as options

    monkeypatch.setattr(options, "physical_memory", lambda: 16 * 2**30)
    assert ColorizeConfig(size=4096, batch_size=1).size == 4096  # 3.4 GB
    words = r"a batch of 5 at size 4096 takes about 17 GB .* more than this machine.s 16 GB"
    with pytest.raises(ValueError, match=words):
        ColorizeConfig(size=4096, batch_size=5)
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        main, ["colorize", "x.png", "--size", "4096", "--batch-size", "64"]
    )
    assert result.exit_code == 2 and "lower --size or --batch-size" in " ".join(
        result.output.split()
    )
