"""Self-supervised fine-tuning from nothing but the noisy stack (issue 15).

Two losses, both computed per batch from the noisy patch itself:

- **Neighbor2Neighbor** (Huang et al., CVPR 2021): a random neighbour sub-sampler splits
  every 2x2 cell of the noisy patch ``y`` into two half-size images ``g1(y)``, ``g2(y)``
  whose noise is independent; ``G(g1(y))`` is trained against ``g2(y)`` plus the paper's
  regulariser ``gamma * |G(g1 y) - g2 y - (g1(G y) - g2(G y))|^2`` (``G y`` without gradient).
- **Blind spot** (Noise2Void / N2V2, Krull et al. 2019, Hoeck et al. 2022): one pixel per
  ``grid x grid`` cell is replaced by the median of its 5x5 neighbourhood (N2V2's median
  replacement) and the loss is taken on those pixels only. With ``structured=True``
  (structN2V-style, for spatially correlated noise) the whole 3x3 neighbourhood of each
  masked pixel is replaced by the median of the surrounding 5x5 ring, so the network cannot
  read the masked pixel's noise from its correlated neighbours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import ArraySource, Session

#: The self-supervised losses by name.
SS_LOSSES = ("neighbor2neighbor", "blind-spot")
#: Weight of the Neighbor2Neighbor regulariser (the paper's gamma).
NB2NB_GAMMA = 2.0
#: One masked pixel per GRID x GRID cell (plain) and per STRUCT_GRID x STRUCT_GRID cell
#: (structured mask, whose 3x3 blocks must not touch).
GRID, STRUCT_GRID = 4, 6

# the ordered pairs of 4-neighbours inside a 2x2 cell (positions 0 1 / 2 3)
_PAIRS = torch.tensor([[0, 1], [1, 0], [0, 2], [2, 0], [1, 3], [3, 1], [2, 3], [3, 2]])


def neighbor_subsample(
    x: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(g1(x), g2(x), choice)``: two half-size images from neighbouring pixels of each
    2x2 cell of ``x`` ``(B, C, H, W)``; ``choice`` (one of 8 pairs per cell) lets
    :func:`apply_subsample` take the same pixels from another image."""
    b, _, h, w = x.shape
    choice = torch.randint(0, len(_PAIRS), (b, 1, h // 2, w // 2), generator=generator)
    g1, g2 = apply_subsample(x, choice)
    return g1, g2, choice


def apply_subsample(x: torch.Tensor, choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sub-sampled images of ``x`` for the cell choices of :func:`neighbor_subsample`."""
    b, c, h, w = x.shape
    h2, w2 = choice.shape[-2:]
    cells = x[:, :, : 2 * h2, : 2 * w2].reshape(b, c, h2, 2, w2, 2)
    cells = cells.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h2, w2, 4)
    pairs = _PAIRS.to(x.device)[choice.to(x.device)]  # (B, 1, h2, w2, 2)
    first = pairs[..., :1].expand(b, c, h2, w2, 1)
    second = pairs[..., 1:].expand(b, c, h2, w2, 1)
    return cells.gather(-1, first)[..., 0], cells.gather(-1, second)[..., 0]


def blind_spot_mask(
    shape: tuple[int, ...], generator: torch.Generator, *, structured: bool = False
) -> torch.Tensor:
    """A boolean ``(B, 1, H, W)`` mask with one random pixel per grid cell (cells of
    ``STRUCT_GRID`` for a structured mask, kept a pixel from the cell's edge)."""
    b, _, h, w = shape
    grid = STRUCT_GRID if structured else GRID
    gh, gw = h // grid, w // grid
    lo, span = (1, grid - 2) if structured else (0, grid)
    dy = torch.randint(0, span, (b, gh, gw), generator=generator) + lo
    dx = torch.randint(0, span, (b, gh, gw), generator=generator) + lo
    ys = (torch.arange(gh)[None, :, None] * grid + dy).reshape(b, -1)
    xs = (torch.arange(gw)[None, None, :] * grid + dx).reshape(b, -1)
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool)
    mask[torch.arange(b)[:, None], 0, ys, xs] = True
    return mask


def _neighbourhood_median(x: torch.Tensor, structured: bool) -> torch.Tensor:
    """Per pixel, the median of its 5x5 neighbourhood without the centre (or, structured,
    without the central 3x3)."""
    b, c, h, w = x.shape
    pad = F.pad(x, (2, 2, 2, 2), mode="reflect")
    patches = F.unfold(pad, 5).reshape(b, c, 25, h, w)
    inner = {6, 7, 8, 11, 12, 13, 16, 17, 18} if structured else {12}
    keep = [k for k in range(25) if k not in inner]
    return patches[:, :, keep].median(dim=2).values


def blind_spot_input(x: torch.Tensor, mask: torch.Tensor, structured: bool) -> torch.Tensor:
    """``x`` with the masked pixels (and, structured, their 3x3 neighbours) replaced."""
    replaced = _neighbourhood_median(x, structured)
    cover = mask
    if structured:
        cover = F.max_pool2d(mask.float(), 3, stride=1, padding=1) > 0
    return torch.where(cover.expand_as(x), replaced, x)


Autocast = Callable[[], Any]


def neighbor2neighbor_loss(
    generator: torch.nn.Module,
    noisy: torch.Tensor,
    rng: torch.Generator,
    autocast: Autocast,
    gamma: float = NB2NB_GAMMA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(estimate, loss)``: the Neighbor2Neighbor loss on a batch of noisy patches;
    ``estimate`` is ``G(g1(noisy))`` (what the critic sees, if any)."""
    g1, g2, choice = neighbor_subsample(noisy, rng)
    with autocast():
        estimate = generator(g1).float()
    loss = ((estimate - g2) ** 2).mean()
    if gamma:
        with torch.no_grad(), autocast():
            full = generator(noisy).float()
        f1, f2 = apply_subsample(full, choice)
        loss = loss + gamma * ((estimate - g2 - (f1 - f2)) ** 2).mean()
    return estimate, loss


def blind_spot_loss(
    generator: torch.nn.Module,
    noisy: torch.Tensor,
    rng: torch.Generator,
    autocast: Autocast,
    structured: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(estimate, loss)``: the blind-spot loss (mean squared error on the masked pixels
    of ``G(masked noisy)`` against the noisy values)."""
    mask = blind_spot_mask(tuple(noisy.shape), rng, structured=structured).to(noisy.device)
    with autocast():
        estimate = generator(blind_spot_input(noisy, mask, structured)).float()
    m = mask.expand_as(noisy)
    return estimate, ((estimate - noisy) ** 2)[m].mean()


class SelfSupervisedSource(ArraySource):
    """Noisy patches only; ``objective`` computes the self-supervised loss per batch."""

    def __init__(self, *args: Any, ss_loss: str, structured: bool, seed: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ss_loss, self.structured = ss_loss, structured
        self.rng = torch.Generator().manual_seed(seed + 1)

    def objective(
        self,
        generator: torch.nn.Module,
        noisy: torch.Tensor,
        clean: torch.Tensor,
        autocast: Autocast,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The data term of the trainer's generator step (``clean`` is the noisy patch)."""
        if self.ss_loss == "blind-spot":
            return blind_spot_loss(generator, noisy, self.rng, autocast, self.structured)
        return neighbor2neighbor_loss(generator, noisy, self.rng, autocast)


def validation_loss(session: Session, ss_loss: str, structured: bool) -> float:
    """The self-supervised loss on the held-out crops, with masks / sub-samplers fixed
    (seeded) so that values from different iterations compare."""
    rng = torch.Generator().manual_seed(1234)
    values = []
    for i in session.val:
        y = torch.from_numpy(np.ascontiguousarray(session.crop_val(session.inputs[i])))[None]
        h, w = y.shape[-2:]
        y = y[..., : h // 4 * 4, : w // 4 * 4]
        if ss_loss == "blind-spot":
            mask = blind_spot_mask(tuple(y.shape), rng, structured=structured)
            masked = blind_spot_input(y, mask, structured)[0].numpy()
            out = torch.from_numpy(session.run_network(masked))
            values.append(float(((out[None] - y) ** 2)[mask.expand_as(y)].mean()))
        else:
            g1, g2, _ = neighbor_subsample(y, rng)
            g1 = g1[..., : g1.shape[-2] // 4 * 4, : g1.shape[-1] // 4 * 4]
            g2 = g2[..., : g1.shape[-2], : g1.shape[-1]]
            out = torch.from_numpy(session.run_network(np.ascontiguousarray(g1[0].numpy())))
            values.append(float(((out[None] - g2) ** 2).mean()))
    return float(np.mean(values))


def self_supervised_surrogates(session: Session, config: Any) -> list[np.ndarray]:
    """Two-stage surrogates from a short self-supervised fine-tune of the base: train a
    copy of ``session.model`` for ``config.iterations`` iterations with the default
    self-supervised loss, then take its flip/rotate-ensemble outputs."""
    import copy

    from ..trainer import TrainConfig, Trainer
    from .data import finetune_mode
    from .strategies import DEFAULT_SS_LOSS

    model = session.model
    helper = copy.deepcopy(model)
    inputs = [session.train_view(session.inputs[i]) for i in session.train]
    source = SelfSupervisedSource(
        inputs,
        inputs,
        mask=session.mask,
        normalisation=model.normalisation,
        description=session.description,
        ss_loss=config.ss_loss or DEFAULT_SS_LOSS,
        structured=bool(config.structured),
        seed=config.seed,
    )
    patch = int(min(64, session.height, session.width) // 4 * 4)
    cfg = TrainConfig(
        architecture=model.architecture,
        arch_config=dict(model.card.get("config") or {}),
        loss="mse",
        iterations=max(1, int(config.iterations)),
        batch_size=8,
        patch_size=patch,
        lr=1e-4,
        lr_final=1e-4,
        lr_drop_at=1.0,
        mse_reduction="mean",
        seed=config.seed,
        device=config.device,
        checkpoint_every=10**9,
        val_every=10**9,
    )
    trainer = Trainer(cfg, source, init=helper)
    finetune_mode(trainer.generator)
    for _ in range(cfg.iterations):
        trainer.step()
    session.model = helper
    try:
        return session.surrogates(ensemble=True)
    finally:
        session.model = model
