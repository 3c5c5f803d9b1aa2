"""Train the full-size SRResNet twins ``{gray,cells,fluo}-{mse,wgan}`` on a lent GPU machine,
in calls of at most 9 minutes that resume from the last checkpoint (issue 14, item 7).

The GPU machine has Python, torch, safetensors, scikit-image and tifffile, no napari and no
network, and ``../shared`` does not travel; what a call needs travels in ``carry`` (64 MiB
with the tracked files) and what it trained comes back through ``$OUT`` (8 files of at most
16 MiB). So one family at a time, in three steps::

    # 1. here: copy the family's data under runs/gpu/data, fetch the wheels of PyYAML and
    #    tqdm into .whl, and print the device command with its carry list and size
    python benchmarks/gpu_zoo.py prepare gray
    # 2. on the GPU machine (the printed command): trains gray-mse (configs/gpu/gray-mse.yaml)
    #    until 8 minutes are used, then its twin gray-wgan from the MSE run's kept checkpoint;
    #    the state (checkpoints, models, logs) goes to $OUT as a tar in parts of 15 MiB
    python benchmarks/gpu_zoo.py train gray --minutes 8 --out "$OUT"
    # 3. here: unpack what came back into runs/gpu/gray, and go to 1 for the next call
    python benchmarks/gpu_zoo.py collect gray /work/.device/.../files

Once both runs of a family have finished, ship them as the -fast models are shipped
(``benchmarks/ship.py runs/gpu/gray/gray-mse=gray-mse runs/gpu/gray/gray-wgan=gray-wgan ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from napari_wgan_denoise.models.model import model_paths, read_card
from napari_wgan_denoise.validation import load_config_file

DATA = Path("../shared/data")
#: The family's data: (source folder, folder under ROOT/data), as the configs name them.
FAMILY_DATA = {
    "gray": [(DATA / "gray/train400", "gray/train400")],
    "cells": [
        (DATA / "cells/cellavision_train", "cells/cellavision_train"),
        (DATA / "gray/train400", "gray/train400"),
        (Path("runs/data/package_colour2"), "package_colour2"),
        (Path("runs/data/package_he"), "package_he"),
    ],
    "fluo": [
        (DATA / "fluo/fmd_confocal_bpae_b", "fluo/fmd_confocal_bpae_b"),
        (DATA / "fluo/clean", "fluo/clean"),
        (DATA / "gray/train400", "gray/train400"),
    ],
}
#: How the package photographs are made, for a cells run that lacks them.
PACKAGE_COMMANDS = {
    "package_colour2": "python benchmarks/package_colour.py runs/data/package_colour2 --extra",
    "package_he": "python benchmarks/package_colour.py runs/data/package_he --only-he",
}
WHEELS = ("PyYAML==6.0.2", "tqdm==4.67.1")
TRAVEL_LIMIT = 64 << 20
#: The largest state a later call carries: the WGAN run's last checkpoint (the 16 x 64
#: SRResNet and its critic, each with Adam's moments: 21.5 MiB).
STATE_ALLOWANCE = 22 << 20
PART = 15 << 20
#: Seconds a stopped run gets to write its checkpoint and model.
STOP_GRACE = 120


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _tracked_size() -> int:
    files = subprocess.run(
        ["git", "ls-files", "-z"], capture_output=True, check=True, text=True
    ).stdout.split("\0")
    return sum(Path(f).stat().st_size for f in files if f and Path(f).is_file())


def _copy_tree(src: Path, dst: Path, fmd_frames: int | None) -> None:
    """Copy ``src`` to ``dst`` (skipped when it is there already); of an FMD folder, only the
    first ``fmd_frames`` raw frames of each field (the validation fields 3 and 11 too: the
    device's learning curve reads those, the scores here all 20 frames)."""
    if dst.exists():
        return
    if fmd_frames is None or not (src / "raw").is_dir():
        shutil.copytree(src, dst)
        return
    shutil.copytree(src / "gt", dst / "gt")
    for field in sorted((src / "raw").iterdir()):
        (dst / "raw" / field.name).mkdir(parents=True)
        for f in sorted(field.glob("*.png"))[:fmd_frames]:
            shutil.copy2(f, dst / "raw" / field.name / f.name)


def _names(root: Path, family: str) -> dict[str, Path]:
    return {kind: root / family / f"{family}-{kind}" for kind in ("mse", "wgan")}


def carry_list(root: Path, family: str) -> list[str]:
    """The paths a device call for ``family`` carries: its data, the wheels and the
    checkpoints the next call resumes from."""
    paths = [str(root / "data" / dst) for _, dst in FAMILY_DATA[family]] + [".whl"]
    for out in _names(root, family).values():
        ckpt = Path(f"{out}-checkpoints")
        if ckpt.is_dir():
            paths.append(str(ckpt))
    return paths


def prepare(family: str, root: Path, fmd_frames: int | None, wheels: bool) -> int:
    """Copy the data, fetch the wheels and print the device command; 1 if it cannot travel."""
    for src, dst in FAMILY_DATA[family]:
        if not src.is_dir():
            how = PACKAGE_COMMANDS.get(src.name, f"the data folder {src}")
            print(f"gpu_zoo: {src} is missing; make it first: {how}", file=sys.stderr)
            return 1
        _copy_tree(src, root / "data" / dst, fmd_frames)
    if wheels and not any(Path(".whl").glob("tqdm-*.whl")):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.12", "--implementation", "cp",
             "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
             "-d", ".whl", *WHEELS],
            check=True,
        )  # fmt: skip
    carry = carry_list(root, family)
    sizes = {p: _size(Path(p)) for p in carry if Path(p).exists()}
    state = sum(size for p, size in sizes.items() if "-checkpoints" in p)
    fixed = _tracked_size() + sum(sizes.values()) - state
    travel = fixed + state
    print(
        f"carry ({travel / 2**20:.1f} MiB with the tracked files now, "
        f"{(fixed + STATE_ALLOWANCE) / 2**20:.1f} MiB with the largest checkpoint a later call "
        f"carries): {json.dumps(carry)}"
    )
    print(
        "command: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "
        "--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 "
        f"&& python3 benchmarks/gpu_zoo.py train {family} --minutes 8 --out $OUT"
    )
    if max(travel, fixed + STATE_ALLOWANCE) > TRAVEL_LIMIT:
        print(
            "gpu_zoo: that is over the 64 MiB a call carries; for fluo, copy fewer raw FMD "
            "frames of the training fields: rm -r runs/gpu/data/fluo/fmd_confocal_bpae_b, "
            "then prepare fluo --fmd-frames 2.",
            file=sys.stderr,
        )
        return 1
    return 0


def _iteration(checkpoint: Path) -> int:
    meta = Path(f"{checkpoint}.json")
    return int(json.loads(meta.read_text())["iteration"]) if meta.exists() else 0


def _reached(out: Path) -> int:
    """The iteration a run has reached: its model card's or its last checkpoint's."""
    saved = read_card(out)["training"]["iterations"] if model_paths(out)[1].exists() else 0
    return max(int(saved), _iteration(Path(f"{out}-checkpoints/last")))


def _run(
    config: Path, out: Path, deadline: float, stop_after: int | None = None
) -> tuple[int, str]:
    """Train ``config`` into ``out`` until it ends or ``deadline`` (then stopped with SIGINT,
    which saves a checkpoint and the model so far), or once its last checkpoint has reached
    ``stop_after`` iterations (for checks of resuming); resumes from its last checkpoint.
    Returns the exit status (0 finished, 130 or -2 stopped) and a line for the report."""
    last = Path(f"{out}-checkpoints/last")
    cmd = [sys.executable, "-m", "napari_wgan_denoise.cli", "train", "--config", str(config)]
    cmd += ["-o", str(out), "--overwrite", "-q"]
    if last.with_suffix(".safetensors").exists():
        cmd += ["--resume", str(last)]
    child = subprocess.Popen(cmd)
    while child.poll() is None:
        reached = stop_after is not None and _iteration(last) >= stop_after
        if time.monotonic() >= deadline or reached:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            break
        time.sleep(0.2)
    return child.returncode, f"exit {child.returncode}, iteration {_iteration(last)}"


def _prune(root: Path, family: str, total: dict[str, int], keep: int | None) -> None:
    """Remove the checkpoints no later call needs, so that the state fits ``$OUT``: the
    intermediate ones, the MSE run's kept one once its twin has started from it, and the
    weights of a finished run's last one (its JSON stays: it says the run is finished)."""
    names = _names(root, family)
    wgan_started = Path(f"{names['wgan']}-checkpoints/last.json").exists()
    for kind, out in names.items():
        ckpt = Path(f"{out}-checkpoints")
        for f in ckpt.glob("iter-*"):
            if not (kind == "mse" and f.name.startswith(f"iter-{keep}.") and not wgan_started):
                f.unlink()
        if _reached(out) >= total[kind]:
            Path(ckpt / "last.safetensors").unlink(missing_ok=True)


def pack(root: Path, family: str, out: Path) -> list[Path]:
    """``root/family`` as ``state.tar.NN`` parts of at most 15 MiB in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tar_path = out / "state.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(root / family, arcname=family)
    parts = []
    with tar_path.open("rb") as f:
        while chunk := f.read(PART):
            parts.append(out / f"state.tar.{len(parts):02d}")
            parts[-1].write_bytes(chunk)
    tar_path.unlink()
    return parts


def train(
    family: str,
    root: Path,
    configs: Path,
    minutes: float,
    out: Path | None,
    stop_after: int | None = None,
) -> int:
    """Train the family's MSE run, then its WGAN twin, for at most ``minutes`` in all
    (``stop_after``: stop each run once its checkpoint has reached that iteration); 1 if a
    run failed (the state is packed all the same)."""
    deadline = time.monotonic() + 60.0 * minutes
    names = _names(root, family)
    config = {kind: configs / f"{family}-{kind}.yaml" for kind in names}
    settings = {kind: load_config_file(config[kind]) for kind in names}
    total = {kind: int(settings[kind]["iterations"]) for kind in names}
    keep = next(iter(settings["mse"].get("keep_checkpoints") or []), None)
    (root / family).mkdir(parents=True, exist_ok=True)
    report: dict[str, str] = {}
    failed = False
    for kind in ("mse", "wgan"):
        if _reached(names[kind]) >= total[kind]:
            report[kind] = "finished before"
            continue
        resumable = Path(f"{names[kind]}-checkpoints/last.json").exists()
        if kind == "wgan" and not resumable and _reached(names["mse"]) < total["mse"]:
            report[kind] = "waits for the MSE run to finish"
            continue
        if deadline - time.monotonic() < min(60.0, 15.0 * minutes):
            report[kind] = "no time left in this call"
            continue
        code, report[kind] = _run(config[kind], names[kind], deadline, stop_after)
        failed = failed or code not in (0, 130, -signal.SIGINT)
    _prune(root, family, total, keep)
    print(json.dumps(report))
    if out is not None:
        for part in pack(root, family, out):
            print(f"{part} ({part.stat().st_size / 2**20:.1f} MiB)")
    return 1 if failed else 0


def collect(family: str, root: Path, folder: Path) -> int:
    """Unpack the ``state.tar.NN`` parts of ``folder`` into ``root/family``: each checkpoint
    folder replaces the one here, models and logs are written over theirs."""
    parts = sorted(folder.glob("state.tar.*"))
    if not parts:
        print(f"gpu_zoo: no state.tar.NN parts in {folder}.", file=sys.stderr)
        return 1
    unpacked = root / f".{family}-unpacked"
    if unpacked.exists():
        shutil.rmtree(unpacked)
    unpacked.mkdir(parents=True)
    tar_path = unpacked / "state.tar"
    with tar_path.open("wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    with tarfile.open(tar_path) as tar:
        tar.extractall(unpacked, filter="data")
    target = root / family
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted((unpacked / family).iterdir()):
        here = target / entry.name
        if entry.is_dir() and here.exists():
            shutil.rmtree(here)
        if entry.is_dir():
            shutil.move(str(entry), str(here))
        else:
            shutil.copy2(entry, here)
    shutil.rmtree(unpacked)
    print(f"unpacked {len(parts)} part(s) into {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("prepare", "train", "collect"):
        p = sub.add_parser(name)
        p.add_argument("family", choices=sorted(FAMILY_DATA))
        p.add_argument("--root", type=Path, default=Path("runs/gpu"))
        if name == "prepare":
            p.add_argument("--fmd-frames", type=int, default=None, help="raw frames per field")
            p.add_argument("--no-wheels", action="store_true")
        if name == "train":
            p.add_argument("--minutes", type=float, default=8.0)
            p.add_argument("--configs", type=Path, default=Path("configs/gpu"))
            p.add_argument("--out", type=Path, default=None, help="folder for the state parts")
        if name == "collect":
            p.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    if args.command == "prepare":
        return prepare(args.family, args.root, args.fmd_frames, not args.no_wheels)
    if args.command == "train":
        return train(args.family, args.root, args.configs, args.minutes, args.out)
    return collect(args.family, args.root, args.folder)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
