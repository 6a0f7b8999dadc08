"""Splink (DuckDB backend) side of benchmarks/compare_splink.py.

Runs inside benchmarks/.venv-splink (splink==5.0.0), never in the resolver virtualenv:

    benchmarks/.venv-splink/bin/python benchmarks/splink_runner.py --input prepared.parquet --out DIR

Reads the prepared table (one row per record: unique_id, source, first_name, last_name, email, phone,
birth_date, street, city, postal_code, company), trains a dedupe model in tutorial style, scores every
candidate pair of the prediction blocking rules, clusters at --threshold and writes to DIR:

    pairs.parquet     unique_id_l, unique_id_r, match_probability   (pairs with p >= --pairs-threshold)
    clusters.parquet  unique_id, cluster_id                         (connected components at --threshold)
    stats.json        status, candidate_pairs, per-phase seconds (read, train_prior, train_u,
                      train_em_name, train_em_postcode, blocking, predict, cluster, write, total),
                      model parameters, settings used
    model.json        the trained Splink model

``--print-settings`` prints the settings in short (blocking rules, comparison levels, training) and exits.

Exit status: 0 ok, 3 DuckDB ran out of memory (stats.json says so), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

import duckdb
import splink
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

# The prediction blocking rules; the same list resolver's matching.blocking.rules uses.
PREDICTION_RULES = [
    # Names + city: a plain full-name rule makes ~35M pairs at 1M records and ~900M at 5M (the
    # synthetic name vocabulary is Zipf-like), which neither tool should be asked to score.
    ("full_name_city", ("first_name", "last_name", "city")),
    ("surname_dob", ("last_name", "birth_date")),
    ("email", ("email",)),
    ("phone7", ("substr(phone, -7)",)),  # DuckDB: a negative start counts from the end -> last 7 characters
    ("surname_postcode", ("last_name", "postal_code")),
    ("forename_postcode", ("first_name", "postal_code")),
    ("name_prefix_city", ("substr(first_name, 1, 3)", "substr(last_name, 1, 3)", "city")),
]


def clamp_em_underflow(clamped: dict) -> None:
    """Let EM drive an m (or u) probability to ~0 without crashing.

    Splink 5.0.0 validates every m/u value set on a comparison level and raises ValueError below
    1e-300, but its EM M-step can legitimately produce such values: here "email: exact match on
    username" (same local part, other domain) only ever occurs between different people, so EM
    shrinks its m by orders of magnitude per iteration until the setter raises. Splink itself
    clamps m/u at 1e-300 when it turns them into match weights; this applies the same clamp where
    EM hands the values over, and records which levels were clamped (stats.json em_clamped)."""
    from splink.internals import expectation_maximisation as em
    from splink.internals.comparison_level import M_U_CLAMP_MIN

    original = em.populate_m_u_from_lookup

    def populate(fixed, level, output_column_name, lookup):
        record = lookup.get(output_column_name, {}).get(level.comparison_vector_value)
        for key in ("m_probability", "u_probability") if record else ():
            value = record.get(key)
            if isinstance(value, float) and value < M_U_CLAMP_MIN:
                record[key] = M_U_CLAMP_MIN
                clamped[f"{output_column_name}: {level.label_for_charts}: {key[0]}"] = True
        return original(fixed, level, output_column_name, lookup)

    em.populate_m_u_from_lookup = populate


def comparisons() -> list:
    phone = cl.CustomComparison(
        output_column_name="phone",
        comparison_levels=[
            cll.NullLevel("phone"),
            cll.ExactMatchLevel("phone"),
            cll.CustomLevel("substr(phone_l, -7) = substr(phone_r, -7)", label_for_charts="Last 7 digits equal"),
            cll.ElseLevel(),
        ],
        comparison_description="Exact / last 7 digits / else",
    )
    return [
        cl.JaroWinklerAtThresholds("first_name", [0.92, 0.80]).configure(term_frequency_adjustments=True),
        cl.JaroWinklerAtThresholds("last_name", [0.92, 0.80]).configure(term_frequency_adjustments=True),
        # Exact, Levenshtein <= 1 (typos), within 1 year, within 10 years, else (ISO date strings).
        cl.DateOfBirthComparison("birth_date", input_is_string=True, datetime_thresholds=[1, 10],
                                 datetime_metrics=["year", "year"]),
        cl.EmailComparison("email"),
        phone,
        cl.JaroWinklerAtThresholds("street", [0.9, 0.7]),
        cl.ExactMatch("city").configure(term_frequency_adjustments=True),
        cl.ExactMatch("postal_code"),
    ]


def settings(drop: tuple[str, ...] = ()) -> SettingsCreator:
    """The dedupe settings; ``drop`` names comparisons (output column names) to leave out, e.g. street
    for data without street addresses (compare_splink.py --shape people drops it for both tools)."""
    kept = [c for c in comparisons() if c.get_comparison("duckdb").output_column_name not in drop]
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=kept,
        blocking_rules_to_generate_predictions=[block_on(*cols) for _, cols in PREDICTION_RULES],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def describe_settings(drop: tuple[str, ...] = ()) -> str:
    """The settings in short, for a benchmark log: link type, prediction blocking rules (DuckDB SQL),
    each comparison's levels (with term-frequency adjustments marked) and the training recipe."""
    d = settings(drop).create_settings_dict("duckdb")
    lines = [f"link_type: {d['link_type']}", "blocking_rules_to_generate_predictions:"]
    for rule in d["blocking_rules_to_generate_predictions"]:
        lines.append(f"  - {rule['blocking_rule'] if isinstance(rule, dict) else rule}")
    lines.append("comparisons:")
    for comparison in d["comparisons"]:
        lines.append(f"  - {comparison['output_column_name']}:")
        for level in comparison["comparison_levels"]:
            tf = " [tf]" if level.get("tf_adjustment_column") else ""
            lines.append(f"      {level['label_for_charts']}{tf}")
    lines.append("training: prior from block_on(email), block_on(first_name, last_name, birth_date) at recall 0.7; "
                 "u by random sampling (--u-max-pairs); EM blocked on first_name+last_name, then postal_code "
                 "(--em-max-pairs each)")
    return "\n".join(lines)


def query(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    """Run sql to completion (duckdb 2 refuses new work while a result is still open)."""
    return con.execute(sql).fetchall()


def count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(query(con, f"select count(*) from {table}")[0][0])


def train(linker: Linker, args: argparse.Namespace, stats: dict, phase, t: float) -> float:
    """Tutorial-style training (also benchmarks/quality_splink.py's "generator" recipe): prior from
    deterministic rules (recall 0.7), u by random sampling (args.u_max_pairs, args.seed), EM blocked
    on first_name + last_name, then on postal_code (each pass sampled to args.em_max_pairs; 0 = all)."""
    linker.training.estimate_probability_two_random_records_match(
        [block_on("email"), block_on("first_name", "last_name", "birth_date")], recall=0.7)
    t = phase("train_prior", t)
    linker.training.estimate_u_using_random_sampling(max_pairs=args.u_max_pairs, seed=args.seed)
    t = phase("train_u", t)
    em_max = args.em_max_pairs or None
    clamped: dict = {}
    stats["em_clamped"] = clamped
    clamp_em_underflow(clamped)
    for name, rule in (("train_em_name", block_on("first_name", "last_name")),
                       ("train_em_postcode", block_on("postal_code"))):
        linker.training.estimate_parameters_using_expectation_maximisation(rule, max_pairs=em_max)
        t = phase(name, t)
    return t


def phase_timer(stats: dict, tag: str):
    """phase(name, start) -> now: records the seconds since start as stats["seconds"][name]."""
    phases = stats["seconds"]

    def phase(name: str, start: float) -> float:
        now = time.perf_counter()
        phases[name] = round(now - start, 3)
        print(f"[{tag}] {name}: {phases[name]:.1f} s", file=sys.stderr, flush=True)
        return now

    return phase


def connect(args: argparse.Namespace, out: Path, stats: dict) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the run's memory limit, threads and spill folder (out/duckdb_tmp),
    its settings recorded in stats["duckdb"]. Shared with quality_splink.py."""
    con = duckdb.connect()
    if args.memory_limit:
        query(con, f"SET memory_limit = '{args.memory_limit}'")
    if args.threads:
        query(con, f"SET threads = {int(args.threads)}")
    tmp = (out / "duckdb_tmp").resolve().as_posix().replace("'", "''")
    query(con, f"SET temp_directory = '{tmp}'")
    stats["duckdb"] = {k: query(con, f"select current_setting('{k}')")[0][0]
                       for k in ("memory_limit", "threads", "temp_directory")}
    stats["duckdb"]["version"] = duckdb.__version__
    return con


def run(args: argparse.Namespace, stats: dict) -> None:
    out = Path(args.out)
    phase = phase_timer(stats, "splink_runner")
    t = time.perf_counter()
    con = connect(args, out, stats)
    query(con, f"CREATE TABLE prepared AS SELECT * FROM read_parquet('{Path(args.input).resolve().as_posix()}')")
    stats["records"] = count(con, "prepared")
    db_api = DuckDBAPI(connection=con)
    df = db_api.register("prepared")
    linker = Linker(df, settings(args.drop_comparisons))
    t = phase("read", t)

    t = train(linker, args, stats, phase, t)

    # The blocked pairs are exactly the comparisons predict() scores; predict reuses this cached table.
    blocked = linker.inference.compute_blocked_pairs_for_predict()
    stats["candidate_pairs"] = count(con, blocked.physical_name)
    t = phase("blocking", t)
    predictions = linker.inference.predict(threshold_match_probability=args.pairs_threshold)
    stats["pairs_at_least_pairs_threshold"] = count(con, predictions.physical_name)
    t = phase("predict", t)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, args.threshold)
    t = phase("cluster", t)

    query(con, f"COPY (SELECT unique_id_l, unique_id_r, match_probability FROM {predictions.physical_name}) "
                f"TO '{(out / 'pairs.parquet').as_posix()}' (FORMAT parquet, COMPRESSION zstd)")
    query(con, f"COPY (SELECT unique_id, cluster_id FROM {clusters.physical_name}) "
                f"TO '{(out / 'clusters.parquet').as_posix()}' (FORMAT parquet, COMPRESSION zstd)")
    linker.misc.save_model_to_json(str(out / "model.json"), overwrite=True)
    stats["clusters"] = int(query(con, f"select count(distinct cluster_id) from {clusters.physical_name}")[0][0])
    t = phase("write", t)
    stats["probability_two_random_records_match"] = linker._settings_obj._probability_two_random_records_match


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="prepared.parquet")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--print-settings", action="store_true", help="print the settings in short and exit")
    parser.add_argument("--drop-comparisons", default="", type=lambda v: tuple(x for x in v.split(",") if x),
                        help="comma list of comparisons to leave out (e.g. street, for data without streets)")
    parser.add_argument("--threshold", type=float, default=0.85, help="clustering threshold (match_probability)")
    parser.add_argument("--pairs-threshold", type=float, default=0.5, help="keep pairs with p >= this in pairs.parquet")
    parser.add_argument("--memory-limit", default="12GB", help="DuckDB memory_limit ('' for DuckDB's default)")
    parser.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: DuckDB's default, all cores)")
    parser.add_argument("--u-max-pairs", type=float, default=1e7)
    parser.add_argument("--em-max-pairs", type=float, default=1e7,
                        help="Splink 5 max_pairs of each EM pass (0: no sampling, all blocked pairs)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the u sampling")
    args = parser.parse_args(argv)
    if args.print_settings:
        print(describe_settings(args.drop_comparisons))
        return 0
    if not args.input or not args.out:
        parser.error("--input and --out are required")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("pairs.parquet", "clusters.parquet", "stats.json", "model.json"):
        (out / stale).unlink(missing_ok=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stats: dict = {"status": "running", "splink": splink.__version__, "seconds": {},
                   "settings": {"threshold": args.threshold, "pairs_threshold": args.pairs_threshold,
                                "u_max_pairs": args.u_max_pairs, "em_max_pairs": args.em_max_pairs or None,
                                "prediction_rules": [name for name, _ in PREDICTION_RULES],
                                "dropped_comparisons": list(args.drop_comparisons)}}
    return run_guarded(run, args, stats, out)


def run_guarded(run, args, stats: dict, out: Path) -> int:
    """run(args, stats) with stats.json always written (also on SIGTERM, DuckDB's out-of-memory or
    any failure) and DuckDB's spill files removed: the exit status the harnesses read (0 ok, 3
    out of memory, 143 terminated, 1 anything else). Shared with quality_splink.py."""
    start = time.perf_counter()
    code = 0
    received: list[int] = []

    def terminated(signum, frame):  # SIGTERM: still write stats.json and remove DuckDB's spill files
        received.append(signum)
        raise SystemExit(f"terminated by signal {signum}")  # inside a DuckDB query: "Query interrupted"

    signal.signal(signal.SIGTERM, terminated)
    try:
        run(args, stats)
        stats["status"] = "ok"
    except SystemExit as exc:
        stats["status"], stats["error"] = "terminated", str(exc)
        code = 143
    except duckdb.OutOfMemoryException as exc:
        stats["status"], stats["error"] = "oom", str(exc)
        code = 3
    except Exception as exc:  # noqa: BLE001 - reported in stats.json, the caller decides
        stats["status"], stats["error"] = "failed", f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        code = 3 if "out of memory" in str(exc).lower() else 1
        if code == 3:
            stats["status"] = "oom"
        elif received:
            stats["status"], code = "terminated", 143
    finally:
        stats["seconds"]["total"] = round(time.perf_counter() - start, 3)
        (out / "stats.json").write_text(json.dumps(stats, indent=2, default=str) + "\n")
        shutil.rmtree(out / "duckdb_tmp", ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
