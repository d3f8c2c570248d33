"""The bound report as markdown, for notes and papers."""

from tokenbounds.report.table import format_bound_table


def format_markdown(report: dict, title: str = "Token-level generalization bound") -> str:
    best = report["best_bits_per_token"]
    hypothesis = report["hypothesis"]
    lines = [
        f"# {title}",
        "",
        f"- **Best bits-per-token bound: {best['bound']:.4f} bits** at alpha = {best['alpha']:g} "
        f"(empirical {best['empirical']:.4f}); random guessing: log2 V = {report['log2_vocab']:.4f} bits.",
        f"- Holds, together with every number below, with probability >= {1 - report['delta']:g} over the corpus "
        f"and the sampling (method `{report['method']}`, mode `{report['mode']}`).",
        f"- Corpus: m = {report['n_tokens']:,} tokens, V = {report['vocab_size']:,}; context rule: "
        f"{report['context_rule']}.",
        f"- Prior: {report['message_bits']:,.0f} bits + {report['extra_bits']:g} extra bits "
        f"(log 1/P(h) <= {report['complexity_nats']:,.1f} nats).",
        f"- Hypothesis: {hypothesis.get('source')} ({hypothesis.get('compute_dtype')} compute).",
    ]
    if "quickstart" in report:
        q = report["quickstart"]
        lines.append(
            f"- Quickstart: {q['train']['steps']} training steps on {q['train']['tokens']:,} tokens; "
            f"{q['quantized']['n_parameters']:,} free parameters coded at {q['quantized']['levels']} levels "
            f"({q['quantized']['bits_per_parameter']:.2f} bits each); {q['timings']['total_seconds'] / 60:.1f} "
            "minutes end to end."
        )
    lines += ["", "```", format_bound_table(report), "```", ""]
    return "\n".join(lines)
