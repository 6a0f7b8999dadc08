"""Config loading: valid files load, mistakes name the file and the field."""

from pathlib import Path

import pytest

from resolver.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_packaged_default_config_loads_and_matches_the_copy_in_configs():
    packaged = ROOT / "resolver" / "defaults" / "synthetic.yaml"
    assert packaged.read_text() == (ROOT / "configs" / "synthetic.yaml").read_text()
    config = load_config(packaged)
    assert [s.name for s in config.sources] == ["sf_contacts", "sf_leads", "segment", "segment_batch"]
    assert config.identity.types["user_id"].limit == 1
    assert config.base_dir == packaged.parent


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


MINIMAL = """
sources:
  - name: crm
    format: csv
    path: x.csv
    key: Id
    identifiers: {email: Email}
identity:
  types:
    email: {normalizer: email}
"""


def test_minimal_config_gets_defaults(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.run.default_region == "US"
    assert config.sources[0].csv.delimiter == ","
    assert config.output_path() == tmp_path / "out"


def test_unknown_field_is_named_with_the_file(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("key: Id", "key: Id\n    colour: red"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "sources.0.colour" in str(err.value)


def test_undeclared_identifier_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="identifier types \\['phone'\\]"):
        load_config(_write(tmp_path, MINIMAL.replace("{email: Email}", "{email: Email, phone: Phone}")))


def test_records_source_without_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="need `key`"):
        load_config(_write(tmp_path, MINIMAL.replace("    key: Id\n", "")))


def test_bad_normalizer_and_bad_limit_are_reported(tmp_path):
    text = MINIMAL.replace("{normalizer: email}", "{normalizer: emial, limit: 0}")
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert "identity.types.email.normalizer" in str(err.value)
    assert "identity.types.email.limit" in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "sources: [\n"))



@pytest.mark.slow
def test_events_sources_alone_end_the_run_with_a_config_error_not_a_crash(tmp_path):
    # Found by the reader fuzzer: a run of events alone ended in a traceback building the graph.
    from resolver.pipeline import run

    (tmp_path / "x.csv").write_text("Id,Email\n1,a@example.com\n")
    config = load_config(_write(tmp_path, MINIMAL.replace("    key: Id\n", "    kind: events\n")))
    with pytest.raises(ConfigError, match="no `kind: records` source"):
        run(config, write=False)
