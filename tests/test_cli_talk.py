"""A run that talks: progress lines on stderr (plain when not on a terminal), JSON lines with
--log-format json, the summary on stdout; help text for every option and an example per command;
the truth format of `evaluate` and its errors."""

import argparse
import json

import pandas as pd
import pytest

from resolver.cli import EXAMPLES, build_parser, main
from resolver.synth.people import generate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("talk")
    generate(root, 300, seed=4, workers=1, events=False)
    return root


def test_plain_lines_per_stage_on_stderr_and_the_summary_on_stdout(world, capsys):
    assert main(["run", "--config", str(world / "resolver.yaml"), "--out", str(world / "out-text")]) == 0
    out, err = capsys.readouterr()
    assert "every row accounted for" in out and "rows read" in out
    stage_lines = [line for line in err.splitlines() if " resolver: " in line and " done in " in line]
    stages = [line.split(" resolver: ")[1].split(" done in ")[0] for line in stage_lines]
    assert "persons" in stages and "golden records" in stages and stages[0].startswith("ingest")
    assert "\x1b[" not in err  # no control sequences in a log


def test_json_logs_are_one_object_a_line(world, capsys):
    assert main(["run", "--config", str(world / "resolver.yaml"), "--out", str(world / "out-json"),
                 "--log-format", "json"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    lines = [json.loads(line) for line in err.splitlines()]
    assert all({"ts", "level", "event"} <= line.keys() for line in lines)
    events = [line["event"] for line in lines]
    assert events[0] == "run_started" and "run_finished" in events
    finished = {line["stage"] for line in lines if line["event"] == "stage_finished"}
    started = {line["stage"] for line in lines if line["event"] == "stage_started"}
    assert finished == started and "persons" in finished
    done = next(line for line in lines if line["event"] == "run_finished")
    assert done["rows"]["accounted"] and done["persons"]["known"] > 0
    assert main(["run", "--config", str(world / "missing.yaml"), "--log-format", "json"]) == 2
    error = json.loads(capsys.readouterr().err.strip())
    assert error["level"] == "error" and error["exit_code"] == 2 and "missing.yaml" in error["message"]


def test_an_unexpected_failure_is_one_json_line_with_its_traceback(monkeypatch, capsys):
    import resolver.cli as cli

    def broken(args):
        raise RuntimeError("disk on fire")

    parser = cli.build_parser

    def patched():
        built = parser()
        for action in built._actions:
            if isinstance(action, argparse._SubParsersAction):
                action.choices["plan"].set_defaults(func=broken)
        return built

    monkeypatch.setattr(cli, "build_parser", patched)
    assert main(["plan", "--config", "x.yaml", "--log-format", "json"]) == 1
    line = json.loads(capsys.readouterr().err.strip())
    assert line["event"] == "crash" and line["message"] == "RuntimeError: disk on fire" and line["exit_code"] == 1
    assert "Traceback" in line["traceback"] and "disk on fire" in line["traceback"]
    with pytest.raises(RuntimeError, match="disk on fire"):  # text: the traceback as Python prints it
        main(["plan", "--config", "x.yaml"])


def _commands(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield " ".join((*path, name)), child
                yield from _commands(child, (*path, name))


def test_every_option_has_help_and_every_command_an_example():
    commands = dict(_commands(build_parser()))
    assert set(commands) == set(EXAMPLES)
    for name, parser in commands.items():
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"resolver {name}: {action.option_strings or action.dest} has no help"
        text = parser.format_help()
        assert f"example:\n  {EXAMPLES[name]}" in text, name
        assert EXAMPLES[name].startswith("resolver ") or "resolver serve" in EXAMPLES[name]


def test_evaluate_takes_a_truth_csv_and_says_what_a_wrong_one_lacks(world, tmp_path, capsys):
    assert main(["run", "--config", str(world / "resolver.yaml"), "--out", str(world / "out-eval"), "-q"]) == 0
    capsys.readouterr()
    pd.read_parquet(world / "truth" / "records.parquet").to_csv(tmp_path / "truth.csv", index=False)
    assert main(["evaluate", "--config", str(world / "resolver.yaml"), "--truth", str(tmp_path / "truth.csv"),
                 "--out", str(world / "out-eval")]) == 0
    from_csv = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--config", str(world / "resolver.yaml"), "--truth", str(world / "truth"),
                 "--out", str(world / "out-eval")]) == 0
    from_folder = json.loads(capsys.readouterr().out)
    assert from_csv["records"] == from_folder["records"] and from_csv["records"]["pairwise_f1"] > 0.9
    (tmp_path / "bad.csv").write_text("id,label\n1,2\n")
    assert main(["evaluate", "--config", str(world / "resolver.yaml"), "--truth", str(tmp_path / "bad.csv"),
                 "--out", str(world / "out-eval")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "bad.csv: truth records lack column(s) ['source', 'record_key', 'person_id']" in err
    assert main(["evaluate", "--config", str(world / "resolver.yaml"), "--truth", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "nothing")]) == 2
    assert "no run outputs to evaluate" in capsys.readouterr().err
