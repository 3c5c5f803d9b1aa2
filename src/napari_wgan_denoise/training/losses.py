"""Losses of seed 000 (eqs. 6-9): summed-per-patch MSE, Wasserstein critic with gradient penalty."""

from __future__ import annotations

import torch
from torch import nn

#: The floor of a patch's mean squared error under ``reduction="log"`` (40 dB on a 0-1
#: scale), so near-noiseless patches do not outweigh the rest of the batch.
LOG_MSE_FLOOR = 1e-4


def patch_mse(estimate: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Eq. 8: squared error summed over the pixels of each patch, averaged over the batch
    (``reduction="sum"``, the paper's scale for alpha = 1.01), or the per-pixel mean, or
    (``"log"``) the batch mean of each patch's log mean squared error, which weighs every
    patch alike in dB rather than by its error (a strongly noisy patch counts as much as a
    weakly noisy one)."""
    sq = (estimate.float() - target.float()) ** 2
    if reduction == "sum":
        return sq.flatten(1).sum(dim=1).mean()
    if reduction == "mean":
        return sq.mean()
    if reduction == "log":
        return torch.log(sq.flatten(1).mean(dim=1) + LOG_MSE_FLOOR).mean()
    raise ValueError(f"Unknown MSE reduction {reduction!r}; use 'sum', 'mean' or 'log'.")


def critic_scores(
    critic: nn.Module, x: torch.Tensor, clip: tuple[float, float] | None = None
) -> torch.Tensor:
    """Critic outputs, optionally clipped to ``clip`` as in seed 001 (eqs. 6-7)."""
    scores = critic(x).float()
    if clip is not None:
        scores = scores.clamp(clip[0], clip[1])
    return scores


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator,
    clip: tuple[float, float] | None = None,
) -> torch.Tensor:
    """WGAN-GP term ``mean((||grad_z D(z)||_2 - 1)^2)`` at ``z = x + eps (x_hat - x)`` with
    eps ~ U[0, 1] drawn per sample. Always computed in float32: second-order gradients in
    reduced precision are what makes mixed-precision WGAN-GP unstable."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    z = (real.float() + eps * (fake.float() - real.float())).requires_grad_(True)
    with torch.autocast(device_type=z.device.type, enabled=False):
        scores = critic_scores(critic, z, clip)
        (grad,) = torch.autograd.grad(scores.sum(), z, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()
