"""The batch model scoring new records against the golden records of block-sharing persons (serve's
probabilistic step): the batch's blocking keys, comparisons, model and vetoes, called, not restated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resolver.config import Config
from resolver.ids import to_signed
from resolver.ingest.attributes import matching_columns, normalize_attribute
from resolver.matching.blocking import rule_keys
from resolver.matching.compare import comparison_matrix, prepare_all
from resolver.matching.score import vetoes
from resolver.matching.model import FSModel, match_weights, probabilities
from resolver.sync.mapping import Mapping, value_text
from resolver.sync.queries import golden_rows
from resolver.sync.store import Tx


def match_forms(config: Config, rows: list[dict], mapping: Mapping | None = None) -> dict[str, pd.Series]:
    """Each matching column of some records ({attribute: raw value}) in match form: the batch's
    normalize_attribute, or `mapping`'s memo of match forms when given (a value normalized once)."""
    out = {}
    for c in matching_columns(config):
        raws = [value_text(row.get(c)) for row in rows]
        kind = config.matching.normalizer(c)
        if mapping is None or kind == "number":
            out[c] = normalize_attribute(kind, pd.Series(raws, dtype="str"), config)
            continue
        out[c] = pd.Series(mapping.match_forms(c, raws), dtype="str")
    return out


class Matcher:
    """The batch model scoring one record against the golden records of block-sharing persons."""

    def __init__(self, config: Config, model: dict, mapping: Mapping | None = None):
        self.config = config
        self.mapping = mapping  # its memo of match forms saves normalizing a value twice
        self.rules = config.matching.blocking.rules
        self.cap = config.matching.blocking.max_block_size
        prepared = prepare_all(config.matching.comparisons, self._attributes([{}]))
        self.model = FSModel.from_dict(model, prepared, [r.name for r in self.rules], "the state's model.json")

    def _attributes(self, rows: list[dict]) -> dict[str, pd.Series]:
        return match_forms(self.config, rows, self.mapping)

    def keys(self, rows: list[dict]) -> np.ndarray:
        """(n_rules, n_rows) uint64 block keys (0 = no key)."""
        attributes = self._attributes(rows)
        return np.array([rule_keys(rule.keys, attributes, len(rows))[0] for rule in self.rules],
                        dtype=np.uint64).reshape(len(self.rules), len(rows))

    def best_many(self, tx: Tx, records: list[dict], exclude: list[str | None] | None = None
                  ) -> list[tuple[str, float, bool] | None]:
        """Per record: (best candidate person, probability, vetoed) among the persons whose golden
        record shares a blocking key with it (None: no candidate). Candidates and comparisons are
        made for all records at once."""
        keys = self.keys(records)
        blocks: dict[tuple[int, int], list[str]] = {}
        found: list[dict[str, int]] = []
        for i in range(len(records)):
            mine: dict[str, int] = {}
            for r in range(keys.shape[0]):
                k = int(keys[r, i])
                if k == 0:
                    continue
                if (r, k) not in blocks:
                    rows = tx.all("SELECT person_id FROM block_keys WHERE rule = ? AND key = ? LIMIT ?",
                                  (r, to_signed(k), self.cap + 1))
                    blocks[(r, k)] = [p for (p,) in rows] if len(rows) <= self.cap else []  # over the cap: skipped
                for person in blocks[(r, k)]:
                    if exclude is None or person != exclude[i]:
                        mine.setdefault(person, r)
            found.append(mine)
        persons = sorted({p for mine in found for p in mine})
        if not persons:
            return [None] * len(records)
        golden = golden_rows(tx, persons)
        position = {p: len(records) + j for j, p in enumerate(persons)}
        prepared = prepare_all(self.config.matching.comparisons,
                               self._attributes(records + [golden[p] for p in persons]))
        left = np.array([i for i, mine in enumerate(found) for _ in mine], dtype=np.int64)
        right = np.array([position[p] for mine in found for p in mine], dtype=np.int64)
        rule = np.array([r for mine in found for r in mine.values()], dtype=np.int64)
        levels = comparison_matrix(prepared, left, right)
        probability = probabilities(match_weights(self.model, levels, rule))
        vetoed = vetoes(prepared, levels) >= 0
        out: list = [None] * len(records)
        start = 0
        for i, mine in enumerate(found):
            if mine:
                j = start + int(np.argmax(probability[start:start + len(mine)]))
                out[i] = (persons[right[j] - len(records)], float(probability[j]), bool(vetoed[j]))
            start += len(mine)
        return out
