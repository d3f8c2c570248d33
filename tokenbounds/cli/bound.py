"""`tokenbounds bound`: token-level generalization bounds for a model on its training corpus.

Its flags are the fields of `tokenbounds.request.BoundRequest` (what is computed) and of `Outputs` below (where the
results go), each declared once. torch loads only when the bound runs, so `--help` is instant.
"""

from dataclasses import dataclass

from tokenbounds.config import add_flags, flag, parse_config
from tokenbounds.errors import UserError
from tokenbounds.request import BoundRequest, request_from_flags


@dataclass
class Outputs:
    json: str | None = flag(None, metavar="OUT", default_text="not written", help="write the JSON report here")
    units_out: str | None = flag(
        None,
        metavar="FILE.npz",
        default_text="not written",
        help="write the per-unit values of every row (sampling order) beside the report, so every subsampling term "
        "can be recomputed: statistics, unit_loss, unit_sq (eb), draws",
    )
    force: bool = flag(False, help="overwrite an existing --json / --units-out file")


def add_parser(sub):
    p = sub.add_parser(
        "bound",
        help="bound a model's next-token risk on the process its training corpus came from",
        description="Token-level generalization bounds (Lotfi et al. 2024): an upper bound on the model's expected "
        "next-token loss under the data-generating process, conditional on the past, averaged over the m tokens of "
        "the training corpus, in bits per token (for the prediction smoothed with the uniform distribution at each "
        "alpha) and as top-k error rates (ties counted against the model). All reported bounds hold together with "
        "probability >= 1 - delta. The default is the tightest valid configuration: --method eb --mode block "
        "(block rule, stride = context) --subsample-ucb betting; --paper gives the paper's: lotfi, token, hoeffding.",
    )
    add_flags(p, BoundRequest)
    add_flags(p.add_argument_group("output"), Outputs)
    return p


def run(args) -> int:
    import numpy as np

    from tokenbounds.distributed import leader_process
    from tokenbounds.pipeline import compute_bound_with_units
    from tokenbounds.report.io import check_writable, write_json
    from tokenbounds.report.table import format_bound_table

    outputs, _ = parse_config(Outputs, args)
    if leader_process():  # under torchrun only rank 0 writes
        check_writable(outputs.json, outputs.force)
        check_writable(outputs.units_out, outputs.force)
    request = request_from_flags(args)
    if outputs.units_out and request.mode == "exhaustive":
        raise UserError("--units-out writes sampled units; exhaustive mode samples none")
    report, units = compute_bound_with_units(request)
    if not leader_process():  # a torchrun rank other than 0: rank 0 reports
        return 0
    print(format_bound_table(report))
    if outputs.json:
        write_json(outputs.json, report)
        print(f"report written to {outputs.json}")
    if outputs.units_out:
        with open(outputs.units_out, "wb") as f:  # a file object: np.savez must not append ".npz" to the name
            np.savez(f, **units)
        print(f"per-unit values written to {outputs.units_out}")
    return 0
