"""Self-supervised fine-tuning from nothing but the noisy stack (issue 15).

Three losses, each computed per batch from the noisy patch itself (the default, R2R, last):

- **Neighbor2Neighbor** (Huang et al., CVPR 2021): a random neighbour sub-sampler splits
  every 2x2 cell of the noisy patch ``y`` into two half-size images ``g1(y)``, ``g2(y)``
  whose noise is independent; ``G(g1(y))`` is trained against ``g2(y)`` plus the paper's
  regulariser ``gamma * |G(g1 y) - g2 y - (g1(G y) - g2(G y))|^2`` (``G y`` without gradient).
- **Blind spot** (Noise2Void / N2V2, Krull et al. 2019, Hoeck et al. 2022): one pixel per
  ``grid x grid`` cell is replaced by the median of its 5x5 neighbourhood (N2V2's median
  replacement) and the loss is taken on those pixels only. With ``structured=True``
  (structN2V-style, for spatially correlated noise) the whole 3x3 neighbourhood of each
  masked pixel is refilled with pixels drawn at random from the 5x5 ring around it, so
  the network cannot read the masked pixel's noise from its correlated neighbours.
- **Recorrupted-to-Recorrupted** (R2R, Pang et al., CVPR 2021): fresh Gaussian noise ``z``
  with the stack's own per-pixel variance (:func:`.noise.stack_noise_curve`) makes
  a pair ``y + alpha z`` (input) and ``y - z / alpha`` (target) whose noises are
  independent, so the loss is Noise2Noise's at full resolution, with no masked pixels and
  no half-size images. The pair's noises are independent for any noise covariance that
  ``z`` shares: where the noise check finds spatially correlated noise, ``z`` is drawn
  with its neighbour correlation (:func:`.noise.correlated_noise_curve`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...data.noise import MAX_CORRELATION, correlate
from .data import ArraySource, Session
from .noise import VarianceCurve, correlated_noise_curve, stack_noise_curve

#: The self-supervised losses by name.
SS_LOSSES = ("neighbor2neighbor", "blind-spot", "recorrupted")
#: Weight of the Neighbor2Neighbor regulariser (the paper's gamma).
NB2NB_GAMMA = 2.0
#: One masked pixel per GRID x GRID cell (plain) and per STRUCT_GRID x STRUCT_GRID cell
#: (structured mask, whose 3x3 blocks must not touch).
GRID, STRUCT_GRID = 4, 6
#: R2R's recorruption strength (the paper's alpha): the input carries (1 + alpha^2) times
#: the noise variance, the target (1 + 1 / alpha^2) times. 1.0 measured better than the
#: paper's 0.5 on held-out FMD (benchmarks.md §8).
R2R_ALPHA = 1.0

#: The self-supervised loss by default (measured in docs/benchmarks.md §8), also when the
#: noise check finds correlated noise: it then draws its noise with the measured
#: correlation (benchmarks.md §8: +5.6 dB where the structured blind-spot gained +4.0;
#: Neighbor2Neighbor and the plain blind-spot assume pixel-independent noise).
DEFAULT_SS_LOSS = "recorrupted"
#: Learning rate and default length by loss (benchmarks.md §8): recorrupted targets carry
#: twice the stack's noise and need a 10x smaller step; they peak at ~300 iterations.
SS_LR = {"recorrupted": 3e-5, "neighbor2neighbor": 3e-4, "blind-spot": 3e-4}
SS_ITERATIONS = {"recorrupted": 300, "neighbor2neighbor": 1000, "blind-spot": 1000}
#: Where the recorrupted loss's cosine decay ends (benchmarks.md §8: +0.04 dB over a
#: constant lr on held-out FMD, three seeds).
SS_LR_FINAL = 1e-6

#: A noise model on the network scale: ``(gain, offset)`` of ``var = gain * mean + offset``,
#: or the variance measured bin by bin (:class:`.noise.VarianceCurve`).
NoiseModel = tuple[float, float] | VarianceCurve

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
    ``STRUCT_GRID`` for a structured mask, kept two pixels from the cell's edge, so that
    the 5x5 window around it, its 3x3 block and the ring the block is refilled from, lies
    inside the cell: no other block and no mirrored border pixel)."""
    b, _, h, w = shape
    grid = STRUCT_GRID if structured else GRID
    gh, gw = h // grid, w // grid
    lo, span = (2, grid - 4) if structured else (0, grid)
    dy = torch.randint(0, span, (b, gh, gw), generator=generator) + lo
    dx = torch.randint(0, span, (b, gh, gw), generator=generator) + lo
    ys = (torch.arange(gh)[None, :, None] * grid + dy).reshape(b, -1)
    xs = (torch.arange(gw)[None, None, :] * grid + dx).reshape(b, -1)
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool)
    mask[torch.arange(b)[:, None], 0, ys, xs] = True
    return mask


def _neighbourhood_median(x: torch.Tensor) -> torch.Tensor:
    """Per pixel, the median of its 5x5 neighbourhood without the centre."""
    b, c, h, w = x.shape
    pad = F.pad(x, (2, 2, 2, 2), mode="reflect")
    patches = F.unfold(pad, 5).reshape(b, c, 25, h, w)
    return patches[:, :, [k for k in range(25) if k != 12]].median(dim=2).values


#: The 16 positions of a 5x5 window outside its central 3x3 (the structured mask's ring).
_RING = torch.tensor([k for k in range(25) if k not in {6, 7, 8, 11, 12, 13, 16, 17, 18}])


def _structured_input(x: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """``x`` with the 3x3 block around each masked pixel replaced by pixels drawn at random
    from the 5x5 ring around the masked pixel (outside the block), each block pixel its own
    draw: the network sees noise-like values there that carry none of the block's noise."""
    b, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5).reshape(b, c, 25, h, w)
    out = x.clone()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            pick = _RING[torch.randint(0, len(_RING), (b, 1, 1, h, w), generator=rng)]
            drawn = patches.gather(2, pick.expand(b, c, 1, h, w).to(x.device))[:, :, 0]
            moved = torch.roll(drawn, shifts=(dy, dx), dims=(2, 3))
            cover = torch.roll(mask, shifts=(dy, dx), dims=(2, 3)).expand_as(x)
            out = torch.where(cover, moved, out)
    return out


def blind_spot_input(
    x: torch.Tensor, mask: torch.Tensor, structured: bool, rng: torch.Generator | None = None
) -> torch.Tensor:
    """``x`` with the masked pixels replaced: by the median of their 5x5 neighbourhood
    (N2V2), or, structured, with their whole 3x3 block replaced by random pixels of the ring
    around it (:func:`_structured_input`; ``rng`` seeds the draws)."""
    if structured:
        return _structured_input(x, mask, rng or torch.Generator().manual_seed(0))
    return torch.where(mask.expand_as(x), _neighbourhood_median(x), x)


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
        estimate = generator(blind_spot_input(noisy, mask, structured, rng)).float()
    m = mask.expand_as(noisy)
    return estimate, ((estimate - noisy) ** 2)[m].mean()


def noise_std(noisy: torch.Tensor, noise: NoiseModel) -> torch.Tensor:
    """Per-pixel noise standard deviation of ``noisy`` ``(B, C, H, W)`` from the noise
    model, the mean taken as the 3x3 local mean of ``noisy``."""
    mean = F.avg_pool2d(F.pad(noisy, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if isinstance(noise, VarianceCurve):
        return noise.variance(mean).sqrt()
    gain, offset = noise
    return (gain * mean + offset).clamp_min(max(1e-3 * abs(offset), 1e-10)).sqrt()


def correlated_probe(
    shape: tuple[int, ...], rng: torch.Generator, correlation: float
) -> torch.Tensor:
    """Unit-variance Gaussian noise of ``shape`` ``(B, C, H, W)`` whose neighbours correlate by
    ``correlation`` (0: white), drawn as the training data's correlated noise is."""
    z = torch.randn(shape, generator=rng)
    if correlation > 0:
        b, c, h, w = shape
        rho = torch.full((b * c,), float(correlation))
        z = correlate(z.reshape(b * c, 1, h, w), rho).reshape(shape)
    return z


def recorrupt(
    noisy: torch.Tensor,
    noise: NoiseModel,
    rng: torch.Generator,
    alpha: float = R2R_ALPHA,
    correlation: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)``: R2R's pair ``y + alpha z``, ``y - z / alpha`` with ``z`` drawn
    at the noise model's per-pixel variance and, for spatially correlated noise, with its
    neighbour ``correlation`` (R2R holds for any known covariance: the two noises are then
    still independent)."""
    z = correlated_probe(tuple(noisy.shape), rng, correlation).to(noisy.device)
    z = z * noise_std(noisy, noise)
    return noisy + alpha * z, noisy - z / alpha


def recorrupted_loss(
    generator: torch.nn.Module,
    noisy: torch.Tensor,
    rng: torch.Generator,
    autocast: Autocast,
    noise: NoiseModel,
    correlation: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(estimate, loss)``: the R2R loss, the mean squared error of ``G(y + alpha z)``
    against ``y - z / alpha``."""
    source, target = recorrupt(noisy, noise, rng, correlation=correlation)
    with autocast():
        estimate = generator(source).float()
    return estimate, ((estimate - target) ** 2).mean()


class SelfSupervisedSource(ArraySource):
    """Noisy patches only; ``objective`` computes the self-supervised loss per batch."""

    def __init__(
        self,
        *args: Any,
        ss_loss: str,
        structured: bool,
        seed: int,
        noise: NoiseModel | None = None,
        correlation: float = 0.0,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        if ss_loss == "recorrupted" and noise is None:
            raise ValueError("The recorrupted loss needs the noise model (gain, offset).")
        self.ss_loss, self.structured, self.noise = ss_loss, structured, noise
        self.correlation = float(correlation)
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
        if self.ss_loss == "recorrupted":
            assert self.noise is not None
            return recorrupted_loss(
                generator, noisy, self.rng, autocast, self.noise, self.correlation
            )
        return neighbor2neighbor_loss(generator, noisy, self.rng, autocast)


def mc_sure(
    run: Callable[[np.ndarray], np.ndarray],
    noisy: np.ndarray,
    noise: NoiseModel,
    rng: torch.Generator,
    correlation: float = 0.0,
) -> float:
    """Monte-Carlo SURE (Ramani et al. 2008): an unbiased estimate, from the noisy image
    alone, of the mean squared error of ``run(noisy)`` against the unknown clean image,
    for Gaussian noise of the model's per-pixel variance, pixel-independent or with a
    neighbour ``correlation`` (then the divergence term is ``tr(Sigma J)``, the probe
    weighted by the noise covariance). ``run`` maps a ``(C, H, W)`` float32 image to one of
    the same shape (in fp32: the estimate takes a finite difference)."""
    y = torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32))[None]
    std = noise_std(y, noise)
    var = (std**2)[0].numpy()
    eps = 1e-3 * max(float(np.abs(noisy).max()), 1e-6)
    probe = torch.randn(y.shape[1:], generator=rng).numpy()
    out = run(noisy)
    shifted = run(np.ascontiguousarray(noisy + eps * probe, dtype=np.float32))
    if correlation > 0:  # Sigma u = D K K^T D u, K the (symmetric) correlating blur
        c = y.shape[1]
        rho = torch.full((c,), float(correlation))
        u = (std[0] * torch.from_numpy(probe))[:, None]
        weighted = (std[0] * correlate(correlate(u, rho), rho)[:, 0]).numpy()
    else:
        weighted = var * probe
    divergence = weighted * (shifted - out) / eps
    return float(np.mean((out - noisy) ** 2) - np.mean(var) + 2 * np.mean(divergence))


def sure_validation(session: Session, noise: NoiseModel, correlation: float = 0.0) -> float:
    """The mean Monte-Carlo SURE estimate of the model's MSE on the held-out crops (probes
    fixed by a seed, so that values from different iterations compare)."""
    rng = torch.Generator().manual_seed(1234)
    crops = [np.ascontiguousarray(session.crop_val(session.inputs[i])) for i in session.val]
    return float(np.mean([mc_sure(session.run_network, y, noise, rng, correlation) for y in crops]))


def resolve_loss(
    ss_loss: str | None, structured: bool | None, report: dict[str, Any] | None
) -> tuple[str, bool]:
    """``(loss, structured mask)`` for a run: the asked loss, else the default; the asked
    mask, else a structured one (for the blind-spot loss) when the noise check's
    ``report`` found correlated noise."""
    correlated = bool(report and report["correlated"])
    loss = ss_loss or DEFAULT_SS_LOSS
    if loss not in SS_LOSSES:
        raise ValueError(f"ss_loss must be one of {', '.join(SS_LOSSES)}; got {loss!r}.")
    return loss, correlated if structured is None else bool(structured)


def check_correlation(report: dict[str, Any] | None) -> float:
    """The neighbour correlation to recorrupt with: the noise check's (mean of rows and
    columns, at most 0.7) when it flagged the noise as correlated, else 0."""
    if not report or not report.get("correlated"):
        return 0.0
    rows, cols = report["correlation_rows"], report["correlation_cols"]
    return float(np.clip((rows + cols) / 2, 0.0, MAX_CORRELATION))


def correlation_record(correlation: float) -> dict[str, Any]:
    """What a card records of the correlation a run recorrupted with (nothing for white)."""
    return {"correlation": round(correlation, 3)} if correlation else {}


def session_noise_model(session: Session, correlation: float = 0.0) -> NoiseModel:
    """The stack's noise model, measured on its training planes: the variance bin by bin
    (+0.05 dB over a line on held-out FMD, +0.1 dB on correlated synthetic noise;
    benchmarks.md §8, session 7), for noise of a neighbour ``correlation`` above 0 with the
    estimate made for it."""
    planes = [session.train_view(session.inputs[i]) for i in session.train]
    if correlation > 0:
        return correlated_noise_curve(planes, correlation)
    return stack_noise_curve(planes)


def noise_record(noise: NoiseModel | None) -> Any:
    """What a card records of a noise model: the line's ``[gain, offset]`` or the curve."""
    if noise is None:
        return None
    return noise.as_record() if isinstance(noise, VarianceCurve) else list(noise)


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
            masked = blind_spot_input(y, mask, structured, rng)[0].numpy()
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
    copy of ``session.model`` with the self-supervised loss (``config.ss_loss``, else as
    :func:`resolve_loss` picks it) for the run's iterations, at most that loss's default
    length, then take its flip/rotate-ensemble outputs."""
    import copy

    from ..trainer import TrainConfig, Trainer
    from .data import finetune_mode

    model = session.model
    helper = copy.deepcopy(model)
    ss_loss, structured = resolve_loss(
        config.ss_loss, config.structured, session.description.get("noise_check")
    )
    recorrupted = ss_loss == "recorrupted"
    correlation = check_correlation(session.description.get("noise_check")) if recorrupted else 0.0
    session.description["self_supervised"] = {
        "loss": ss_loss,
        "structured": structured if ss_loss == "blind-spot" else None,
        **correlation_record(correlation),
    }
    inputs = [session.train_view(session.inputs[i]) for i in session.train]
    source = SelfSupervisedSource(
        inputs,
        inputs,
        mask=session.mask,
        normalisation=model.normalisation,
        description=session.description,
        ss_loss=ss_loss,
        structured=structured,
        seed=config.seed,
        noise=session_noise_model(session, correlation) if recorrupted else None,
        correlation=correlation,
    )
    # the self-supervised mode's sizes, unless the run's were given
    patch = int(min(config.patch_size or 64, session.height, session.width) // 4 * 4)
    lr = min(SS_LR[ss_loss], 1e-4)  # at most 1e-4: a gentle fine-tune for surrogates
    cfg = TrainConfig(
        architecture=model.architecture,
        arch_config=dict(model.card.get("config") or {}),
        loss="mse",
        iterations=max(1, min(int(config.iterations), SS_ITERATIONS[ss_loss])),
        batch_size=config.batch_size or 8,
        patch_size=patch,
        lr=lr,
        lr_final=lr,
        lr_drop_at=1.0,
        mse_reduction="mean",
        seed=config.seed,
        device=config.device,
        checkpoint_every=10**9,
        val_every=10**9,
    )
    trainer = Trainer(cfg, source, init=helper)
    finetune_mode(trainer.generator)
    for it in range(1, cfg.iterations + 1):
        if session.cancel is not None and session.cancel.is_set():
            return list(session.inputs)  # the run stops before its first iteration
        trainer.step()
        if session.progress is not None and (it % 10 == 0 or it == cfg.iterations):
            status = f"Making the surrogate targets: self-supervised step {it} / {cfg.iterations}"
            session.progress({"iteration": 0, "status": status})
    session.model = helper
    try:
        return session.surrogates(ensemble=True)
    finally:
        session.model = model
