"""HoVer-Net-style networks: an encoder-decoder with skip connections and NP / HV / NC heads.

Two encoders share one decoder design:

* ``"light"``: a small residual U-Net encoder (~3 M parameters) that runs at useful speed on a laptop CPU;
* ``"preact-resnet50"``: the original HoVer-Net encoder (pre-activation ResNet-50) for GPU users.

The network is fully convolutional; inputs must have height and width divisible by 32 (``"light"``: 16, times
``subpixel``). Outputs have the input's spatial size. With ``subpixel`` 2 the network computes at half its input's
resolution: the input is pixel-unshuffled (each 2x2 block becomes 12 channels, so no detail is averaged away) and each
head predicts its 2x2 output block from one feature vector (pixel shuffle), for about a quarter of the computation.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pathoseg.errors import SettingsError


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_ch, out_ch, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output, ReLU of the convolutions plus the shortcut."""
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x), inplace=True)


class LightEncoder(nn.Module):
    """Residual encoder returning feature maps at strides 1, 2, 4, 8, 16."""

    def __init__(self, widths: tuple[int, ...] = (24, 32, 64, 128, 256), in_channels: int = 3):
        super().__init__()
        self.widths = widths
        self.stem = nn.Sequential(_conv_bn_relu(in_channels, widths[0]), _conv_bn_relu(widths[0], widths[0]))
        self.stages = nn.ModuleList(
            nn.Sequential(ResBlock(widths[i], widths[i + 1], stride=2), ResBlock(widths[i + 1], widths[i + 1]))
            for i in range(len(widths) - 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 1, 2, 4, 8 and 16."""
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


class PreactBottleneck(nn.Module):
    """Pre-activation ResNet bottleneck (He et al. 2016), as in HoVer-Net's encoder."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output (pre-activation: the next block or the decoder normalises it)."""
        pre = F.relu(self.bn0(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn1(out)))
        out = self.conv3(F.relu(self.bn2(out)))
        return out + shortcut


class PreactResNet50Encoder(nn.Module):
    """HoVer-Net's encoder: pre-activation ResNet-50, features at strides 1, 2, 4, 8, 16, 32."""

    def __init__(self) -> None:
        super().__init__()
        self.widths = (64, 64, 256, 512, 1024, 2048)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True))
        self.down = nn.Sequential(
            nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True)
        )
        layout = [(64, 64, 256, 3, 2), (256, 128, 512, 4, 2), (512, 256, 1024, 6, 2), (1024, 512, 2048, 3, 2)]
        self.stages = nn.ModuleList()
        for in_ch, mid_ch, out_ch, n_blocks, stride in layout:
            blocks = [PreactBottleneck(in_ch, mid_ch, out_ch, stride)]
            blocks += [PreactBottleneck(out_ch, mid_ch, out_ch) for _ in range(n_blocks - 1)]
            self.stages.append(nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 1, 2, 4, 8, 16 and 32."""
        features = [self.stem(x)]
        features.append(self.down(features[-1]))
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


class UpBlock(nn.Module):
    """Upsample by 2, concatenate the skip connection, two 3x3 convs."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.convs = nn.Sequential(_conv_bn_relu(in_ch + skip_ch, out_ch), _conv_bn_relu(out_ch, out_ch))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` upsampled to ``skip``'s size, joined to it and convolved."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """U-Net decoder from the deepest feature map back to stride 1."""

    def __init__(self, encoder_widths: tuple[int, ...], decoder_widths: tuple[int, ...]):
        super().__init__()
        skips = list(reversed(encoder_widths[:-1]))
        ins = [encoder_widths[-1], *decoder_widths[:-1]]
        self.blocks = nn.ModuleList(UpBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_widths))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The stride-1 trunk from the encoder's feature maps (deepest last)."""
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = block(x, skip)
        return x


ENCODERS = {
    "light": (LightEncoder, (128, 64, 32, 24)),
    "preact-resnet50": (PreactResNet50Encoder, (512, 256, 128, 64, 64)),
}


class HoVerNet(nn.Module):
    """Encoder, shared decoder trunk, and three heads.

    Forward returns a dict of tensors for input ``(B, 3, H, W)`` float in [0, 1]:
    ``np`` logits ``(B, np_classes, H, W)``, ``hv`` ``(B, 2, H, W)`` in [-1, 1] (channel 0 horizontal, 1 vertical),
    ``nc`` logits ``(B, n_classes, H, W)``.

    Parameters
    ----------
    encoder : {"light", "preact-resnet50"}
    n_classes : int
        Nucleus classes for the NC head, background included (CoNSeP: 5).
    np_classes : int
        Nuclear-pixel classes: 2 (background, nucleus) or 3 (background, interior, boundary band).
    subpixel : int
        1, or r: the encoder, decoder and heads run at 1/r of the input's resolution on its pixel-unshuffled
        r x r blocks, and the heads' outputs are pixel-shuffled back to the input's resolution.
    """

    def __init__(self, encoder: str = "light", n_classes: int = 5, np_classes: int = 2, subpixel: int = 1):
        super().__init__()
        if encoder not in ENCODERS:
            raise SettingsError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODERS)}")
        if subpixel != 1 and encoder != "light":
            raise SettingsError(f"subpixel {subpixel} is only built for the light encoder")
        encoder_cls, decoder_widths = ENCODERS[encoder]
        self.n_classes, self.np_classes, self.subpixel = n_classes, np_classes, subpixel
        self.encoder = LightEncoder(in_channels=3 * subpixel**2) if subpixel != 1 else encoder_cls()
        self.decoder = Decoder(self.encoder.widths, decoder_widths)
        head_in = decoder_widths[-1]
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(_conv_bn_relu(head_in, head_in), nn.Conv2d(head_in, out_ch * subpixel**2, 1))
                for name, out_ch in (("np", np_classes), ("hv", 2), ("nc", n_classes))
            }
        )
        self.pixel_mean: torch.Tensor
        self.register_buffer("pixel_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three heads' maps for (B, 3, H, W) input in [0, 1] (shapes in the class docstring)."""
        trunk = self.decoder(self.encoder(F.pixel_unshuffle(rgb - self.pixel_mean, self.subpixel)))
        out = {name: F.pixel_shuffle(head(trunk), self.subpixel) for name, head in self.heads.items()}
        out["hv"] = torch.tanh(out["hv"])
        return out


def subpixel_from(network: HoVerNet, subpixel: int) -> HoVerNet:
    """A ``subpixel`` network that starts as ``network`` run on the r x r block means of its input, its maps repeated
    over each block: a warm start for training a model at r times ``network``'s resolution from one trained at it.

    ``network`` must have subpixel 1 and the light encoder. The first convolution's weights are shared out over the
    r² pixels of a block (pixel_unshuffle puts channel c of block offset k at c * r² + k), the heads' last ones
    repeated for each output offset (pixel_shuffle reads output channel o at offset k from o * r² + k).
    """
    converted = HoVerNet("light", network.n_classes, network.np_classes, subpixel)
    state = network.state_dict()
    blocks = subpixel**2
    first = "encoder.stem.0.0.weight"
    state[first] = state[first].repeat_interleave(blocks, dim=1) / blocks
    for name in network.heads:
        for key in (f"heads.{name}.1.weight", f"heads.{name}.1.bias"):
            state[key] = state[key].repeat_interleave(blocks, dim=0)
    converted.load_state_dict(state)
    return converted


def fused_for_inference(network: nn.Module) -> nn.Module:
    """An eval-mode copy of ``network`` with every Conv2d -> BatchNorm2d pair folded into one Conv2d.

    Same function (up to rounding), one pass over each feature map fewer: about 15% faster on CPU.
    """
    fused = copy.deepcopy(network).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, norm = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, norm)
                    module[i + 1] = nn.Identity()
    return fused
