"""The command line: subcommands of the contract, clean output, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wga", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_lists_built_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "models" in result.stdout


def test_models_lists_registry_with_availability_as_json():
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    models = {row["name"]: row for row in json.loads(result.stdout)["models"]}
    assert models["vgg16-hed"]["available"] is True
    assert sum(row["default"] for row in models.values()) == 1


def test_models_layers_keeps_tensorflow_noise_out_of_the_output():
    result = run_cli("models", "--layers", "vgg16-hed")
    assert result.returncode == 0, result.stderr
    assert "block5_conv3" in result.stdout
    assert "cuda" not in result.stderr.lower() and "absl" not in result.stderr


def test_unknown_model_is_one_clear_line_and_status_2():
    result = run_cli("models", "--layers", "vgg61")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown model 'vgg61'")
    assert "Traceback" not in result.stderr
