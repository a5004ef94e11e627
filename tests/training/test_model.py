"""The MG-RAFA network: shapes, attention normalisation, Eq. 1-6 by hand, gradients, backbone."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from training.model import FrameBackbone, ModelConfig, build_model
from training.rafa import AttentiveAggregationHead, ReferenceAidedAttention, build_head, granularity_pools

HEADS = [
    ("baseline", {}),
    ("sg-rafa", {"splits": 1}),
    ("sg-rafa", {"splits": 4}),
    ("mg-rafa", {"granularities": 1}),
    ("mg-rafa", {"granularities": 2}),
    ("mg-rafa", {"granularities": 3}),
    ("mg-rafa", {"granularities": 4}),
    ("mg-afa", {"granularities": 4}),
]


def randomise_batchnorm(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every BN non-trivial statistics and affine parameters, so eval-mode BN is not the identity."""
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            count = bn.num_features
            bn.running_mean.copy_(torch.randn(count, generator=generator) * 0.1)
            bn.running_var.copy_(torch.rand(count, generator=generator) + 0.5)
            bn.weight.data.copy_(torch.rand(count, generator=generator) + 0.5)
            bn.bias.data.copy_(torch.randn(count, generator=generator) * 0.1)


@pytest.mark.parametrize(("name", "kwargs"), HEADS)
@pytest.mark.parametrize("frames", [1, 3, 8])
@pytest.mark.parametrize("batch", [1, 2])
def test_head_shapes_any_frame_count(name, kwargs, frames, batch):
    channels, size = 32, (8, 4)
    if kwargs.get("granularities") == 3:
        channels = 33  # three equal groups
    head = build_head(name, channels, size, reduction=4, **kwargs).eval()
    maps = torch.randn(batch, frames, channels, *size)
    with torch.no_grad():
        out = head(maps, return_attention=True)
    assert out.embedding.shape == (batch, channels)
    groups = kwargs.get("splits", kwargs.get("granularities", 0)) if name != "baseline" else 0
    assert len(out.parts) == groups
    if groups:
        torch.testing.assert_close(torch.cat(out.parts, dim=1), out.embedding)
        pools = granularity_pools(groups) if name.startswith("mg") else (1,) * groups
        for attention, pool in zip(out.attention, pools, strict=True):
            expected_size = (max(1, size[0] // pool), max(1, size[1] // pool))
            assert attention.shape == (batch, frames, sum(head.group_channels) // groups, *expected_size)
    else:
        assert out.attention is None
        torch.testing.assert_close(out.embedding, maps.mean(dim=(1, 3, 4)))


@pytest.mark.parametrize(("name", "kwargs"), [h for h in HEADS if h[0] != "baseline"])
def test_attention_sums_to_one_per_channel_over_all_positions(name, kwargs):
    head = build_head(name, 16, (8, 4), reduction=4, **kwargs).eval()
    with torch.no_grad():
        out = head(torch.randn(2, 5, 16, 8, 4), return_attention=True)
    for attention in out.attention:
        sums = attention.sum(dim=(1, 3, 4))  # over T, Hm, Wm: one per (batch, channel)
        torch.testing.assert_close(sums, torch.ones_like(sums))
        assert (attention >= 0).all()


def test_identical_frames_give_identical_attention_per_frame():
    generator = torch.Generator().manual_seed(1)
    head = build_head("mg-rafa", 16, (4, 2), granularities=1, reduction=4).eval()
    randomise_batchnorm(head, generator)
    frame = torch.randn(1, 1, 16, 4, 2, generator=generator)
    with torch.no_grad():
        out = head(frame.expand(2, 6, -1, -1, -1).contiguous(), return_attention=True)
    attention = out.attention[0]
    for t in range(1, 6):
        torch.testing.assert_close(attention[:, t], attention[:, 0])
    # Not trivially uniform over space: the attention depends on the node.
    assert attention[0, 0].std() > 0
    # With identical frames, each frame's weights are 1/T of a spatial softmax.
    torch.testing.assert_close(attention.sum(dim=1) / 6, attention[:, 0])


def conv_bn_relu_reference(layer: torch.nn.Sequential, vector: torch.Tensor) -> torch.Tensor:
    """ReLU(BN(W x)) for one node, written out from the layer's parameters (eval-mode BN)."""
    conv, bn = layer[0], layer[1]
    projected = conv.weight[:, :, 0, 0] @ vector
    normalised = (projected - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return normalised.clamp(min=0)


def rafa_reference(unit: ReferenceAidedAttention, maps: torch.Tensor) -> torch.Tensor:
    """Eq. 1-6 for one sample and one group, with explicit loops over nodes. maps: (T, C, H, W)."""
    frames, channels, height, width = maps.shape
    kh, kw = unit.pool_kernel
    pooled_h, pooled_w = height // kh, width // kw
    # Spatial average pooling of this granularity, cell by cell.
    nodes = torch.zeros(frames, channels, pooled_h, pooled_w, dtype=maps.dtype)
    for t in range(frames):
        for y in range(pooled_h):
            for x in range(pooled_w):
                nodes[t, :, y, x] = maps[t, :, y * kh:(y + 1) * kh, x * kw:(x + 1) * kw].mean(dim=(1, 2))
    positions = [(y, x) for y in range(pooled_h) for x in range(pooled_w)]  # raster scan order
    reference = [sum(nodes[t, :, y, x] for t in range(frames)) / frames for (y, x) in positions]  # F_R
    keys = [conv_bn_relu_reference(unit.nu, node) for node in reference]
    scores = []  # a_i for every node i = (t, y, x)
    values = []
    for t in range(frames):
        for (y, x) in positions:
            node = nodes[t, :, y, x]
            query = conv_bn_relu_reference(unit.mu, node)
            relation = torch.stack([query @ key for key in keys])  # r_i = [r_i1 .. r_iD]   (Eq. 1-2)
            embedded = torch.cat([conv_bn_relu_reference(unit.phi, node), conv_bn_relu_reference(unit.psi, relation)])
            scores.append(conv_bn_relu_reference(unit.theta, embedded))  # Eq. 3
            values.append(node)
    scores, values = torch.stack(scores), torch.stack(values)  # (K, C)
    weights = torch.softmax(scores, dim=0)  # over all K positions, per channel
    return (weights * values).sum(dim=0)  # Eq. 4


@pytest.mark.parametrize("granularities", [1, 2])
def test_mg_rafa_matches_loop_evaluation_of_equations(granularities):
    generator = torch.Generator().manual_seed(0)
    channels, size, frames = 8, (4, 2), 3
    head = AttentiveAggregationHead(channels, size, granularity_pools(granularities), reduction=2).double().eval()
    randomise_batchnorm(head, generator)
    maps = torch.randn(2, frames, channels, *size, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out = head(maps)
        group_channels = channels // granularities
        for sample in range(2):
            expected = []
            for index, unit in enumerate(head.groups):
                split = maps[sample, :, index * group_channels:(index + 1) * group_channels]
                expected.append(rafa_reference(unit, split))
            torch.testing.assert_close(out.embedding[sample], torch.cat(expected), rtol=1e-10, atol=1e-10)


def test_reduction_keeps_at_least_one_channel_for_two_reference_nodes():
    unit = ReferenceAidedAttention(64, (16, 8), pool=8, reduction=6)
    assert unit.pooled_size == (2, 1) and unit.num_reference == 2
    assert unit.psi[0].out_channels == 1
    assert unit.mu[0].out_channels == 64 // 6


@pytest.mark.parametrize(("name", "kwargs"), [h for h in HEADS if h[0] != "baseline"])
def test_gradients_reach_every_head_parameter(name, kwargs):
    torch.manual_seed(0)
    head = build_head(name, 16, (8, 4), reduction=4, **kwargs).train()
    maps = torch.randn(2, 3, 16, 8, 4, requires_grad=True)
    out = head(maps)
    loss = out.embedding.pow(2).sum() + sum(part.sum() for part in out.parts)
    loss.backward()
    for parameter_name, parameter in head.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name
    assert maps.grad.abs().sum() > 0


def test_appearance_only_head_has_no_relation_layers():
    afa = build_head("mg-afa", 16, (8, 4), granularities=4, reduction=4)
    rafa = build_head("mg-rafa", 16, (8, 4), granularities=4, reduction=4)
    assert not any(hasattr(unit, "mu") for unit in afa.groups)
    assert all(hasattr(unit, "psi") for unit in rafa.groups)
    assert sum(p.numel() for p in afa.parameters()) < sum(p.numel() for p in rafa.parameters())


def test_resnet50_last_stride_one_gives_16x8_map():
    with torch.device("meta"):
        backbone = FrameBackbone("resnet50")
        maps = backbone(torch.empty(2, 3, 256, 128))
    assert maps.shape == (2, 2048, 16, 8)


def test_full_model_forward_resnet18_any_t():
    torch.manual_seed(0)
    model = build_model(backbone="resnet18", head="mg-rafa", granularities=4, height=64, width=32).eval()
    assert model.config.feature_size == (4, 2)
    with torch.no_grad():
        for batch, frames in [(1, 1), (2, 3)]:
            out = model(torch.randn(batch, frames, 3, 64, 32))
            assert out.embedding.shape == (batch, 512)
            assert len(out.parts) == 4 and out.parts[0].shape == (batch, 128)


def test_pretrained_weights_load_from_local_file(tmp_path):
    torch.manual_seed(3)
    reference = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = FrameBackbone("resnet18", pretrained=path)
    torch.testing.assert_close(backbone.stem[0].weight, reference.conv1.weight)
    torch.testing.assert_close(backbone.layers[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    # The stride change survives loading.
    assert backbone.layers[3][0].conv1.stride == (1, 1)


def test_pretrained_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained weights not found"):
        FrameBackbone("resnet18", pretrained=tmp_path / "nope.pth")


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="N = 1..4"):
        build_head("mg-rafa", 16, (16, 8), granularities=5)
    with pytest.raises(ValueError, match="unknown head"):
        build_head("transformer", 16, (16, 8))
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model(ModelConfig(backbone="resnet18", height=100, width=50))
    with pytest.raises(ValueError, match="cannot feed"):
        build_head("mg-rafa", 3, (16, 8), granularities=4)
    # N=3 on 2048 channels: groups of 683, 683, 682.
    assert build_head("mg-rafa", 2048, (16, 8), granularities=3).group_channels == [683, 683, 682]


# ------------------------------------------------------------------- Table 3: the reference-node variants
def head_with_reference(reference: str, frames: int = 3) -> ReferenceAidedAttention:
    torch.manual_seed(0)
    head = ReferenceAidedAttention(12, (4, 2), pool=1, reduction=2, reference=reference,
                                   num_frames=frames if reference == "all" else None)  # fmt: skip
    return head.eval()


def test_reference_sets_have_the_papers_sizes():
    assert head_with_reference("temporal").num_reference == 8  # S-RFNs: H*W nodes of the averaged map
    assert head_with_reference("frame").num_reference == 8  # one frame's H*W nodes
    assert head_with_reference("all").num_reference == 3 * 8  # all T*H*W nodes ("ST")
    assert head_with_reference("all").psi[0].in_channels == 24


def test_per_frame_reference_ignores_other_frames_and_temporal_one_does_not():
    maps = torch.randn(1, 3, 12, 4, 2)
    changed = maps.clone()
    changed[:, 2] = torch.randn(12, 4, 2)  # only frame 3 differs
    with torch.no_grad():
        for reference, independent in (("frame", True), ("temporal", False), ("all", False)):
            head = head_with_reference(reference)
            before = head.attention_logits(head.pool_nodes(maps))[:, 0]
            after = head.attention_logits(head.pool_nodes(changed))[:, 0]
            # Frame 1's scores depend on frame 3 only through a shared reference.
            assert torch.allclose(before, after) == independent, reference


def test_all_nodes_reference_matches_its_definition_and_fixes_t():
    head = head_with_reference("all")
    maps = torch.randn(2, 3, 12, 4, 2)
    with torch.no_grad():
        flat = maps.flatten(0, 1)
        queries = head.mu(flat).unflatten(0, (2, 3)).flatten(3)  # (B, T, C/s, HW)
        keys = head.nu(flat).unflatten(0, (2, 3)).flatten(3)  # (B, T, C/s, HW)
        # relation of node i of frame t with node j of frame u, stacked frame by frame in raster order
        expected = torch.einsum("btci,bucj->btuji", queries, keys).flatten(2, 3)
        relations = expected.reshape(6, 24, 4, 2)
        scores = head.theta(torch.cat([head.phi(flat), head.psi(relations)], dim=1)).unflatten(0, (2, 3))
        assert torch.allclose(head.attention_logits(maps), scores, atol=1e-5)
        with pytest.raises(ValueError, match="T=3"):
            head(torch.randn(1, 4, 12, 4, 2))


def test_model_config_builds_the_reference_variants():
    model = build_model(backbone="resnet18", head="sg-rafa", height=64, width=32, reference="all", reference_frames=2)
    assert model.config.label == "SG-RAFA(S=1) ref=all"
    out = model(torch.randn(1, 2, 3, 64, 32))
    assert out.embedding.shape == (1, 512)
    with pytest.raises(ValueError, match="reference"):
        build_head("sg-rafa", 16, (4, 2), reference="nodes")
