"""HoVer-Net's losses: NP CE + Dice, HV MSE + MSGE, NC CE + Dice (NC only on samples with classes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-class soft Dice over classes 1.. (background excluded), each sample averaged over the classes its
    target holds.

    A class absent from a sample is left out rather than scored: scoring it would reward predicting none of it
    anywhere, and in most crops a rare class (CoNSeP's "other") is absent, so its probability collapsed to zero
    everywhere and the class was never predicted. Cross-entropy still penalises predicting an absent class.

    logits (B, C, H, W); target (B, H, W) int64; weight (B,) 0/1 selects samples. Samples without any class
    (empty crops) do not count.
    """
    probabilities = logits.float().softmax(dim=1)
    one_hot = F.one_hot(target, probabilities.shape[1]).permute(0, 3, 1, 2).float()
    intersection = (probabilities * one_hot).sum(dim=(2, 3))[:, 1:]
    true_px = one_hot.sum(dim=(2, 3))[:, 1:]
    total = probabilities.sum(dim=(2, 3))[:, 1:] + true_px
    present = (true_px > 0).float()
    dice = (2 * intersection + 1) / (total + 1)
    n_present = present.sum(dim=1)
    per_sample = ((1 - dice) * present).sum(dim=1) / n_present.clamp(min=1)
    counted = (n_present > 0).float() * (1 if weight is None else weight)
    return (per_sample * counted).sum() / counted.sum().clamp(min=1)


def _sobel_kernels(device: torch.device) -> torch.Tensor:
    smooth = torch.tensor([1.0, 2.0, 1.0], device=device)
    derivative = torch.tensor([-1.0, 0.0, 1.0], device=device)
    kx = torch.outer(smooth, derivative) / 8
    return torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx of channel 0, d/dy of channel 1


def hv_gradient_loss(pred_hv: torch.Tensor, true_hv: torch.Tensor, pixel_weights: torch.Tensor) -> torch.Tensor:
    """MSGE: mean squared error of the HV maps' Sobel gradients, weighted by ``pixel_weights`` (B, H, W): the
    nucleus mask, or that times the pixels' loss weights."""
    kernels = _sobel_kernels(pred_hv.device)
    pred_grad = F.conv2d(pred_hv.float(), kernels, padding=1, groups=2)
    true_grad = F.conv2d(true_hv.float(), kernels, padding=1, groups=2)
    weights = pixel_weights.unsqueeze(1).float().expand_as(pred_grad)
    return ((pred_grad - true_grad) ** 2 * weights).sum() / weights.sum().clamp(min=1)


def weighted_mean(values: torch.Tensor, pixel_weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-pixel ``values`` (B, H, W) weighted by ``pixel_weights`` (B, H, W), or the plain mean."""
    if pixel_weights is None:
        return values.mean()
    return (values * pixel_weights).sum() / pixel_weights.sum()


def hovernet_loss(
    outputs: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    hv_gradient_weight: float = 2.0,
    nc_class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts.

    batch: ``np`` (B, H, W) int64 nuclear-pixel classes (0 background), ``hv`` (B, 2, H, W), ``nc`` (B, H, W)
    int64, ``has_types`` (B,) float, optionally ``weight`` (B, H, W) float: pixel weights of the NP
    cross-entropy and the HV losses (``targets.contact_weights``). ``nc_class_weights`` (C,) weighs the NC
    cross-entropy per class (rare classes up).
    """
    np_target, pixel_weights = batch["np"], batch.get("weight")
    np_ce = weighted_mean(F.cross_entropy(outputs["np"].float(), np_target, reduction="none"), pixel_weights)
    np_dice = soft_dice_loss(outputs["np"], np_target)
    hv_mse = weighted_mean(((outputs["hv"].float() - batch["hv"]) ** 2).mean(dim=1), pixel_weights)
    msge_weights = (np_target > 0).float() * (1 if pixel_weights is None else pixel_weights)
    hv_msge = hv_gradient_loss(outputs["hv"], batch["hv"], msge_weights)
    has_types = batch["has_types"]
    loss = np_ce + np_dice + hv_mse + hv_gradient_weight * hv_msge
    parts = {"np_ce": np_ce.item(), "np_dice": np_dice.item(), "hv_mse": hv_mse.item(), "hv_msge": hv_msge.item()}
    if has_types.sum() > 0:
        per_pixel = F.cross_entropy(outputs["nc"].float(), batch["nc"], weight=nc_class_weights, reduction="none").mean(
            dim=(1, 2)
        )
        nc_ce = (per_pixel * has_types).sum() / has_types.sum()
        nc_dice = soft_dice_loss(outputs["nc"], batch["nc"], has_types)
        loss = loss + nc_ce + nc_dice
        parts.update(nc_ce=nc_ce.item(), nc_dice=nc_dice.item())
    return loss, parts
