"""A compact 3D U-Net for CBCT segmentation (PyTorch; import this module only when needed)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet3D"]


class _Block(nn.Module):
    """Two 3x3x3 convolutions, each followed by instance norm and leaky ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
            nn.InstanceNorm3d(c_out, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
            nn.InstanceNorm3d(c_out, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class UNet3D(nn.Module):
    """3D U-Net: ``len(channels)`` resolution levels, max-pool down, transposed-convolution up.

    Parameters
    ----------
    in_channels : int
        Input channels (1: the normalised CBCT).
    n_classes : int
        Output channels (logits, one per class, background first).
    channels : tuple of int
        Feature channels per level, finest first (default (12, 24, 48, 64)).

    Notes
    -----
    Input shape (N, in_channels, Z, Y, X) with Z, Y, X divisible by
    ``2 ** (len(channels) - 1)``; output (N, n_classes, Z, Y, X) logits.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 7, channels: tuple = (12, 24, 48, 64)):
        super().__init__()
        ch = [int(c) for c in channels]
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in ch:
            self.down.append(_Block(c_prev, c))
            c_prev = c
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for c_hi, c_lo in zip(reversed(ch[:-1]), reversed(ch[1:])):
            self.up.append(nn.ConvTranspose3d(c_lo, c_hi, 2, stride=2))
            self.dec.append(_Block(2 * c_hi, c_hi))
        self.head = nn.Conv3d(ch[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        n = len(self.down)
        for i, block in enumerate(self.down):
            x = block(x)
            if i < n - 1:
                skips.append(x)
                x = self.pool(x)
        for j, (up, dec) in enumerate(zip(self.up, self.dec)):
            x = up(x)
            x = dec(torch.cat([x, skips[n - 2 - j]], dim=1))
        return self.head(x)
