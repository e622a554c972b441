import torch

from edge_svp.svp import RandomProjection


def test_same_seed_same_matrix_other_seed_other_matrix():
    a, b, c = (
        RandomProjection(20, 8, seed=3),
        RandomProjection(20, 8, seed=3),
        RandomProjection(20, 8, seed=4),
    )
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)


def test_projection_is_independent_of_the_global_rng():
    torch.manual_seed(0)
    a = RandomProjection(10, 5, seed=1)
    torch.manual_seed(123)
    b = RandomProjection(10, 5, seed=1)
    assert torch.equal(a.weight, b.weight)


def test_projection_is_a_buffer_not_a_parameter():
    p = RandomProjection(10, 5, seed=1)
    assert list(p.parameters()) == []
    assert "weight" in p.state_dict()


def test_entries_have_variance_one_over_d0():
    p = RandomProjection(2000, 100, seed=0)
    assert abs(p.weight.var().item() * 100 - 1.0) < 0.05


def test_a_regenerated_projection_draws_the_stored_r_bit_for_bit_and_gives_its_v():
    """svp.store_projection = false: R_l drawn again from the seed, chunk by chunk, at every
    use; nothing of it is held or saved. R is the same bit for bit; v the same to float32
    rounding: a BLAS may pick another kernel for a chunk of R's rows than for R whole (on an
    AVX-512 Xeon: up to 4e-6 apart for values near 1, with 37 or 128 rows of z)."""
    for in_dim, out_dim in [(1000, 512), (2048, 512), (10, 512), (512, 10), (20, 8)]:
        stored = RandomProjection(in_dim, out_dim, seed=5)
        regenerated = RandomProjection(in_dim, out_dim, seed=5, stored=False)
        assert len(list(regenerated.chunks())) == -(-out_dim // len(next(regenerated.chunks())[1]))
        z = torch.randn(37, in_dim)
        torch.testing.assert_close(regenerated(z), stored(z), rtol=1e-5, atol=1e-5)
        assert torch.equal(regenerated.dense(), stored.weight)  # what the ONNX export holds
        assert regenerated.state_dict() == {} and list(regenerated.buffers()) == []


def test_a_network_with_regenerated_projections_trains_as_the_stored_one_and_saves_less():
    from edge_svp.config import MLPOptions, SVPConfig
    from edge_svp.models import build_blocks
    from edge_svp.network import SVPNetwork

    def net(store: bool) -> SVPNetwork:
        torch.manual_seed(0)
        blocks = build_blocks("mlp", MLPOptions(widths=[64, 64]), (30,))
        return SVPNetwork(blocks, (30,), 4, SVPConfig(proj_dim=32, store_projection=store), seed=0)

    stored, regenerated = net(True), net(False)
    x, y = torch.randn(16, 30), torch.randint(0, 4, (16,))
    for a, b in zip(stored.all_logits(x), regenerated.all_logits(x), strict=True):
        assert torch.equal(a, b)
    v_ref = stored.reference(x)
    assert torch.equal(v_ref, regenerated.reference(x))
    out_a = stored.objectives[0](stored.blocks[0](x), v_ref, y)
    out_b = regenerated.objectives[0](regenerated.blocks[0](x), v_ref, y)
    assert torch.equal(out_a.loss, out_b.loss) and torch.equal(out_a.v, out_b.v)
    saved = {k: v.numel() for k, v in stored.state_dict().items()}
    kept = {k: v.numel() for k, v in regenerated.state_dict().items()}
    projections = 32 * 30 + 2 * 32 * 64  # R_0, R_1, R_2
    assert sum(saved.values()) - sum(kept.values()) == projections


def test_a_regenerated_projection_gives_the_stored_one_s_gradients():
    stored = RandomProjection(300, 64, seed=2)
    regenerated = RandomProjection(300, 64, seed=2, stored=False)
    z = torch.randn(9, 300, requires_grad=True)
    z2 = z.detach().clone().requires_grad_()
    weights = torch.randn(9, 64)
    (stored(z) * weights).sum().backward()
    (regenerated(z2) * weights).sum().backward()
    torch.testing.assert_close(z2.grad, z.grad)  # summed chunk by chunk: rounding may differ


def test_an_auto_projection_is_held_until_let_go_and_gives_the_same_v_either_way():
    """svp.store_projection = auto: held, and adjustable by the memory planner (keep)."""
    auto = RandomProjection(700, 48, seed=3, stored="auto")
    assert auto.adjustable and auto.stored and not RandomProjection(700, 48, seed=3).adjustable
    z = torch.randn(5, 700)
    held = auto(z)
    auto.keep(False)
    assert not auto.stored and auto.state_dict() == {} and list(auto.buffers()) == []
    assert torch.equal(auto(z), held)
    auto.keep(True)
    assert auto.stored and torch.equal(auto(z), held)


def test_a_checkpoint_loads_whether_its_projections_were_held_or_not(tmp_path):
    """A run whose plan let the projections go saves none; either checkpoint loads into
    either network, whose outputs are then the saving network's."""
    from edge_svp.config import MLPOptions, SVPConfig
    from edge_svp.models import build_blocks
    from edge_svp.network import SVPNetwork

    def net(seed: int) -> SVPNetwork:
        torch.manual_seed(seed)
        blocks = build_blocks("mlp", MLPOptions(widths=[64, 64]), (30,))
        return SVPNetwork(blocks, (30,), 4, SVPConfig(proj_dim=32, store_projection="auto"))

    x = torch.randn(8, 30)
    for saved_held, loaded_held in [(True, False), (False, True)]:
        saving, loading = net(0), net(1)  # other weights, the same projections (seed 0)
        saving.store_projections(saved_held)
        loading.store_projections(loaded_held)
        saving.save(tmp_path / "model.pt")
        loading.load(tmp_path / "model.pt")
        assert [p.stored for p in loading.adjustable_projections()] == [loaded_held] * 3
        for a, b in zip(saving.all_logits(x), loading.all_logits(x), strict=True):
            assert torch.equal(a, b)
