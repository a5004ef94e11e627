"""Aggregation heads: per-frame feature maps (B, T, C, H, W) -> one video feature v (B, C).

The heads of the paper's Table 2, all built from one module:

* ``baseline``: global spatio-temporal average pooling.
* ``SG-RAFA(S)``: reference-aided attentive feature aggregation at the full resolution, channels split
  into S groups that each learn their own attention (S=1 is the paper's single-granularity module).
* ``MG-RAFA(N)``: channels split into N groups; group m is average-pooled by 2^(m-1) before its
  reference-aided attention (Eq. 5-6), so the groups see 16x8, 8x4, 4x2, 2x1 nodes for a 16x8 map.
* ``MG-AFA(N)``: as MG-RAFA, but the attention is inferred from appearance alone (no relations).

Notation follows Section 3.2 of the paper: for a group with nodes x_i (all T*Hm*Wm spatio-temporal
positions) the reference set F_R is the temporal average (S-RFNs, Hm*Wm nodes); relations
r_ij = mu(x_i)^T nu(y_j) (Eq. 1), stacked in raster order into r_i (Eq. 2); attention
a_i = theta([phi(x_i), psi(r_i)]) (Eq. 3); a Softmax over all spatio-temporal positions, separately for
every channel, weighs the nodes into v (Eq. 4). Every embedding function is a 1x1 convolution followed
by BatchNorm and ReLU, as the paper implements them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from training.architecture import DEFAULT_REDUCTION, HEAD_NAMES, REFERENCES


class HeadOutput(NamedTuple):
    """What every head returns, in train and eval mode alike."""

    embedding: torch.Tensor
    """The video feature v, (B, C)."""
    parts: tuple[torch.Tensor, ...]
    """The per-group features v_g, each (B, ~C/N); empty for the baseline. concat(parts) == embedding."""
    attention: tuple[torch.Tensor, ...] | None
    """Softmax-normalised attention per group, each (B, T, C/N, Hm, Wm); None unless asked for."""


class ConvBNReLU(nn.Sequential):
    """1x1 convolution (no bias: BN follows) + BatchNorm + ReLU, the paper's embedding function."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: type[nn.Module] = nn.BatchNorm2d):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )


def reduced(n: int, ratio: int) -> int:
    """n // ratio, but never below one channel (the coarsest granularity has only 2 reference nodes)."""
    return max(1, n // ratio)


class ReferenceAidedAttention(nn.Module):
    """Reference-aided attentive aggregation of one channel group at one granularity (Eq. 1-6).

    Args:
        channels: channels of this group (C/N).
        spatial_size: (H, W) of the per-frame feature map entering the head.
        pool: spatial average-pooling factor of this granularity (2^(m-1) for the m-th one).
        reduction: the ratio s of Eq. 1 and 3.
        use_relations: False gives the appearance-only ablation (AFA): theta sees phi(x) alone.
        norm_layer: normalisation after every 1x1 convolution.
        reference: which nodes are the reference set, one of :data:`REFERENCES`.
        num_frames: T, needed (and then fixed) only by ``reference="all"``.
    """

    def __init__(
        self,
        channels: int,
        spatial_size: tuple[int, int],
        pool: int = 1,
        reduction: int = DEFAULT_REDUCTION,
        use_relations: bool = True,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        reference: str = "temporal",
        num_frames: int | None = None,
    ):
        super().__init__()
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
        if reference == "all" and not num_frames:
            raise ValueError("reference='all' needs num_frames: psi sees T*H*W relations")
        height, width = spatial_size
        pooled_h, pooled_w = max(1, height // pool), max(1, width // pool)
        if height % pooled_h or width % pooled_w:
            raise ValueError(
                f"feature map {height}x{width} cannot be average-pooled by {pool} into whole cells; "
                "use an input size whose feature map divides by 2^(N-1)"
            )
        self.channels = channels
        self.pool_kernel = (height // pooled_h, width // pooled_w)
        self.pooled_size = (pooled_h, pooled_w)
        self.reference = reference
        self.num_frames = num_frames if reference == "all" else None
        # D_m: S-RFNs (and a single frame) have Hm*Wm nodes; all nodes of the clip are T times as many.
        self.num_reference = pooled_h * pooled_w * (num_frames if reference == "all" else 1)
        self.use_relations = use_relations

        inner = reduced(channels, reduction)
        self.phi = ConvBNReLU(channels, inner, norm_layer)
        theta_in = inner
        if use_relations:
            relation_inner = reduced(self.num_reference, reduction)
            self.mu = ConvBNReLU(channels, inner, norm_layer)
            self.nu = ConvBNReLU(channels, inner, norm_layer)
            self.psi = ConvBNReLU(self.num_reference, relation_inner, norm_layer)
            theta_in += relation_inner
        self.theta = ConvBNReLU(theta_in, channels, norm_layer)

    def pool_nodes(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, C, Hm, Wm): this granularity's nodes."""
        if self.pool_kernel == (1, 1):
            return feature_maps
        batch, frames, channels, height, width = feature_maps.shape
        pooled = F.avg_pool2d(feature_maps.flatten(0, 1), self.pool_kernel, self.pool_kernel)
        return pooled.unflatten(0, (batch, frames))

    def attention_logits(self, nodes: torch.Tensor) -> torch.Tensor:
        """Attention scores a_i for every node, before the Softmax: (B, T, C, Hm, Wm)."""
        batch, frames = nodes.shape[:2]
        flat = nodes.flatten(0, 1)  # (B*T, C, Hm, Wm): 1x1 convs act on every node alike
        embedded = [self.phi(flat)]
        if self.use_relations:
            queries = self.mu(flat).unflatten(0, (batch, frames)).flatten(3)  # (B, T, C/s, K_t)
            if self.reference == "frame":
                # Each frame is its own reference: r[b, t, j, i] = mu(x_ti) . nu(x_tj).
                keys = self.nu(flat).unflatten(0, (batch, frames)).flatten(3)  # (B, T, C/s, D)
                relations = torch.einsum("btci,btcj->btji", queries, keys)
            else:
                if self.reference == "all":
                    if frames != self.num_frames:
                        raise ValueError(f"reference='all' was built for T={self.num_frames}, got T={frames}")
                    # Every node of the clip, frame by frame in raster order: (B, C/s, T*Hm*Wm).
                    keys = self.nu(flat).unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4).flatten(2)
                else:
                    reference = nodes.mean(dim=1)  # F_R: temporal average pooling, (B, C, Hm, Wm)
                    keys = self.nu(reference).flatten(2)  # (B, C/s, D)
                # r[b, t, j, i] = mu(x_i) . nu(y_j): the relation vector of node i lies along j, in
                # the raster order of the reference nodes, so it can be a channel axis for psi.
                relations = torch.einsum("btci,bcj->btji", queries, keys)
            relations = relations.reshape(batch * frames, self.num_reference, *nodes.shape[-2:])
            embedded.append(self.psi(relations))
        scores = self.theta(torch.cat(embedded, dim=1))
        return scores.unflatten(0, (batch, frames))

    def forward(self, feature_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Aggregate (B, T, C, H, W) into v_m (B, C); also returns the normalised attention."""
        nodes = self.pool_nodes(feature_maps)
        scores = self.attention_logits(nodes)
        batch, frames, channels, height, width = nodes.shape
        # Softmax over all T*Hm*Wm positions, for every channel separately (Eq. 4).
        per_channel = scores.permute(0, 2, 1, 3, 4).reshape(batch, channels, -1)
        weights = per_channel.softmax(dim=-1)
        values = nodes.permute(0, 2, 1, 3, 4).reshape(batch, channels, -1)
        aggregated = (weights * values).sum(dim=-1)
        attention = weights.reshape(batch, channels, frames, height, width).permute(0, 2, 1, 3, 4)
        return aggregated, attention


class AverageHead(nn.Module):
    """The paper's baseline: global spatio-temporal average pooling."""

    def forward(self, feature_maps: torch.Tensor, return_attention: bool = False) -> HeadOutput:
        embedding = feature_maps.mean(dim=(1, 3, 4))
        return HeadOutput(embedding, (), None)


class AttentiveAggregationHead(nn.Module):
    """Channel groups, each aggregated by its own :class:`ReferenceAidedAttention`.

    ``pools`` gives one spatial pooling factor per group: ``(1, 2, 4, 8)`` is MG-RAFA(N=4),
    ``(1, 1, 1, 1)`` is SG-RAFA(S=4), ``(1,)`` is SG-RAFA(S=1).

    Args:
        channels: C of the per-frame feature maps, split into len(pools) channel groups.
        spatial_size: (H, W) of those maps (relations have H*W/pool^2 entries, so psi depends on it).
        pools: the pooling factor of each group.
        reduction: the ratio s.
        use_relations: False for MG-AFA.
        norm_layer: normalisation after every 1x1 convolution.
        reference: the reference set of every group (:data:`REFERENCES`).
        num_frames: T, for ``reference="all"`` only.
    """

    def __init__(
        self,
        channels: int,
        spatial_size: tuple[int, int],
        pools: Sequence[int],
        reduction: int = DEFAULT_REDUCTION,
        use_relations: bool = True,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        reference: str = "temporal",
        num_frames: int | None = None,
    ):
        super().__init__()
        if not pools:
            raise ValueError("at least one group is needed")
        if channels < len(pools):
            raise ValueError(f"{channels} channels cannot feed {len(pools)} groups")
        # Equal groups where C divides by N (always, for the paper's N=1, 2, 4); otherwise the first
        # C mod N groups take one channel more, so that N=3 works too.
        base, extra = divmod(channels, len(pools))
        self.group_channels = [base + (index < extra) for index in range(len(pools))]
        self.groups = nn.ModuleList(
            ReferenceAidedAttention(
                width, spatial_size, pool, reduction, use_relations, norm_layer, reference, num_frames
            )
            for width, pool in zip(self.group_channels, pools, strict=True)
        )

    def forward(self, feature_maps: torch.Tensor, return_attention: bool = False) -> HeadOutput:
        splits = feature_maps.split(self.group_channels, dim=2)
        parts, attention = [], []
        for group, split in zip(self.groups, splits, strict=True):
            aggregated, weights = group(split)
            parts.append(aggregated)
            attention.append(weights)
        embedding = torch.cat(parts, dim=1)
        return HeadOutput(embedding, tuple(parts), tuple(attention) if return_attention else None)


def granularity_pools(granularities: int) -> tuple[int, ...]:
    """Pooling factors 1, 2, 4, ... of MG-RAFA's N granularities (adjacent levels differ 4x in nodes)."""
    if not 1 <= granularities <= 4:
        raise ValueError(f"the paper defines N = 1..4 granularities, got {granularities}")
    return tuple(2**m for m in range(granularities))


def build_head(
    name: str,
    channels: int,
    spatial_size: tuple[int, int],
    granularities: int = 4,
    splits: int = 1,
    reduction: int = DEFAULT_REDUCTION,
    reference: str = "temporal",
    num_frames: int | None = None,
) -> nn.Module:
    """Build one of the paper's heads by name: baseline, sg-rafa, mg-rafa or mg-afa.

    ``reference`` chooses the reference nodes of the relation heads (Table 3); ``num_frames`` is T, used
    only by ``reference="all"``.
    """
    name = name.lower()
    if name == "baseline":
        return AverageHead()
    options = {"reference": reference, "num_frames": num_frames}
    if name == "sg-rafa":
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}")
        return AttentiveAggregationHead(channels, spatial_size, (1,) * splits, reduction, **options)
    if name in ("mg-rafa", "mg-afa"):
        return AttentiveAggregationHead(
            channels, spatial_size, granularity_pools(granularities), reduction, use_relations=name == "mg-rafa",
            **options,
        )
    raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEAD_NAMES)}")
