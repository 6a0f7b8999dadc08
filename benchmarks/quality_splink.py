"""Splink 5 (DuckDB) on one labelled task of benchmarks/quality.py, as Splink's own docs do it.

Runs inside benchmarks/.venv-splink (splink==5.0.0), never in the resolver virtualenv:

    benchmarks/.venv-splink/bin/python benchmarks/quality_splink.py --task TASK_DIR/task.json --out DIR

Each recipe transcribes one of Splink's demo notebooks (github.com/moj-analytical-services/splink,
read at commit e22dacdd, the docs of the 5.0 line; the notebooks are jupytext ``.nb.py`` files):
the data preparation the notebook does in SQL, the settings (link type, blocking rules,
comparisons), the training steps with their arguments, the prediction and the clustering
threshold. Where a notebook does not say something (a clustering threshold, a column the task's
files lack), the adaptation is listed in the recipe's ``adaptations`` and in stats.json.

- ``febrl3``  docs/demos/examples/duckdb/febrl3.nb.py (dedupe_only): febrl1 and febrl3.
- ``febrl4``  docs/demos/examples/duckdb/febrl4.nb.py (link_only, the "detailed" model the
  notebook predicts and clusters with): febrl4.
- ``pseudopeople``  docs/demos/examples/duckdb_no_test/pseudopeople-acs.nb.py (Census x ACS,
  link_only): every pseudopeople task (dedupe tasks run the same settings as dedupe_only).
- ``generator``  benchmarks/splink_runner.py's settings and tutorial-style training (the ones
  compare_splink.py uses on the same generated data; they follow
  docs/demos/examples/duckdb/deduplicate_50k_synthetic.nb.py's training sequence).

Writes to DIR:

    pairs.parquet     key_l, key_r, match_probability   (predicted pairs with p >= --pairs-threshold)
    clusters.parquet  key, cluster_id                   (connected components at the recipe's threshold)
    stats.json        status, recipe (notebook, adaptations, steps), the exact settings dict,
                      candidate pairs, per-phase seconds, records, clusters, EM clamps
    model.json        the trained Splink model

Keys are truth.csv's (``<source>:<record key>``). Exit status: 0 ok, 3 out of memory, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow.csv as pa_csv
import splink
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

import splink_runner  # the generator recipe and the EM underflow clamp

SPLINK_DOCS_COMMIT = "e22dacdd"
NOTEBOOKS = {
    "febrl3": "docs/demos/examples/duckdb/febrl3.nb.py",
    "febrl4": "docs/demos/examples/duckdb/febrl4.nb.py",
    "pseudopeople": "docs/demos/examples/duckdb_no_test/pseudopeople-acs.nb.py",
    "generator": "benchmarks/splink_runner.py (this repository; training sequence of "
                 "docs/demos/examples/duckdb/deduplicate_50k_synthetic.nb.py)",
}
NO_THRESHOLD_DOCUMENTED = 0.85


def query(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(query(con, f"select count(*) from {table}")[0][0])


def sql_path(path: Path) -> str:
    return str(path.resolve().as_posix()).replace("'", "''")


class Recipe:
    """What one run does: fill ``linker``, ``uid`` (the unique id column), the ``keys`` table
    (uid -> truth key), ``threshold``, ``predict_threshold`` and the training ``steps``."""

    def __init__(self, name: str):
        self.name = name
        self.notebook = NOTEBOOKS[name]
        self.adaptations: list[str] = []
        self.steps: list[dict] = []
        self.threshold: float = NO_THRESHOLD_DOCUMENTED
        self.threshold_source = ""
        self.predict_threshold: float | None = None
        self.uid = "unique_id"
        self.settings: dict = {}

    def describe(self) -> dict:
        return {"name": self.name, "notebook": self.notebook, "splink_docs_commit": SPLINK_DOCS_COMMIT,
                "adaptations": self.adaptations, "steps": self.steps, "cluster_threshold": self.threshold,
                "cluster_threshold_source": self.threshold_source, "predict_threshold": self.predict_threshold}


def settings_dict(settings: SettingsCreator | dict) -> dict:
    if isinstance(settings, dict):
        return settings
    return settings.get_settings("duckdb").as_dict()


# ----------------------------------------------------------------------------------------------
# FEBRL: the two FEBRL notebooks
# ----------------------------------------------------------------------------------------------
def read_febrl(path: Path):
    """The file as splink_datasets.febrl3 / febrl4a / febrl4b reads it (pyarrow's CSV reader,
    strings_can_be_null=True), then the notebooks' column-name strip."""
    table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(strings_can_be_null=True))
    return table.rename_columns([column.strip() for column in table.column_names])


def febrl3(con, task: dict, folder: Path, train_args) -> tuple[Recipe, Linker, Callable]:
    recipe = Recipe("febrl3")
    recipe.uid = "rec_id"
    if task["task"] != "febrl3":
        recipe.adaptations.append(f"{task['task']}: febrl3's notebook used as is (same FEBRL columns, dedupe)")
    [source] = task["sources"]
    con.register("raw", read_febrl(folder / source["file"]))
    # febrl3.nb.py, cell 2 (the `cluster` label column it also adds is only used for its accuracy charts).
    query(con, """
        create table febrl as
        select
            * replace (
                trim(cast(date_of_birth as varchar)) as date_of_birth,
                trim(cast(soc_sec_id as varchar)) as soc_sec_id
            )
        from raw
    """)
    query(con, f"create table keys as select rec_id as uid, '{source['name']}:' || rec_id as key from febrl")
    # febrl3.nb.py: blocking_rules
    blocking_rules = [
        block_on("soc_sec_id"),
        block_on("given_name"),
        block_on("surname"),
        block_on("date_of_birth"),
        block_on("postcode"),
    ]
    # febrl3.nb.py: settings
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=blocking_rules,
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison(
                "date_of_birth",
                input_is_string=True,
                datetime_format="%Y%m%d",
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
        ],
        retain_intermediate_calculation_columns=True,
    )
    recipe.settings = settings_dict(settings)
    db_api = DuckDBAPI(connection=con)
    linker = Linker(db_api.register("febrl"), settings)
    # febrl3.nb.py: training
    deterministic_rules = [
        block_on("soc_sec_id"),
        block_on("given_name", "surname", "date_of_birth"),
        "l.given_name = r.surname and l.surname = r.given_name and l.date_of_birth = r.date_of_birth",
    ]
    recipe.steps = [
        {"step": "estimate_probability_two_random_records_match",
         "deterministic_rules": ["soc_sec_id", "given_name, surname, date_of_birth",
                                 deterministic_rules[2]], "recall": 0.9},
        {"step": "estimate_u_using_random_sampling", "max_pairs": 1e6, "seed": 2},
        {"step": "estimate_parameters_using_expectation_maximisation", "blocking_rule": "date_of_birth"},
        {"step": "estimate_parameters_using_expectation_maximisation", "blocking_rule": "postcode"},
        {"step": "predict", "threshold_match_probability": 0.2},
    ]
    recipe.predict_threshold = 0.2
    recipe.threshold = NO_THRESHOLD_DOCUMENTED
    recipe.threshold_source = "febrl3.nb.py clusters nothing (it stops at accuracy charts): 0.85, the harness default"

    def train(phase, t):
        linker.training.estimate_probability_two_random_records_match(deterministic_rules, recall=0.9)
        t = phase("train_prior", t)
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=2)
        t = phase("train_u", t)
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
        t = phase("train_em_dob", t)
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))
        return phase("train_em_postcode", t)

    return recipe, linker, train


def febrl4(con, task: dict, folder: Path, train_args) -> tuple[Recipe, Linker, Callable]:
    recipe = Recipe("febrl4")
    recipe.uid = "rec_id"
    tables = []
    for i, source in enumerate(task["sources"]):
        con.register("data", read_febrl(folder / source["file"]))
        # febrl4.nb.py: prepare_data (less the `cluster` label column, used only for its charts)
        query(con, f"""
            create table febrl_{i} as
            select
                * replace (
                    trim(cast(date_of_birth as varchar)) as date_of_birth,
                    trim(cast(soc_sec_id as varchar)) as soc_sec_id,
                    trim(cast(postcode as varchar)) as postcode
                )
            from data
        """)
        con.unregister("data")
        tables.append(f"febrl_{i}")
    query(con, "create table keys as " + " union all ".join(
        f"select rec_id as uid, '{s['name']}:' || rec_id as key from {t}" for s, t in zip(task["sources"], tables)))
    # febrl4.nb.py: blocking_rules
    blocking_rules = [
        block_on("given_name", "surname"),
        # A blocking rule can also be an aribtrary SQL expression
        "l.given_name = r.surname and l.surname = r.given_name",
        block_on("date_of_birth"),
        block_on("soc_sec_id"),
        block_on("state", "address_1"),
        block_on("street_number", "address_1"),
        block_on("postcode"),
    ]
    # febrl4.nb.py: detailed_model_settings (the model the notebook predicts and clusters with)
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type="link_only",
        blocking_rules_to_generate_predictions=blocking_rules,
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison(
                "date_of_birth",
                input_is_string=True,
                datetime_format="%Y%m%d",
                invalid_dates_as_null=True,
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(
                term_frequency_adjustments=True
            ),
        ],
        retain_intermediate_calculation_columns=True,
    )
    recipe.settings = settings_dict(settings)
    db_api = DuckDBAPI(connection=con)
    linker = Linker([db_api.register(t) for t in tables], settings)
    deterministic_rules = [
        block_on("soc_sec_id"),
        block_on("given_name", "surname", "date_of_birth"),
    ]
    recipe.steps = [
        {"step": "estimate_probability_two_random_records_match",
         "deterministic_rules": ["soc_sec_id", "given_name, surname, date_of_birth"], "recall": 0.8},
        {"step": "estimate_u_using_random_sampling", "max_pairs": 1e6},
        {"step": "estimate_parameters_using_expectation_maximisation", "blocking_rule": "date_of_birth",
         "estimate_without_term_frequencies": True},
        {"step": "estimate_parameters_using_expectation_maximisation", "blocking_rule": "postcode",
         "estimate_without_term_frequencies": True},
        {"step": "predict", "threshold_match_probability": 0.2},
        {"step": "cluster_pairwise_predictions_at_threshold", "threshold_match_probability": 0.99},
    ]
    recipe.predict_threshold = 0.2
    recipe.threshold = 0.99
    recipe.threshold_source = "febrl4.nb.py: cluster_pairwise_predictions_at_threshold(predictions, 0.99)"
    recipe.adaptations.append("the notebook's later 'extended' full-name model (a 'further refinement') is not used")

    def train(phase, t):
        linker.training.estimate_probability_two_random_records_match(deterministic_rules, recall=0.8)
        t = phase("train_prior", t)
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
        t = phase("train_u", t)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("date_of_birth"), estimate_without_term_frequencies=True)
        t = phase("train_em_dob", t)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("postcode"), estimate_without_term_frequencies=True)
        return phase("train_em_postcode", t)

    return recipe, linker, train


# ----------------------------------------------------------------------------------------------
# pseudopeople: the Census x ACS notebook
# ----------------------------------------------------------------------------------------------
# The columns the notebook's settings read (after its preparation), and the 1040's names for them.
PP_COLUMNS = ["first_name", "middle_initial", "last_name", "date_of_birth", "street_number", "street_name",
              "unit_number", "city", "state", "zipcode", "sex", "race_ethnicity"]
MAILING = {f"mailing_address_{c}": c for c in ("street_number", "street_name", "unit_number", "city", "state",
                                                  "zipcode")}


def _pp_table(con, source: dict, folder: Path, index: int, offset: int) -> tuple[str, int, set[str]]:
    """One source as the notebook prepares census / acs: an `id` unique over the task
    (row_number() - 1 + the rows before), `age_in_2020`, and the `address` expression."""
    path = sql_path(folder / source["file"])
    query(con, f"create view raw_{index} as select * from read_parquet('{path}')")
    columns = {r[0] for r in query(con, f"describe raw_{index}")}
    renames = {old: new for old, new in MAILING.items() if old in columns and new not in columns}
    present = {renames.get(c, c) for c in columns}
    select = [f"{c} as {renames[c]}" for c in renames]
    for c in PP_COLUMNS + ["ssn"]:
        if c not in present:
            select.append(f"cast(null as varchar) as {c}")
    if "survey_date" in columns:  # pseudopeople-acs.nb.py: the acs query
        age = "try_cast(age as integer) - (year(survey_date) - 2020)"
    elif "age" in columns:  # pseudopeople-acs.nb.py: the census query
        age = "try_cast(age as integer)"
    else:
        age = "cast(null as integer)"
    query(con, f"""
        create table pp_stage_{index} as
        select *, {', '.join(select) + ', ' if select else ''}
            {offset} + row_number() over () - 1 as id,
            {age} as age_in_2020
        from raw_{index}
    """)
    # pseudopeople-acs.nb.py: prepare_data (the address column)
    keep = ["id", "record_id", "age_in_2020", "ssn", *PP_COLUMNS]
    query(con, f"""
        create table pp_{index} as
        select
            {', '.join(f'cast({c} as varchar) as {c}' if c not in ('id', 'age_in_2020') else c for c in keep)},
            case
                when street_number is null
                    or street_name is null
                    or city is null
                    or state is null
                    or zipcode is null
                    then null
                else trim(
                    street_number || ' ' || street_name || ' ' || city || ' '
                    || state || ' ' || zipcode || ' ' || coalesce(unit_number, '')
                )
            end as address
        from pp_stage_{index}
    """)
    rows = count(con, f"pp_{index}")
    has = {c for c in keep + ["address"] if query(con, f"select count({c}) from pp_{index}")[0][0] > 0}
    return f"pp_{index}", rows, has


def pseudopeople(con, task: dict, folder: Path, train_args) -> tuple[Recipe, Linker, Callable]:
    recipe = Recipe("pseudopeople")
    recipe.uid = "id"
    link_only = task["link_type"] == "link_only"
    tables, sizes, present = [], [], []
    offset = 0
    for i, source in enumerate(task["sources"]):
        table, rows, has = _pp_table(con, source, folder, i, offset)
        tables.append(table)
        sizes.append(rows)
        present.append(has)
        offset += rows
    usable = set.intersection(*present)  # a column counts when every file holds some values of it
    query(con, "create table keys as " + " union all ".join(
        f"select id as uid, '{s['name']}:' || record_id as key from {t}" for s, t in zip(task["sources"], tables)))
    if any(MAILING.keys() & {r[0] for r in query(con, f"describe raw_{i}")} for i in range(len(tables))):
        recipe.adaptations.append("the 1040's mailing_address_* columns renamed to the ACS names "
                                  "(street_number, street_name, unit_number, city, state, zipcode) for `address`")
    if not link_only:
        recipe.adaptations.append("dedupe_only: the notebook's link_only settings on one file")

    # pseudopeople-acs.nb.py: blocking_rules
    notebook_rules = [
        ("first_name",), ("last_name",), ("date_of_birth",), ("street_name",), ("age_in_2020", "sex"),
        ("age_in_2020", "race_ethnicity"), ("age_in_2020", "middle_initial"), ("street_number",),
        ("middle_initial", "sex", "race_ethnicity"),
    ]
    rules = [r for r in notebook_rules if set(r) <= usable]
    dropped = [", ".join(r) for r in notebook_rules if not set(r) <= usable]
    # pseudopeople-acs.nb.py: comparisons
    notebook_comparisons = [
        ("first_name", cl.NameComparison("first_name", jaro_winkler_thresholds=[0.9]).configure(
            term_frequency_adjustments=True)),
        ("middle_initial", cl.ExactMatch("middle_initial").configure(term_frequency_adjustments=True)),
        ("last_name", cl.NameComparison("last_name", jaro_winkler_thresholds=[0.9]).configure(
            term_frequency_adjustments=True)),
        ("date_of_birth", cl.DamerauLevenshteinAtThresholds("date_of_birth", distance_threshold_or_thresholds=[1])),
        ("address", cl.DamerauLevenshteinAtThresholds("address").configure(term_frequency_adjustments=True)),
        ("sex", cl.ExactMatch("sex")),
    ]
    comparisons = [c for column, c in notebook_comparisons if column in usable]
    dropped_comparisons = [column for column, _ in notebook_comparisons if column not in usable]
    if dropped or dropped_comparisons:
        recipe.adaptations.append(
            "blocking rules and comparisons on a column some file lacks are dropped: rules "
            f"[{'; '.join(dropped) or 'none'}], comparisons [{', '.join(dropped_comparisons) or 'none'}]")
    if "ssn" in usable:
        # febrl3.nb.py's treatment of its soc_sec_id: a blocking rule, Damerau-Levenshtein <= 2.
        rules.append(("ssn",))
        comparisons.append(cl.DamerauLevenshteinAtThresholds("ssn", [2]))
        recipe.adaptations.append("ssn (1040 only) used as febrl3.nb.py uses soc_sec_id: block_on('ssn'), "
                                  "DamerauLevenshteinAtThresholds('ssn', [2]), a deterministic prior rule")
    blocking_rules = [block_on(*r) for r in rules]

    kwargs = {}
    if link_only:
        # pseudopeople-acs.nb.py: "we will make the assumption that everyone in the ACS is also in the
        # Census": dfs[1].num_rows / (dfs[0].num_rows * dfs[1].num_rows), dfs[0] the bigger file.
        big, small = max(sizes), min(sizes)
        kwargs["probability_two_random_records_match"] = small / (big * small)
    settings = SettingsCreator(
        unique_id_column_name="id",
        link_type="link_only" if link_only else "dedupe_only",
        blocking_rules_to_generate_predictions=blocking_rules,
        comparisons=comparisons,
        retain_intermediate_calculation_columns=True,
        **kwargs,
    )
    recipe.settings = settings_dict(settings)
    db_api = DuckDBAPI(connection=con)
    inputs = [db_api.register(t, dataset_display_name=s["name"]) for s, t in zip(task["sources"], tables)]
    linker = Linker(inputs if link_only else inputs[0], settings)

    deterministic = []
    if not link_only:
        # The notebook fixes the prior from its one-to-one link assumption, which has no dedupe
        # analogue; its text points to deterministic rules instead: febrl3.nb.py's (the dedupe demo),
        # on the columns this file has, with its recall of 0.9.
        if "ssn" in usable:
            deterministic.append(("ssn", block_on("ssn")))
        if {"first_name", "last_name", "date_of_birth"} <= usable:
            deterministic.append(("first_name, last_name, date_of_birth",
                                  block_on("first_name", "last_name", "date_of_birth")))
            swapped = ("l.first_name = r.last_name and l.last_name = r.first_name "
                       "and l.date_of_birth = r.date_of_birth")
            deterministic.append((swapped, swapped))
        recipe.adaptations.append("dedupe prior: febrl3.nb.py's deterministic rules on these columns, recall 0.9")
    em_first = "date_of_birth" if "date_of_birth" in usable else "first_name"
    if em_first != "date_of_birth":
        recipe.adaptations.append("EM's first pass is blocked on first_name: the notebook's date_of_birth is absent")
    recipe.steps = (
        [{"step": "estimate_probability_two_random_records_match",
          "deterministic_rules": [name for name, _ in deterministic], "recall": 0.9}] if deterministic else
        [{"step": "probability_two_random_records_match (fixed)",
          "value": kwargs.get("probability_two_random_records_match"), "sizes": sizes}]
    ) + [
        {"step": "estimate_u_using_random_sampling", "max_pairs": 1e6},
        {"step": "estimate_parameters_using_expectation_maximisation", "blocking_rule": em_first,
         "estimate_without_term_frequencies": True},
        {"step": "estimate_parameters_using_expectation_maximisation", "blocking_rule": "last_name",
         "estimate_without_term_frequencies": True},
        {"step": "predict", "threshold_match_probability": None},
        {"step": "cluster_pairwise_predictions_at_threshold", "threshold_match_probability": 0.99},
    ]
    recipe.predict_threshold = None
    recipe.threshold = 0.99
    recipe.threshold_source = "pseudopeople-acs.nb.py: cluster_pairwise_predictions_at_threshold(predictions, 0.99)"

    def train(phase, t):
        if deterministic:
            linker.training.estimate_probability_two_random_records_match([r for _, r in deterministic],
                                                                          recall=0.9)
            t = phase("train_prior", t)
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
        t = phase("train_u", t)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(em_first), estimate_without_term_frequencies=True)
        t = phase(f"train_em_{em_first}", t)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("last_name"), estimate_without_term_frequencies=True)
        return phase("train_em_last_name", t)

    return recipe, linker, train


# ----------------------------------------------------------------------------------------------
# The project's generator: compare_splink.py's settings
# ----------------------------------------------------------------------------------------------
def generator(con, task: dict, folder: Path, train_args) -> tuple[Recipe, Linker, Callable]:
    recipe = Recipe("generator")
    recipe.uid = "unique_id"
    query(con, f"create table prepared as select * from read_parquet('{sql_path(folder / 'prepared.parquet')}')")
    query(con, "create table keys as select unique_id as uid, unique_id as key from prepared")
    settings = splink_runner.settings()
    recipe.settings = settings_dict(settings)
    db_api = DuckDBAPI(connection=con)
    linker = Linker(db_api.register("prepared"), settings)
    recipe.steps = [
        {"step": "estimate_probability_two_random_records_match",
         "deterministic_rules": ["email", "first_name, last_name, birth_date"], "recall": 0.7},
        {"step": "estimate_u_using_random_sampling", "max_pairs": train_args.u_max_pairs, "seed": train_args.seed},
        {"step": "estimate_parameters_using_expectation_maximisation", "blocking_rule": "first_name, last_name",
         "max_pairs": train_args.em_max_pairs or None},
        {"step": "estimate_parameters_using_expectation_maximisation", "blocking_rule": "postal_code",
         "max_pairs": train_args.em_max_pairs or None},
        {"step": "predict", "threshold_match_probability": None},
    ]
    recipe.threshold = NO_THRESHOLD_DOCUMENTED
    recipe.threshold_source = "none documented for this data: 0.85 (compare_splink.py's and the harness default)"
    recipe.adaptations.append("input: compare_splink.py's prepared.parquet (one cleaned table of the live CRM "
                              "records), not the raw Salesforce CSVs")

    def train(phase, t):
        return splink_runner.train(linker, train_args, {}, phase, t)

    return recipe, linker, train


RECIPES = {"febrl3": febrl3, "febrl4": febrl4, "pseudopeople": pseudopeople, "generator": generator}


def run(args: argparse.Namespace, stats: dict) -> None:
    out = Path(args.out)
    task_path = Path(args.task)
    task = json.loads(task_path.read_text())
    folder = task_path.parent
    phase = splink_runner.phase_timer(stats, "quality_splink")
    t = time.perf_counter()
    con = splink_runner.connect(args, out, stats)
    clamped: dict = {}
    stats["em_clamped"] = clamped
    splink_runner.clamp_em_underflow(clamped)  # let EM drive an m or u to ~0 without a ValueError

    recipe_name = args.recipe or task["splink_recipe"]
    recipe, linker, train = RECIPES[recipe_name](con, task, folder, args)
    stats["recipe"] = recipe.describe()
    stats["settings"] = recipe.settings
    stats["records"] = count(con, "keys")
    if query(con, "select count(*) - count(distinct uid) from keys")[0][0]:
        raise RuntimeError(f"{recipe.uid} is not unique over the task's files")
    t = phase("read", t)
    t = train(phase, t)

    blocked = linker.inference.compute_blocked_pairs_for_predict()  # predict() reuses this cached table
    stats["candidate_pairs"] = count(con, blocked.physical_name)
    t = phase("blocking", t)
    predictions = linker.inference.predict(threshold_match_probability=recipe.predict_threshold)
    stats["predicted_pairs"] = count(con, predictions.physical_name)
    t = phase("predict", t)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, recipe.threshold)
    t = phase("cluster", t)

    uid = recipe.uid
    query(con, f"""COPY (
        SELECT kl.key AS key_l, kr.key AS key_r, p.match_probability
        FROM {predictions.physical_name} p
        JOIN keys kl ON kl.uid = p.{uid}_l JOIN keys kr ON kr.uid = p.{uid}_r
        WHERE p.match_probability >= {float(args.pairs_threshold)}
    ) TO '{sql_path(out / 'pairs.parquet')}' (FORMAT parquet, COMPRESSION zstd)""")
    query(con, f"""COPY (
        SELECT k.key, c.cluster_id FROM {clusters.physical_name} c JOIN keys k ON k.uid = c.{uid}
    ) TO '{sql_path(out / 'clusters.parquet')}' (FORMAT parquet, COMPRESSION zstd)""")
    linker.misc.save_model_to_json(str(out / "model.json"), overwrite=True)
    stats["clusters"] = int(query(con, f"select count(distinct cluster_id) from {clusters.physical_name}")[0][0])
    stats["probability_two_random_records_match"] = linker._settings_obj._probability_two_random_records_match
    phase("write", t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="the task folder's task.json")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="override task.json's splink_recipe")
    parser.add_argument("--pairs-threshold", type=float, default=0.5, help="keep pairs with p >= this in pairs.parquet")
    parser.add_argument("--memory-limit", default="12GB", help="DuckDB memory_limit ('' for DuckDB's default)")
    parser.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: DuckDB's default, all cores)")
    # The generator recipe's training (splink_runner.train), as compare_splink.py runs it:
    parser.add_argument("--u-max-pairs", type=float, default=1e7)
    parser.add_argument("--em-max-pairs", type=float, default=1e7)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("pairs.parquet", "clusters.parquet", "stats.json", "model.json"):
        (out / stale).unlink(missing_ok=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stats: dict = {"status": "running", "splink": splink.__version__, "seconds": {}}
    return splink_runner.run_guarded(run, args, stats, out)


if __name__ == "__main__":
    sys.exit(main())
