"""Make the README's pictures: real napari screenshots and two plots.

Run from the repository root (needs a display; on a headless machine use Xvfb)::

    xvfb-run -a python3 docs/make_figures.py            # writes docs/images/*.png
    xvfb-run -a python3 docs/make_figures.py --small --out /tmp/figs   # quick (the test)

What it does, on the bundled samples and the shipped models:

* ``denoise.png`` — a napari window with the Denoise widget after denoising the noisy
  fluorescence sample with the default gray model;
* ``compare.png`` — the Compare widget after comparing the ``fluo`` twins with the clean
  image as reference and method-noise layers on: the widget's grid of input, MSE, WGAN and
  difference with each layer's name, and the table with the hallucination readout and
  PSNR / SSIM / gradient ratio;
* ``finetune.png`` — the Fine-tune widget after a short paired fine-tune on the sample
  (live validation-PSNR plot and preview);
* ``quality_speed.png`` — PSNR against seconds per megapixel for the shipped models, BM3D
  and NLM, from an ``evaluate`` JSON: ``--evaluate-json FILE`` (the ``--json`` output of
  ``wgan-denoise evaluate``, one object per line, or a JSON list), else
  ``docs/images/quality_speed.json`` when present, else computed now with the project's
  :func:`~napari_wgan_denoise.evaluation.evaluate` on the two samples (σ = 25) and saved
  there;
* ``learning_curves.png`` — validation PSNR against iteration from every model card that
  carries a curve (``training.history`` or ``finetune.history``; the fine-tune above does).

Each PNG is reduced (palette, then smaller) until it is at most ``--max-kb`` (300) kB.
User models go to a temporary folder: nothing is added to your model list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-wgan-denoise"
DEFAULT_OUT = ROOT / "docs" / "images"
EVAL_JSON_NAME = "quality_speed.json"


# ----------------------------------------------------------------------------- saving


def save_png(image: np.ndarray, path: Path, max_kb: int) -> Path:
    """Save an RGB(A) array as PNG, reducing it (256-colour palette, then downscaling)
    until the file is at most ``max_kb`` kB."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image)[..., :3].astype(np.uint8))
    colours, scale = 256, 1.0
    while True:
        out = img
        if scale < 1.0:
            size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
            out = img.resize(size, Image.Resampling.LANCZOS)
        out = out.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out.save(path, optimize=True)
        if path.stat().st_size <= max_kb * 1024:
            return path
        if colours > 64:
            colours //= 2
        else:
            scale *= 0.85


def save_figure(fig: Any, path: Path, max_kb: int, dpi: int) -> Path:
    """Render a matplotlib figure and save it within the size limit."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return save_png(rgba, path, max_kb)


# ----------------------------------------------------------------------------- napari


def _process_events(seconds: float = 0.3) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def run_widget(widget: Any, start: Callable[[], Any] | None = None, timeout_s: float = 900) -> str:
    """Start a plugin widget's run and wait for it in a Qt event loop; returns the
    outcome ("done", "cancelled" or "error")."""
    from qtpy.QtCore import QEventLoop, QTimer

    outcome: list[str] = []
    loop = QEventLoop()

    def finished(result: str) -> None:
        outcome.append(result)
        loop.quit()

    widget.run_finished.connect(finished)
    (start or widget.run)()
    if not outcome:
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
    widget.run_finished.disconnect(finished)
    if not outcome:
        raise TimeoutError(f"{type(widget).__name__} did not finish in {timeout_s} s.")
    if outcome[0] != "done":
        raise RuntimeError(
            f"{type(widget).__name__} ended with {outcome[0]!r}: {widget.status.text()}"
        )
    return outcome[0]


def _viewer(size: tuple[int, int]) -> Any:
    import napari

    viewer = napari.Viewer(show=True, title="napari-wgan-denoise")
    viewer.window._qt_window.resize(*size)
    qt_viewer = getattr(viewer.window, "_qt_viewer", None)
    controls = getattr(qt_viewer, "dockLayerControls", None)
    if controls is not None:  # more room for the canvas; the layer list stays
        controls.setVisible(False)
    return viewer


def _screenshot(viewer: Any, path: Path, max_kb: int) -> Path:
    _process_events(0.5)
    return save_png(viewer.screenshot(canvas_only=False, flash=False), path, max_kb)


def _open_sample(viewer: Any, crop: int | None) -> tuple[Any, Any]:
    """The noisy fluorescence sample and its clean original as layers (cropped if asked)."""
    from napari_wgan_denoise.data.samples import fluorescence_sample

    noisy, clean = fluorescence_sample(seed=0)
    if crop:
        noisy, clean = noisy[:crop, :crop], clean[:crop, :crop]
    limits = (float(clean.min()), float(np.percentile(clean, 99.9)))
    clean_layer = viewer.add_image(clean, name="clean", contrast_limits=limits, visible=False)
    noisy_layer = viewer.add_image(noisy, name="noisy", contrast_limits=limits)
    return noisy_layer, clean_layer


def screenshot_denoise(out: Path, size: tuple[int, int], crop: int | None, max_kb: int) -> Path:
    """Denoise the sample with the default gray model; screenshot the window."""
    from napari_wgan_denoise.models.families import default_model_for

    viewer = _viewer(size)
    try:
        noisy, _ = _open_sample(viewer, crop)
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Denoise")
        widget.layer_picker.set_layer(noisy)
        model = default_model_for(1)
        if model:
            widget.model_picker.set_value(model)
        run_widget(widget)
        noisy.visible = False  # show the result; the input is one click away
        viewer.reset_view()
        return _screenshot(viewer, out / "denoise.png", max_kb)
    finally:
        viewer.close()


def screenshot_compare(out: Path, size: tuple[int, int], crop: int | None, max_kb: int) -> Path:
    """Compare the fluo twins with a reference and method noise; grid with names."""
    from napari_wgan_denoise.models.families import default_family_for
    from napari_wgan_denoise.napari._viewer import grid_of

    viewer = _viewer(size)
    try:
        noisy, clean = _open_sample(viewer, crop)
        clean.visible = True
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compare ID-MSE vs ID-MSE-WGAN")
        widget.layer_picker.set_layer(noisy)
        family = "fluo" if "fluo" in widget.family_picker.values() else default_family_for(1)
        if family:
            widget.family_picker.set_value(family)
        widget.reference_picker.set_layer(clean)
        widget.method_noise.setChecked(True)
        widget.setMinimumWidth(size[0] * 2 // 5)  # room for the five table columns
        run_widget(widget)  # the widget's grid: input, MSE, WGAN, difference, names shown
        grid = grid_of(viewer)
        if hasattr(grid, "spacing"):
            grid.spacing = 0.05
        for layer in (noisy, *widget.last_layers):
            layer.name_overlay.font_size = 8 if size[0] < 1000 else 9
        viewer.reset_view()
        return _screenshot(viewer, out / "compare.png", max_kb)
    finally:
        viewer.close()


def screenshot_finetune(
    out: Path, size: tuple[int, int], crop: int | None, iterations: int, max_kb: int
) -> tuple[Path, dict[str, Any] | None]:
    """A short paired fine-tune of the default gray model on the sample; returns the
    screenshot and the fine-tuned model's card (which carries its learning curve)."""
    viewer = _viewer(size)
    try:
        noisy, clean = _open_sample(viewer, crop)
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune on this stack")
        widget.layer_picker.set_layer(noisy)
        widget.set_mode("paired")
        widget.clean_picker.set_layer(clean)
        patch = 32 if crop and crop < 128 else 64
        widget.train_options.update(
            patch_size=patch, batch_size=4, val_every=max(1, iterations // 5)
        )
        widget.iterations.setValue(iterations)
        widget.preview_every.setValue(max(1, iterations // 2))
        widget.save_as.setText("fluo-finetuned-on-sample")
        run_widget(widget)
        viewer.reset_view()
        return _screenshot(viewer, out / "finetune.png", max_kb), widget.last_card
    finally:
        viewer.close()


# ----------------------------------------------------------------------------- plots


def read_evaluate_json(path: Path) -> list[dict[str, Any]]:
    """Rows of ``wgan-denoise evaluate --json`` (one object per line) or a JSON list /
    ``{"rows": [...]}`` object."""
    text = path.read_text("utf-8").strip()
    if text.startswith("["):
        return list(json.loads(text))
    if text.startswith("{") and "\n" not in text.strip():
        obj = json.loads(text)
        return list(obj.get("rows", [obj]))
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and "rows" in obj:
            return list(obj["rows"])
    except json.JSONDecodeError:
        pass
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def compute_evaluation(crop: int | None, baselines: list[str]) -> list[dict[str, Any]]:
    """A small evaluation with the project's ``evaluate``: the shipped gray denoisers on the
    clean fluorescence crop and the RGB ones on a crop of the clean cells image, Gaussian
    σ = 25, plus the baselines; each row gets ``"set"``: ``"gray"`` or ``"rgb"``."""
    import tifffile

    from napari_wgan_denoise.data.samples import cells_clean, fluorescence_clean
    from napari_wgan_denoise.evaluation import evaluate
    from napari_wgan_denoise.models.registry import model_entries

    side = crop or 256
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wgan-figures-") as tmp:
        for kind, channels, image in (
            ("gray", 1, fluorescence_clean()[:side, :side]),
            ("rgb", 3, cells_clean()[128 : 128 + side, 128 : 128 + side]),
        ):
            folder = Path(tmp) / kind
            folder.mkdir()
            tifffile.imwrite(folder / f"{kind}.tif", image)
            models = [
                e.name
                for e in model_entries()
                if e.source == "shipped" and e.task == "denoise" and e.channels == channels
            ]
            for row in evaluate(
                models,
                clean=folder,
                sigma=25.0,
                baselines=baselines,
                device="cpu",
                include_noisy=True,
                notify=lambda msg: print(msg, file=sys.stderr),
            ):
                rows.append({**row, "set": kind})
    return rows


#: Label offsets in points, tried in turn until a label keeps clear of those placed.
_LABEL_OFFSETS = ((4, 3, "left"), (4, -10, "left"), (-4, 3, "right"), (-4, -10, "right"))


def _label_points(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """Name each point beside it, moving a label to another side of its point where it
    would overlap one already placed (two models of nearly the same score and speed)."""
    ax.autoscale_view()
    placed: list[tuple[float, float, float]] = []  # label box: left, right, bottom (pixels)
    scale = ax.figure.dpi / 72.0
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        px, py = ax.transData.transform((x, y))
        width = 4.2 * len(text) * scale  # ~ the width of a 7-point label
        for dx, dy, ha in _LABEL_OFFSETS:
            left = px + dx * scale - (width if ha == "right" else 0)
            bottom = py + dy * scale
            inside = ax.bbox.x0 <= left and left + width <= ax.bbox.x1
            if inside and all(
                left + width < a or left > b or abs(bottom - c) > 9 * scale for a, b, c in placed
            ):
                break
        placed.append((left, left + width, bottom))
        ax.annotate(text, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset points", ha=ha)


def plot_quality_speed(rows: list[dict[str, Any]], path: Path, max_kb: int, dpi: int) -> Path:
    """PSNR against seconds per megapixel (log), one panel per image set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({r.get("set", "all") for r in rows})
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 3.8), dpi=dpi, squeeze=False)
    for ax, name in zip(axes[0], sets):
        sub = [r for r in rows if r.get("set", "all") == name]
        noisy = [r for r in sub if r.get("kind") == "noisy"]
        points = [r for r in sub if r.get("kind") != "noisy" and r.get("s_per_mp")]
        for r in points:
            baseline = r.get("kind") == "baseline"
            colour = "tab:gray" if baseline else ("tab:red" if "wgan" in r["model"] else "tab:blue")
            ax.scatter(r["s_per_mp"], r["psnr"], c=colour, marker="s" if baseline else "o", s=36)
        ax.set_xscale("log")
        _label_points(ax, [(r["s_per_mp"], r["psnr"], r["model"]) for r in points])
        if noisy:
            ax.axhline(noisy[0]["psnr"], color="k", lw=0.8, ls=":", label="noisy input")
            ax.legend(loc="lower right", fontsize=7)
        ax.set_xlabel("seconds per megapixel (CPU, log scale)")
        ax.set_ylabel("PSNR (dB)")
        sigma = next((r.get("sigma") for r in sub if r.get("sigma")), None)
        ax.set_title(f"{name} sample" + (f", Gaussian σ = {sigma:g}" if sigma else ""), fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("Quality against speed: blue ID-MSE, red ID-MSE-WGAN, grey baselines", fontsize=9)
    fig.tight_layout()
    out = save_figure(fig, path, max_kb, dpi)
    plt.close(fig)
    return out


def card_curves(cards: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``name -> [(iteration, validation PSNR)]`` from cards that carry a curve."""
    curves = {}
    for card in cards:
        for section in ("training", "finetune"):
            history = (card.get(section) or {}).get("history") or []
            points = [
                (int(h["iteration"]), float(h["val_psnr"]))
                for h in history
                if isinstance(h, dict) and h.get("val_psnr") is not None
            ]
            if len(points) >= 2:
                label = card.get("name", "?") + (" (fine-tune)" if section == "finetune" else "")
                curves[label] = points
    return curves


def plot_learning_curves(
    curves: dict[str, list[tuple[int, float]]], path: Path, max_kb: int, dpi: int
) -> Path | None:
    """Validation PSNR against iteration for every curve; None when there is none."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=dpi)
    for label, points in curves.items():
        it, psnr = zip(*points)
        ax.plot(it, psnr, marker="o", ms=3, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title("Learning curves from the model cards", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = save_figure(fig, path, max_kb, dpi)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Make every figure; prints the files written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNGs")
    parser.add_argument(
        "--small", action="store_true", help="small window, crops and runs (for tests)"
    )
    parser.add_argument("--evaluate-json", type=Path, default=None, help="evaluate --json output")
    parser.add_argument("--max-kb", type=int, default=300, help="largest PNG size in kB")
    parser.add_argument("--iterations", type=int, default=None, help="fine-tune iterations")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="subset of: denoise compare finetune quality curves",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    small = args.small
    size = (900, 560) if small else (1400, 860)
    crop = 64 if small else None
    iterations = args.iterations or (4 if small else 150)
    dpi = 80 if small else 110
    only = set(args.only or ["denoise", "compare", "finetune", "quality", "curves"])

    user_dir = tempfile.mkdtemp(prefix="wgan-figures-models-")
    os.environ["NAPARI_WGAN_DENOISE_MODELS"] = user_dir  # fine-tuned model stays out of yours
    written: list[Path] = []
    finetune_card = None
    if "denoise" in only:
        written.append(screenshot_denoise(out, size, crop, args.max_kb))
    if "compare" in only:
        written.append(screenshot_compare(out, size, crop, args.max_kb))
    if "finetune" in only or "curves" in only:
        shot, finetune_card = screenshot_finetune(out, size, crop, iterations, args.max_kb)
        if "finetune" in only:
            written.append(shot)
    if "quality" in only:
        json_path = args.evaluate_json
        committed = DEFAULT_OUT / EVAL_JSON_NAME
        if json_path is None and not small and committed.is_file():
            json_path = committed
        if json_path is not None:
            rows = read_evaluate_json(json_path)
        else:
            rows = compute_evaluation(crop, ["nlm"] if small else ["bm3d", "nlm"])
            target = out / EVAL_JSON_NAME
            target.write_text(json.dumps({"rows": rows}, indent=1, default=str) + "\n", "utf-8")
            written.append(target)
        written.append(plot_quality_speed(rows, out / "quality_speed.png", args.max_kb, dpi))
    if "curves" in only:
        from napari_wgan_denoise.models.registry import model_entries

        cards = [e.card for e in model_entries() if e.source == "shipped"]
        cards += [finetune_card] if finetune_card else []
        path = plot_learning_curves(
            card_curves(cards), out / "learning_curves.png", args.max_kb, dpi
        )
        if path is not None:
            written.append(path)
    for path in written:
        print(f"{path}  ({path.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
