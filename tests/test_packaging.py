"""Docker files and the conda environment, checked by reading them (no Docker engine here)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def requirement_name(requirement: str) -> str:
    name = re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


@pytest.mark.parametrize("name", ["Dockerfile_CPU", "Dockerfile_GPU"])
def test_dockerfile_starts_the_backend_with_one_cmd_on_exposed_ports(name):
    instructions = dockerfile_instructions(ROOT / name)
    cmds = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert len(cmds) == 1, "exactly one CMD (the 2018 files had two and never started the API)"
    command = json.loads(cmds[0])
    assert command[:4] == ["python", "-m", "wga", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    ports = {command[command.index("--port") + 1], command[command.index("--notebook-port") + 1]}
    exposed = {
        port for keyword, rest in instructions if keyword == "EXPOSE" for port in rest.split()
    }
    assert ports <= exposed
    readme = (ROOT / "README.md").read_text()
    for port in ports:
        assert f"{port}:{port}" in readme, f"README shows how to publish port {port}"


@pytest.mark.parametrize("name", ["Dockerfile_CPU", "Dockerfile_GPU"])
def test_dockerfile_copies_paths_that_exist_and_installs_the_project(name):
    instructions = dockerfile_instructions(ROOT / name)
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _destination = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{name} copies {source}, which is missing"
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "-c constraints.txt" in runs and '-e ".[tensorflow]"' in runs  # the default backend
    assert name.lower() in (ROOT / "README.md").read_text().lower()


def test_conda_environment_lists_the_same_dependencies_as_pyproject():
    """The environment is `pip install -e '.[tensorflow]'`: the core and the default backend."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    default = project["dependencies"] + project["optional-dependencies"]["tensorflow"]
    expected = {requirement_name(requirement) for requirement in default}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed: set[str] = set()
    pip_lines: list[str] = []
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            pip_lines.extend(entry["pip"])
        else:
            listed.add(requirement_name(entry))
    listed |= {requirement_name(line) for line in pip_lines if not line.startswith("-")}
    assert "-e ." in pip_lines
    python = next(e for e in environment["dependencies"] if str(e).startswith("python"))
    assert python.endswith(project["requires-python"].removeprefix(">="))
    missing = expected - listed
    extra = listed - expected - {"python", "pip", "make"}
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    assert not extra, f"environment.yml has {sorted(extra)} that pyproject does not"
