"""The bound report as a readable terminal table."""


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3e}"


def _prior_source(prior: dict) -> str:
    if prior.get("codec"):
        return f"{prior['codec']}: {prior.get('method', '')}".strip(": ")
    return prior.get("source", "given")


def format_bound_table(report: dict) -> str:
    """Per statistic: empirical value, complexity term, subsampling term, bound; then the bookkeeping."""
    eb = report["method"] == "eb"
    header = ("statistic", "param", "range", "empirical", "complexity", "subsampling", "bound")
    if eb:
        header = (*header[:5], "variance", "lambda", *header[5:])
    rows = []
    for r in report["results"]:
        if r["statistic"] == "bits_per_token":
            name, param = "bits/token", f"alpha={r['alpha']:g}"
        else:
            name, param = "top-k error", f"k={r['k']}"
        row = [name, param, _fmt(r["loss_range"]), _fmt(r["empirical"]), _fmt(r["complexity_term"])]
        if eb:
            row += [_fmt(r["variance_term"]), "azuma" if r["lambda"] is None else f"{r['lambda']:.3g}"]
        rows.append((*row, _fmt(r["subsampling_term"]), _fmt(r["bound"]) + ("*" if r.get("clipped") else "")))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).rjust(w) for x, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))

    split = report["delta_split"]
    best = report["best_bits_per_token"]
    if report["samples"] is None:
        samples = "exhaustive (every token scored)"
    else:
        samples = f"{report['samples']} sampled units ({report['subsample_ucb']} UCB)"
    lines += (
        ["* clipped at the top of the loss range (no loss exceeds it)"]
        if any(r.get("clipped") for r in report["results"])
        else []
    )
    choices = ""
    if split.get("subsampling_divided_by"):
        choices = f" (subsampling shares divided by {split['subsampling_divided_by']:g} for data-dependent choices)"
    unit = report.get("unit", "token")
    population = f"m = {report['n_tokens']} tokens"
    if unit != "token":
        every = f"exhaustive (every {unit} scored)"
        samples = every if report["samples"] is None else f"{report['samples']} {unit}s drawn uniformly"
        population = f"n = {report['n_units']} {unit}s ({report['n_tokens']} tokens)"
    lines += [
        "",
        f"method {report['method']}, unit {unit}, mode {report['mode']}: {samples} of {population}; "
        f"context rule: {report['context_rule']}",
        f"prior: {report['message_bits']:.6g} bits ({_prior_source(report['prior'])}) "
        f"+ {report['extra_bits']:g} extra bits "
        f"-> log 1/P(h) <= {report['complexity_nats']:.6g} nats",
        f"delta = {split['delta']:g} over {split['n_statistics']} statistics: martingale {split['martingale_total']:g} "
        f"({split['martingale_per_statistic']:.3g} each), subsampling {split['subsampling_total']:g} "
        f"({split['subsampling_per_statistic']:.3g} each){choices}; "
        f"all bounds hold together with probability >= {1 - split['delta']:g}",
        f"best bits-per-token bound: {best['bound']:.4f} bits "
        f"(alpha={best['alpha']:g}, empirical {best['empirical']:.4f}) "
        f"vs log2 V = {report['log2_vocab']:.4f} bits for random guessing"
        + ("  [non-vacuous]" if best["bound"] < report["log2_vocab"] else "  [VACUOUS]"),
    ]
    if "bounded_quantity" in report:  # reports written before units other than tokens did not say
        lines.insert(lines.index("") + 2, f"bounded: {report['bounded_quantity']}")
    return "\n".join(lines)
