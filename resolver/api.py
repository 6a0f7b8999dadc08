"""The Python API: what `import resolver` gives a notebook, a script or an orchestrator.

    import resolver
    config = resolver.load_config("resolver.yaml")          # or resolver.config_from_dict({...})
    result = resolver.resolve(config, data={"crm": frame})  # DataFrames or Arrow tables per source
    result.persons, result.golden_records, result.summary   # the output tables, the run summary
    result                                                  # in a notebook: the run's report inline
    resolver.score_pair(config, result.model, a, b)         # two records' waterfall
    resolver.best_match(config, "state", record)            # one new record against a state

Every function runs the code the CLI runs (the same stages, rules and model), so what the API
answers is what `resolver run` / `resolver serve` answer.
"""

from __future__ import annotations

import html
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from resolver.compute.backend import select_backend
from resolver.config import Config, ConfigError, _format_validation_error, load_config
from resolver.ingest.remote import is_url
from resolver.matching.blocking import rule_keys
from resolver.matching.compare import comparison_matrix, prepare_all
from resolver.matching.model import FSModel, comparison_weights, household_adjustments, probabilities
from resolver.matching.score import vetoes
from resolver.outputs.report import report_for_run, tables_of
from resolver.outputs.writers import OUTPUT_TABLES
from resolver.pipeline import run
from resolver.resolution import Resolution
from resolver.sync.matcher import match_forms

__all__ = ["Config", "ConfigError", "load_config", "config_from_dict", "resolve", "Result", "score_pair",
           "Waterfall", "best_match", "Match"]

TABLE_FORMATS = ("csv", "parquet", "jsonl", "duckdb", "postgresql")  # source formats whose rows are plain columns


def config_from_dict(raw: dict, base_dir: str | Path = ".") -> Config:
    """A validated Config from a dict shaped like resolver.yaml; relative paths resolve against
    `base_dir`. Invalid: ConfigError naming each field, as load_config does."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(Path("<dict>"), exc)) from exc
    config.base_dir = Path(base_dir).resolve()
    return config


@dataclass
class Result:
    """A run's outputs: the tables (DataFrames), the trained model and the run summary. In a
    notebook it shows the run's report."""

    resolution: Resolution
    output_dir: Path | None = None

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every output table the run made, by name (as written to the output folder)."""
        return {name: frame for name, frame in tables_of(self.resolution).items() if frame is not None}

    def __getattr__(self, name: str):
        """Each output table by name: result.persons, result.golden_records, ... (None when the run
        made none)."""
        if name in OUTPUT_TABLES:
            return getattr(self.resolution, name)
        raise AttributeError(name)

    @property
    def summary(self) -> dict:
        """The run summary (what run_summary.json holds): every row accounted for, stage times."""
        return self.resolution.summary

    @property
    def model(self) -> FSModel | None:
        """The Fellegi-Sunter model the run trained or loaded (None without matching)."""
        return self.resolution.model

    def report_html(self) -> str:
        """The run's report page (report.html) as a string."""
        if self.output_dir is not None and (self.output_dir / "report.html").exists():
            return (self.output_dir / "report.html").read_text(encoding="utf-8")
        page, _ = report_for_run(self.resolution, None, None)
        return page

    def _repr_html_(self) -> str:
        # An iframe keeps the page's scripts and styles apart from the notebook's.
        return (f'<iframe srcdoc="{html.escape(self.report_html(), quote=True)}" '
                'style="width:100%;height:720px;border:0"></iframe>')

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}: {len(frame):,}" for name, frame in self.tables.items())
        return f"<resolver.Result {counts}>"


def _with_frames(config: Config, data: Mapping[str, pd.DataFrame | pa.Table], folder: Path
                 ) -> tuple[Config, dict[str, str]]:
    """The config with each source named in `data` read from that table (written to `folder` as
    Parquet, so the readers' checks and rejects apply to it as to a file), and what the outputs'
    `file` columns call each table: `data[<source>]`."""
    sources = {s.name: s for s in config.sources}
    unknown = sorted(set(data) - set(sources))
    if unknown:
        raise ConfigError(f"data names sources the config does not have: {unknown} (sources: {sorted(sources)})")
    config = config.model_copy(deep=True)
    names: dict[str, str] = {}
    for source in config.sources:
        if source.name not in data:
            continue
        if source.format not in TABLE_FORMATS:
            raise ConfigError(f"source {source.name!r}: a table can stand in for a {', '.join(TABLE_FORMATS)} source, "
                              f"not {source.format!r} (its reader expects that system's message files)")
        table = data[source.name]
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        if not isinstance(table, pa.Table):
            raise TypeError(f"data[{source.name!r}]: expected a pandas DataFrame or a pyarrow Table, "
                            f"got {type(table).__name__}")
        path = folder / f"{len(names)}.parquet"
        pq.write_table(table, path)
        source.table = source.query = None
        source.path, source.format = str(path), "parquet"
        names[str(path)] = f"data[{source.name}]"
    return config, names


def resolve(config: Config | str | Path, data: Mapping[str, pd.DataFrame | pa.Table] | None = None, *,
            output_dir: str | Path | None = None, state_dir: str | Path | None = None,
            backend: str | None = None) -> Result:
    """Resolve the config's sources into persons.

    `config`: a Config, or the path of a resolver.yaml. `data`: tables standing in for sources, by
    source name (pandas DataFrames or Arrow tables with the columns the source maps); the other
    sources are read from their files. `output_dir`: also write the outputs and report.html there
    (atomically, as `resolver run --out`); without it nothing is written. `state_dir`: start from
    and commit to a state (persistent person ids, incremental runs; needs `output_dir`).
    `backend`: cpu, gpu or auto (default: the config's run.backend)."""
    if not isinstance(config, Config):
        config = load_config(config)
    if state_dir is not None and output_dir is None:
        raise ConfigError("state_dir needs output_dir: a run commits its outputs and its state together")
    with tempfile.TemporaryDirectory(prefix="resolver-api-") as folder:
        names: dict[str, str] = {}
        if data:
            config, names = _with_frames(config, data, Path(folder))
        elif output_dir is not None:
            config = config.model_copy(deep=True)
        if output_dir is not None:
            config.run.output_dir = str(output_dir) if is_url(str(output_dir)) else str(Path(output_dir).resolve())
        chosen = select_backend(backend or config.run.backend)
        resolution = run(config, write=output_dir is not None, backend=chosen,
                         state_dir=Path(state_dir).resolve() if state_dir is not None else None, file_names=names)
    local = output_dir is not None and not is_url(str(output_dir))
    return Result(resolution, Path(output_dir).resolve() if local else None)


# ---------------------------------------------------------------------------------------------
# Two records
# ---------------------------------------------------------------------------------------------
@dataclass
class Waterfall:
    """How the model scores a pair: the prior weight of the blocking rule it is scored under, each
    comparison's level and weight (log2 Bayes factors), the household adjustment; their sum is the
    match weight, and its probability is 1 / (1 + 2^-weight)."""

    rule: str
    candidate: bool  # whether the two share a blocking key (else a run never compares them)
    prior_weight: float
    comparisons: pd.DataFrame  # comparison, value_a, value_b, level, weight
    household_weight: float
    match_weight: float
    probability: float
    vetoed: bool  # a must-agree comparison disagrees
    decision: str  # link, review or no_link, by the config's thresholds

    def __str__(self) -> str:
        rows = [f"prior ({self.rule})".ljust(34) + f"{self.prior_weight:+8.2f}"]
        for r in self.comparisons.itertuples():
            rows.append(f"{r.comparison}: {r.level}".ljust(34) + f"{r.weight:+8.2f}")
        if self.household_weight:
            rows.append("household".ljust(34) + f"{self.household_weight:+8.2f}")
        rows.append("match weight".ljust(34) + f"{self.match_weight:+8.2f}")
        rows.append(f"probability {self.probability:.4f}: {self.decision}" + (" (vetoed)" if self.vetoed else ""))
        return "\n".join(rows)


def _decision(config: Config, probability: float, vetoed: bool) -> str:
    """link at or above auto_merge (no must-agree veto), review in the band, else no_link."""
    thresholds = config.matching.thresholds
    if probability >= thresholds.auto_merge and not vetoed:
        return "link"
    return "review" if probability >= thresholds.review else "no_link"


def score_pair(config: Config, model: FSModel | dict, a: Mapping, b: Mapping) -> Waterfall:
    """The waterfall of two records, given as {attribute: raw value} (the attribute names of the
    config's sources), under `model` (a Result's model, or a model.json's dict). The pair is scored
    under the first blocking rule whose key the two share, as a run would; two records sharing
    none are scored under the first rule, and `candidate` says a run would never compare them.
    Term-frequency adjustments need the run's value counts and are left out, as `serve` does."""
    if config.matching is None:
        raise ConfigError("score_pair needs a config with a matching section")
    attributes = match_forms(config, [dict(a), dict(b)])
    prepared = prepare_all(config.matching.comparisons, attributes)
    rules = config.matching.blocking.rules
    if isinstance(model, dict):
        model = FSModel.from_dict(model, prepared, [r.name for r in rules], "the model")
    shared = [r for r, rule in enumerate(rules)
              if (keys := rule_keys(rule.keys, attributes, 2)[0])[0] != 0 and keys[0] == keys[1]]
    rule = np.array([shared[0] if shared else 0], dtype=np.int64)
    levels = comparison_matrix(prepared, np.array([0]), np.array([1]))
    weights = comparison_weights(model, levels, rule)[0]
    household = float(household_adjustments(model, levels, rule)[0])
    prior = float(model.prior_weights[rule[0]])
    total = prior + float(weights.sum()) + household
    probability = float(probabilities(np.array([total]))[0])
    vetoed = bool(vetoes(prepared, levels)[0] >= 0)
    decision = _decision(config, probability, vetoed)
    comparisons = pd.DataFrame({
        "comparison": [p.name for p in prepared],
        "value_a": [p.values.iloc[0] for p in prepared],
        "value_b": [p.values.iloc[1] for p in prepared],
        "level": [p.labels[int(levels[0, k])] for k, p in enumerate(prepared)],
        "weight": weights.astype(float),
    })
    return Waterfall(rules[int(rule[0])].name, bool(shared), prior, comparisons, household, total, probability,
                     vetoed, decision)


# ---------------------------------------------------------------------------------------------
# One new record against a state
# ---------------------------------------------------------------------------------------------
@dataclass
class Match:
    """The person one record belongs to: by a shared identifier (`how` = "identifier",
    probability 1), or by the model against the golden records of block-sharing persons (`how` =
    "model"); `decision` as the service would take it: link, review or no_link."""

    person_id: str
    how: str
    probability: float
    decision: str
    identifier: dict | None = None
    vetoed: bool = False
    golden: dict = field(default_factory=dict)


def best_match(config: Config, state_dir: str | Path, record: Mapping, identifiers: Mapping | None = None,
               output_dir: str | Path | None = None) -> Match | None:
    """The person a new record would join, by the rules `resolver serve` applies to a webhook:
    first any of its `identifiers` ({identifier type: value}) a person of the state holds, then the
    state's model against the golden records of the persons sharing a blocking key with `record`
    ({attribute: value}). None when no person is a candidate. `output_dir`: where the state's last
    run wrote its outputs (default: the config's run.output_dir). The state's sync store is built
    on first use (as `serve` does), then read only."""
    from resolver.sync.service import SyncService

    if output_dir is not None:
        config = config.model_copy(deep=True)
        config.run.output_dir = str(Path(output_dir).resolve())
    service = SyncService(config, Path(state_dir))
    try:
        for id_type, value in (identifiers or {}).items():
            found = service.profile(id_type, str(value))
            if found is not None:
                return Match(found["person_id"], "identifier", 1.0, "link", {"type": id_type, "value": value},
                             golden=found["golden"])
        matcher = service.resolver.matcher
        if matcher is None:
            return None
        best = service.store.read(lambda tx: matcher.best_many(tx, [dict(record)]))[0]
        if best is None:
            return None
        person, probability, vetoed = best
        decision = _decision(config, probability, vetoed)
        golden = service.store.read(lambda tx: {f: v for f, v in tx.all(
            "SELECT field, value FROM golden WHERE person_id = ? ORDER BY field", (person,))})
        return Match(person, "model", probability, decision, vetoed=vetoed, golden=golden)
    finally:
        service.close()
