"""`resolver init DATA...`: a working configuration proposed from the data.

The steps are small functions, each in its own module, in the order the data flows:

    sample.sample_input      the first rows of each file, as raw text (the readers' view)
    kinds.detect_frame       what each column holds, and why; the record key
    mapping.map_source       canonical attributes, identifiers, normalizers of each source
    rules.candidates/count/choose   blocking rules by their pair counts under a pair budget
    comparisons.comparisons  a comparison per attribute, by kind
    render.render            the YAML, with the reasons in comments

`propose` runs them and returns a `Proposal`; `write` renders it, writes it and loads it back with
`resolver.config.load_config`, so that what is written always validates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import resolver.propose.kinds as K
import resolver.propose.rules as R
from resolver.config import Config, ConfigError, attribute_kind, load_config
from resolver.ingest.readers import InputError
from resolver.ingest.attributes import match_attributes
from resolver.propose.comparisons import comparisons as propose_comparisons
from resolver.propose.mapping import (
    SourcePlan,
    attribute_values,
    explicit_normalizers,
    identity_types,
    map_source,
)
from resolver.propose.render import render
from resolver.propose.sample import sample_input, source_name

LINK_TYPES = ("link_only", "dedupe_only", "link_and_dedupe")
DEFAULT_SAMPLE_ROWS = 20_000


@dataclass
class Proposal:
    out: Path
    sources: list[SourcePlan]
    types: dict
    normalizers: dict
    candidates: list[R.Candidate]
    rules: list[R.Candidate]
    comparisons: list[dict]
    budget: int
    budget_reason: str
    records: int
    link_type: str
    default_region: str
    max_block_size: int = R.MAX_BLOCK_SIZE
    warnings: list[str] = field(default_factory=list)

    @property
    def weak_fields(self) -> list[str]:
        return R.weak_fields(self.rules)

    @property
    def total_pairs(self) -> int:
        return sum(c.pairs for c in self.rules)


def _names(data: list[str], names: list[str] | None) -> list[str]:
    if names and len(names) != len(data):
        raise ConfigError(f"--name was given {len(names)} time(s) for {len(data)} input(s); give one per input")
    chosen = list(names) if names else [source_name(Path(d.replace("*", "_"))) for d in data]
    seen: Counter[str] = Counter()
    out = []
    for name in chosen:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _link_type(requested: str | None, n_sources: int) -> str:
    if requested is None:
        return "link_and_dedupe" if n_sources > 1 else "dedupe_only"
    if requested not in LINK_TYPES:
        raise ConfigError(f"--link-type must be one of {', '.join(LINK_TYPES)}")
    if requested == "link_only" and n_sources < 2:
        raise ConfigError("--link-type link_only needs two or more inputs")
    return requested


def _region(plans: list[SourcePlan]) -> str:
    regions = Counter(d.detail.get("region") for p in plans for d in p.detections if d.kind == K.PHONE)
    regions.pop(None, None)
    return regions.most_common(1)[0][0] if regions else "US"


def _records_frame(plans: list[SourcePlan]) -> tuple[pd.DataFrame, np.ndarray]:
    """Every source's sampled rows as attribute columns (missing where a source lacks one)."""
    frames = [pd.DataFrame(attribute_values(p)) for p in plans]
    source = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(frames)])
    frame = pd.concat(frames, ignore_index=True)
    return frame.astype("str"), source


def _normalized(frame: pd.DataFrame, plans: list[SourcePlan], types: dict, normalizers: dict,
                default_region: str) -> dict[str, pd.Series]:
    """The attributes in match form, as a run's blocking sees them."""
    config = Config.model_validate({
        "run": {"default_region": default_region, "workers": 1},
        "sources": [{"name": p.name, "format": p.sample.format, "path": "x", "key": p.key} for p in plans],
        "identity": {"types": types},
    })
    kinds = {column: normalizers.get(column) or attribute_kind(column) for column in frame.columns}
    return match_attributes(frame, config, kinds)


WHO_KINDS = (K.FIRST_NAME, K.FULL_NAME, K.BIRTH_DATE, K.YEAR, K.MONTH, K.DAY, K.ID, K.EMAIL)


def _probable(cands: list[R.Candidate], keys: np.ndarray, source: np.ndarray, normalized: dict[str, pd.Series],
              records: int, link_only: bool, who: dict[str, bool], identifiers: set[str]) -> dict[str, np.ndarray]:
    """Per candidate, which of the probable matches among all candidates' sampled pairs it finds
    (less those an identifier already joins: a run does not compare them)."""
    left, right, mask = R.universe(cands, keys, source, link_only)
    probable = R.probable_matches(left, right, normalized, records, who)
    for name in identifiers:  # pairs an identifier joins are no candidates in a run
        codes = pd.factorize(normalized[name].astype("str"))[0]
        probable &= ~((codes[left] >= 0) & (codes[left] == codes[right]))
    mask = mask[probable]
    return {c.name: (mask >> np.uint64(r)) & np.uint64(1) == 1 for r, c in enumerate(cands)}


def propose(data: list[str], out: Path | str = "resolver.yaml", names: list[str] | None = None,
            link_type: str | None = None, pair_budget: int | None = None,
            sample_rows: int = DEFAULT_SAMPLE_ROWS, exclude: tuple[str, ...] = ()) -> Proposal:
    """A configuration for DATA (files or globs, one records source each)."""
    if not data:
        raise ConfigError("give at least one data file")
    if sample_rows < 100:
        raise ConfigError("--sample-rows must be at least 100")
    source_names = _names(data, names)
    chosen_link = _link_type(link_type, len(data))
    plans: list[SourcePlan] = []
    for pattern, name in zip(data, source_names):
        sample = sample_input(pattern, sample_rows)
        if sample.sampled == 0:
            raise InputError(f"{pattern}: no rows")
        detections, key = K.detect_frame(sample.frame, tuple(exclude))
        if key is None:
            raise InputError(f"{pattern}: no column is unique and filled in every sampled row, and a records source "
                             "needs a record key: add a row id column (or --exclude nothing that is one)")
        plans.append(map_source(name, sample, detections, key))
    if not any(p.attributes for p in plans):
        raise InputError("no column holds anything to match on (names, dates, emails, phones, addresses, ids)")
    types = identity_types(plans)
    normalizers = explicit_normalizers(plans)
    region = _region(plans)
    frame, source = _records_frame(plans)
    normalized = _normalized(frame, plans, types, normalizers, region)
    records = sum(p.sample.rows for p in plans)
    if pair_budget is None:
        budget = R.default_budget(records)
        reason = (f"{R.PAIRS_PER_RECORD} pairs a record" if budget > R.MIN_BUDGET
                  else f"the {R.MIN_BUDGET:,} floor: {R.PAIRS_PER_RECORD} pairs a record would be fewer")
    else:
        budget, reason = pair_budget, "--pair-budget"
    shared = Counter(a for p in plans for a in p.attributes)
    ids = sorted({a.name for p in plans for a in p.attributes.values() if a.kind == K.ID})
    cands = R.candidates(dict(shared), ids)
    link_only = chosen_link == "link_only"
    keys = R.count(cands, normalized, source, [p.sample.sampled for p in plans], [p.sample.rows for p in plans],
                   link_only=link_only)
    who = {a.name: a.kind != K.ID for p in plans for a in p.attributes.values() if a.kind in WHO_KINDS}
    identifiers = {t for p in plans for t in p.identifiers}
    R.measure_growth(cands, keys, {name: normalized[name] for name in sorted(identifiers) if name in normalized})
    found = _probable(cands, keys, source, normalized, records, link_only, who, identifiers)
    chosen = R.choose(cands, budget, found)
    if not chosen:
        raise InputError("no blocking rule fits: " + "; ".join(f"{c.name} {c.verdict}" for c in cands)
                         if cands else "no blocking rule can be built from the detected columns "
                         "(it needs names, a birth date, an email, a phone, a postcode or an id)")
    attributes = {a.name: a for p in plans for a in p.attributes.values()}
    if link_only:  # a pair is always of two sources: a field only one of them has is never compared
        attributes = {name: a for name, a in attributes.items() if shared[name] >= 2}
    warnings = _warnings(plans, chosen, region)
    return Proposal(
        out=Path(out), sources=plans, types=types, normalizers=normalizers, candidates=cands, rules=chosen,
        comparisons=propose_comparisons(attributes, normalized), budget=budget, budget_reason=reason,
        records=records, link_type=chosen_link, default_region=region, warnings=warnings,
    )


def _warnings(plans: list[SourcePlan], chosen: list[R.Candidate], region: str) -> list[str]:
    out = []
    for p in plans:
        s = p.sample
        if s.sampled < s.rows:
            out.append(f"{s.pattern}: kinds and pair counts come from its first {s.sampled:,} of "
                       f"{'about ' if not s.exact else ''}{s.rows:,} rows (--sample-rows reads more)")
        for attr in p.attributes.values():
            if attr.kind == K.BIRTH_DATE and attr.normalizer != "date":
                out.append(f"{p.name}.{attr.columns[0]}: {attr.note}")
    common = R.weak_fields(chosen)
    if common:
        out.append(f"every chosen rule uses {', '.join(common)}: a typo there hides a match from blocking "
                   "(no rule without it fits the budget)")
    if region != "US":
        out.append(f"phones follow {region} rules: run.default_region is {region}")
    return out


def write(proposal: Proposal, force: bool = True) -> str:
    """Write the proposal's YAML and load it back (a config that does not validate is a bug here).
    Without `force`, an existing file is left alone (ConfigError)."""
    text = render(proposal)
    out = proposal.out
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; --force replaces it")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    load_config(out)
    return text
