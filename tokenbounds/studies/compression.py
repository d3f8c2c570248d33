"""The compression study: bounds of trained GPTs on the embedded Shakespeare bytes against training time, subspace
dimension d, parametrization (tokenbounds.models.parametrization's named ones) and quantization levels.

Every row is eb + block sampling + betting on the decoded quantized model, priced by its coded message (the levels
study's float32 row: by `tar -czf` of spec.json + free_parameters.safetensors, the paper's recipe), on the training
corpus. Sub-studies:

    time    one SubLoRA schedule of max(time_steps) steps, bounded at each of time_steps
    dim     SubLoRA with rank-dim_rank LoRA factors behind P, one model per d in dims, `steps` steps each
    param   each named parametrization in params, `steps` steps (sublora with d = subspace_dim)
    levels  the time study's final model: float32 z, and z coded at each of levels, uniform and k-means

Builders are idempotent, so an interrupted row restarts cleanly: a model directory with a checkpoint resumes from
it (the trainer continues bit for bit), one without is removed (the study made it), and a quantized directory is
written under a temporary name and renamed when complete.
"""

import shutil
from dataclasses import asdict
from pathlib import Path

from tokenbounds.compress.pricing import checkpoint_message_bits
from tokenbounds.data.bytes_tokenizer import ByteTokenizer
from tokenbounds.data.embedded import shakespeare_path
from tokenbounds.data.prepare import prepare
from tokenbounds.errors import UserError
from tokenbounds.models.groups import PARAMETRIZATIONS, SUBSPACE_BY_DEFAULT
from tokenbounds.models.parametrization import make_spec
from tokenbounds.quickstart import byte_gpt
from tokenbounds.studies.building import block_bound, frozen_copy, quantized_model, trained_model
from tokenbounds.studies.compression_sizes import SUB_STUDIES, CompressionConfig
from tokenbounds.studies.plots import Plot
from tokenbounds.studies.runner import Row, RowBuild, Study
from tokenbounds.train.trainer import TrainConfig

PLOTS = (
    Plot("time", "train_seconds", "training seconds (one schedule, bounded at its checkpoints)"),
    Plot("dim", "d", "subspace dimension d", log_x=True),
    Plot("param", "parametrization", "parametrization", kind="bar"),
    Plot("levels", "bits_per_parameter", "message bits per free parameter", series="coding", log_x=True),
)


def setup(out: Path) -> None:
    """The embedded corpus as byte tokens in out/data (kept when complete: meta.json is written last)."""
    data = out / "data"
    if (data / "meta.json").is_file():
        return
    if data.exists():
        shutil.rmtree(data)  # an interrupted prepare of this study's own
    prepare([shakespeare_path()], ByteTokenizer(), data, tokenizer_name="bytes", progress=False)


def _spec(cfg: CompressionConfig, name: str, rank: int, dim: int | None) -> dict:
    arch = byte_gpt(cfg)
    return make_spec(
        arch,
        PARAMETRIZATIONS[name],
        init_seed=cfg.seed,
        rank=rank,
        kron_factor=cfg.kron_factor,
        monarch_blocks=cfg.monarch_blocks,
        subspace_dim=dim,
        subspace_seed=cfg.seed + 1,
    )


def _train_to(out: Path, name: str, spec: dict, cfg: CompressionConfig, steps: int, stop: int) -> dict:
    """models/NAME trained to step `stop` of a `steps`-step schedule (resumed or reused when it is partly there)."""
    model_dir = out / "models" / name
    lr = cfg.lr_subspace if spec["subspace"] is not None else cfg.lr_other
    train_cfg = TrainConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        lr=lr,
        warmup=min(cfg.warmup, steps),
        eval_every=steps,
        checkpoint_every=steps,
        seed=cfg.seed,
        bf16=cfg.bf16,
    )
    return trained_model(model_dir, spec, train_cfg, out / "data", stop=stop)


def _quantized_row(cfg, out, name, spec, steps, stop) -> RowBuild:
    """Train (to `stop`), quantize at cfg.train_levels uniform levels, bound."""
    trained = _train_to(out, name, spec, cfg, steps, stop)
    target, manifest = quantized_model(
        out / "quantized" / f"{name}-step{stop}-L{cfg.train_levels}", trained["dir"], levels=cfg.train_levels
    )
    facts = {"free_parameters": manifest["n_parameters"], "bits_per_parameter": manifest["bits_per_parameter"]}
    return RowBuild(block_bound(cfg, out, target), facts, {"train_seconds": trained["seconds"]})


def _time_rows(cfg: CompressionConfig) -> list[Row]:
    spec, last = _spec(cfg, "sublora", cfg.rank, cfg.subspace_dim), max(cfg.time_steps)

    def build(stop):
        return lambda out: _quantized_row(cfg, out, "time", spec, last, stop)

    return [Row(f"time-step{s}", "time", f"step={s}", {"step": s}, build(s)) for s in sorted(cfg.time_steps)]


def _dim_rows(cfg: CompressionConfig) -> list[Row]:
    def build(d):
        spec = _spec(cfg, "sublora", cfg.dim_rank, d)
        return lambda out: _quantized_row(cfg, out, f"dim-d{d}", spec, cfg.steps, cfg.steps)

    return [Row(f"dim-d{d}", "dim", f"d={d}", {"d": d}, build(d)) for d in cfg.dims]


def _param_rows(cfg: CompressionConfig) -> list[Row]:
    def build(name):
        dim = cfg.subspace_dim if name in SUBSPACE_BY_DEFAULT else None
        spec = _spec(cfg, name, cfg.rank, dim)
        return lambda out: _quantized_row(cfg, out, f"param-{name}", spec, cfg.steps, cfg.steps)

    return [Row(f"param-{p}", "param", f"param={p}", {"parametrization": p}, build(p)) for p in cfg.params]


def _levels_rows(cfg: CompressionConfig) -> list[Row]:
    spec, last = _spec(cfg, "sublora", cfg.rank, cfg.subspace_dim), max(cfg.time_steps)

    def float32(out):
        trained = _train_to(out, "time", spec, cfg, last, last)
        model = frozen_copy(out / "float32" / f"time-step{last}", trained["dir"])
        bits, info = checkpoint_message_bits(model, progress=False)
        facts = {"free_parameters": info["n_parameters"], "bits_per_parameter": bits / info["n_parameters"]}
        return RowBuild(block_bound(cfg, out, model, checkpoint_size=True), facts)

    def build(levels, kmeans):
        def row(out):
            trained = _train_to(out, "time", spec, cfg, last, last)
            name = f"time-step{last}-L{levels}-{'kmeans' if kmeans else 'uniform'}"
            target, manifest = quantized_model(out / "quantized" / name, trained["dir"], levels=levels, kmeans=kmeans)
            facts = {"free_parameters": manifest["n_parameters"], "bits_per_parameter": manifest["bits_per_parameter"]}
            return RowBuild(block_bound(cfg, out, target), facts)

        return row

    rows = [Row("levels-float32", "levels", "float32 z, tar.gz", {"levels": None, "coding": "float32 tar.gz"}, float32)]
    for levels in cfg.levels:
        for kmeans in (False, True):
            coding = "k-means" if kmeans else "uniform"
            key = f"levels-L{levels}-{'kmeans' if kmeans else 'uniform'}"
            params = {"levels": levels, "coding": coding}
            rows.append(Row(key, "levels", f"levels={levels} {coding}", params, build(levels, kmeans)))
    return rows


BUILDERS = {"time": _time_rows, "dim": _dim_rows, "param": _param_rows, "levels": _levels_rows}


def compression_study(cfg: CompressionConfig, size: str, extra_bits: float = 0.0) -> Study:
    """The study's rows for `cfg` (sub-studies in SUB_STUDIES order, whatever order cfg.studies names them in)."""
    unknown = sorted(set(cfg.studies) - set(SUB_STUDIES)) + sorted(set(cfg.params) - set(PARAMETRIZATIONS))
    if unknown:
        raise UserError(
            f"unknown sub-study or parametrization {', '.join(unknown)}; sub-studies: {', '.join(SUB_STUDIES)}; "
            f"parametrizations: {', '.join(PARAMETRIZATIONS)}"
        )
    rows = [row for name in SUB_STUDIES if name in cfg.studies for row in BUILDERS[name](cfg)]
    config = {"size": size, **asdict(cfg)}
    return Study("compression", config, rows, extra_bits=extra_bits, setup=setup, plots=PLOTS)
