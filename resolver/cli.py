"""The `resolver` command: demo, run, bench, capacity, plan, init, generate, evaluate, forget, review,
serve, dlq, sync export.

Exit codes: 0 success, 1 unexpected failure, 2 bad usage or configuration, 3 unusable input
(the message names the file, row and field), 4 an evaluation below a --min-* threshold, 5 a trained
model that failed its health check (outputs written, no automatic merges; --allow-unhealthy-model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from resolver.run_log import LOG_FORMATS, RunLog, error_line
from resolver.version import __version__

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_INPUT, EXIT_QUALITY, EXIT_UNHEALTHY_MODEL = 0, 1, 2, 3, 4, 5


def _console(args) -> Console:
    return _stderr(quiet=getattr(args, "quiet", False))


def _stderr(quiet: bool = False) -> Console:
    """Messages on stderr, never wrapped: rich wraps at 80 columns when stderr is not a terminal,
    which would split a one-line error (a long path) over several lines of a log."""
    return Console(stderr=True, quiet=quiet, soft_wrap=True)


def _output_dir(out: str) -> str:
    """--out as run.output_dir: a URL as given (published there: ingest/remote.py), a folder resolved."""
    from resolver.ingest.remote import is_url

    return out if is_url(out) else str(Path(out).resolve())


def _talk(args) -> RunLog:
    """How this command reports its progress, warnings and errors (--log-format, --quiet)."""
    return RunLog(_console(args), getattr(args, "log_format", "text"), quiet=getattr(args, "quiet", False))


def _run_pipeline(config, talk: RunLog, model_path: Path | None = None, state_dir: Path | None = None,
                  full: bool = False, truth: Path | None = None):
    from resolver.pipeline import run

    talk.emit("info", "run_started", sources=[s.name for s in config.sources], output_dir=config.run.output_dir)
    with talk:
        return run(config, report=talk, model_path=model_path, state_dir=state_dir, full=full, truth=truth)


def _finished(talk: RunLog, args, summary: dict, table: Table) -> None:
    """The run's summary: a table on stdout (text), or a `run_finished` log line (json)."""
    if talk.format == "json":
        matching = summary.get("matching") or {}
        talk.emit("info", "run_finished", run_id=summary.get("run_id"), rows=summary.get("rows"),
                  persons=summary.get("persons"), decisions=matching.get("decisions"),
                  seconds=summary.get("seconds"), output_dir=summary.get("output_dir"))
        return
    Console(quiet=args.quiet, soft_wrap=True).print(table)


def _generate(out: Path, people: int, seed: int, console: Console, workers: int = 2, events: bool = True,
              visitors: bool = False, events_per_person: float | None = None) -> dict:
    from resolver.synth.people import generate

    with Progress(
        TextColumn("generating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} people"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task("generate", total=people)
        extra = {"events_per_person": events_per_person} if events_per_person is not None else {}
        return generate(out, people, seed=seed, workers=workers, events=events, visitors=visitors,
                        progress=lambda n: progress.update(task, completed=n), **extra)


def _summary_table(summary: dict, metrics: dict | None) -> Table:
    table = Table(title="resolver run", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = summary["rows"]
    table.add_row("rows read", f"{rows['read']:,}")
    table.add_row("rows resolved / rejected", f"{rows['resolved']:,} / {rows['rejected']:,}")
    table.add_row("every row accounted for", "yes" if rows["accounted"] else "NO")
    table.add_row("events collapsed", f"{summary['events']:,}")
    table.add_row("persons (known / anonymous)", f"{summary['persons']['known']:,} / {summary['persons']['anonymous']:,}")
    for action, count in sorted(summary["policy_actions"].items()):
        table.add_row(f"policy: {action}", f"{count:,}")
    matching = summary.get("matching")
    if matching:
        decisions = matching["decisions"]
        table.add_row("matching: candidate pairs", f"{matching['candidate_pairs']:,}")
        table.add_row("matching: linked / review / refused by guards",
                      f"{decisions['link']:,} / {decisions['review']:,} / {decisions['guard_cut']:,}")
    golden = summary.get("golden")
    if golden:
        table.add_row("golden records: with conflicts / flagged for review",
                      f"{golden['persons_with_conflicts']:,} / {golden['persons_flagged_for_review']:,}")
    if "suppressed" in rows and rows["suppressed"]:
        table.add_row("rows suppressed (erased)", f"{rows['suppressed']:,}")
    ids = summary.get("persistent_ids")
    if ids:
        table.add_row("persistent ids: kept / new / merged away / split off",
                      f"{ids['kept']:,} / {ids['new']:,} / {ids['merged_away']:,} / {ids['split_off']:,}")
    table.add_row("wall time", f"{summary['seconds']:.2f} s")
    if summary.get("jit_seconds", 0) >= 1:  # the kernels' one-off compile: a first run on this machine
        table.add_row("of which compiling kernels (first run only)", f"{summary['jit_seconds']:.2f} s")
    if metrics:
        for scope in ("records", "events"):
            if scope in metrics:
                m = metrics[scope]
                table.add_row(
                    f"{scope}: pairwise P / R / F1",
                    f"{m['pairwise_precision']:.4f} / {m['pairwise_recall']:.4f} / {m['pairwise_f1']:.4f}",
                )
                table.add_row(
                    f"{scope}: B-cubed P / R / F1",
                    f"{m['bcubed_precision']:.4f} / {m['bcubed_recall']:.4f} / {m['bcubed_f1']:.4f}",
                )
                table.add_row(
                    f"{scope}: over-merged persons / split true persons",
                    f"{m['overmerged_clusters']:,} / {m['split_true_persons']:,}",
                )
                table.add_row(f"{scope}: cluster P / R / F1",
                              f"{m['cluster_precision']:.4f} / {m['cluster_recall']:.4f} / {m['cluster_f1']:.4f}")
        if "matching" in metrics:
            mm = metrics["matching"]
            at = {row["threshold"]: row for row in mm["thresholds"]}
            if 0.85 in at:
                row = at[0.85]
                table.add_row("matching: scored pairs P / R / F1 at 0.85",
                              f"{row['precision']:.4f} / {row['recall']:.4f} / {row['f1']:.4f}")
            table.add_row("matching: blocking recall", f"{mm['blocking_recall']:.4f}")
    return table


def _generate_people(out: Path, people: int, seed: int, console: Console, workers: int = 2) -> dict:
    from resolver.synth.plain import generate_people

    with Progress(
        TextColumn("generating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} people"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task("generate", total=people)
        return generate_people(out, people, seed=seed, workers=workers,
                               progress=lambda n: progress.update(task, completed=n))


def cmd_generate(args) -> int:
    console = _console(args)
    start = time.perf_counter()
    if args.shape == "people":
        crm_only = [flag for flag, given in (("--no-events", args.no_events), ("--visitors", args.visitors),
                                             ("--events-per-person", args.events_per_person is not None)) if given]
        if crm_only:
            console.print(f"[red]{', '.join(crm_only)}: only for --shape crm (the people shape writes one person "
                          "file and no events)")
            return EXIT_CONFIG  # 2, as argparse exits on a usage error
        manifest = _generate_people(Path(args.out), args.people, args.seed, console, workers=args.workers)
        console.print(
            f"wrote {manifest['records']:,} records of {manifest['people']:,} people to "
            f"{Path(args.out) / 'people.parquet'} in {time.perf_counter() - start:.1f} s; "
            f"config: {Path(args.out) / 'resolver.yaml'}"
        )
        return EXIT_OK
    manifest = _generate(Path(args.out), args.people, args.seed, console, workers=args.workers,
                         events=not args.no_events, visitors=args.visitors, events_per_person=args.events_per_person)
    console.print(
        f"wrote {manifest.get('contacts', 0):,} contacts, {manifest.get('leads', 0):,} leads, "
        f"{manifest.get('events', 0):,} events to {args.out} in {time.perf_counter() - start:.1f} s; "
        f"config: {Path(args.out) / 'resolver.yaml'}"
    )
    return EXIT_OK


def _config_warnings(talk: RunLog, config) -> None:
    """What the config asks for that is most likely not meant, as soon as it is loaded."""
    for warning in config.warnings():
        talk.warning(warning)


def cmd_run(args) -> int:
    from resolver.config import load_config

    talk = _talk(args)
    config = load_config(args.config)
    _config_warnings(talk, config)
    if args.out:
        config.run.output_dir = _output_dir(args.out)
    if args.no_guards:
        config.identity.guards = False
    if args.allow_unhealthy_model and config.matching is not None:
        config.matching.model.allow_unhealthy = True
    if args.backend:
        config.run.backend = args.backend
    for option, value in (("name", args.engine), ("scheduler", args.scheduler), ("workers", args.workers)):
        if value is not None:
            setattr(config.engine, option, value)
    if args.truth:
        from resolver.outputs.report import read_truth

        read_truth(Path(args.truth))  # a wrong path is a usage error now, not a report without curves later
    res = _run_pipeline(config, talk, model_path=Path(args.model) if args.model else None,
                        state_dir=Path(args.state) if args.state else config.state_path(), full=args.full,
                        truth=Path(args.truth) if args.truth else None)
    _finished(talk, args, res.summary, _summary_table(res.summary, None))
    _print_warnings(talk, res.summary, already=config.warnings())
    if (res.summary.get("report") or {}).get("error"):
        talk.warning(f"report.html could not be built: {res.summary['report']['error']}")
    where = res.summary.get("published_to") or str(config.output_path())
    talk.info(f"outputs: {where} (report: {where.rstrip('/')}/report.html)", "outputs", output_dir=where)
    return _model_health_exit(talk, res.summary)


def _print_warnings(talk: RunLog, summary: dict, already: list[str] = ()) -> None:
    """The run summary's warnings (those printed at load, `already`, are not repeated)."""
    matching = summary.get("matching") or {}
    general = [w for w in summary.get("warnings", []) if w not in already]
    for warning in general + matching.get("blocking_warnings", []):
        talk.warning(warning)


def _model_health_exit(talk: RunLog, summary: dict) -> int:
    """One line per health problem of the trained model, and per uninformative comparison; exit 5
    when it merged nothing on its own. Problems that withheld merges are errors: printed even with
    --quiet ("print only errors")."""
    health = (summary.get("matching") or {}).get("model_health") or {}
    withheld = health.get("auto_merge_withheld")
    errors = RunLog(_stderr(), talk.format) if withheld else talk
    for note in health.get("notes", []):
        talk.warning(note, "model note")
    for problem in health.get("problems", []):
        if withheld and talk.format == "json":
            errors.emit("error", "model_unhealthy", message=problem)
        elif withheld:
            errors.console.print(f"[red]model unhealthy:[/red] {escape(problem)}", highlight=False, soft_wrap=True)
        else:
            talk.warning(problem, "model warning")
    if withheld:
        message = ("the probabilistic links went to the review queue; fix the problems above, or rerun with "
                   "--allow-unhealthy-model to merge anyway")
        if talk.format == "json":
            errors.emit("error", "no_automatic_merges", message=message, exit_code=EXIT_UNHEALTHY_MODEL)
        else:
            errors.console.print(f"[red]no automatic merges:[/red] {message}", highlight=False, soft_wrap=True)
        return EXIT_UNHEALTHY_MODEL
    return EXIT_OK


def cmd_plan(args) -> int:
    from resolver.config import load_config
    from resolver.matching.growth import growth_warning
    from resolver.matching.plan import plan_matching

    console = _console(args)
    config = load_config(args.config)
    _config_warnings(_talk(args), config)
    from resolver.ingest.remote import staged

    with console.status("reading records"), staged(config, None) as (local, _, _):  # remote sources: fetched
        blocking, n_records, growth = plan_matching(local)
    cap = config.matching.blocking.max_block_size
    link_type = config.matching.link_type
    title = f"blocking plan: {n_records:,} records, block cap {cap:,}"
    if link_type != "link_and_dedupe":
        title += f", {link_type}"  # pairs are counted as the link type allows
    refined = any(p.refined_blocks for p in blocking.plans)  # the refine columns only when a block was refined
    table = Table(title=title, header_style="bold")
    columns = ("rule", "records", "blocks", "pairs", "pair growth") + (
        ("refined", "refined pairs") if refined else ()) + ("capped", "pairs capped")
    for column in columns:
        table.add_column(column, justify="left" if column == "rule" else "right", no_wrap=True)
    for p, exponent in zip(blocking.plans, growth):
        table.add_row(p.name, f"{p.keyed_records:,}", f"{p.blocks:,}", f"{p.pairs:,}",
                      "-" if exponent is None else f"n^{exponent:.2f}",
                      *((f"{p.refined_blocks:,}", f"{p.refined_pairs:,}") if refined else ()),
                      f"{p.capped_blocks:,}", f"{p.capped_pairs:,}")
    table.add_row("all rules", "", "", f"{sum(p.pairs for p in blocking.plans):,}", "",
                  *(("", f"{sum(p.refined_pairs for p in blocking.plans):,}") if refined else ()), "", "")
    out = Console(quiet=args.quiet)
    out.print(table)
    out.print("largest blocks (records):")
    for p in blocking.plans:
        out.print(f"  {p.name}: " + ", ".join(f"{text} ({size:,})" for text, size in p.largest[:3]), highlight=False)
    for p, rule in zip(blocking.plans, config.matching.blocking.rules):
        if p.refined_blocks:
            out.print(f"  {p.name}: {p.refined_blocks:,} block(s) over the cap re-blocked by "
                      f"{', '.join(rule.refine_keys)}: {p.refined_pairs:,} pairs"
                      + (f"; {p.refine_missing:,} records without a refine key left them" if p.refine_missing else ""),
                      highlight=False, soft_wrap=True)
    growth_warnings = [growth_warning(p.name, exponent) for p, exponent in zip(blocking.plans, growth)]
    for warning in blocking.warnings(cap) + [w for w in growth_warnings if w]:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    console.print("pairs are counted from block sizes; a pair found by several rules is compared once, "
                  "and pairs already in one deterministic person are skipped, so the run compares fewer.")
    return EXIT_OK


def cmd_init(args) -> int:
    from resolver.propose import propose, write

    console = _console(args)
    if Path(args.out).exists() and not args.force:
        from resolver.config import ConfigError

        raise ConfigError(f"{args.out} exists; --force replaces it")
    with console.status("reading samples and counting blocking pairs"):
        proposal = propose(args.data, out=Path(args.out), names=args.name, link_type=args.link_type,
                           pair_budget=args.pair_budget, sample_rows=args.sample_rows, exclude=tuple(args.exclude))
        write(proposal, force=args.force)
    out = Console(quiet=args.quiet, highlight=False)
    for plan in proposal.sources:
        s = plan.sample
        out.print(f"[bold]{plan.name}[/bold]: {s.format}, {s.rows:,} rows" + ("" if s.exact else " (estimated)")
                  + (f", {s.sampled:,} sampled" if s.sampled < s.rows else "") + f"; key {plan.key}")
        for d in plan.detections:
            if d.compared or d.kind == "record key":
                out.print(f"  {escape(d.column)} -> {d.kind}", highlight=False)
        skipped = [d.column for d in plan.detections if not d.compared and d.kind != "record key"]
        if skipped:
            out.print(f"  skipped: {escape(', '.join(skipped))}", highlight=False)
    table = Table(title=f"blocking rules (budget {proposal.budget:,} pairs)", header_style="bold")
    for column in ("rule", "keys", "pairs"):
        table.add_column(column, justify="right" if column == "pairs" else "left")
    for rule in proposal.rules:
        table.add_row(rule.name, ", ".join(rule.keys), f"{rule.pairs:,}")
    table.add_row("total", "", f"{proposal.total_pairs:,}")
    out.print(table)
    out.print(f"{len(proposal.comparisons)} comparisons; wrote {args.out} (run it: resolver run --config {args.out})")
    for warning in proposal.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from resolver.config import load_config
    from resolver.outputs.evaluate import evaluate_outputs

    config = load_config(args.config)
    out_dir = Path(args.out) if args.out else config.output_path()
    metrics = evaluate_outputs(out_dir, Path(args.truth), config)
    print(json.dumps(metrics, indent=2))
    if args.min_precision is not None and metrics["records"]["pairwise_precision"] < args.min_precision:
        return EXIT_QUALITY
    return EXIT_OK


def cmd_bench(args) -> int:
    from resolver.bench.report import markdown_ladder, write_bench
    from resolver.bench.capacity import available_backends, available_engines, run_ladder

    console = _console(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",") if args.backends else available_backends()
    engines = args.engines.split(",") if args.engines else available_engines()
    missing = sorted(set(engines) - set(available_engines()))
    if missing:
        from resolver.compute.dask_engine import EngineUnavailable

        raise EngineUnavailable(f"engine {missing[0]} is not installed here: pip install 'resolver-identity[dask]'")
    out = Path(args.out)
    with console.status("benchmarking") as status:
        bench = run_ladder(sizes, args.repeat, backends, engines, Path(args.data), out / "runs", args.seed,
                           report=lambda text: status.update(text), shape=args.shape)
    paths = write_bench(bench, out)
    if not args.quiet:
        print(markdown_ladder(bench))
    console.print(f"results: {paths['json']}, chart: {paths['png']}, page: {paths['html']}")
    return EXIT_OK


def cmd_capacity(args) -> int:
    from resolver.bench.capacity import estimate

    bench = json.loads(Path(args.from_).read_text(encoding="utf-8"))
    answer = estimate(bench, args.events, args.profiles, args.gpu, args.engine, args.max_extrapolation,
                      args.allow_extrapolation)
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    console = Console(quiet=args.quiet)
    for warning in answer["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    table = Table(title=f"capacity: {args.profiles:,} profiles, {args.events:,} events ({answer['backend']}, "
                        f"{answer['engine']} engine{', ' + args.gpu if args.gpu != 'none' else ''})")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("interval", justify="right")
    table.add_column("slope", justify="right")
    table.add_column("x measured", justify="right")
    for stage, s in answer["stages"].items():
        table.add_row(stage, f"{s['seconds']:,.1f}", f"{s['low']:,.1f} - {s['high']:,.1f}", f"{s['slope']:.2f}",
                      f"{s['factor']:,.1f}")
    table.add_row("wall time", f"{answer['wall_s']:,.1f}", f"{answer['wall_s_low']:,.1f} - {answer['wall_s_high']:,.1f}",
                  "", "")
    console.print(table)
    if answer["backend"] == "gpu":
        console.print(f"GPUs: {answer['gpus']} x {args.gpu} ({answer['gpu_memory_gib']} GiB), about "
                      f"{answer['memory_per_gpu_gib']:,.1f} GiB per GPU")
    elif answer["host_memory_gib"] is not None:
        console.print(f"host memory: about {answer['host_memory_gib']:,.1f} GiB "
                      f"(this machine: {answer['machine_memory_gib']} GiB)")
    console.print("assumptions:\n" + "\n".join(f"  - {escape(a)}" for a in answer["assumptions"]))
    console.print(f"uncertainty: {answer['uncertainty']}")
    return EXIT_OK


def cmd_demo(args) -> int:
    from resolver.config import load_config
    from resolver.outputs.evaluate import evaluate_outputs

    talk = _talk(args)
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="resolver-demo-"))
    _generate(base, args.people, args.seed, talk.console)
    config = load_config(base / "resolver.yaml")
    if args.backend:
        config.run.backend = args.backend
    res = _run_pipeline(config, talk, truth=base / "truth")
    metrics = evaluate_outputs(config.output_path(), base / "truth", config)
    _finished(talk, args, res.summary, _summary_table(res.summary, metrics))
    talk.info(f"data: {base}  outputs: {config.output_path()}  report: {config.output_path() / 'report.html'}",
              "outputs", data=str(base), output_dir=str(config.output_path()))
    return _model_health_exit(talk, res.summary)


def cmd_forget(args) -> int:
    from resolver.config import load_config
    from resolver.forget import forget

    console = _console(args)
    config = load_config(args.config)
    if args.out:
        config.run.output_dir = _output_dir(args.out)
    kind, value = next((k, getattr(args, k)) for k in ("email", "phone", "person", "record") if getattr(args, k))
    entry = forget(config, _recovered(Path(args.state) if args.state else config.state_path()), kind, value)
    console.print(f"forgot {entry['persons']} person(s): {entry['records']} record(s), {entry['identifiers']} "
                  f"identifier(s), {entry['review_items']} review item(s); tombstones kept in the state")
    return EXIT_OK


def _recovered(state: Path | None) -> Path | None:
    """The state directory, once a run's commit that a kill interrupted is repaired (README:
    "Crash consistency"): the outputs and CURRENT name the same run before a command reads them."""
    from resolver.state.store import StateStore

    if state is not None:
        StateStore(state).recover()
    return state


def _review_places(args) -> tuple[Path | None, Path]:
    """The state directory and the outputs a review command works on: --state / --out, else the
    config's run.state_dir / run.output_dir, else the outputs of the state's last run."""
    from resolver.config import load_config
    from resolver.state.history import load_history
    from resolver.state.review import ReviewError

    config = load_config(args.config) if args.config else None
    state = _recovered(Path(args.state) if args.state else (config.state_path() if config is not None else None))
    if args.out:
        return state, Path(args.out)
    if config is not None:
        return state, config.output_path()
    history = load_history(state)
    if len(history) and history["output_dir"].iloc[-1]:
        return state, Path(history["output_dir"].iloc[-1])
    raise ReviewError("which outputs? give --out (or --config, or a --state that a run has written)")


def cmd_review_list(args) -> int:
    from resolver.state.review import review_items

    state, out = _review_places(args)
    items = review_items(out, state, links=args.links)
    if not args.all:
        items = items[items["decision"] == ""]
    items = items.head(args.limit)
    if args.json:
        shown = items.drop(columns=["member_key_l", "member_key_r"])
        print(shown.to_json(orient="records", indent=2))
        return EXIT_OK
    table = Table(title=f"review items: {out}", header_style="bold")
    for column in ("item", "kind", "p", "left (source:key)", "right (source:key)", "reason", "decision"):
        table.add_column(column, justify="right" if column == "p" else "left")
    for row in items.itertuples(index=False):
        table.add_row(row.item_id, row.kind, f"{row.probability:.3f}", f"{row.source_l}:{row.record_key_l}",
                      f"{row.source_r}:{row.record_key_r}", row.reason, row.decision)
    Console(quiet=args.quiet, width=200).print(table)
    return EXIT_OK


def cmd_review_decide(args) -> int:
    from resolver.state.review import decide

    state, out = _review_places(args)
    entry = decide(state, out, accept=args.accept, pair=tuple(args.pair) if args.pair else None, item=args.item,
                   by=args.by)
    _console(args).print(f"recorded: {entry['decision']} {entry['source_l']}:{entry['record_key_l']} ↔ "
                         f"{entry['source_r']}:{entry['record_key_r']} (item {entry['item_id']}, by "
                         f"{entry['decided_by']}); the next run with this state applies it", highlight=False)
    return EXIT_OK


def _sync_service(args, import_batch: bool = False):
    from resolver.config import load_config
    from resolver.sync.service import SyncService

    config = load_config(args.config)
    state = Path(args.state) if args.state else config.state_path()
    return SyncService(config, state, args.store, import_batch=import_batch)


def cmd_serve(args) -> int:
    import logging

    # Small arrays at a time: numba's parallel kernels would only pay thread wake-ups. (Set before
    # numba loads: the service loads it only with the resolver, after it answers.)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    import uvicorn

    from resolver.sync.app import create_app

    # The inbox writer thread shares the interpreter with the event loop; a short switch interval
    # keeps the loop (parsing, answering) from queueing behind it. Resolution runs in a process of
    # its own (the worker), not here.
    sys.setswitchinterval(float(os.environ.get("RESOLVER_SWITCH_INTERVAL", "0.0005")))

    from resolver.sync.logs import configure_logging

    configure_logging(logging.WARNING if args.quiet else logging.INFO)
    service = _sync_service(args, import_batch=True)
    app = create_app(service, worker="process")
    # No access log: request paths of profile lookups hold identifiers (PII).
    # log_config=None: uvicorn's loggers propagate to the root's JSON lines.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning" if args.quiet else "info",
                log_config=None, timeout_graceful_shutdown=10)
    return EXIT_OK


def cmd_subscribe(args) -> int:
    """Salesforce Change Data Capture over the Pub/Sub API into the sync store (sync/pubsub.py)."""
    from resolver.config import ConfigError

    try:
        import fastavro  # noqa: F401 - needed to decode the events
        import grpc
    except ImportError as exc:
        raise ConfigError(f"subscribe salesforce needs gRPC and Avro ({exc.name} is missing): "
                          "pip install 'resolver-identity[serve]'") from None
    from resolver.sync.pubsub import PubSubSession, Subscriber
    from resolver.sync.worker import Worker

    names = ("SALESFORCE_ACCESS_TOKEN", "SALESFORCE_INSTANCE_URL", "SALESFORCE_ORG_ID")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ConfigError(f"subscribe salesforce needs {', '.join(missing)} in the environment (an OAuth access "
                          "token, the org's instance URL and its id)")
    session = PubSubSession(*(os.environ[n] for n in names), endpoint=args.endpoint, secure=not args.insecure)
    talk = _talk(args)
    service = _sync_service(args, import_batch=True)
    worker = None if args.no_resolve else Worker(service)
    subscriber = Subscriber(service, session, args.topic, replay=args.replay, batch=args.batch,
                            resolve=(lambda: worker.drain()) if worker is not None else None)
    try:
        received = subscriber.run(max_events=args.max_events)
    except grpc.RpcError as exc:
        raise SubscriptionError(f"{args.endpoint} {args.topic}: {exc.code().name}: {exc.details()}") from None
    except KeyboardInterrupt:
        received = subscriber.received
    finally:
        service.close()
    talk.info(f"{received} change events received from {args.topic}"
              + (f", {subscriber.unreadable} unreadable (logged)" if subscriber.unreadable else ""),
              "subscription_ended", received=received, unreadable=subscriber.unreadable)
    return EXIT_OK


class SubscriptionError(RuntimeError):
    """The Pub/Sub API refused or ended the subscription (authentication, topic, network)."""


def cmd_dlq(args) -> int:
    from resolver.sync.service import dumps

    service = _sync_service(args)
    try:
        if args.action == "list":
            print(dumps(service.dead_letters()))
        elif args.action == "replay":
            print(dumps(service.replay(args.event_id or None)))
        else:
            if not args.event_id and not args.all:
                from resolver.config import ConfigError

                raise ConfigError("dlq drop needs event ids or --all")
            print(dumps({"dropped": service.drop(args.event_id or None)}))
    finally:
        service.close()
    return EXIT_OK


def cmd_sync_export(args) -> int:
    import yaml

    from resolver.sync.service import dumps

    service = _sync_service(args)
    try:
        result = service.export(Path(args.out) if args.out else None)
    finally:
        service.close()
    console = _console(args)
    if args.update_config and result["sources"]:
        from resolver.sync.batch import add_export_sources

        add_export_sources(Path(args.config), result["sources"])
        console.print(f"{args.config}: now reads the export ({', '.join(s['name'] for s in result['sources'])})",
                      highlight=False)
        result["sources"] = []
    console.print(f"exported {result['records']:,} records and {result['segment_events']:,} Segment events: "
                  + ", ".join(result["files"].values()), highlight=False)
    if result["sources"]:
        console.print("add these sources to the config, each just before the source it copies "
                      "(or run with --update-config):", highlight=False)
        print(yaml.safe_dump({"sources": result["sources"]}, sort_keys=False))
    if args.json:
        print(dumps(result))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resolver", description="Customer identity resolution for CRM and CDP data.")
    parser.add_argument("--version", action="version", version=f"resolver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--quiet", "-q", action="store_true", help="print only errors")
        p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                       help="text (default: live progress on a terminal, plain lines elsewhere) or json "
                            "(one JSON object per line on stderr, for schedulers and log collectors)")
        return p

    def backend(p):
        p.add_argument("--backend", choices=["cpu", "gpu", "auto"],
                       help="where the hot stages run (default: run.backend in the config, auto: gpu when CuPy sees one)")
        return p

    demo = backend(common(sub.add_parser("demo", help="generate a small dataset, resolve it, evaluate it")))
    demo.add_argument("--people", type=int, default=5000, help="people to generate (default 5000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the generated data (default 7)")
    demo.add_argument("--out", help="folder for the generated data and outputs (default: a new temp folder)")
    demo.set_defaults(func=cmd_demo)

    run = backend(common(sub.add_parser("run", help="resolve the sources in a config")))
    run.add_argument("--config", required=True, help=CONFIG_HELP)
    run.add_argument("--out", help="output folder (overrides run.output_dir)")
    run.add_argument("--no-guards", action="store_true", help="switch off identifier limits and hub caps")
    run.add_argument("--allow-unhealthy-model", action="store_true",
                     help="auto-merge even when the trained model fails its health check (exit 0, problems printed)")
    run.add_argument("--model", help="a model.json from an earlier run: score with it, skip training")
    run.add_argument("--state", help="state directory: start from the previous run's (persistent person ids), "
                                     "then commit this run's (default: run.state_dir)")
    run.add_argument("--engine", choices=["local", "dask"], help="where the stages run (default: engine.name in the "
                     "config): this process and its ingest workers, or a Dask cluster")
    run.add_argument("--scheduler", help="with --engine dask: the address of a running Dask scheduler "
                                         "(default: start a cluster for the run)")
    run.add_argument("--workers", type=int, help="with --engine dask: workers of the cluster started for the run")
    run.add_argument("--full", action="store_true",
                     help="with a state: normalize, compare and train from scratch (ids still persist)")
    run.add_argument("--truth", help="truth folder written by `resolver generate` (or its records.parquet): "
                                     "adds precision/recall/F1 curves to report.html")
    run.set_defaults(func=cmd_run)

    bench = common(sub.add_parser("bench", help="measure cost curves: a ladder of generated sizes, every backend "
                                                 "and engine, repeated; JSON, PNG chart and HTML page"))
    bench.add_argument("--sizes", default="10000,30000,100000,300000,1000000", help="people per rung, comma-separated")
    bench.add_argument("--repeat", type=int, default=3, help="runs per rung (median, min and max are reported)")
    bench.add_argument("--backends", help="comma-separated (default: every backend available here)")
    bench.add_argument("--engines", help="comma-separated: local, dask (default: every engine installed here)")
    bench.add_argument("--seed", type=int, default=1, help="random seed of the generated datasets (default 1)")
    bench.add_argument("--shape", choices=["crm", "people"], default="crm",
                       help="crm: Salesforce + Segment data; people: one person file (resolver generate --shape)")
    bench.add_argument("--data", default="bench-data", help="generated datasets (kept and reused)")
    bench.add_argument("--out", default="bench-results", help="bench.json, bench.png, bench.html and the runs")
    bench.set_defaults(func=cmd_bench)

    capacity = common(sub.add_parser("capacity", help="estimate wall time, GPUs and memory for a workload "
                                                       "from a bench's measurements"))
    capacity.add_argument("--events", type=int, required=True, help="CDP events (Segment tracks, page views...)")
    capacity.add_argument("--profiles", type=int, required=True, help="CRM records (customer profiles)")
    capacity.add_argument("--gpu", default="none", help="h200, h100, a100, a100-40gb, l40s, l4, a10, or none (CPU)")
    capacity.add_argument("--engine", default="local", choices=["local", "dask"],
                          help="the engine whose curves answer (default local)")
    capacity.add_argument("--from", dest="from_", default="bench-results/bench.json", help="a bench.json")
    capacity.add_argument("--max-extrapolation", type=float, default=10.0,
                          help="refuse targets more than this factor beyond the largest measured size")
    capacity.add_argument("--allow-extrapolation", action="store_true",
                          help="answer beyond --max-extrapolation anyway (the answer says it extrapolated)")
    capacity.add_argument("--json", action="store_true", help="print the estimate as JSON")
    capacity.set_defaults(func=cmd_capacity)

    review = sub.add_parser("review", help="list review items; record accept/reject decisions for the next run")
    review_sub = review.add_subparsers(dest="review_command", required=True)

    def places(p):
        p.add_argument("--state", help="state directory (default: run.state_dir of --config)")
        p.add_argument("--config", help="a config: its run.state_dir and run.output_dir are the defaults")
        p.add_argument("--out", help="the run's outputs (default: run.output_dir, else the state's last run)")
        return p

    listing = places(common(review_sub.add_parser("list", help="review items, highest probability first")))
    listing.add_argument("--limit", type=int, default=20, help="show at most N items (default 20)")
    listing.add_argument("--links", type=int, default=0, metavar="N",
                         help="also a random sample of N automatic merges to audit (estimates the false-positive rate)")
    listing.add_argument("--all", action="store_true", help="include items already decided")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_review_list)

    deciding = places(common(review_sub.add_parser("decide", help="accept (must-link) or reject (cannot-link) a pair")))
    which = deciding.add_mutually_exclusive_group(required=True)
    which.add_argument("--pair", nargs=2, metavar=("LEFTKEY", "RIGHTKEY"),
                       help="two record keys (as in the file, or SOURCE:KEY when a key is in several sources)")
    which.add_argument("--item", help="a review item's id (from `resolver review list` or report.html)")
    verdict = deciding.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--accept", action="store_true", help="the two records are one person: link them")
    verdict.add_argument("--reject", action="store_true", help="the two records are different people: never link them")
    deciding.add_argument("--by", help="who decided (default: the login name)")
    deciding.set_defaults(func=cmd_review_decide)

    forget = common(sub.add_parser("forget", help="erase a person (GDPR/CCPA) from the outputs and the state"))
    forget.add_argument("--config", required=True, help=CONFIG_HELP)
    forget.add_argument("--state", help="state directory (default: run.state_dir)")
    forget.add_argument("--out", help="output folder (default: run.output_dir)")
    selector = forget.add_mutually_exclusive_group(required=True)
    selector.add_argument("--email", help="every person holding this email (normalized as the runs do)")
    selector.add_argument("--phone", help="every person holding this phone number (any format)")
    selector.add_argument("--person", help="a person id (p + 16 hex digits)")
    selector.add_argument("--record", help="a record key (e.g. a Salesforce Id)")
    forget.set_defaults(func=cmd_forget)

    def sync_common(p):
        p.add_argument("--config", required=True, help=CONFIG_HELP)
        p.add_argument("--state", help="state directory of the batch runs (default: run.state_dir)")
        p.add_argument("--store", help="store URL: sqlite:///PATH or postgresql://... "
                                       "(default: sync.store, else sqlite under the state directory)")
        return p

    serve = sync_common(common(sub.add_parser("serve", help="real-time sync service: webhooks in, profiles out")))
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.set_defaults(func=cmd_serve)

    subscribe = sub.add_parser("subscribe", help="pull change events from a source system into the sync store")
    subscribe_sub = subscribe.add_subparsers(dest="subscribe_system", required=True)
    salesforce = sync_common(common(subscribe_sub.add_parser(
        "salesforce", help="Change Data Capture over Salesforce's Pub/Sub API (gRPC), resumed from the stored "
                           "replay id; credentials from SALESFORCE_ACCESS_TOKEN, SALESFORCE_INSTANCE_URL, "
                           "SALESFORCE_ORG_ID")))
    salesforce.add_argument("--topic", default="/data/ChangeEvents",
                            help="the channel: /data/ChangeEvents (default), /data/ContactChangeEvent, ...")
    salesforce.add_argument("--endpoint", default="api.pubsub.salesforce.com:7443", help="the Pub/Sub API's host:port")
    salesforce.add_argument("--insecure", action="store_true", help="no TLS (a local test server only)")
    salesforce.add_argument("--replay", choices=["latest", "earliest"], default="latest",
                            help="where a first subscription starts (later ones resume after the stored replay id)")
    salesforce.add_argument("--max-events", type=int, help="stop after this many events (default: run until stopped)")
    salesforce.add_argument("--batch", type=int, default=100, choices=range(1, 101), metavar="1-100",
                            help="events asked for per FetchRequest (default 100, the API's most)")
    salesforce.add_argument("--no-resolve", action="store_true",
                            help="only store the events: a running `resolver serve` on the same store resolves them")
    salesforce.set_defaults(func=cmd_subscribe)

    dlq = sync_common(common(sub.add_parser("dlq", help="the sync service's dead-letter queue")))
    dlq.add_argument("action", choices=["list", "replay", "drop"],
                     help="list the dead letters, replay them now, or drop them")
    dlq.add_argument("event_id", nargs="*", help="event ids (default for replay: all)")
    dlq.add_argument("--all", action="store_true", help="drop: every dead letter")
    dlq.set_defaults(func=cmd_dlq)

    sync = sub.add_parser("sync", help="batch <-> sync service")
    sync_sub = sync.add_subparsers(dest="sync_command", required=True)
    export = sync_common(common(sync_sub.add_parser("export", help="write what the service received as batch sources")))
    export.add_argument("--out", help="folder (default: sync.export_dir, else STATE/sync-export)")
    export.add_argument("--json", action="store_true", help="also print the result as JSON")
    export.add_argument("--update-config", action="store_true",
                        help="rewrite the config to read the export (each export source before its original)")
    export.set_defaults(func=cmd_sync_export)

    plan = common(sub.add_parser("plan", help="blocking pair counts per rule and the largest blocks, before any pair is made"))
    plan.add_argument("--config", required=True, help=CONFIG_HELP)
    plan.set_defaults(func=cmd_plan)

    init = common(sub.add_parser("init", help="propose a working config from the data: column kinds, blocking "
                                              "rules under a pair budget, comparisons"))
    init.add_argument("data", nargs="+", metavar="DATA", help="CSV, Parquet or JSONL files or globs; one source each")
    init.add_argument("--out", default="resolver.yaml", help="the config to write (default resolver.yaml)")
    init.add_argument("--name", action="append", help="a source name, once per DATA in order (default: file stems)")
    init.add_argument("--link-type", choices=["link_only", "dedupe_only", "link_and_dedupe"],
                      help="default: link_and_dedupe for two or more inputs")
    init.add_argument("--pair-budget", type=int, help="most candidate pairs the chosen rules may make "
                                                      "(default: 50 a record, at least 1,000,000)")
    init.add_argument("--sample-rows", type=int, default=20_000, help="rows read from each input (default 20000)")
    init.add_argument("--exclude", action="append", default=[], metavar="COLUMN",
                      help="a column to leave out (e.g. a ground-truth id); repeatable")
    init.add_argument("--force", action="store_true", help="replace --out when it exists")
    init.set_defaults(func=cmd_init)

    gen = common(sub.add_parser("generate", help="write synthetic Salesforce + Segment data (or, with --shape "
                                                 "people, one person file) with ground truth"))
    gen.add_argument("--people", type=int, required=True, help="people to generate (records: about 1.1 a person)")
    gen.add_argument("--shape", choices=["crm", "people"], default="crm",
                     help="crm (default): Salesforce CSVs + Segment events; people: one people.parquet of person "
                          "records (about 1.43 a person, Splink/Zingg benchmark style) with truth and a config")
    gen.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same data (default 0)")
    gen.add_argument("--out", required=True, help="folder for the data, its truth and its resolver.yaml")
    gen.add_argument("--workers", type=int, default=2, help="generator processes (default 2)")
    gen.add_argument("--no-events", action="store_true",
                     help="write only the Salesforce CSVs and records truth (no Segment events)")
    gen.add_argument("--visitors", action="store_true",
                     help="also write anonymous web-visitor traffic (Segment, GA4, Tealium, Adobe) with truth")
    gen.add_argument("--events-per-person", type=float, default=None,
                     help="mean of each user's own Segment events (default 5.6); more makes an events-heavy dataset")
    gen.set_defaults(func=cmd_generate)

    ev = common(sub.add_parser("evaluate", help="score a run's outputs against a truth folder"))
    ev.add_argument("--config", required=True, help=CONFIG_HELP)
    ev.add_argument("--truth", required=True, help="truth folder written by `resolver generate`")
    ev.add_argument("--out", help="outputs to score (default: the config's output_dir)")
    ev.add_argument("--min-precision", type=float, help="exit 4 when record pairwise precision is lower")
    ev.set_defaults(func=cmd_evaluate)
    _add_examples(parser)
    return parser


CONFIG_HELP = "the resolver.yaml to use (`resolver init` proposes one from your data)"

# One example per command, shown at the end of its --help.
EXAMPLES = {
    "demo": "resolver demo --people 2000 --out demo/",
    "run": "resolver run --config data/resolver.yaml --state data/state --log-format json",
    "bench": "resolver bench --sizes 10000,100000 --repeat 3 --backends cpu --out bench-results",
    "capacity": "resolver capacity --profiles 50000000 --events 2000000000 --gpu h200",
    "review": "resolver review list --state data/state --links 50",
    "review list": "resolver review list --state data/state --links 50",
    "review decide": "resolver review decide --state data/state --item i221def2dd0f4 --accept",
    "forget": "resolver forget --config data/resolver.yaml --state data/state --email jane@example.com",
    "serve": "RESOLVER_WEBHOOK_SECRET=... resolver serve --config data/resolver.yaml --state data/state --port 8080",
    "dlq": "resolver dlq replay --config data/resolver.yaml --state data/state",
    "subscribe": "resolver subscribe salesforce --config data/resolver.yaml --state data/state "
                 "--topic /data/ContactChangeEvent",
    "subscribe salesforce": "resolver subscribe salesforce --config data/resolver.yaml --state data/state "
                            "--topic /data/ContactChangeEvent",
    "sync": "resolver sync export --config data/resolver.yaml --state data/state --update-config",
    "sync export": "resolver sync export --config data/resolver.yaml --state data/state --update-config",
    "plan": "resolver plan --config data/resolver.yaml",
    "init": "resolver init crm.csv web.parquet --name crm --name web --out resolver.yaml",
    "generate": "resolver generate --people 100000 --seed 1 --out data/",
    "evaluate": "resolver evaluate --config data/resolver.yaml --truth data/truth "
                "(a folder with records.parquet: source, record_key, person_id)",
}


def _add_examples(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Each command's example at the end of its --help (EXAMPLES), kept as written."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                command = f"{path} {name}".strip()
                child.formatter_class = argparse.RawDescriptionHelpFormatter
                child.epilog = f"example:\n  {EXAMPLES[command]}"
                _add_examples(child, command)


def _expected_failures() -> list[tuple[type, str, int]]:
    """Expected failures: one line naming the problem, and an exit code. (Imported only once a
    command failed: they load pandas and numba, which `serve` does not need to answer.)"""
    from resolver.compute.backend import BackendUnavailable
    from resolver.bench.capacity import CapacityError
    from resolver.config import ConfigError
    from resolver.compute.dask_engine import EngineUnavailable
    from resolver.state.erasure import ErasureError
    from resolver.ingest.readers import InputError
    from resolver.matching.model import ModelError
    from resolver.state.review import ReviewError
    from resolver.state.store import StateError
    from resolver.sync.store import StoreError

    return [(ConfigError, "configuration error", EXIT_CONFIG), (ErasureError, "erasure error", EXIT_CONFIG),
            (StateError, "state error", EXIT_CONFIG), (StoreError, "store error", EXIT_CONFIG),
            (ModelError, "model error", EXIT_CONFIG), (ReviewError, "review error", EXIT_CONFIG),
            (BackendUnavailable, "backend unavailable", EXIT_CONFIG), (EngineUnavailable, "engine unavailable", EXIT_CONFIG),
            (CapacityError, "capacity", EXIT_CONFIG), (InputError, "input error", EXIT_INPUT),
            (SubscriptionError, "subscription error", EXIT_CONFIG)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        known = _expected_failures()
        if not isinstance(exc, tuple(kind for kind, _, _ in known)):
            if getattr(args, "log_format", "text") == "json":  # a scheduler's log stays JSON lines
                import traceback

                error_line("json", "crash", f"{type(exc).__name__}: {exc}", EXIT_FAILURE,
                           traceback="".join(traceback.format_exception(exc)))
                return EXIT_FAILURE
            raise
        label, code = next((label, code) for kind, label, code in known if isinstance(exc, kind))
        error_line(getattr(args, "log_format", "text"), label, str(exc), code)
        return code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
