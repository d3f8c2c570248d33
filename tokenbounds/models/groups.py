"""The layer groups of a tokenbounds GPT and the named parametrizations, defined once (no torch here: `train --help`
lists them before torch is loaded).

Which kind each trained layer group takes. SubLoRA is LoRA's groups behind a subspace (theta_0 + P z);
`SUBSPACE_BY_DEFAULT` names the parametrizations that imply one. To put LoRA linears and dense embeddings, positions
and norms behind P (what `train --param sublora` meant before), pass those groups explicitly: attn,mlp,embed=dense,
pos,norm.
"""

from tokenbounds.errors import UserError

GROUPS = ("attn", "mlp", "embed", "pos", "norm")
GROUP_ALIASES = {"head": "embed", "attention": "attn", "ln": "norm"}
KINDS_BY_GROUP = {
    "attn": ("dense", "lora", "kronecker", "monarch"),
    "mlp": ("dense", "lora", "kronecker", "monarch"),
    "embed": ("dense", "lora"),
    "pos": ("dense",),
    "norm": ("dense",),
}
PARAMETRIZATIONS = {
    "dense": {"attn": "dense", "mlp": "dense", "embed": "dense", "pos": "dense", "norm": "dense"},
    "lora": {"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"},
    "sublora": {"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"},
    "kronecker": {"attn": "kronecker", "mlp": "kronecker", "embed": "lora", "norm": "dense"},
    "monarch": {"attn": "monarch", "mlp": "monarch", "embed": "lora", "norm": "dense"},
}
SUBSPACE_BY_DEFAULT = ("sublora",)


def canonical_group(name: str) -> str:
    group = GROUP_ALIASES.get(name, name)
    if group not in GROUPS:
        raise UserError(f"unknown layer group {name!r}; use {', '.join(GROUPS)} (or 'head' for the tied embedding)")
    return group
