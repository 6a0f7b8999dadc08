"""Sources and outputs in an object store, against a real S3-compatible server (moto's standalone
server, started here): s3:// globs are read like local files and give the same persons, outputs
are published under an s3:// prefix with run_summary.json last, a state keeps the fetched copies
(an unchanged object is not fetched again), and a URL that matches nothing is a one-line error."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

from resolver.cli import EXIT_INPUT, EXIT_OK, main
from resolver.synth.people import generate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server; the AWS environment pointed at it for the tests of this module."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                            "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_ENDPOINT_URL=endpoint,
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        fs = pafs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test", region="us-east-1",
                               scheme="http", allow_bucket_creation=True)
        fs.create_dir("crm-bucket")
        yield fs
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _upload(fs, local: Path, key: str) -> None:
    with open(local, "rb") as src, fs.open_output_stream(f"crm-bucket/{key}") as dst:
        dst.write(src.read())


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3):
    root = tmp_path_factory.mktemp("store")
    generate(root, 300, seed=6, workers=1, events=False)
    for path in sorted((root / "salesforce").glob("*.csv")):
        _upload(s3, path, f"exports/salesforce/{path.name}")
    config = yaml.safe_load((root / "resolver.yaml").read_text())
    for source in config["sources"]:
        source["path"] = "s3://crm-bucket/exports/" + source["path"]
    (root / "remote.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def test_s3_sources_and_outputs_give_the_local_runs_persons(world, s3):
    assert main(["run", "--config", str(world / "resolver.yaml"), "--out", str(world / "local"), "-q"]) == EXIT_OK
    assert main(["run", "--config", str(world / "remote.yaml"), "--out", "s3://crm-bucket/runs/first", "-q"]) == EXIT_OK
    names = {info.base_name for info in s3.get_file_info(pafs.FileSelector("crm-bucket/runs/first"))}
    assert {"persons.parquet", "identity_map.parquet", "golden_records.parquet", "report.html",
            "run_summary.json"} <= names
    with s3.open_input_file("crm-bucket/runs/first/persons.parquet") as f:
        remote = pd.read_parquet(f)
    pd.testing.assert_frame_equal(remote, pd.read_parquet(world / "local" / "persons.parquet"))
    with s3.open_input_file("crm-bucket/runs/first/identity_map.parquet") as f:
        files = set(pd.read_parquet(f, columns=["file"])["file"].astype(str))
    assert files == {f"s3://crm-bucket/exports/salesforce/{p.name}" for p in (world / "salesforce").glob("*.csv")}


def test_a_state_keeps_the_fetched_objects_and_fetches_a_changed_one_again(world, s3, tmp_path):
    state = tmp_path / "state"
    args = ["run", "--config", str(world / "remote.yaml"), "--out", str(tmp_path / "out"), "--state", str(state), "-q"]
    assert main(args) == EXIT_OK
    cached = sorted((state / "remote" / "inputs").rglob("*.csv"))
    assert len(cached) == 3
    before = {p: p.stat().st_ino for p in cached}
    lead = world / "salesforce" / "Lead.csv"
    text = lead.read_text()
    changed = tmp_path / "Lead.csv"
    changed.write_text(text.replace("\n", "\r\n", 1) if "\r\n" not in text else text + "\n")
    time.sleep(1.1)  # object modification times have one-second resolution
    _upload(s3, changed, "exports/salesforce/Lead.csv")
    assert main(args) == EXIT_OK
    after = {p: p.stat().st_ino for p in sorted((state / "remote" / "inputs").rglob("*.csv"))}
    assert [p.name for p in after if after[p] != before[p]] == ["Lead.csv"]  # only the changed object


def test_a_url_that_matches_nothing_is_a_one_line_input_error(world, tmp_path, capsys):
    config = yaml.safe_load((world / "remote.yaml").read_text())
    config["sources"][0]["path"] = "s3://crm-bucket/nowhere/*.csv"
    (tmp_path / "none.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["run", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "never"), "-q"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err == "input error: source 'sf_contacts': no objects match s3://crm-bucket/nowhere/*.csv"
