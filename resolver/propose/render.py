"""The proposal as YAML text, with what was detected and chosen, and why, in comments."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def flow(value) -> str:
    """One YAML value on one line (flow style, quoted where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9, allow_unicode=True).strip()
    return text[:-4].rstrip() if text.endswith("\n...") or text.endswith(" ...") else text.removesuffix("...").strip()


def _relative(pattern: str, folder: Path) -> str:
    """The path relative to the config's folder; absolute when that climbs two folders or more."""
    absolute = os.path.abspath(pattern)
    relative = Path(os.path.relpath(absolute, folder.resolve())).as_posix()
    return Path(absolute).as_posix() if relative.startswith("../../") else relative


def _columns_comment(plan, width: int) -> list[str]:
    lines = ["    # columns (kind: why):"]
    for d in plan.detections:
        lines.append(f"    #   {d.column:<{width}} {d.kind}: {d.reason}")
    return lines


def _source(plan, folder: Path) -> list[str]:
    s = plan.sample
    what = f"{s.rows:,} rows" + ("" if s.exact else " (estimated)")
    if s.sampled < s.rows:
        what += f"; kinds and pair counts from the first {s.sampled:,}"
    lines = [f"  - name: {flow(plan.name)}", f"    # {what}"]
    width = min(max((len(d.column) for d in plan.detections), default=8), 40)
    lines += _columns_comment(plan, width)
    lines += ["    system: generic", "    kind: records", f"    format: {s.format}",
              f"    path: {flow(_relative(s.pattern, folder))}"]
    if s.csv:
        lines.append(f"    csv: {flow(s.csv)}")
    lines.append(f"    key: {flow(plan.key)}")
    if plan.timestamp:
        lines.append(f"    timestamp: {flow(plan.timestamp)}   # the record's last change: golden records' most_recent")
    if plan.deleted:
        lines.append(f"    deleted: {flow(plan.deleted)}")
    lines.append("    attributes:")
    for attr in plan.attributes.values():
        value = attr.parts if attr.parts else {"join": attr.join} if attr.join else (
            attr.columns[0] if len(attr.columns) == 1 else attr.columns)
        note = f"   # {attr.note}" if attr.note else ""
        lines.append(f"      {attr.name}: {flow(value)}{note}")
    if plan.identifiers:
        lines.append("    identifiers:")
        for type_name, columns in plan.identifiers.items():
            lines.append(f"      {type_name}: {flow(columns[0] if len(columns) == 1 else columns)}")
    for note in plan.identifier_notes:
        lines.append(f"    # {note}")
    return lines


def render(p) -> str:
    """YAML text of a Proposal (resolver.propose.Proposal)."""
    folder = p.out.parent
    inputs = ", ".join(plan.sample.pattern for plan in p.sources)
    lines = [
        f"# Proposed by `resolver init` from {inputs}.",
        "# Read the comments: each column's detected kind and why, each blocking rule's pair count. Paths are",
        "# relative to this file. Recount pairs on all the records with `resolver plan --config THIS_FILE`.",
        "run:",
        "  output_dir: out",
        f"  default_region: {flow(p.default_region)}",
        "",
        "sources:",
    ]
    for plan in p.sources:
        lines += _source(plan, folder)
        lines.append("")
    lines.append("identity:")
    if p.types:
        lines.append("  types:   # as configs/synthetic.yaml declares them")
        for name, spec in p.types.items():
            lines.append(f"    {name}: {flow(spec)}")
    else:
        lines.append("  types: {}   # no personal identifier found: records link by their attributes only")
    lines += ["", "matching:"]
    if len(p.sources) > 1:
        lines.append(f"  link_type: {p.link_type}")
    if p.normalizers:
        lines.append(f"  normalizers: {flow(p.normalizers)}   # where the name-based guess would be wrong")
    lines += ["  blocking:", f"    max_block_size: {p.max_block_size}   # a bigger block is re-blocked by finer keys"]
    lines.append(f"    # Pair budget {p.budget:,} ({p.budget_reason}); candidate rules, pairs in all "
                 f"{p.records:,} records:")
    width = max(len(c.name) for c in p.candidates)
    for c in p.candidates:
        growth = "" if c.growth is None else f", pairs ~ records^{c.growth:.2f}"
        lines.append(f"    #   {c.name:<{width}} {c.pairs:>13,} pairs, {c.keyed:4.0%} keyed{growth}  {c.verdict}")
    lines.append(f"    # Chosen: {sum(c.pairs for c in p.rules):,} pairs (a sum over rules: a run compares a pair "
                 "found by several rules once).")
    if p.weak_fields:
        lines.append(f"    # Every rule uses {', '.join(p.weak_fields)}: a typo there hides a match from blocking.")
    lines.append("    rules:")
    for c in p.rules:
        lines.append(f"      - {flow(c.rule)}   # {c.pairs:,} pairs")
    lines.append("  comparisons:")
    for comparison in p.comparisons:
        lines.append(f"    - {flow(comparison)}")
    lines.append("  # No `model:` section: the defaults.")
    return "\n".join(lines) + "\n"
