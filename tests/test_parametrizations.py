"""Each compressed parametrization computes what its definition says, round-trips, and refuses bad sizes."""

import math

import pytest
import torch
import torch.nn.functional as F

from tokenbounds.errors import UserError
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.groups import PARAMETRIZATIONS
from tokenbounds.models.kronecker import KroneckerLinear
from tokenbounds.models.lora import LoRALinear
from tokenbounds.models.monarch import MonarchLinear
from tokenbounds.models.parametrization import (
    FREE_FILE,
    SPEC_FILE,
    build_model,
    count_parameters,
    free_parameters,
    load_free_parameters,
    load_trained,
    make_spec,
    spec_bytes,
)
from tokenbounds.models.subspace import KroneckerProjection

pytestmark = pytest.mark.usefixtures("one_torch_thread")


V = 53
ARCH = GPTConfig(vocab_size=V, context=12, n_layer=2, n_head=2, n_embd=16)
LORA = {"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"}
DENSE = {"attn": "dense", "mlp": "dense", "embed": "dense", "pos": "dense", "norm": "dense"}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ids(seed=0):
    return torch.randint(0, V, (2, 12), generator=gen(seed))


def randomize_(tensors, seed=1):
    with torch.no_grad():
        for i, t in enumerate(tensors.values()):
            t.copy_(torch.randn(t.shape, generator=gen(seed + i)) * 0.1)


def test_lora_with_zero_b_is_the_dense_base_model():
    dense = build_model(make_spec(ARCH, DENSE, init_seed=3)).eval()
    lora = build_model(make_spec(ARCH, LORA, init_seed=3, rank=2)).eval()
    assert all(torch.count_nonzero(p) == 0 for n, p in free_parameters(lora).items() if n.endswith("lora_b"))
    torch.testing.assert_close(lora(ids()), dense(ids()), rtol=0, atol=0)


def test_lora_linear_is_w0_plus_scaled_b_a():
    base = torch.nn.Linear(12, 20, bias=True)
    layer = LoRALinear(base, rank=3, alpha=6.0, generator=gen())
    torch.nn.init.normal_(layer.lora_b, generator=gen(1))
    x = torch.randn(4, 12, generator=gen(2))
    dense = base.weight + 2.0 * layer.lora_b @ layer.lora_a
    torch.testing.assert_close(layer(x), F.linear(x, dense, base.bias))


def test_kronecker_linear_is_the_explicit_kron_matrix():
    layer = KroneckerLinear(12, 18, factor=3, bias=True, generator=gen())
    torch.nn.init.normal_(layer.bias, generator=gen(1))
    x = torch.randn(2, 5, 12, generator=gen(2))
    weight = torch.kron(layer.u, layer.v)
    assert weight.shape == (18, 12)
    torch.testing.assert_close(layer(x), x @ weight.T + layer.bias)


def explicit_monarch(layer: MonarchLinear) -> torch.Tensor:
    """L P R built from torch.block_diag and an explicit permutation matrix, independently of the layer's einsums."""
    b, n_out = layer.blocks, layer.out_features
    inner = n_out // b
    right = torch.block_diag(*layer.right)  # (out, in): block i maps input group i to rows [i*inner, (i+1)*inner)
    perm = torch.zeros(n_out, n_out)
    for i in range(b):
        for o in range(inner):
            perm[o * b + i, i * inner + o] = 1.0  # (b, out/b) grid -> (out/b, b) grid
    left = torch.block_diag(*layer.left)  # (out, out): block j mixes the b entries of row j
    return left @ perm @ right


@pytest.mark.parametrize("n_in,n_out,blocks", [(8, 8, 2), (12, 24, 4), (16, 8, 4)])
def test_monarch_linear_is_its_explicit_dense_matrix(n_in, n_out, blocks):
    layer = MonarchLinear(n_in, n_out, blocks=blocks, bias=False, generator=gen())
    x = torch.randn(3, n_in, generator=gen(1))
    weight = explicit_monarch(layer)
    torch.testing.assert_close(layer(x), x @ weight.T)
    torch.testing.assert_close(layer.dense_weight(), weight)
    assert torch.linalg.matrix_rank(weight) > n_in // blocks  # genuinely mixes across blocks


def test_structured_layers_start_at_a_dense_layers_scale():
    x = torch.randn(4000, 64, generator=gen())
    for layer in (KroneckerLinear(64, 64, 8, False, gen()), MonarchLinear(64, 64, 8, False, gen())):
        std = layer(x).std().item()
        assert 0.5 * 0.02 * math.sqrt(64) < std < 2 * 0.02 * math.sqrt(64)


def test_projection_fast_path_is_the_explicit_kronecker_matrix():
    proj = KroneckerProjection(n_params=1000, dim=37, seed=5, terms=2)
    matrix = proj.matrix()
    assert matrix.shape == (1000, 37)
    z = torch.randn(37, generator=gen())
    torch.testing.assert_close(proj(z), matrix @ z, rtol=1e-5, atol=1e-5)


def test_projection_is_deterministic_from_its_seed():
    z = torch.randn(300, generator=gen())
    a, b = KroneckerProjection(5000, 300, seed=9, terms=2), KroneckerProjection(5000, 300, seed=9, terms=2)
    assert torch.equal(a(z), b(z))
    assert not torch.allclose(a(z), KroneckerProjection(5000, 300, seed=10, terms=2)(z))


def test_one_term_projection_has_exactly_orthonormal_columns():
    proj = KroneckerProjection(n_params=900, dim=60, seed=0, terms=1)  # 900 = 30 x 30: no rows cut
    gram = proj.matrix().T @ proj.matrix()
    torch.testing.assert_close(gram, torch.eye(60), rtol=0, atol=1e-5)


def test_summed_projection_has_near_orthonormal_columns():
    proj = KroneckerProjection(n_params=20000, dim=200, seed=0, terms=2)
    gram = proj.matrix().T @ proj.matrix()
    assert (gram.diagonal() - 1).abs().max() < 0.05
    assert (gram - torch.diag(gram.diagonal())).abs().max() < 0.05


def test_sublora_at_z_zero_is_theta0_and_moves_along_p():
    plain = build_model(make_spec(ARCH, LORA, rank=2)).eval()
    sub = build_model(make_spec(ARCH, LORA, rank=2, subspace_dim=40)).eval()
    assert list(free_parameters(sub)) == ["z"]
    torch.testing.assert_close(sub(ids()), plain(ids()), rtol=0, atol=0)
    randomize_(free_parameters(sub))
    flat = torch.cat([t.reshape(-1) for t in sub.projected_parameters().values()])
    scale = math.sqrt(sub.n_projected / 40)  # sqrt(D/d): a unit step in z moves each parameter by ~1 (rms)
    expected = sub.theta0 + scale * sub.projection.matrix() @ sub.z.detach()
    torch.testing.assert_close(flat, expected, rtol=1e-5, atol=1e-6)
    moved = (flat - sub.theta0).detach()
    assert moved.pow(2).mean().sqrt().item() == pytest.approx(sub.z.detach().pow(2).mean().sqrt().item(), rel=0.3)
    theta0 = torch.cat([p.detach().reshape(-1) for p in free_parameters(plain).values()])
    torch.testing.assert_close(sub.theta0, theta0, rtol=0, atol=0)  # theta_0 is the plain model's initialisation


@pytest.mark.parametrize(
    "groups,extra",
    [
        (DENSE, {}),
        (LORA, {"rank": 2}),
        (LORA, {"rank": 2, "subspace_dim": 64}),
        ({"attn": "kronecker", "mlp": "kronecker", "norm": "dense"}, {"kron_factor": 4}),
        ({"attn": "monarch", "mlp": "monarch", "embed": "dense"}, {"monarch_blocks": 2}),
    ],
)
def test_spec_plus_free_parameters_rebuild_the_same_model(tmp_path, groups, extra):
    from safetensors.torch import save_file

    spec = make_spec(ARCH, groups, init_seed=11, **extra)
    trained = build_model(spec)
    randomize_(free_parameters(trained))
    (tmp_path / SPEC_FILE).write_bytes(spec_bytes(spec))
    save_file({k: v.detach().contiguous() for k, v in free_parameters(trained).items()}, str(tmp_path / FREE_FILE))
    rebuilt, read = load_trained(tmp_path)
    assert read == spec
    torch.testing.assert_close(rebuilt(ids()), trained.eval()(ids()), rtol=0, atol=0)


def test_free_parameters_are_exactly_what_trains():
    spec = make_spec(ARCH, {"attn": "kronecker", "norm": "dense"}, kron_factor=4)
    model = build_model(spec)
    free = free_parameters(model)
    assert all(".attn." in n or "ln" in n for n in free)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(free)
    assert not any(n.startswith(("wte", "wpe")) or ".mlp." in n for n in free)


def test_load_free_parameters_refuses_a_mismatch():
    model = build_model(make_spec(ARCH, LORA, rank=2))
    values = {k: v.detach().clone() for k, v in free_parameters(model).items()}
    with pytest.raises(UserError, match="missing: wte.lora_a"):
        load_free_parameters(model, {k: v for k, v in values.items() if k != "wte.lora_a"})
    with pytest.raises(UserError, match="unexpected: extra"):
        load_free_parameters(model, {**values, "extra": torch.zeros(1)})
    with pytest.raises(UserError, match="shape"):
        load_free_parameters(model, {**values, "wte.lora_a": torch.zeros(3, 3)})


@pytest.mark.parametrize(
    "groups,extra,match",
    [
        ({"attn": "lora"}, {"rank": 17}, "rank 17 is larger than the width"),
        ({"embed": "lora"}, {"rank": 17}, "rank 17 is larger than the width of the token embedding"),
        ({"attn": "kronecker"}, {"kron_factor": 3}, "does not factor"),
        ({"mlp": "monarch"}, {"monarch_blocks": 3}, "does not factor"),
        ({"attn": "lora"}, {"rank": 1, "subspace_dim": 10**6}, "larger than the number of trainable parameters"),
        ({"pos": "lora"}, {}, "group pos cannot be 'lora'"),
        ({"embed": "kronecker"}, {}, "group embed cannot be 'kronecker'"),
        ({"ffn": "dense"}, {}, "unknown layer group 'ffn'"),
        ({}, {}, "no layer group is trained"),
        ({"head": "dense", "embed": "lora"}, {}, "given twice"),
    ],
)
def test_bad_parametrizations_are_user_errors(groups, extra, match):
    with pytest.raises(UserError, match=match):
        build_model(make_spec(ARCH, groups, **extra))


def test_projection_stays_float32_under_bfloat16_autocast():
    proj = KroneckerProjection(n_params=3000, dim=200, seed=0, terms=2)
    z = torch.randn(200, generator=gen())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = proj(z)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, proj(z))


def test_sublora_is_lora_behind_a_subspace_and_every_named_parametrization_builds():
    assert PARAMETRIZATIONS["lora"] == LORA and PARAMETRIZATIONS["dense"] == DENSE
    lora = build_model(make_spec(ARCH, PARAMETRIZATIONS["lora"], rank=2))
    sublora = build_model(make_spec(ARCH, PARAMETRIZATIONS["sublora"], rank=2, subspace_dim=50))
    # P maps z onto exactly the tensors LoRA would train, no more (no dense embedding or positions)
    assert sublora.n_projected == count_parameters(lora)["free"]
    for name, groups in PARAMETRIZATIONS.items():
        model = build_model(make_spec(ARCH, groups, rank=2, kron_factor=2, monarch_blocks=2))
        assert count_parameters(model)["free"] > 0, name
