"""The Triton/LLVM guard before training (training/llvm_clash.py), with a real package
named ``triton`` on the path and a real maps text."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from napari_wgan_denoise.training.llvm_clash import avoid_triton_llvm_clash, llvm_loaded

MAPS_WITH_LLVM = (
    "7f0000000000-7f0000100000 r-xp 00000000 fd:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n"
)
MAPS_WITHOUT = "7f0000000000-7f0000100000 r-xp 00000000 fd:01 124 /usr/lib/libc.so.6\n"


@pytest.fixture
def fake_triton(tmp_path, monkeypatch):
    """An importable package ``triton`` (a real file), not yet imported."""
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    yield
    sys.modules.pop("triton", None)


def test_llvm_loaded_reads_the_maps():
    assert llvm_loaded(MAPS_WITH_LLVM)
    assert not llvm_loaded(MAPS_WITHOUT)
    assert isinstance(llvm_loaded(), bool)  # this process's own maps (or none)


def test_triton_is_blocked_only_when_llvm_is_already_loaded(fake_triton):
    assert not avoid_triton_llvm_clash(MAPS_WITHOUT)
    assert "triton" not in sys.modules
    assert avoid_triton_llvm_clash(MAPS_WITH_LLVM)
    with pytest.raises(ImportError):
        import triton  # noqa: F401


def test_an_imported_triton_is_left_alone(fake_triton):
    import triton

    assert triton.LOADED
    assert not avoid_triton_llvm_clash(MAPS_WITH_LLVM)
    assert sys.modules["triton"] is triton


def test_nothing_to_block_without_triton():
    if "triton" in sys.modules or importlib.util.find_spec("triton") is not None:
        pytest.skip("triton is installed here")
    assert not avoid_triton_llvm_clash(MAPS_WITH_LLVM)
    assert "triton" not in sys.modules
