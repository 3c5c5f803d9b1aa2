"""Scratch: `wgan-denoise train` with every generator weight frozen except those whose names
start with $TRAIN_ONLY (comma-separated prefixes, default "refine.")."""

import os
import sys

from napari_wgan_denoise.training import trainer as T

PREFIXES = tuple(os.environ.get("TRAIN_ONLY", "refine.").split(","))
_orig = T.Trainer.__init__


def _init(self, *a, **k):
    _orig(self, *a, **k)
    n_train = 0
    for n, p in self.generator.named_parameters():
        if not n.startswith(PREFIXES):
            p.requires_grad_(False)
        else:
            n_train += p.numel()
    print(f"training {n_train} weights ({PREFIXES})", file=sys.stderr)


T.Trainer.__init__ = _init
from napari_wgan_denoise.cli.__main__ import main  # noqa: E402

sys.argv[0] = "wgan-denoise"
sys.exit(main())
