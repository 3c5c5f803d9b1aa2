"""``python -m napari_wgan_denoise.cli``: the ``wgan-denoise`` command."""

import sys

from . import main

sys.exit(main())
