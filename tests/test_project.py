"""The docs and configs say what the code does."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from zhangcolor.prior import PriorConfig
from zhangcolor.serve import ServeConfig

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests.*?```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci_lines[-1].strip() == command


@pytest.mark.parametrize(
    ("name", "cls"), [("prior.yaml", PriorConfig), ("serve.yaml", ServeConfig)]
)
def test_yaml_configs_match_their_dataclass_defaults(name, cls):
    values = yaml.safe_load((ROOT / "configs" / name).read_text())
    assert values == {f.name: f.default for f in dataclasses.fields(cls)}


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
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"zhangcolor", "bins", "pyproject.toml", "README.md"} & set(ignored)
