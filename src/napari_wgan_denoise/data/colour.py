"""Colour augmentation for stained bright-field images, so a model does not learn one stain.

Per sample, on clean RGB patches on the 0-255 scale, before noise is added:

* **stain jitter in HED space** (haematoxylin, eosin, DAB; Ruifrok & Johnston's matrix as
  in ``skimage.color.rgb2hed``): each stain's optical density is scaled by a factor drawn
  log-uniformly in ``1/hed_scale .. hed_scale`` and shifted by ``±hed_shift``;
* **hue rotation** about the gray axis by up to ``±hue`` degrees and a **saturation**
  factor (log-uniform in ``1/saturation .. saturation``);
* a random **permutation of the colour channels** with probability ``permute``;
* with probability ``restain``, a **re-staining** first: the patch's H, E and DAB
  concentrations are drawn again in other stain colours (eosin's as eosin, DAB or a random
  colour; DAB's as DAB or a random colour; haematoxylin's as itself or a random colour), so
  brown-and-blue immunostains and other pairs are seen, not only H&E's pink and purple;
* with probability ``gray``, a nearly **colourless** copy (saturation × 0-0.25): bright-field
  images with little colour, where the three channels carry the same structure.

Everything is drawn from the given ``torch.Generator`` (resumable runs stay exact). The
same family of shifts, with fixed seeds, makes the colour-shifted validation copies in
``colour_shifted_copies``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

# skimage.color.colorconv.rgb_from_hed (rows: H, E, DAB optical-density colours).
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_RGB_FROM_HED[2] = np.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
#: DAB's own optical-density colour (the first matrix's third row, before the cross product).
_DAB = np.array([0.27, 0.57, 0.78], dtype=np.float64)
_LOG_ADJUST = math.log(1e-6)  # skimage's scale: stains = log(rgb) / log(1e-6) @ hed_from_rgb


@dataclass(frozen=True)
class ColourJitter:
    """Strengths of the colour augmentation (see the module docstring); 0/1 switch a part
    off."""

    hed_scale: float = 1.35
    hed_shift: float = 0.03
    hue: float = 25.0
    saturation: float = 1.4
    permute: float = 0.25
    restain: float = 0.0
    gray: float = 0.0

    def to_card(self) -> dict[str, Any]:
        """JSON-able description for the model card."""
        return {"type": "stain-jitter (HED, hue, saturation, channel permutation)", **asdict(self)}

    def __call__(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Colour-jittered copy of a (B, 3, H, W) batch on the 0-255 scale."""
        b = clean.shape[0]
        u = torch.rand((b, 9), generator=generator, dtype=torch.float64).float()
        perm_u = torch.rand((b,), generator=generator, dtype=torch.float64).float()
        perms = torch.randint(0, 6, (b,), generator=generator)
        log_s = math.log(self.hed_scale)
        scale = torch.exp((2 * u[:, 0:3] - 1) * log_s)
        shift = (2 * u[:, 3:6] - 1) * self.hed_shift
        hue = (2 * u[:, 6] - 1) * math.radians(self.hue)
        sat = torch.exp((2 * u[:, 7] - 1) * math.log(self.saturation))
        if self.restain > 0 or self.gray > 0:  # drawn only then: older configs stay exact
            extra = torch.rand((b, 6), generator=generator, dtype=torch.float64).float()
            random_od = torch.randn((b, 3, 3), generator=generator, dtype=torch.float64).abs()
            chosen = torch.nonzero(extra[:, 0] < self.restain).flatten()
            if len(chosen):
                rows = restain_rows(extra[chosen, 1:4], random_od[chosen])
                clean = clean.clone()
                clean[chosen] = restain(clean[chosen], rows)
            sat = torch.where(extra[:, 4] < self.gray, sat * 0.25 * extra[:, 5], sat)
        out = apply_shift(clean, scale, shift, hue, sat)
        orders = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])[
            perms
        ]
        do = perm_u < self.permute
        for i in torch.nonzero(do).flatten().tolist():
            out[i] = out[i, orders[i]]
        return out


def restain_rows(choice: torch.Tensor, random_od: torch.Tensor) -> torch.Tensor:
    """New stain colours (B, 3, 3), rows H, E, DAB as ``_RGB_FROM_HED``'s (same lengths), from
    uniform draws ``choice`` (B, 3) and positive random directions ``random_od`` (B, 3, 3):
    haematoxylin stays itself with probability 2/3; eosin becomes eosin, DAB or a random
    colour (1/3 each); DAB becomes DAB or a random colour (1/2 each)."""
    base = torch.from_numpy(np.stack([_RGB_FROM_HED[0], _RGB_FROM_HED[1], _DAB]))
    lengths = torch.from_numpy(np.linalg.norm(_RGB_FROM_HED, axis=1))
    unit = base / base.norm(dim=1, keepdim=True)
    rand = random_od.double() + 1e-3
    rand = rand / rand.norm(dim=2, keepdim=True)
    c = choice.double()
    h = torch.where((c[:, 0] < 2 / 3)[:, None], unit[0].expand(len(c), 3), rand[:, 0])
    e = torch.where((c[:, 1] < 1 / 3)[:, None], unit[1].expand(len(c), 3), rand[:, 1])
    e = torch.where(((c[:, 1] >= 1 / 3) & (c[:, 1] < 2 / 3))[:, None], unit[2], e)
    d = torch.where((c[:, 2] < 0.5)[:, None], unit[2].expand(len(c), 3), rand[:, 2])
    return torch.stack([h, e, d], dim=1) * lengths[None, :, None]


def _stains(rgb: torch.Tensor) -> torch.Tensor:
    """The H, E, DAB concentrations (B, H*W, 3) of a (B, 3, H, W) batch on the 0-255 scale
    (``skimage.color.rgb2hed``'s, in float64)."""
    x = rgb.double().clamp(1.0, 255.0) / 255.0
    flat = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 3)
    return (torch.log(flat) / _LOG_ADJUST) @ torch.from_numpy(_HED_FROM_RGB)


def _rendered(stains: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """RGB on the 0-1 scale (B, H*W, 3) of concentrations drawn in the stain colours ``rows``
    ((3, 3), or (B, 3, 3) per sample)."""
    return torch.exp((stains * _LOG_ADJUST) @ rows).clamp(0.0, 1.0)


def _as_batch(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, H*W, 3) RGB on the 0-1 scale back to a batch shaped and typed as ``like``."""
    b, _, h, w = like.shape
    out = flat.clamp(0.0, 1.0).reshape(b, h, w, 3).permute(0, 3, 1, 2) * 255.0
    return out.to(like.dtype).contiguous()


def restain(rgb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A (B, 3, H, W) batch on the 0-255 scale with its HED concentrations rendered in the
    per-sample stain colours ``rows`` (B, 3, 3) instead of ``_RGB_FROM_HED``."""
    return _as_batch(_rendered(_stains(rgb), rows.double()), rgb)


def apply_shift(
    rgb: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    hue: torch.Tensor,
    saturation: torch.Tensor,
) -> torch.Tensor:
    """Apply per-sample HED scale/shift (B, 3), hue rotation (B,, radians) and saturation
    (B,) to a (B, 3, H, W) batch on the 0-255 scale; the result is clipped to 0-255."""
    stains = _stains(rgb) * scale.double()[:, None, :] + shift.double()[:, None, :]
    flat = _rendered(stains, torch.from_numpy(_RGB_FROM_HED))
    # Hue rotation about the gray axis (Rodrigues) and saturation about the pixel's gray.
    k = torch.full((3,), 1 / math.sqrt(3.0), dtype=torch.float64)
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    cos, sin = torch.cos(hue.double()), torch.sin(hue.double())
    eye = torch.eye(3, dtype=torch.float64)
    outer = torch.outer(k, k)
    rot = cos[:, None, None] * eye + sin[:, None, None] * kx + (1 - cos)[:, None, None] * outer
    flat = flat @ rot.transpose(1, 2)
    gray = flat.mean(dim=2, keepdim=True)
    flat = gray + saturation.double()[:, None, None] * (flat - gray)
    return _as_batch(flat, rgb)


#: The fixed colour shifts of the stain-robustness validation: (name, HED scale, HED
#: shift, hue degrees, saturation, channel order).
VALIDATION_SHIFTS: tuple[tuple[str, tuple, tuple, float, float, tuple], ...] = (
    ("more haematoxylin", (1.3, 0.85, 1.0), (0.0, 0.0, 0.0), 0.0, 1.0, (0, 1, 2)),
    ("more eosin", (0.8, 1.3, 1.0), (0.0, 0.02, 0.0), 0.0, 1.0, (0, 1, 2)),
    ("hue +20", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 20.0, 1.0, (0, 1, 2)),
    ("hue -20, paler", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), -20.0, 0.75, (0, 1, 2)),
    ("DAB-brown", (0.9, 0.8, 1.0), (0.0, 0.0, 0.05), 0.0, 1.1, (0, 1, 2)),
    ("swapped channels", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 0.0, 1.0, (2, 1, 0)),
)


def colour_shifted_copies(rgb: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The fixed colour-shifted versions (``VALIDATION_SHIFTS``) of one clean (H, W, 3)
    image on the 0-255 scale, as float32 arrays: the stain-robustness validation set."""
    t = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    out = []
    for name, scale, shift, hue, sat, order in VALIDATION_SHIFTS:
        y = apply_shift(
            t,
            torch.tensor([scale]),
            torch.tensor([shift]),
            torch.tensor([math.radians(hue)]),
            torch.tensor([sat]),
        )[0][list(order)]
        out.append((name, y.permute(1, 2, 0).numpy().astype(np.float32)))
    return out


@dataclass(frozen=True)
class GrayStainer:
    """Gray clean images as stained bright-field RGB, for structure variety in a stained-cell
    model: natural gray images carry textures and edges that smooth blood smears lack.

    Per sample, on (B, 1, H, W) patches on the 0-255 scale (t = value / 255), by the
    Beer-Lambert law: a main stain's optical density ``d1 * (1 - t) ** g1`` (haematoxylin
    with probability ``main_h``, else eosin or DAB) and, with probability ``second``, a
    second stain's ``d2 * (1 - t') ** g2 + background`` from a flipped/rotated copy t' of
    the same patch (so colour edges need not follow brightness edges; DAB with probability
    0.3); each stain's colour is Ruifrok & Johnston's unit vector with every component moved
    by up to ``±vector_jitter``, renormalised. ``d1`` is uniform in ``density``, ``d2`` in
    0.6 × ``density``, ``g`` log-uniform in ``1/gamma .. gamma``. The result is
    (B, 3, H, W) on the 0-255 scale. It also stains the validation crops (seeded), since
    the source's validation images must be RGB too.
    """

    density: tuple[float, float] = (0.4, 2.5)
    gamma: float = 2.0
    second: float = 0.75
    main_h: float = 0.6
    background: float = 0.15
    vector_jitter: float = 0.15

    def to_card(self) -> dict[str, Any]:
        """JSON-able description for the model card."""
        return {"type": "gray-to-stain synthesis (Beer-Lambert, H/E/DAB)", **asdict(self)}

    def __call__(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Stained RGB (B, 3, H, W) copy of a gray (B, 1, H, W) batch on the 0-255 scale."""
        if clean.shape[1] != 1:
            raise ValueError(f"GrayStainer stains gray patches, got {clean.shape[1]} channels.")
        b = clean.shape[0]
        u = torch.rand((b, 10), generator=generator, dtype=torch.float64)
        turns = torch.randint(0, 8, (b,), generator=generator)
        vec_u = torch.rand((b, 2, 3), generator=generator, dtype=torch.float64)
        t = (clean.double() / 255.0).clamp(0.0, 1.0)[:, 0]
        lo, hi = self.density
        log_g = math.log(self.gamma)
        basis = torch.from_numpy(
            _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
        )
        od = torch.zeros((b, 3) + t.shape[1:], dtype=torch.float64)
        for i in range(b):
            main = 0 if u[i, 0] < self.main_h else (1 if u[i, 1] < 0.5 else 2)
            other = 1 if main == 0 else 0
            if u[i, 2] < 0.3:
                other = 2 if main != 2 else 0
            layers = [(main, lo + (hi - lo) * u[i, 3], math.exp((2 * u[i, 4] - 1) * log_g), t[i])]
            if u[i, 5] < self.second:
                turned = torch.rot90(t[i], int(turns[i]) % 4, (0, 1))
                if turns[i] >= 4:
                    turned = turned.flip(1)
                dens = (lo + (hi - lo) * u[i, 6]) * 0.6
                layers.append((other, dens, math.exp((2 * u[i, 7] - 1) * log_g), turned))
            for k, (stain, dens, g, plane) in enumerate(layers):
                vec = basis[stain] + self.vector_jitter * (2 * vec_u[i, min(k, 1)] - 1)
                vec = vec.clamp_min(0.01)
                vec = vec / vec.norm()
                conc = dens * (1.0 - plane) ** g
                if k == 1:
                    conc = conc + self.background * u[i, 8]
                od[i] += vec.view(3, 1, 1) * conc
        out = torch.exp(-od).clamp(0.0, 1.0) * 255.0
        return out.to(clean.dtype).contiguous()

    def validate(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The validation crops are stained too: they are gray planes of an RGB source."""
        return self(clean, generator)
