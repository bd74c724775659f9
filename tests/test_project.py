"""The docs and configs say what the code does."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from zhangcolor.prior import PriorConfig

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests.*?```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci_lines[-1].strip() == command


@pytest.mark.parametrize(("name", "cls"), [("prior.yaml", PriorConfig)])
def test_yaml_configs_match_their_dataclass_defaults(name, cls):
    values = yaml.safe_load((ROOT / "configs" / name).read_text())
    assert values == {f.name: f.default for f in dataclasses.fields(cls)}
