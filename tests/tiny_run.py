"""A tiny bound for tests that start processes: a model of the project's own GPT (so no process imports
transformers, seconds per process on 2 cores), a corpus for it, and the environment a child process needs."""

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.parametrization import FREE_FILE, SPEC_FILE, build_model, free_parameters, make_spec, spec_bytes

from .conftest import random_documents, write_shards

ROOT = Path(__file__).resolve().parent.parent
VOCAB, EOT, CONTEXT = 61, 60, 16
DENSE = {"attn": "dense", "mlp": "dense", "embed": "dense", "norm": "dense"}


def write_tiny_gpt(directory: Path, seed: int = 0) -> Path:
    """What `tokenbounds train` leaves, with weights spread so that the logits vary."""
    spec = make_spec(GPTConfig(vocab_size=VOCAB, context=CONTEXT, n_layer=1, n_head=2, n_embd=16), DENSE)
    generator = torch.Generator().manual_seed(seed)
    free = {k: torch.randn(p.shape, generator=generator) * 0.3 for k, p in free_parameters(build_model(spec)).items()}
    directory.mkdir(parents=True)
    (directory / SPEC_FILE).write_bytes(spec_bytes(spec) + b"\n")
    save_file(free, str(directory / FREE_FILE))
    return directory


def write_tiny_corpus(directory: Path, sizes=(1500, 700, 900), seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    return write_shards(directory, [random_documents(rng, n, eot=EOT, mean_doc=30) for n in sizes], EOT, VOCAB)


def environment(**extra) -> dict:
    """This checkout first on the path, one thread per process (2 cores), and no rank unless `extra` gives one."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def bound_args(model, data, *extra) -> list[str]:
    common = ["bound", "--model", str(model), "--data", str(data), "--message-bits", "2000"]
    return [*common, "--context", str(CONTEXT), "--no-progress", *extra]


def without_timing(path: Path) -> tuple[str, dict]:
    """The report's JSON, keys sorted, without its timing (how long and how it ran), and that timing."""
    report = json.loads(Path(path).read_text())
    timing = report.pop("timing")
    return json.dumps(report, sort_keys=True), timing
