"""The building blocks of focalbench's small DETR: sine position encodings, post-norm transformer
encoder and decoder layers (DETR, Carion et al. 2020, arXiv 2005.12872) and a ResNet cut at a
chosen stride."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50

# C4 (stride 16): an 8 x 8 memory at 128 px to sample the queries' content from. C5's 4 x 4 is
# all border and holds several small shapes per token; C3 (16 x 16) trained no better here.
FEATURE_STRIDE = 16


class SinePositionEncoding(nn.Module):
    """DETR's 2D sine encoding of a feature map: d/2 channels encode y, d/2 encode x, each as
    sin/cos pairs at geometric frequencies of the position normalized to [0, 2 pi]."""

    def __init__(self, d_model: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if d_model % 4:
            raise ValueError(f"sine position encoding needs d_model divisible by 4, got {d_model}")
        self.half, self.temperature = d_model // 2, temperature

    def encode(self, t: Tensor) -> Tensor:
        """Coordinates in [0, 1] -> [..., d/2] sin/cos pairs."""
        i = torch.arange(self.half, device=t.device, dtype=torch.float32)
        freq = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.half)
        angle = t[..., None].float() * 2 * math.pi / freq  # [..., d/2]
        return torch.stack([angle[..., 0::2].sin(), angle[..., 1::2].cos()], dim=-1).flatten(-2)

    def axis(self, n: int, device: torch.device) -> Tensor:
        return self.encode((torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n)

    def points(self, xy: Tensor) -> Tensor:
        """[..., 2] (x, y) in [0, 1] -> [..., d], y first as in forward."""
        return torch.cat([self.encode(xy[..., 1]), self.encode(xy[..., 0])], dim=-1)

    def forward(self, height: int, width: int, device: torch.device) -> Tensor:
        """-> [height * width, d_model], row-major like feature.flatten(2)."""
        y, x = self.axis(height, device), self.axis(width, device)  # [H, d/2], [W, d/2]
        grid = (y[:, None].expand(-1, width, -1), x[None].expand(height, -1, -1))
        return torch.cat(grid, dim=-1).flatten(0, 1)  # [H * W, d]


def _ffn(d: int, ff: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, d))


class EncoderLayer(nn.Module):
    """Post-norm self-attention layer; positions go into queries and keys, not values (DETR)."""

    def __init__(self, d: int, nheads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, nheads, dropout=dropout, batch_first=True)
        self.ffn, self.drop = _ffn(d, ff, dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:  # [B, HW, d], [1, HW, d]
        q = src + pos
        src = self.norm1(src + self.drop(self.attn(q, q, src, need_weights=False)[0]))
        return self.norm2(src + self.drop(self.ffn(src)))


class DecoderLayer(nn.Module):
    """Query self-attention, cross-attention to the encoder memory, FFN; post-norm (DETR)."""

    def __init__(self, d: int, nheads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, nheads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, nheads, dropout=dropout, batch_first=True)
        self.ffn, self.drop = _ffn(d, ff, dropout), nn.Dropout(dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        q = tgt + query_pos  # [B, Q, d]
        tgt = self.norm1(tgt + self.drop(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attn = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.drop(attn))
        return self.norm3(tgt + self.drop(self.ffn(tgt)))


class ResNetBody(nn.Module):
    """A torchvision ResNet cut after the stage of the given stride (8: layer2, 16: layer3,
    32: layer4), keeping torchvision's parameter names so that a torchvision state dict loads
    into it (the keys of the dropped stages and the classifier are ignored). norm_layer: the
    ResNet's BatchNorm (model.norm; models/weights.py)."""

    def __init__(
        self, name: str, stride: int = FEATURE_STRIDE, norm_layer: type[nn.Module] = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        stages = {8: "layer2", 16: "layer3", 32: "layer4"}
        if stride not in stages:
            raise ValueError(f"ResNetBody: stride must be one of {sorted(stages)}, got {stride}")
        resnet = {"resnet18": resnet18, "resnet50": resnet50}[name]
        self.net = resnet(weights=None, norm_layer=norm_layer)
        last = getattr(self.net, stages[stride])
        self.out_channels = last[-1].conv1.in_channels  # the stage's width (R18: 256 at stride 16)
        for dropped in {8: ("layer3", "layer4"), 16: ("layer4",), 32: ()}[stride]:
            setattr(self.net, dropped, nn.Identity())
        self.net.fc = nn.Identity()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))
