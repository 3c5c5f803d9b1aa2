"""The repository keeps its promises: README commands, CI script and manifest agree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_gives_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "wgan-denoise demo" in commands[0] and "torch==2.13.0" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci]
    assert ci[-1].strip() == test_command  # it is the last thing CI does


def test_manifest_symlink():
    link = ROOT / "src" / "napari_wgan_denoise" / "napari.yaml"
    assert link.is_symlink() and link.resolve() == (ROOT / "napari.yaml").resolve()


def test_torch_requirement_admits_the_cpu_build():
    text = (ROOT / "pyproject.toml").read_text()
    (spec,) = re.findall(r'"torch([^"]*)"', text)
    assert spec.startswith(">=") and "<3" in spec  # 2.13.0 satisfies it, no == pin
