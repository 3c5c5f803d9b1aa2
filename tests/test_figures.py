"""docs/make_figures.py runs in a real viewer (under Xvfb in CI) and writes small PNGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "make_figures.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_make_figures_small(tmp_path):
    env = dict(os.environ, NAPARI_WGAN_DENOISE_MODELS=str(tmp_path / "models"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--out", str(tmp_path), "--max-kb", "300"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = ["denoise", "compare", "finetune", "quality_speed", "learning_curves"]
    for name in names:
        png = tmp_path / f"{name}.png"
        assert png.is_file(), f"{name}.png missing:\n{result.stdout}\n{result.stderr}"
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and 1000 < len(data) <= 300 * 1024
    rows = json.loads((tmp_path / "quality_speed.json").read_text())["rows"]
    assert {r["kind"] for r in rows} >= {"model", "baseline", "noisy"}
    assert not list((tmp_path / "models").glob("*.json"))  # the script used its own folder


def test_committed_images_are_small_and_shown_in_the_readme():
    images = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert images, "docs/images has no PNG: run docs/make_figures.py"
    readme = (ROOT / "README.md").read_text()
    for name in ("denoise", "compare", "finetune", "quality_speed", "learning_curves"):
        assert f"docs/images/{name}.png" in readme, f"README does not show {name}.png"
    pages = [p.read_text() for p in (ROOT / "docs").glob("*.md")]
    for png in images:  # every committed picture is small and shown somewhere
        assert png.stat().st_size <= 300 * 1024, f"{png.name} is over 300 kB"
        shown = f"docs/images/{png.name}" in readme or any(
            f"images/{png.name}" in page for page in pages
        )
        assert shown, f"neither the README nor a docs page shows {png.name}"
