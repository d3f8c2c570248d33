"""The hypothesis as data: a JSON spec (architecture + parametrization + seeds) and the free parameters.

    spec = {
      "format": "tokenbounds-gpt", "version": 1,
      "arch": {GPTConfig fields},
      "init_seed": 0,                       # theta_0: every tensor not trained, and the start of every trained one
      "groups": {"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"},   # trained groups -> kind
      "lora": {"rank": 4, "alpha": 4.0},    # present iff some group is "lora"
      "kronecker": {"factor": 4},           # present iff some group is "kronecker"
      "monarch": {"blocks": 16},            # present iff some group is "monarch"
      "subspace": {"dim": 10000, "seed": 1, "terms": 1} or null
    }

Layer groups: attn (qkv and output projections of every block), mlp (both MLP linears), embed (the token matrix,
which is also the output head: "head" is accepted as its name), pos (position embeddings), norm (every LayerNorm).
Kinds: dense (train the tensors themselves) for every group; lora for attn, mlp, embed; kronecker and monarch for
attn and mlp (they replace the layer, bias included). Groups not named stay frozen at theta_0.

`build_model(spec)` rebuilds the exact network with theta_0 from the seed; `free_parameters(model)` returns exactly
the tensors that were trained -- z alone under a subspace -- and `load_free_parameters` puts them back. So a
hypothesis costs the spec (a few hundred bytes) plus the coded free parameters, and nothing else.
"""

import json
from pathlib import Path

import torch
from torch import nn

from tokenbounds.errors import UserError
from tokenbounds.files import read_json
from tokenbounds.models.gpt import GPT, GPTConfig, init_gpt_
from tokenbounds.models.groups import GROUPS, KINDS_BY_GROUP, canonical_group
from tokenbounds.models.kronecker import KroneckerLinear
from tokenbounds.models.lora import LoRAEmbedding, LoRALinear
from tokenbounds.models.monarch import MonarchLinear
from tokenbounds.models.subspace import SubspaceModel

FORMAT = "tokenbounds-gpt"
SPEC_FILE = "spec.json"
FREE_FILE = "free_parameters.safetensors"


def make_spec(
    arch: GPTConfig,
    groups: dict[str, str],
    init_seed: int = 0,
    rank: int = 4,
    lora_alpha: float | None = None,
    kron_factor: int = 4,
    monarch_blocks: int = 16,
    subspace_dim: int | None = None,
    subspace_seed: int = 1,
    subspace_terms: int = 1,
) -> dict:
    """A validated spec; options for kinds that no group uses are left out, so equal hypotheses have equal specs."""
    resolved = {}
    for name, kind in groups.items():
        group = canonical_group(name)
        if group in resolved and resolved[group] != kind:
            raise UserError(f"group {group} is given twice, as {resolved[group]} and {kind}")
        resolved[group] = kind
    spec = {
        "format": FORMAT,
        "version": 1,
        "arch": arch.to_dict(),
        "init_seed": int(init_seed),
        "groups": {g: resolved[g] for g in GROUPS if g in resolved},
    }
    kinds = set(resolved.values())
    if "lora" in kinds:
        spec["lora"] = {"rank": rank, "alpha": float(rank if lora_alpha is None else lora_alpha)}
    if "kronecker" in kinds:
        spec["kronecker"] = {"factor": kron_factor}
    if "monarch" in kinds:
        spec["monarch"] = {"blocks": monarch_blocks}
    spec["subspace"] = None if subspace_dim is None else {
        "dim": int(subspace_dim), "seed": int(subspace_seed), "terms": int(subspace_terms)
    }  # fmt: skip
    validate_spec(spec)
    return spec


def validate_spec(spec: dict) -> GPTConfig:
    """Check a spec (from a file or a flag set) and return its architecture; UserError on anything off."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise UserError(f"not a {FORMAT} model spec")
    if spec.get("version") != 1:
        raise UserError(f"unsupported {FORMAT} spec version {spec.get('version')!r}")
    known = {"format", "version", "arch", "init_seed", "groups", "lora", "kronecker", "monarch", "subspace"}
    if set(spec) - known:
        raise UserError(f"unknown model spec keys: {', '.join(sorted(set(spec) - known))}")
    if not isinstance(spec.get("arch"), dict) or not isinstance(spec.get("groups", {}), dict):
        raise UserError("a model spec needs an 'arch' object and a 'groups' object")
    arch = GPTConfig.from_dict(spec["arch"])
    groups = spec.get("groups") or {}
    if not groups:
        raise UserError("no layer group is trained: name at least one of " + ", ".join(GROUPS))
    for group, kind in groups.items():
        if group not in GROUPS:
            raise UserError(f"unknown layer group {group!r}")
        if kind not in KINDS_BY_GROUP[group]:
            raise UserError(f"group {group} cannot be {kind!r}; it can be {', '.join(KINDS_BY_GROUP[group])}")
        if kind != "dense" and kind not in spec:
            raise UserError(f"group {group} is {kind} but the spec has no {kind!r} options")
    subspace = spec.get("subspace")
    if subspace is not None and (not isinstance(subspace.get("dim"), int) or subspace["dim"] < 1):
        raise UserError(f"subspace dimension must be a positive integer, got {subspace.get('dim')!r}")
    return arch


def _group_of(name: str) -> str:
    """Which layer group a parameter or module name of the GPT belongs to."""
    if name.startswith("wte"):
        return "embed"
    if name.startswith("wpe"):
        return "pos"
    if ".attn." in name:
        return "attn"
    if ".mlp." in name:
        return "mlp"
    if name.startswith("ln_f") or ".ln1" in name or ".ln2" in name:
        return "norm"
    raise AssertionError(f"parameter {name} belongs to no group")


def _replace_linears(model: GPT, spec: dict, generator: torch.Generator) -> None:
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        kind = spec["groups"].get(_group_of(name + "."), "frozen")
        if kind == "lora":
            new = LoRALinear(module, spec["lora"]["rank"], spec["lora"]["alpha"], generator, name)
        elif kind == "kronecker":
            new = KroneckerLinear(
                module.in_features, module.out_features, spec["kronecker"]["factor"], module.bias is not None,
                generator, name,
            )  # fmt: skip
        elif kind == "monarch":
            new = MonarchLinear(
                module.in_features, module.out_features, spec["monarch"]["blocks"], module.bias is not None,
                generator, name,
            )  # fmt: skip
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)


def _trainable(name: str, kind: str) -> bool:
    """Under a kind, which tensors of a group train: LoRA trains only its factors; the others train everything."""
    if kind == "lora":
        return "lora_" in name
    return True


def build_model(spec: dict) -> nn.Module:
    """The network a spec describes, at theta_0 (z = 0 under a subspace): forward(ids, keep=None) -> logits.

    Deterministic: the same spec gives bit-identical tensors (one torch.Generator seeded by init_seed draws
    everything, in module order; the projection has its own seed).
    """
    arch = validate_spec(spec)
    generator = torch.Generator().manual_seed(spec["init_seed"])
    model = GPT(arch)
    init_gpt_(model, generator)
    _replace_linears(model, spec, generator)
    if spec["groups"].get("embed") == "lora":
        model.wte = LoRAEmbedding(model.wte, spec["lora"]["rank"], spec["lora"]["alpha"], generator)
    for name, param in model.named_parameters():
        kind = spec["groups"].get(_group_of(name))
        param.requires_grad_(kind is not None and _trainable(name, kind))
    subspace = spec.get("subspace")
    if subspace is not None:
        return SubspaceModel(model, subspace["dim"], subspace["seed"], subspace.get("terms", 1))
    return model


def free_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Exactly the numbers a message must contain: every tensor that trains (z alone under a subspace)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def load_free_parameters(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Write decoded free parameters into a model from `build_model`; refuses missing, extra or mis-shaped tensors."""
    expected = free_parameters(model)
    missing, extra = set(expected) - set(values), set(values) - set(expected)
    if missing or extra:
        raise UserError(
            "free parameters do not match the model spec"
            + (f"; missing: {', '.join(sorted(missing))}" if missing else "")
            + (f"; unexpected: {', '.join(sorted(extra))}" if extra else "")
        )
    with torch.no_grad():
        for name, param in expected.items():
            value = torch.as_tensor(values[name])
            if tuple(value.shape) != tuple(param.shape):
                raise UserError(f"free parameter {name} has shape {tuple(value.shape)}, the spec says {param.shape}")
            param.copy_(value.to(param.dtype))


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Free (in the message) versus frozen (theta_0, regenerated from the seed) numbers."""
    free = sum(p.numel() for p in free_parameters(model).values())
    total = sum(p.numel() for p in model.parameters())
    return {"free": free, "frozen": total - free}


def message_contents(model: nn.Module, spec: dict) -> str:
    """One line saying what a message for this model must hold."""
    counts = count_parameters(model)
    if spec.get("subspace"):
        sub = spec["subspace"]
        inner = model.n_projected if isinstance(model, SubspaceModel) else "?"
        what = (
            f"z ({sub['dim']:,} numbers) projecting onto {inner:,} trainable parameters "
            f"({', '.join(f'{g}={k}' for g, k in spec['groups'].items())}) through a seeded projection"
        )
    else:
        tensors = free_parameters(model)
        what = f"{len(tensors)} tensors ({', '.join(f'{g}={k}' for g, k in spec['groups'].items())})"
    return (
        f"free parameters: {counts['free']:,} -- the message holds {what} + the spec (architecture and seeds, "
        f"{len(spec_bytes(spec))} bytes); {counts['frozen']:,} frozen parameters are theta_0, regenerated from "
        f"init_seed {spec['init_seed']}"
    )


def spec_bytes(spec: dict) -> bytes:
    """The canonical encoding of a spec (sorted keys, no spaces): what a decoder reads before the parameters."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()


def read_spec(directory: str | Path) -> dict:
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise UserError(f"{directory} has no {SPEC_FILE}: not a trained tokenbounds GPT")
    spec = read_json(path)
    validate_spec(spec)
    return spec


def load_trained(directory: str | Path) -> tuple[nn.Module, dict]:
    """(model, spec) from a directory holding spec.json and free_parameters.safetensors (safetensors: no code runs)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    spec = read_spec(directory)
    path = Path(directory) / FREE_FILE
    if not path.is_file():
        raise UserError(f"{directory} has no {FREE_FILE}")
    try:
        values = load_file(str(path))
    except SafetensorError as err:
        raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    model = build_model(spec)
    load_free_parameters(model, values)
    return model.eval(), spec
