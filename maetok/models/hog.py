"""HOG targets for the auxiliary HOG decoder (MaskFeat, Wei et al. 2022; paper §3.2).

Follows the MaskFeat / mmselfsup generator that the official MAETok code copies, with two fixes:

- the token grid is derived from the image and patch size, so any resolution divisible by the
  patch size works (the official generator hard-codes a 16x16 grid and breaks at 512 px);
- everything runs in fp32 with autocast disabled (the official one raises under bf16 autocast).

Per colour channel: Sobel gradients (reflect padding), magnitude sqrt(gx^2 + gy^2), unsigned
orientation in `nbins` bins of 180/nbins degrees, magnitudes weighted by a Gaussian window tiled
over the patches, summed into `cell_size` x `cell_size` cells and L2-normalised over the bins of
each (cell, channel). One patch of side p holds (p / cell_size)^2 cells, so its feature has
C * nbins * (p / cell_size)^2 entries: 3 * 9 * 4 = 108 for p = 16, cell 8 (the paper setting) and
equally 108 for the tiny model's p = 4 with cell 2.

Orientation convention (kept from MaskFeat): angle = atan2(gx, gy), i.e. measured from the
vertical gradient axis. Bin 0 collects vertical gradients (horizontal edges); bin nbins // 2
(= 4 for 9 bins) collects horizontal gradients (vertical edges).

Feature layout per patch (patches in raster order): index = (c * nbins + bin) * cells^2 + cell_row
* cells + cell_col, as in the official `_reshape`.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def gaussian_window(size, std):
    """(size, size) Gaussian centred on the window, normalised to sum 1."""
    n = torch.arange(size, dtype=torch.float32)
    w = torch.exp(-0.5 * ((n - n.mean()) / std) ** 2)
    w2d = w[:, None] * w[None, :]
    return w2d / w2d.sum()


class HOGGenerator(nn.Module):
    """Per-patch HOG features: (B, C, H, W) -> (B, N, C * nbins * (patch_size // cell_size)^2).

    Args:
        patch_size: tokenizer patch size p; features are grouped per p x p patch and the Gaussian
            window (std p / 2) is tiled once per patch, as the official 16/16 setting does.
        cell_size: side of a histogram cell in pixels (8 in MaskFeat and MAETok; 2 for 32 px images
            with p = 4, which keeps the 108-d layout of the paper).
        nbins: orientation bins over 180 degrees.
        in_chans: image channels, each histogrammed separately.
    """

    def __init__(self, patch_size=16, cell_size=8, nbins=9, in_chans=3):
        super().__init__()
        if patch_size % cell_size != 0:
            raise ValueError(f"HOG cell_size ({cell_size}) must divide patch_size ({patch_size})")
        self.patch_size = patch_size
        self.cell_size = cell_size
        self.nbins = nbins
        self.in_chans = in_chans
        sobel_x = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("weight_x", sobel_x.expand(in_chans, 1, 3, 3).clone(), persistent=False)
        self.register_buffer("weight_y", sobel_x.t().expand(in_chans, 1, 3, 3).clone(), persistent=False)
        self.register_buffer("window", gaussian_window(patch_size, patch_size / 2), persistent=False)

    @property
    def dim(self):
        return self.in_chans * self.nbins * (self.patch_size // self.cell_size) ** 2

    @torch.no_grad()
    def forward(self, x):
        """x: (B, C, H, W), any range (the official code feeds [-1, 1]) -> (B, N, dim), fp32."""
        B, C, H, W = x.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"HOG: image size {H}x{W} is not divisible by patch size {p}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.pad(x.float(), (1, 1, 1, 1), mode="reflect")
            gx = F.conv2d(x, self.weight_x, groups=C)  # (B, C, H, W)
            gy = F.conv2d(x, self.weight_y, groups=C)
            magnitude = torch.sqrt(gx**2 + gy**2) * self.window.repeat(H // p, W // p)
            phase = torch.atan2(gx, gy) / math.pi * self.nbins  # in (-nbins, nbins]
            bins = torch.floor(phase).long() % self.nbins

            hist = torch.zeros(B, C, self.nbins, H, W, device=x.device)
            hist.scatter_add_(2, bins.unsqueeze(2), magnitude.unsqueeze(2))
            s = self.cell_size
            hist = hist.unflatten(3, (H // s, s)).unflatten(5, (W // s, s)).sum(dim=(4, 6))  # (B, C, nbins, Hc, Wc)
            hist = F.normalize(hist, p=2, dim=2)
            return self.to_patches(hist)

    def to_patches(self, hist):
        """(B, C, nbins, Hc, Wc) cell histograms -> (B, N, C * nbins * k^2), k cells per patch side."""
        B, C, nb, Hc, Wc = hist.shape
        k = self.patch_size // self.cell_size
        hist = hist.reshape(B, C * nb, Hc // k, k, Wc // k, k)
        hist = hist.permute(0, 2, 4, 1, 3, 5)  # (B, Hp, Wp, C*nbins, k, k)
        return hist.reshape(B, (Hc // k) * (Wc // k), C * nb * k * k)
