"""Batch data augmentation on in-memory tensors, vectorised over the batch and seeded by a generator.

The data sets live as normalised tensors (nas_core/data.py), so augmentation runs on whole batches
instead of per-image PIL transforms. The two transforms are the ones the DARTS / PC-DARTS / GDAS
reference CIFAR pipelines use:

- ``random_crop_flip``: ``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip()``. The reference
  pads the raw image with zeros before normalising; we pad the already-normalised tensor with zeros,
  i.e. with the per-channel mean colour. That is the usual batched equivalent and keeps the padded
  border neutral for the network.
- ``cutout``: the DARTS ``Cutout(length)`` (applied after normalisation there too): one square hole
  per image, its centre drawn uniformly over the whole image, the square clipped at the borders (so
  holes near an edge are smaller), the hole set to 0.

Both are deterministic given the ``torch.Generator`` (drawn on the CPU, then moved to ``x``'s device)
and preserve shape and dtype; they never modify ``x`` in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_batch(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what} expects a batch of images (N, C, H, W), got shape {tuple(x.shape)}")


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator | None, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Zero-padded random crop back to the input size, then a random horizontal flip, per sample.

    ``pad=0`` disables the crop, ``flip=False`` the flip. The output is a new tensor of ``x``'s shape.
    """
    _check_batch(x, "random_crop_flip")
    if pad < 0:
        raise ValueError(f"random_crop_flip: pad must be >= 0, got {pad}")
    n, _c, h, w = x.shape
    if n == 0 or (pad == 0 and not flip):
        return x.clone()
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    oy, ox, flips = oy.to(dev), ox.to(dev), flips.to(dev)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h[None, :]  # (N, H) rows of the padded image
    cols = torch.where(flips[:, None], ox[:, None] + (w - 1 - ar_w)[None, :], ox[:, None] + ar_w[None, :])  # (N, W)
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    # Gather in (N, H, W, C) layout with one advanced-indexing call, then back to (N, C, H, W).
    nhwc = padded.permute(0, 2, 3, 1)
    out = nhwc[torch.arange(n, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, generator: torch.Generator | None, length: int) -> torch.Tensor:
    """One ``length`` x ``length`` hole (zeroed, all channels) per sample, as DARTS' ``Cutout``.

    ``length <= 0`` returns an unchanged copy.
    """
    _check_batch(x, "cutout")
    n, _c, h, w = x.shape
    if length <= 0 or n == 0:
        return x.clone()
    dev = x.device
    cy = torch.randint(0, h, (n,), generator=generator).to(dev)
    cx = torch.randint(0, w, (n,), generator=generator).to(dev)
    half = length // 2
    y1, y2 = (cy - half).clamp(0, h), (cy + half).clamp(0, h)
    x1, x2 = (cx - half).clamp(0, w), (cx + half).clamp(0, w)
    ar_h = torch.arange(h, device=dev)[None, :]
    ar_w = torch.arange(w, device=dev)[None, :]
    in_rows = (ar_h >= y1[:, None]) & (ar_h < y2[:, None])  # (N, H)
    in_cols = (ar_w >= x1[:, None]) & (ar_w < x2[:, None])  # (N, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)
    return x.masked_fill(hole[:, None, :, :], 0)
