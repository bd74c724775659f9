"""The docs and configs say what the code does."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from zhangcolor.options import PriorConfig, ServeConfig

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests.*?```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_lines = [line.strip() for line in ci.splitlines() if line.strip()]
    assert ci_lines[-1] == command
    install = re.search(r"## Install.*?```bash\n(.+?)\n```", readme, re.S).group(1)
    for line in ("pip install .", 'pip install ".[dev]"'):
        assert line in install
        assert any(ci_line.startswith(line) for ci_line in ci_lines), line
    assert "python3 -m venv" in ci  # a new environment every run


def test_no_shipped_config_restates_a_default():
    """A shipped YAML holds only what differs from its dataclass's defaults, so that a value
    there is a choice of that recipe, and the meaning of each field stays in its metadata."""
    from zhangcolor.config import config_dict, shipped_configs
    from zhangcolor.options import TrainConfig

    for name, path in shipped_configs().items():
        cls = {"prior": PriorConfig, "serve": ServeConfig}.get(name, TrainConfig)
        defaults = config_dict(cls())
        values = yaml.safe_load(path.read_text()) or {}
        assert path.read_text().startswith("# "), f"{name}.yaml says what it is for first"
        for key, value in values.items():
            nested = value.items() if isinstance(value, dict) else [(None, value)]
            for inner, v in nested:
                default = defaults[key] if inner is None else defaults[key][inner]
                where = key if inner is None else f"{key}.{inner}"
                assert v != default, f"{name}.yaml restates the default {where}: {v!r}"


def shell_commands(lines: list[str]) -> list[str]:
    """The commands of shell lines, split on the ``&&`` outside parentheses and quotes, with
    runs of spaces made one and pip's --quiet dropped."""
    commands = []
    for line in lines:
        depth, quote, start = 0, "", 0
        for i, c in enumerate(line):
            if quote:
                quote = "" if c == quote else quote
            elif c in "'\"":
                quote = c
            elif c in "()":
                depth += 1 if c == "(" else -1
            elif line.startswith("&&", i) and depth == 0:
                commands.append(line[start:i])
                start = i + 2
        commands.append(line[start:])
    commands = [" ".join(c.replace(" --quiet", "").split()) for c in commands]
    return [c for c in commands if c]


def test_the_dockerfile_installs_and_checks_what_ci_proves():
    """The image's installs are CI's (.ci/run): `pip install .` and its offline colorize, then an
    extra that CI's dev extra holds, then `pip check`; torch's CPU wheels are the one addition."""
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci = shell_commands([line for line in ci_lines if line and not line.startswith("#")])
    ci = ci[ci.index("pip install .") : ci.index("pip check") + 1]
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    docker = shell_commands([line[4:] for line in text.splitlines() if line.startswith("RUN ")])
    installs = [c for c in docker if c.startswith("pip install")]
    torch_cpu = "pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision"
    assert len(installs) == 3 and installs[:2] == [torch_cpu, "pip install ."]
    extras = re.fullmatch(r'pip install "\.\[([\w,-]+)\]"', installs[2]).group(1).split(",")
    tomllib = pytest.importorskip("tomllib")
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = dev["optional-dependencies"]["dev"]
    held = re.search(r"zhangcolor\[([\w,-]+)\]", " ".join(dev)).group(1).split(",")
    assert "serve" in extras and set(extras) <= set(held), f"CI's dev extra lacks {extras}"
    assert 'pip install ".[dev]"' in ci
    ci = [installs[2] if c == 'pip install ".[dev]"' else c for c in ci]
    after_torch = iter(docker[docker.index(torch_cpu) + 1 :])
    assert all(step in after_torch for step in ci), f"the Dockerfile lacks CI's steps {ci}"
    assert docker.index("pip check") > docker.index(installs[2])


def test_the_dockerfile_copies_what_exists_serves_as_a_user_and_checks_healthz():
    """The image cannot be built here (no Docker engine), so read it."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert 'pip install ".[serve]"' in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.M)
    assert '"--host", "0.0.0.0"' in dockerfile
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not {"zhangcolor", "pyproject.toml", "README.md", "LICENSE"} & set(ignored)


def test_every_shipped_config_is_installed_reachable_by_name_and_valid():
    """The configs travel with the package, so `--config NAME` works after a plain install,
    and the file-path form still works."""
    from zhangcolor.config import load_config, resolve_config, shipped_configs
    from zhangcolor.train import TrainConfig

    shipped = shipped_configs()
    assert {"default", "eccv16", "eccv16-compact", "unet-effnet-classification"} <= set(shipped)
    assert (
        "site-packages" in str(shipped["default"])
        or (ROOT / "zhangcolor") in shipped["default"].parents
    )
    for name, path in shipped.items():
        assert resolve_config(name) == path == resolve_config(f"{name}.yaml")
        if name not in ("prior", "serve"):
            load_config(TrainConfig, path)  # every training config is valid as it ships
    local = ROOT / "zhangcolor" / "configs" / "eccv16.yaml"
    assert resolve_config(str(local)) == local
    with pytest.raises(ValueError, match=r"shipped: .*unet-effnet-classification"):
        resolve_config("no-such-config")


def shipped_config(name: str) -> dict:
    """A shipped config as the run sees it: the dataclass's defaults, then the YAML's values."""
    from zhangcolor.config import config_dict, load_config, resolve_config
    from zhangcolor.options import TrainConfig

    cls = {"prior": PriorConfig, "serve": ServeConfig}.get(name, TrainConfig)
    return config_dict(load_config(cls, resolve_config(name)))


def test_every_shipped_config_resolves_to_its_frozen_values():
    """tests/data/shipped-configs.json holds every shipped config as it resolved when the YAMLs
    still spelled out every field: a YAML may leave out a default, but neither a YAML edit nor a
    new default may change a recipe (default.yaml is the shipped model's). A new field adds its
    default here."""
    from zhangcolor.config import shipped_configs

    frozen = json.loads((ROOT / "tests" / "data" / "shipped-configs.json").read_text())
    assert sorted(frozen) == sorted(shipped_configs())
    for name, values in frozen.items():
        assert shipped_config(name) == values, name


def test_the_gpu_recipe_is_the_shipped_recipe_but_for_the_gpu_keys():
    """configs/default-gpu.yaml is the shipped model's run for one GPU (benchmarks/gpu_train.sh):
    it may change only what a GPU changes, so a new recipe cannot land in one and not the other."""
    cpu, gpu = shipped_config("default"), shipped_config("default-gpu")
    differ = {k for k in cpu if cpu[k] != gpu[k]}
    assert differ == {"out", "crop", "batch_size", "max_steps", "precision", "workers"}
    assert (gpu["crop"], gpu["precision"]) == (224, "auto")
    # the same number of photos seen, in bigger batches
    assert gpu["max_steps"] * gpu["batch_size"] == cpu["max_steps"] * cpu["batch_size"]


def test_the_cli_reference_is_what_its_script_writes():
    """docs/cli.md is made from the commands and the config fields' metadata; a changed option
    or help text must come with the page regenerated (python docs/make_cli_reference.py)."""
    spec = importlib.util.spec_from_file_location(
        "make_cli_reference", ROOT / "docs" / "make_cli_reference.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = script.reference()
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == text, (
        "docs/cli.md is out of date: run python docs/make_cli_reference.py"
    )
    for option in ("--png-compress", "--max-upload-mb", "--lambda", "--select-on"):
        assert f"`{option} " in text
    assert "| `crop_scale` | [0.25, 1.0] |" in text  # a YAML-only field, with its default


def test_the_licence_pyproject_names_is_there():
    tomllib = pytest.importorskip("tomllib")

    licence = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert "MIT" in str(licence)
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_pyproject_lists_every_package_for_setuptools_to_install():
    """setuptools installs only the packages pyproject.toml lists: a subpackage left out is
    missing from a plain `pip install .` (CI's) while the tests still pass from the tree."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "zhangcolor").rglob("__init__.py")
    }
    assert sorted(setuptools["packages"]) == sorted(found)
