"""The compact GPT: shapes, causality, the explicit tie, dropout under eval(), deterministic theta_0, the adapter."""

import pytest
import torch

from tokenbounds.errors import UserError
from tokenbounds.models.gpt import GPTConfig, GPTLogitModel
from tokenbounds.models.parametrization import build_model, make_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


V = 61
ALL_DENSE = {"attn": "dense", "mlp": "dense", "embed": "dense", "pos": "dense", "norm": "dense"}


def tiny(dropout=0.0, bias=False, context=16):
    return GPTConfig(vocab_size=V, context=context, n_layer=2, n_head=2, n_embd=16, dropout=dropout, bias=bias)


def ids(batch=3, length=16, seed=0):
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bias", [False, True])
def test_shapes_and_keep_selects_positions(bias):
    model = build_model(make_spec(tiny(bias=bias), ALL_DENSE)).eval()
    x = ids()
    full = model(x)
    assert full.shape == (3, 16, V)
    keep = torch.tensor([0, 5, 15])
    part = model(x, keep=keep)
    assert part.shape == (3, 3, V)
    torch.testing.assert_close(part, full[:, keep])


def test_logits_at_j_depend_only_on_tokens_up_to_j():
    model = build_model(make_spec(tiny(), ALL_DENSE)).eval()
    x = ids(batch=1)
    base = model(x)
    for j in (0, 7, 14):
        changed = x.clone()
        changed[0, j + 1 :] = (changed[0, j + 1 :] + 1) % V  # every later token differs
        torch.testing.assert_close(model(changed)[0, : j + 1], base[0, : j + 1])
        earlier = x.clone()
        earlier[0, j] = (earlier[0, j] + 1) % V  # token j itself matters to position j
        assert not torch.allclose(model(earlier)[0, j], base[0, j])


def test_input_longer_than_context_is_refused():
    model = build_model(make_spec(tiny(context=8), ALL_DENSE))
    with pytest.raises(ValueError, match="context"):
        model(ids(length=9))


def test_theta0_is_a_function_of_the_seed():
    spec = make_spec(tiny(), ALL_DENSE, init_seed=7)
    a, b = build_model(spec).state_dict(), build_model(spec).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = build_model(make_spec(tiny(), ALL_DENSE, init_seed=8)).state_dict()
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])


def tied_matrices(model):
    """(the matrix the lookup uses, the matrix the head uses), each read through the module's public path."""
    wte = model.wte
    lookup = wte(torch.arange(V))
    head = wte.head(torch.eye(wte.weight.shape[1])).T  # head(h) = h M^T, so head(I)^T = M
    return lookup, head


@pytest.mark.parametrize("embed_kind", ["dense", "lora"])
def test_tie_survives_training_steps(embed_kind):
    spec = make_spec(tiny(), {"attn": "dense", "embed": embed_kind}, rank=2)
    model = build_model(spec)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = tied_matrices(model)[0].detach().clone()
    for step in range(3):
        x = ids(seed=step)
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).reshape(-1, V), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    lookup, head = tied_matrices(model)
    assert not torch.allclose(lookup, before)  # the embedding did train ...
    torch.testing.assert_close(lookup, head, rtol=0, atol=1e-6)  # ... and the head is still the same matrix


@pytest.mark.parametrize(
    "groups,extra",
    [
        (ALL_DENSE, {}),
        ({"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"}, {"subspace_dim": 50}),
        ({"attn": "kronecker", "mlp": "monarch", "embed": "dense"}, {"subspace_dim": 40}),
    ],
)
def test_eval_turns_off_dropout_everywhere(groups, extra):
    x = ids()
    with_dropout = build_model(make_spec(tiny(dropout=0.5), groups, **extra))
    without = build_model(make_spec(tiny(dropout=0.0), groups, **extra))
    if extra:  # move off z = 0 so the wrapped network's tensors matter
        for model in (with_dropout, without):
            torch.nn.init.normal_(model.z, 0.0, 1.0, generator=torch.Generator().manual_seed(3))
    with_dropout.train()
    assert not torch.equal(with_dropout(x), with_dropout(x))  # dropout is live in training
    with_dropout.eval()
    assert all(not m.training for m in with_dropout.modules())
    first = with_dropout(x)
    torch.testing.assert_close(first, with_dropout(x), rtol=0, atol=0)
    torch.testing.assert_close(first, without.eval()(x), rtol=0, atol=0)  # eval == the dropout-free network


def test_logit_model_adapter():
    spec = make_spec(tiny(dropout=0.3), {"attn": "lora", "norm": "dense"}, subspace_dim=30)
    model = build_model(spec)
    torch.nn.init.normal_(model.z, 0.0, 1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval()(ids())
    adapter = GPTLogitModel(model, spec, source="here")
    assert adapter.vocab_size == V and adapter.max_positions == 16
    keep = torch.tensor([3, 9])
    out = adapter.logits(ids(), keep)
    assert out.dtype == torch.float32 and out.shape == (3, 2, V)
    torch.testing.assert_close(out, expected[:, keep], rtol=1e-5, atol=1e-5)
    assert adapter.describe()["details"]["spec"] == spec


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_embd": 18, "n_head": 4}, "multiple of n_head"),
        ({"n_layer": 0}, "positive integer"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_is_a_user_error(kwargs, match):
    with pytest.raises(UserError, match=match):
        GPTConfig(**{"vocab_size": V, **kwargs})


def test_unknown_config_key_is_a_user_error():
    with pytest.raises(UserError, match="unknown GPT config keys: n_embed"):
        GPTConfig.from_dict({"vocab_size": V, "n_embed": 4})
