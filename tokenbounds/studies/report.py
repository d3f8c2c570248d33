"""study.md: one markdown table per group of rows, from study.json's contents (nothing is recomputed here)."""

BOUND_COLUMNS = (
    ("message_bits", "message bits"),
    ("empirical", "empirical"),
    ("bound", "bound"),
    ("top1_error_bound", "top-1 error bound"),
)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def _columns(records: list[dict], section: str) -> list[str]:
    """Every key of `section` that some record of the group has, in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        seen.update(dict.fromkeys(r[section]))
    return list(seen)


def format_study(summary: dict) -> str:
    best = summary["best"]
    lines = [
        f"# tokenbounds study {summary['study']}",
        "",
        f"{summary['rows']} rows. Bounds are in bits per token, each valid on its own with probability >= "
        f"1 - {best['delta']}; {summary['rule']} (log2 {summary['rows']} = {summary['paid_bits']:.3f} bits, on top "
        f"of {summary['user_extra_bits']:g} user extra bits).",
        "",
        f"Best row: **{best['label']}**, bound **{best['bound']:.4f}** bits/token (empirical {best['empirical']:.4f}).",
    ]
    groups: dict[str, list[dict]] = {}
    for record in summary["results"]:
        groups.setdefault(record["group"], []).append(record)
    for group, records in groups.items():
        params, facts, seconds = (_columns(records, s) for s in ("params", "facts", "seconds"))
        header = params + facts + [title for _, title in BOUND_COLUMNS] + seconds
        lines += ["", f"## {group}", "", "| " + " | ".join(h.replace("_", " ") for h in header) + " |"]
        lines.append("|" + "---:|" * len(header))
        for r in records:
            cells = [_cell(r["params"].get(k)) for k in params] + [_cell(r["facts"].get(k)) for k in facts]
            cells += [_cell(r["bound"][k]) for k, _ in BOUND_COLUMNS] + [_cell(r["seconds"].get(k)) for k in seconds]
            if r["key"] == best["key"]:
                at = len(params) + len(facts) + 2  # the bound column
                cells[at] = f"**{cells[at]}**"
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
