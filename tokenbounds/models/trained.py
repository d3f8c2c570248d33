"""A GPT from `tokenbounds train` (backend "tokenbounds-gpt"): a directory with spec.json and its free parameters.

theta_0 is regenerated from the spec's seed, so spec.json (architecture, parametrization, seeds) and
free_parameters.safetensors (the trained numbers) are the model's whole description: they are what is priced.
"""

from pathlib import Path

from torch import nn

from tokenbounds.errors import UserError
from tokenbounds.models.base import check_device
from tokenbounds.models.gpt import GPTLogitModel
from tokenbounds.models.parametrization import FREE_FILE, SPEC_FILE, load_trained
from tokenbounds.models.registry import Backend, register_backend


def gpt_logit_model(model: nn.Module, spec: dict, source: Path, compute_dtype: str, device: str, **kw) -> GPTLogitModel:
    """The scoring view of a GPT rebuilt from its spec (here, or from a decoded message)."""
    check_device(device)
    if device != "cpu":
        raise UserError("tokenbounds GPTs are evaluated on the CPU (they are small); drop --device")
    return GPTLogitModel(model, spec, source=str(source), compute_dtype=compute_dtype, **kw)


@register_backend("tokenbounds-gpt")
class TrainedGPT(Backend):
    label = "GPT from `tokenbounds train` (spec.json + free_parameters.safetensors)"

    def can_open(self, path: Path) -> bool:
        return path.is_dir() and (path / SPEC_FILE).is_file()

    def load(self, path: Path, compute_dtype: str, device: str) -> GPTLogitModel:
        model, spec = load_trained(path)  # refuses free parameters that do not match the spec
        return gpt_logit_model(model, spec, path, compute_dtype, device)

    def priced_files(self, path: Path) -> list[Path]:
        return [path / SPEC_FILE, path / FREE_FILE]
