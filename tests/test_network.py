import pytest
import torch
from torch import nn

from edge_svp import EdgeSVPError, SVPConfig, SVPNetwork


def tiny_sequential():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 8)
    )


def tiny_net(seed=0, **svp):
    cfg = SVPConfig(proj_dim=5, **svp)
    return SVPNetwork.from_sequential(
        tiny_sequential(), [3, 5], input_shape=(1, 4, 4), num_classes=3, svp=cfg, seed=seed
    )


def test_from_sequential_splits_at_boundaries():
    net = tiny_net()
    assert len(net) == 3
    assert [len(b) for b in net.blocks] == [3, 2, 1]
    assert net.all_logits(torch.randn(2, 1, 4, 4))[-1].shape == (2, 3)


@pytest.mark.parametrize("boundaries", [[3, 3], [0, 2], [2, 9], [5, 2]])
def test_bad_boundaries_are_rejected(boundaries):
    with pytest.raises(EdgeSVPError, match="boundaries"):
        SVPNetwork.from_sequential(tiny_sequential(), boundaries, (1, 4, 4), 3)


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(EdgeSVPError, match="block 1 cannot take input"):
        SVPNetwork.from_sequential(tiny_sequential(), [3], (1, 5, 5), 3)


def test_projections_are_buffers_seeded_per_block():
    net = tiny_net(seed=7)
    again = tiny_net(seed=7)
    other = tiny_net(seed=8)
    for a, b, c in zip(net.objectives, again.objectives, other.objectives, strict=True):
        assert torch.equal(a.projection.weight, b.projection.weight)
        assert not torch.equal(a.projection.weight, c.projection.weight)
    weights = [o.projection.weight for o in net.objectives]
    assert not torch.equal(weights[1], weights[2])  # same shape, different seed
    params = {id(p) for p in net.parameters()}
    assert all(id(o.projection.weight) not in params for o in net.objectives)


def test_trainable_parameters_exclude_projections_and_other_blocks():
    net = tiny_net()
    ids = {id(p) for p in net.trainable_parameters(1)}
    assert ids == {
        id(p) for p in [*net.blocks[1].parameters(), *net.objectives[1].head.parameters()]
    }


def test_no_gradient_crosses_a_block_boundary():
    """The loss of block 2 must leave block 1's parameters without gradient."""
    net = tiny_net(divergence="kl", beta=1.0, alignment="mse", lam=1.0)
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    h1 = net.blocks[0](x)
    v1 = net.objectives[0].project(h1)
    h2 = net.blocks[1](h1.detach())
    net.objectives[1](h2, v1, y).loss.backward()
    assert all(p.grad is None for p in net.blocks[0].parameters())
    assert all(p.grad is None for p in net.objectives[0].parameters())
    assert all(p.grad is not None for p in net.blocks[1].parameters())


def test_checkpoint_round_trip_keeps_weights_and_projections(tmp_path):
    net = tiny_net(seed=1)
    net.save(tmp_path / "net.pt", note="hello")
    fresh = tiny_net(seed=2)  # other weights, other projections
    checkpoint = fresh.load(tmp_path / "net.pt")
    assert checkpoint["note"] == "hello"
    for key, value in net.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    x = torch.randn(3, 1, 4, 4)
    net.eval(), fresh.eval()
    assert torch.equal(net(x), fresh(x))


def test_loading_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    tiny_net().save(tmp_path / "net.pt")
    other = SVPNetwork([nn.Sequential(nn.Flatten(), nn.Linear(16, 4))], (1, 4, 4), 3)
    with pytest.raises(EdgeSVPError, match="does not match"):
        other.load(tmp_path / "net.pt")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "net.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(EdgeSVPError, match="cannot read checkpoint"):
        tiny_net().load(path)


def test_probe_does_not_touch_batchnorm_statistics():
    block = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
    SVPNetwork([block], (1, 4, 4), 3)
    assert torch.equal(block[1].running_mean, torch.zeros(2))
    assert block.training


def test_the_cnn_normalises_by_batch_or_by_group():
    from edge_svp.config import CNNOptions
    from edge_svp.models import build_blocks
    from edge_svp.training.backprop import has_batchnorm

    batch = build_blocks("cnn", CNNOptions(channels=[[8], [12]]), (3, 8, 8))
    group = build_blocks("cnn", CNNOptions(channels=[[8], [12]], norm="group"), (3, 8, 8))
    assert all(has_batchnorm(b) for b in batch) and not any(has_batchnorm(b) for b in group)
    assert [m.num_groups for b in group for m in b if isinstance(m, nn.GroupNorm)] == [8, 4]
    x = torch.randn(6, 3, 8, 8)
    # GroupNorm normalises each example alone: an example's output does not depend on the
    # rest of its micro-batch, in training too
    assert torch.allclose(group[0](x)[:2], group[0](x[:2]), atol=1e-6)
    assert not torch.allclose(batch[0](x)[:2], batch[0](x[:2]), atol=1e-3)
    with pytest.raises(EdgeSVPError, match="unknown cnn norm 'layer'"):
        build_blocks("cnn", CNNOptions(norm="layer"), (3, 8, 8))


def test_the_cnn_pools_after_evenly_spaced_blocks():
    from edge_svp.config import CNNOptions
    from edge_svp.models import build_blocks

    def pooled(options, size=32):
        blocks = build_blocks("cnn", options, (3, size, size))
        return [i for i, b in enumerate(blocks, 1) if isinstance(b[-1], nn.MaxPool2d)]

    # the default: after every block while the map is 2 pixels or more
    assert pooled(CNNOptions(channels=[[4]] * 7)) == [1, 2, 3, 4, 5]
    assert pooled(CNNOptions(channels=[[4]] * 3), size=5) == [1, 2]
    deep = CNNOptions(channels=[[4]] * 12, downsamples=4)
    assert pooled(deep) == [3, 6, 9, 12]
    assert pooled(CNNOptions(channels=[[4]] * 10, downsamples=4)) == [3, 5, 8, 10]
    assert build_blocks("cnn", deep, (3, 32, 32))[-1](torch.randn(1, 4, 4, 4)).shape[-1] == 2
    for too_many in (CNNOptions(channels=[[4]] * 3, downsamples=4), deep):
        with pytest.raises(EdgeSVPError, match="cnn downsamples"):
            build_blocks("cnn", too_many, (3, 8, 8))


@pytest.mark.parametrize("profile", ["cifar10-cnn-deep", "cifar10-vit-deep-cpu"])
def test_the_deep_families_are_one_block_a_layer(profile):
    from edge_svp.config import load_profile
    from edge_svp.models import build_blocks
    from edge_svp.models.vit import TransformerLayer

    model = load_profile(profile).model
    blocks = build_blocks(model.kind, model.options, (3, 32, 32))
    assert len(blocks) == 12
    layer = nn.Conv2d if model.kind == "cnn" else TransformerLayer
    assert [sum(isinstance(m, layer) for m in b.modules()) for b in blocks] == [1] * 12
    x = torch.randn(2, 3, 32, 32)
    for block in blocks:
        x = block(x)
    # the CNN halves its map at the end of each of its 4 stages of 3 blocks
    assert x.shape == ((2, 128, 2, 2) if model.kind == "cnn" else (2, 64, 64))


def test_auxiliary_layers_are_copies_of_the_blocks_after_and_train_with_their_block():
    torch.manual_seed(0)
    plain = tiny_net()
    torch.manual_seed(0)
    net = tiny_net(aux_blocks=2)
    first, second, last = (o.auxiliary for o in net.objectives)
    assert (len(first), len(second), type(last)) == (2, 1, nn.Identity)  # none after the last
    copied, original = first[0][0].weight, net.blocks[1][0].weight
    assert torch.equal(copied, original) and copied is not original
    # copies take no random draws: the blocks and heads start as they would without them
    kept = [k for k in plain.state_dict() if k.startswith("blocks.") or ".head." in k]
    for key in kept:
        assert torch.equal(net.state_dict()[key], plain.state_dict()[key]), key
    trained = {id(p) for p in net.trainable_parameters(0)}
    assert {id(p) for p in first.parameters()} <= trained
    assert not {id(p) for p in net.blocks[1].parameters()} & trained
    # block 1's projection reads its auxiliary layers' 8 features, not its own 12
    assert net.objectives[0].projection.weight.shape == (5, 8)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    out = net.objectives[0](net.blocks[0](x), net.reference(x), y)
    out.loss.backward()
    assert all(p.grad is not None for p in first.parameters())
    assert all(p.grad is None for p in net.blocks[1].parameters())  # the copies train alone
    assert net.objectives[0].reference_parts() == ["auxiliary", "projection"]


@pytest.mark.parametrize("affine", [True, False])
def test_without_the_attention_norm_s_scale_a_detached_block_skips_its_input_gradient(affine):
    from torch.utils.flop_counter import FlopCounterMode

    from edge_svp.config import ViTOptions
    from edge_svp.models import build_blocks

    options = ViTOptions(dim=16, heads=2, layers_per_block=[1, 1], attention_norm_affine=affine)
    first, second = build_blocks("vit", options, (3, 8, 8))
    h = first(torch.randn(2, 3, 8, 8)).detach()  # as SVP feeds a block: (2, 4 tokens, 16)
    with FlopCounterMode(display=False) as forward:
        out = second(h)
    with FlopCounterMode(display=False) as backward:
        out.square().sum().backward()
    qkv_input_gradient = 2 * (2 * 4) * 16 * (3 * 16)  # 2 FLOPs a multiply-add, 8 tokens
    skipped = 2 * forward.get_total_flops() - backward.get_total_flops()
    assert skipped == (0 if affine else qkv_input_gradient)
    assert (second[0].norm1.weight is None) == (not affine)


def test_a_class_token_comes_first_the_same_for_every_image_and_learns():
    from edge_svp.config import ViTOptions
    from edge_svp.models import build_blocks

    options = ViTOptions(dim=16, heads=2, layers_per_block=[1], class_token=True)
    embedding = build_blocks("vit", options, (3, 8, 8))[0][0]
    tokens = embedding(torch.randn(2, 3, 8, 8))
    assert tokens.shape == (2, 1 + 4, 16)  # the class token, then 4 patches
    assert torch.equal(tokens[0, 0], tokens[1, 0])  # it depends on no image
    tokens[:, 0].sum().backward()
    assert embedding.class_token.grad.abs().sum() > 0
    without = ViTOptions(dim=16, heads=2, layers_per_block=[1])
    assert build_blocks("vit", without, (3, 8, 8))[0][0](torch.randn(2, 3, 8, 8)).shape[1] == 4
