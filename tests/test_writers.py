"""Outputs are swapped into place atomically: a failed write leaves the previous outputs intact."""

from types import SimpleNamespace

import pandas as pd
import pytest

from resolver.outputs.writers import OUTPUT_TABLES, write_outputs


def _resolution(marker: str, broken: bool = False):
    tables = {name: pd.DataFrame({"marker": [marker]}) for name in OUTPUT_TABLES}
    if broken:
        tables["rejects"] = pd.DataFrame({"bad": [object()]})  # pyarrow cannot write a bare object
    return SimpleNamespace(**tables, summary={"marker": marker})


def test_outputs_are_written_and_replaced(tmp_path):
    out = tmp_path / "out"
    write_outputs(out, _resolution("first"))
    write_outputs(out, _resolution("second"))
    assert pd.read_parquet(out / "persons.parquet")["marker"].tolist() == ["second"]
    assert '"second"' in (out / "run_summary.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folders left behind


def test_a_failed_write_leaves_the_previous_outputs(tmp_path):
    out = tmp_path / "out"
    write_outputs(out, _resolution("first"))
    with pytest.raises(Exception):
        write_outputs(out, _resolution("second", broken=True))
    assert pd.read_parquet(out / "persons.parquet")["marker"].tolist() == ["first"]
    assert '"first"' in (out / "run_summary.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
