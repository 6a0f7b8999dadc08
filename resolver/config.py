"""Configuration: YAML files validated into typed models with errors that name the file and field.

Config is data; logic stays in the stages. Source paths are resolved relative to the config file.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from resolver.keys import parse_key


class ConfigError(ValueError):
    """A configuration problem, with the file and field it is about."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# Cells that mean "no value" in CSV exports (R, pandas, SQL dumps, MySQL's \\N, Excel's #N/A):
# exact, case-sensitive matches after trimming whitespace ("" also makes a blank cell missing).
CSV_NULL_VALUES = ("", "NA", "N/A", "n/a", "NULL", "null", "\\N", "NaN", "nan", "None", "#N/A")


class CsvOptions(_Strict):
    delimiter: str = ","
    encoding: str = "utf-8"
    quotechar: str = '"'
    # A cell equal to one of these (after trimming whitespace) is a missing value, in every column
    # read (a record whose key is one is rejected like an empty key); [] keeps only empty cells missing.
    null_values: list[str] = Field(default_factory=lambda: list(CSV_NULL_VALUES))

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("delimiter must be one character")
        return value


class DateParts(_Strict):
    """An attribute built from three columns: `{year: COL, month: COL, day: COL}` gives the ISO
    date YYYY-MM-DD (missing when a part is missing or the three make no valid date)."""

    year: str
    month: str
    day: str

    @property
    def columns(self) -> list[str]:
        return [self.year, self.month, self.day]


class JoinedColumns(_Strict):
    """An attribute built from several columns: `{join: [COL, COL...]}` gives their values joined
    by a space, missing ones left out (missing when all are): an address from its number, street
    and unit, compared as one field (a person who moves changes all of them at once)."""

    join: list[str] = Field(min_length=2)

    @property
    def columns(self) -> list[str]:
        return list(self.join)


BuiltAttribute = DateParts | JoinedColumns


# What anonymous-visitor sessions may keep (persons/stitching.py compares them).
SESSION_FIELDS = ("ip", "user_agent", "page", "city", "country", "screen")


class LinkConfig(_Strict):
    """An explicit merge edge: the record (or event) is the same person as `type`:`column`'s value."""

    column: str
    type: str
    rule: str


class SourceConfig(_Strict):
    name: str
    system: Literal["salesforce", "segment", "ga4", "adobe", "tealium", "generic"] = "generic"
    kind: Literal["records", "events"] = "records"
    format: Literal["csv", "parquet", "jsonl", "segment", "ga4", "adobe", "tealium", "duckdb", "postgresql"]
    path: str
    # format duckdb: the database file is `path`; format postgresql: `path` is the server's URL, or
    # env:NAME for the environment variable holding it. Their rows are `table`'s or `query`'s.
    table: str | None = None
    query: str | None = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    trust: int = 100
    key: str | None = None
    timestamp: str | None = None
    deleted: str | None = None
    # attribute -> column, list of columns (first non-empty wins), {year, month, day} columns (a date)
    # or {join: [columns]} (their values joined by spaces)
    attributes: dict[str, str | list[str] | DateParts | JoinedColumns] = Field(default_factory=dict)
    identifiers: dict[str, str | list[str]] = Field(default_factory=dict)
    links: list[LinkConfig] = Field(default_factory=list)
    # Events sources: what anonymous-visitor sessions keep (ip, user_agent, page, city, country,
    # screen; a list is the first present, except screen: [width, height] -> "WxH").
    session: dict[str, str | list[str]] = Field(default_factory=dict)

    @field_validator("session")
    @classmethod
    def _known_session_fields(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(SESSION_FIELDS))
        if unknown:
            raise ValueError(f"unknown session fields {unknown} (known: {', '.join(SESSION_FIELDS)})")
        return value

    @model_validator(mode="after")
    def _duckdb_needs_a_table_or_a_query(self) -> "SourceConfig":
        databases = ("duckdb", "postgresql")
        if self.format in databases and (self.table is None) == (self.query is None):
            raise ValueError(f"source {self.name!r}: format {self.format} reads `table` or `query` (one of them)")
        if self.format not in databases and (self.table is not None or self.query is not None):
            raise ValueError(f"source {self.name!r}: `table` and `query` are for formats duckdb and postgresql")
        return self

    @model_validator(mode="after")
    def _records_need_a_key(self) -> "SourceConfig":
        if self.kind == "records" and not self.key:
            raise ValueError(f"source {self.name!r}: records sources need `key` (the record id column)")
        return self

    def attribute_columns(self) -> dict[str, list[str]]:
        """Attribute -> the columns it is the first non-empty of (built attributes: built_attributes)."""
        return {name: _as_list(cols) for name, cols in self.attributes.items()
                if not isinstance(cols, (DateParts, JoinedColumns))}

    def built_attributes(self) -> dict[str, BuiltAttribute]:
        """Attributes built from several columns: dates from year, month and day; joined values."""
        return {name: spec for name, spec in self.attributes.items() if isinstance(spec, (DateParts, JoinedColumns))}

    def identifier_columns(self) -> dict[str, list[str]]:
        return {name: _as_list(cols) for name, cols in self.identifiers.items()}

    def referenced_columns(self) -> list[str]:
        """Every column the mapping reads, in a stable order, without repeats."""
        cols: list[str] = []
        for name in (self.key, self.timestamp, self.deleted):
            if name:
                cols.append(name)
        for group in (*self.attribute_columns().values(), *(p.columns for p in self.built_attributes().values()),
                      *self.identifier_columns().values()):
            cols.extend(group)
        cols.extend(link.column for link in self.links)
        for group in self.session.values():
            cols.extend(_as_list(group))
        return list(dict.fromkeys(cols))


class IdentifierType(_Strict):
    normalizer: Literal["trim", "lower", "email", "phone", "sfid", "ip"] = "trim"
    priority: int = 100
    limit: int | None = None
    hub_cap: int | None = None
    strong: bool = False
    evidence: bool = True
    # When an edge of this type is what would join two groups, the joined group may hold at most
    # this many values of the named types (e.g. a phone may not join two different emails).
    link_limits: dict[str, int] = Field(default_factory=dict)

    @field_validator("limit", "hub_cap")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be >= 1")
        return value


class BlocklistConfig(_Strict):
    vendor_lists: bool = True
    values: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)


class EmailOptions(_Strict):
    fold_gmail_dots: bool = True
    fold_plus_tags: bool = True


class IdentityConfig(_Strict):
    types: dict[str, IdentifierType] = Field(default_factory=dict)  # none: records link by matching only
    blocklist: BlocklistConfig = Field(default_factory=BlocklistConfig)
    email: EmailOptions = Field(default_factory=EmailOptions)
    guards: bool = True  # False switches off limits and hub caps (blocked values still apply)

    @model_validator(mode="after")
    def _link_limits_name_known_types(self) -> "IdentityConfig":
        for name, spec in self.types.items():
            unknown = sorted(set(spec.link_limits) - set(self.types))
            if unknown:
                raise ValueError(f"types.{name}.link_limits names undeclared types {unknown}")
        return self


# --------------------------------------------------------------------------------------------
# Probabilistic matching
# --------------------------------------------------------------------------------------------
ATTRIBUTE_NORMALIZERS = ("name", "text", "email", "phone", "date", "number", "raw")
LINK_TYPES = ("link_and_dedupe", "link_only", "dedupe_only")
COMPARISON_METHODS = (
    "exact", "jaro_winkler", "levenshtein", "jaccard", "date", "numeric", "geo", "email", "phone",
)
_KEY_EXPRESSION = r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*|[a-z_]+\(\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:,\s*[A-Za-z0-9_]+\s*)*\))\s*$"


class BlockingRule(_Strict):
    """Records whose keys all agree (and none is missing) become candidate pairs.

    A key is an attribute name or a function of one: prefix(col, n), last_digits(col, n),
    year(col), metaphone(col), soundex(col), email_local(col), email_domain(col), initials(col),
    or unordered(col_a, col_b) (the two values in sorted order: catches swapped first/last names).
    """

    name: str
    keys: list[str] = Field(min_length=1)
    # A block of more than max_block_size records is re-blocked: its records' key is combined with
    # the first of these keys (same grammar as `keys`), a sub-block still over the cap with the
    # next, and so on; what is still over the cap after the last is skipped. Default (None): the
    # comparison columns the rule does not use, in comparison order ([]: no refinement).
    refine: list[str] | None = None
    _default_refine: list[str] = PrivateAttr(default_factory=list)

    @field_validator("keys", "refine")
    @classmethod
    def _expressions(cls, keys: list[str] | None) -> list[str] | None:
        bad = [k for k in keys or [] if not re.match(_KEY_EXPRESSION, k)]
        if bad:
            raise ValueError(f"not a key expression: {bad} (expected `column` or `function(column, ...)`)")
        return keys

    @property
    def refine_keys(self) -> list[str]:
        """The keys an over-cap block is refined by: `refine`, or the default matching set."""
        return list(self.refine) if self.refine is not None else list(self._default_refine)

    def columns(self) -> set[str]:
        """The attributes the rule's keys read."""
        return {c for k in self.keys for c in parse_key(k).columns}


class BlockingConfig(_Strict):
    # A block with more records than this is skipped for its rule (with a warning naming the key):
    # memory and time stay bounded by the cap, not by how common a surname is.
    max_block_size: int = Field(default=500, ge=2)
    # At most 31 rules: a pair's training sessions are two bits per rule of one 64-bit mask.
    rules: list[BlockingRule] = Field(min_length=1, max_length=31)

    @model_validator(mode="after")
    def _unique_names(self) -> "BlockingConfig":
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"blocking rule names must be unique: {names}")
        return self


class ComparisonConfig(_Strict):
    """One attribute comparison with ordered levels: null (no weight), exact, the method's
    graded levels, else."""

    name: str
    column: str | list[str]  # geo: [latitude, longitude]
    method: Literal[COMPARISON_METHODS]  # type: ignore[valid-type]
    thresholds: list[float] = Field(default_factory=list)  # similarity levels, e.g. [0.92, 0.80]
    ngram: int | None = None  # jaccard: character n-grams of this size; None = word tokens
    years: list[float] = Field(default_factory=list)  # date: "within N years" levels
    distances: list[float] = Field(default_factory=list)  # numeric: |a-b| levels; geo: kilometres
    digits: int = Field(default=7, ge=1)  # phone: the "same last N digits" level
    nicknames: bool = False  # names: Bill = William level after exact
    tf_adjust: bool = False  # exact agreement on a common value counts less than on a rare one
    # Total disagreement ("else") here rules out an automatic merge, whatever the other fields
    # say: the pair goes to review. For who-fields (first name), so that people who share
    # where-fields (a household: surname, address, phone) are never merged on those alone.
    must_agree: bool = False
    # A household field: people who live together share it (surname, address, postcode, phone).
    # The model's household class learns how often they do; on other fields household members
    # agree no more than strangers. None: from the column's name (household_field()).
    household: bool | None = None

    @model_validator(mode="after")
    def _method_options(self) -> "ComparisonConfig":
        if sorted(self.thresholds, reverse=True) != self.thresholds or any(not 0 < t <= 1 for t in self.thresholds):
            raise ValueError("thresholds must be in (0, 1] and in decreasing order")
        if self.method in ("jaro_winkler", "levenshtein", "jaccard") and not self.thresholds:
            raise ValueError(f"method {self.method} needs `thresholds`")
        if sorted(self.years) != self.years or sorted(self.distances) != self.distances:
            raise ValueError("years and distances must be increasing")
        if self.method == "geo" and (isinstance(self.column, str) or len(self.column) != 2):
            raise ValueError("geo comparisons need `column: [latitude, longitude]`")
        if self.method != "geo" and not isinstance(self.column, str):
            raise ValueError("only geo comparisons take two columns")
        if self.method in ("numeric", "geo") and not self.distances:
            raise ValueError(f"method {self.method} needs `distances`")
        return self

    @property
    def columns(self) -> list[str]:
        return _as_list(self.column)

    def household_field(self) -> bool:
        """Whether people of one household share this field: `household` when set, else from the
        column's name (surnames, addresses, postcodes, cities, phones, coordinates)."""
        if self.household is not None:
            return self.household
        if self.method == "geo":
            return True
        name = self.columns[0].lower()
        return any(hint in name for hint in _HOUSEHOLD_HINTS)


# Column-name fragments of fields a household shares.
_HOUSEHOLD_HINTS = ("last", "surname", "family", "street", "address", "addr", "city", "suburb", "town", "post",
                    "zip", "state", "county", "country", "phone", "tel", "unit", "apartment", "house", "building",
                    "locality", "region")


class ModelOptions(_Strict):
    max_iterations: int = Field(default=3000, ge=1)  # EM is cheap (distinct patterns); a household class can take hundreds
    tolerance: float = Field(default=1e-5, gt=0)  # stop when no probability or class share moves more than this
    u_sample_pairs: int = Field(default=2_000_000, ge=1000)  # random record pairs for u probabilities
    # A third class for different people of one household (see resolver/matching/model.py); it needs at
    # least one household field and one person field among the comparisons.
    households: bool = True
    # A model that fails its health check (resolver.matching.model.health_problems) does not auto-merge:
    # its would-be links go to review and the run exits 5. True merges anyway (--allow-unhealthy-model).
    allow_unhealthy: bool = False
    seed: int = 42


class MatchThresholds(_Strict):
    auto_merge: float = Field(default=0.85, gt=0, le=1)
    review: float = Field(default=0.70, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "MatchThresholds":
        if self.review > self.auto_merge:
            raise ValueError("review must not exceed auto_merge")
        return self


class MatchingConfig(_Strict):
    enabled: bool = True
    # Normalizer per attribute (name, text, email, phone, date, number, raw); unnamed attributes
    # get one from their name (…email -> email, …phone -> phone, …year…/yob -> number,
    # …date/birth… -> date, …name -> name): attribute_kind.
    normalizers: dict[str, Literal[ATTRIBUTE_NORMALIZERS]] = Field(default_factory=dict)  # type: ignore[valid-type]
    blocking: BlockingConfig
    comparisons: list[ComparisonConfig] = Field(min_length=1)
    model: ModelOptions = Field(default_factory=ModelOptions)
    thresholds: MatchThresholds = Field(default_factory=MatchThresholds)
    # Which pairs may be candidates (Splink's names): link_and_dedupe, any two records; link_only,
    # only records of different sources; dedupe_only, only records of the same source.
    link_type: Literal[LINK_TYPES] = "link_and_dedupe"  # type: ignore[valid-type]
    # Extra limits on what a probabilistic link may join (on top of identity.types limits),
    # e.g. {sf_lead_id: 1}: a fuzzy match never joins two people holding different lead ids.
    link_limits: dict[str, int] = Field(default_factory=dict)
    # A probabilistic link may not make a person of more records than this (guards on): fuzzy
    # links must not chain unrelated people into giant clusters as data grows.
    max_person_records: int = Field(default=20, ge=2)
    scored_pairs_min: float = Field(default=0.5, ge=0, le=1)  # scored_pairs.parquet keeps pairs at or above
    # Blocks holding more candidate pairs than this are not all held at once: pairs are made,
    # compared and scored bucket by bucket, twice (EM statistics, then scores; same results).
    stream_above_pairs: int = Field(default=50_000_000, ge=0)

    @model_validator(mode="after")
    def _unique_names(self) -> "MatchingConfig":
        names = [c.name for c in self.comparisons]
        if len(set(names)) != len(names):
            raise ValueError(f"comparison names must be unique: {names}")
        return self

    @model_validator(mode="after")
    def _default_refinements(self) -> "MatchingConfig":
        """A rule without `refine` refines an over-cap block by the exact values of the comparison
        columns it does not use, in comparison order (plain columns; geo comparisons left out)."""
        compared = list(dict.fromkeys(c.columns[0] for c in self.comparisons if c.method != "geo"))
        for rule in self.blocking.rules:
            used = rule.columns()
            rule._default_refine = [c for c in compared if c not in used]
        return self

    def normalizer(self, attribute: str) -> str:
        return self.normalizers.get(attribute) or attribute_kind(attribute)

    def normalizer_origin(self, attribute: str) -> str:
        """Where an attribute's kind comes from, in words (for messages)."""
        return "set in matching.normalizers" if attribute in self.normalizers else "guessed from its name"


def attribute_kind(attribute: str) -> str:
    """The normalizer an attribute gets from its name (…email -> email, …phone -> phone,
    …year…/yob -> number (birth_year is a number, not a date), …date/birth/dob -> date,
    …name -> name, latitude/longitude -> number, else text)."""
    lowered = attribute.lower()
    for needle, kind in (("email", "email"), ("phone", "phone"), ("year", "number"), ("yob", "number"),
                         ("birth", "date"), ("date", "date"), ("dob", "date"), ("name", "name"),
                         ("latitude", "number"), ("longitude", "number")):
        if needle in lowered:
            return kind
    return "text"


SURVIVORSHIP_RULES = ("source_priority", "most_recent", "most_frequent", "longest", "first_non_null")
SurvivorshipRule = Literal[SURVIVORSHIP_RULES]  # type: ignore[valid-type]


class GoldenConfig(_Strict):
    """Survivorship: which record's value becomes the golden value of each field.

    A field's rules form a fallback chain: each keeps the best candidates by its criterion and hands
    ties to the next; the record first in source order breaks what ties remain. Missing values never
    win while any record has one."""

    rules: list[SurvivorshipRule] = Field(default_factory=lambda: ["source_priority", "most_recent", "most_frequent"],
                                          min_length=1)
    fields: dict[str, list[SurvivorshipRule]] = Field(default_factory=dict)  # per-field chains
    # Sources, most trusted first; sources not listed follow, by `trust` (lower first), then config order.
    source_priority: list[str] = Field(default_factory=list)
    # Persons whose values of these fields differ by a Jaro-Winkler similarity below name_similarity
    # are flagged for manual review in conflicts.parquet and golden_records.parquet.
    name_fields: list[str] = Field(default_factory=lambda: ["first_name", "last_name"])
    name_similarity: float = Field(default=0.8, ge=0.0, le=1.0)

    def chain(self, field: str) -> list[str]:
        return self.fields.get(field, self.rules)


class PostgresOutput(_Strict):
    url_env: str = "RESOLVER_POSTGRES_URL"  # the environment variable holding the server's URL
    db_schema: str = "resolver"  # the schema whose tables each run replaces


class RunOptions(_Strict):
    output_dir: str = "out"
    default_region: str = "US"
    workers: int = Field(default=2, ge=1)  # processes that read and normalize source files in parallel
    # A CSV / JSONL / GA4 / Adobe / Tealium / Parquet file bigger than this is read as pieces of about
    # this size, one ingest job each (bounded memory per job; 0: whole files): CSVs cut at record ends
    # (never inside a quoted field), line formats at line ends, Parquet at row groups. Segment batch
    # files, and CSVs in encodings other than UTF-8 / ASCII / Latin-1 / cp1252, are read whole.
    partition_bytes: int = Field(default=256 << 20, ge=0)
    state_dir: str | None = None  # persistent ids, lineage, erasure tombstones (see `--state`)
    backend: Literal["cpu", "gpu", "auto"] = "auto"  # where the hot stages run (auto: gpu when CuPy sees one)
    # Also write the outputs as one DuckDB database, output_dir/resolver.duckdb (every table, plus
    # views current_persons and current_golden_records); needs `pip install duckdb`.
    duckdb: bool = False
    # Also load the outputs into PostgreSQL (COPY, one transaction; views as in DuckDB).
    postgres: PostgresOutput | None = None


class StitchingConfig(_Strict):
    """Anonymous visitor stitching (resolver/persons/stitching.py)."""

    enabled: bool = True
    anonymous_types: list[str] = Field(default_factory=lambda: ["anonymous_id"])  # identifier types of anonymous ids
    session_gap_minutes: float = Field(default=30.0, gt=0)  # inactivity that ends a session
    window_days: float = Field(default=7.0, gt=0)  # sessions on one network further apart are no evidence
    nat_degree: int = Field(default=20, ge=1)  # an IP with more anonymous ids is NAT / carrier / VPN: not a key
    subnet_degree: int = Field(default=60, ge=1)  # the same for a /24
    permutations: int = Field(default=32, ge=4, le=256)  # MinHash size of the page signatures
    bands: int = Field(default=8, ge=1)  # LSH bands over the signature
    band_bucket_cap: int = Field(default=50, ge=1)  # a band or device key shared by more persons is no key
    thresholds: MatchThresholds = Field(default_factory=lambda: MatchThresholds())
    labelled_min_pairs: int = Field(default=20, ge=1)  # labelled pairs needed to fix a feature's m (or a rule's u)
    max_iterations: int = Field(default=200, ge=1)
    sample_pairs: int = Field(default=50_000, ge=100)  # labelled and random pairs drawn for m and u
    seed: int = 7


class EngineOptions(_Strict):
    """Where the stages run: this process and its ingest workers (local), or a Dask cluster."""

    name: Literal["local", "dask"] = "local"
    scheduler: str | None = None  # a running Dask scheduler (tcp://host:8786); else a cluster is started
    workers: int | None = Field(default=None, ge=1)  # of the started cluster (default: run.workers; GPUs: one each)
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str | float | None = "auto"  # per worker ("8GiB", a fraction of the machine, or "auto")
    # buckets of pairs and golden records (default: 2 per worker, or more: about 500k records each)
    partitions: int | None = Field(default=None, ge=1)
    rmm_pool_size: str | float | None = None  # LocalCUDACluster: RMM pool per worker ("30GB", or a share of GPU memory)
    spill: bool = True  # LocalCUDACluster: cuDF spilling to host memory
    local_directory: str | None = None  # workers' scratch (spill) folder
    connect_timeout: float = Field(default=30.0, gt=0)  # seconds to reach the scheduler and its first worker


class SyncRetry(_Strict):
    max_attempts: int = Field(default=5, ge=1)  # automatic tries of a failed event (then only `dlq replay`)
    base_seconds: float = Field(default=2.0, gt=0)  # backoff: base * 2^(attempts-1), capped at max_seconds
    max_seconds: float = Field(default=300.0, gt=0)


class SyncConfig(_Strict):
    """The real-time sync service (`resolver serve`)."""

    store: str | None = None  # sqlite:///PATH or postgresql://...; default sqlite under the state dir
    max_body_bytes: int = Field(default=1_048_576, ge=1024)  # bigger requests get 413
    max_records_per_event: int = Field(default=100, ge=1)  # an event naming more record ids: 413
    max_value_chars: int = Field(default=131_072, ge=256)  # an event with a longer text (value or key): 413
    salesforce_org_ids: list[str] = Field(default_factory=list)  # Outbound Messages from these orgs need no HMAC
    objects: dict[str, str] = Field(default_factory=dict)  # Salesforce object -> records source (default: inferred)
    segment_source: str | None = None  # the events source whose mapping Segment webhooks use (default: first segment one)
    export_dir: str | None = None  # where `resolver sync export` writes (default: STATE/sync-export)
    retry: SyncRetry = Field(default_factory=SyncRetry)
    # /healthz fails (503) once an accepted event has waited this long for the running worker
    max_lag_seconds: float = Field(default=30.0, gt=0)


class Config(_Strict):
    run: RunOptions = Field(default_factory=RunOptions)
    engine: EngineOptions = Field(default_factory=EngineOptions)
    stitching: StitchingConfig | None = None
    sources: list[SourceConfig]
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    matching: MatchingConfig | None = None
    golden: GoldenConfig = Field(default_factory=GoldenConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("identity", mode="before")
    @classmethod
    def _identity_may_be_empty(cls, value):
        return {} if value is None else value  # `identity:` with nothing under it

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        names = [s.name for s in self.sources]
        if self.stitching is not None:
            unknown = sorted(set(self.stitching.anonymous_types) - set(self.identity.types))
            if unknown:
                raise ValueError(f"stitching.anonymous_types names unknown identifier types {unknown}")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        known = set(self.identity.types)
        for source in self.sources:
            used = set(source.identifiers) | {link.type for link in source.links}
            unknown = sorted(used - known)
            if unknown:
                raise ValueError(
                    f"source {source.name!r} uses identifier types {unknown} that identity.types does not declare"
                )
        if self.matching is not None:
            self._check_matching(self.matching, known)
        attributes = {a for s in self.sources if s.kind == "records" for a in s.attributes}
        missing = sorted(set(self.golden.fields) - attributes)
        if missing:
            raise ValueError(f"golden.fields: no records source has attribute(s) {missing}")
        unknown_sources = sorted(set(self.golden.source_priority) - set(names))
        if unknown_sources:
            raise ValueError(f"golden.source_priority names unknown sources {unknown_sources}")
        return self

    def _check_matching(self, matching: MatchingConfig, known: set[str]) -> None:
        attributes = {a for s in self.sources if s.kind == "records" for a in s.attributes}
        for comparison in matching.comparisons:
            missing = sorted(set(comparison.columns) - attributes)
            if missing:
                raise ValueError(f"matching.comparisons.{comparison.name}: no records source has attribute(s) {missing}")
        for rule in matching.blocking.rules:
            for key in rule.keys + (rule.refine or []):
                used = parse_key(key).columns
                missing = sorted(set(used) - attributes)
                if missing:
                    raise ValueError(f"matching.blocking.{rule.name}: no records source has attribute(s) {missing}")
        records_sources = [s.name for s in self.sources if s.kind == "records"]
        if matching.link_type == "link_only" and len(records_sources) < 2:
            raise ValueError(f"matching.link_type link_only links records of different sources, and there is only "
                             f"one records source ({', '.join(records_sources) or 'none'}): use link_and_dedupe "
                             "or dedupe_only, or add the other source")
        unknown = sorted(set(matching.link_limits) - known)
        if unknown:
            raise ValueError(f"matching.link_limits names undeclared identifier types {unknown}")

    def warnings(self) -> list[str]:
        """What is valid but most likely not meant, one line each (printed when a run or plan loads
        the config, and kept in the run summary's `warnings`)."""
        out = []
        matching = self.matching is not None and self.matching.enabled
        if not (matching and self.identity.guards):
            return out
        for source in self.sources:
            # A CRM's own record id with limit 1 is deliberate: one Salesforce Contact per person.
            if source.kind != "records" or source.system == "salesforce":
                continue
            for id_type, cols in source.identifier_columns().items():
                if source.key not in cols:
                    continue
                limit = self.identity.types[id_type].limit
                fuzzy = self.matching.link_limits.get(id_type)
                if limit == 1 or fuzzy == 1:
                    where = "limit: 1" if limit == 1 else f"matching.link_limits.{id_type}: 1"
                    out.append(
                        f"identifier type {id_type!r} reads the key column {source.key!r} of source {source.name!r} "
                        f"with {where}: no two records of {source.name!r} can ever be merged (each holds its own "
                        f"{id_type}); records are tracked by their key without it, so remove `{id_type}: "
                        f"{source.key}` from the source's identifiers, or drop the limit, unless one record per "
                        "person is what you mean (one CRM contact per person)")
        return out

    def record_key_types(self) -> set[str]:
        """Identifier types that some records source reads from its key column."""
        return {t for s in self.sources if s.kind == "records"
                for t, cols in s.identifier_columns().items() if s.key in cols}

    def source_files(self, source: SourceConfig) -> list[Path]:
        """The files a source's glob matches, sorted so that runs are deterministic."""
        pattern = Path(source.path)
        if not pattern.is_absolute():
            pattern = self.base_dir / pattern
        return sorted(Path(p) for p in glob.glob(str(pattern)))

    def state_path(self) -> Path | None:
        if not self.run.state_dir:
            return None
        state = Path(self.run.state_dir)
        return state if state.is_absolute() else self.base_dir / state

    def output_path(self) -> Path:
        out = Path(self.run.output_dir)
        return out if out.is_absolute() else self.base_dir / out


def field_kind(config: Config, field: str) -> str:
    """The kind (normalizer) an attribute is put in match form by: matching.normalizers, else its name's."""
    return config.matching.normalizer(field) if config.matching is not None else attribute_kind(field)


def golden_fields(config: Config) -> list[str]:
    """Every attribute of a records source, in config order (the golden record's fields)."""
    fields: list[str] = []
    for source in config.sources:
        if source.kind == "records":
            fields.extend(source.attributes)
    return list(dict.fromkeys(fields))


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; raise ConfigError naming the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from exc
    config.base_dir = path.resolve().parent
    return config
