"""The console examples of docs/napari.md run as written, with only the shipped models, in
a real napari viewer (each ```python block on its own, as pasted into napari's console)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

DOC = Path(__file__).resolve().parents[1] / "docs" / "napari.md"


def python_blocks(text: str) -> list[str]:
    """The ```python code blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


BLOCKS = python_blocks(DOC.read_text(encoding="utf-8"))


def test_the_doc_has_console_examples():
    assert sum("viewer" in block for block in BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_console_example_runs_as_written(make_napari_viewer, capsys, index):
    from napari_wgan_denoise import list_models

    viewer = make_napari_viewer()
    before = len(viewer.layers)
    names = set(list_models())
    # a fresh install: the shipped -fast models, no user models (the isolated user folder)
    assert not any(n in names for n in ("fluo-wgan", "fluo-mse")), names
    exec(compile(BLOCKS[index], f"{DOC.name} block {index + 1}", "exec"), {"viewer": viewer})
    added = [lyr.name for lyr in viewer.layers][before:]
    if "viewer" in BLOCKS[index]:  # a console example: it adds its results to the viewer
        assert any("[" in name or "restored" in name for name in added), added
    assert "Error" not in capsys.readouterr().err
