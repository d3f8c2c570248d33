"""Shared fixtures: a tiny randomly initialised GPT-2, a tiny tokenizer, and generated token corpora."""

import json
from pathlib import Path

import numpy as np
import pytest

from tokenbounds.data.shards import write_meta

VOCAB = 300
EOT = 299


def write_shards(directory: Path, shards: list[np.ndarray], eot: int = EOT, vocab: int | None = VOCAB) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, tokens in enumerate(shards):
        name = f"shard_{k:05d}.bin"
        np.asarray(tokens, dtype="<u2").tofile(directory / name)
        entries.append({"file": name, "tokens": len(tokens)})
    write_meta(
        directory,
        {
            "dtype": "uint16",
            "vocab_size": vocab,
            "eot": eot,
            "tokenizer": "test",
            "max_token_id": int(max(int(np.max(s)) for s in shards)),
            "shards": entries,
            "sources": [],
        },
    )
    return directory


def random_documents(rng: np.random.Generator, n_tokens: int, eot: int = EOT, mean_doc: int = 40) -> np.ndarray:
    """Tokens with an eot after every document; documents have geometric lengths >= 1."""
    tokens = rng.integers(0, eot, size=n_tokens)
    boundaries = rng.random(n_tokens) < 1.0 / mean_doc
    tokens[boundaries] = eot
    return tokens


@pytest.fixture
def one_torch_thread():
    """Training tests on 2 shared cores: one torch thread avoids OpenMP oversubscription (10-100x slower under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer GPT-2 saved as a Hugging Face directory (safetensors)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=128, eos_token_id=EOT)
    model = GPT2LMHeadModel(config)
    directory = tmp_path_factory.mktemp("tiny_gpt2")
    model.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Three shards of random documents (the first shard starts mid-way through no document)."""
    rng = np.random.default_rng(1)
    directory = tmp_path_factory.mktemp("corpus")
    return write_shards(directory, [random_documents(rng, n) for n in (700, 350, 500)])


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A word-level tokenizer.json with an <|endoftext|> token, trained on a few sentences."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "<|endoftext|>"])
    tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog", "to be or not to be"], trainer)
    directory = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "unk_token": "[UNK]"})
    )
    return directory
