"""Blocking key expressions (`column` or `function(column, ...)`), parsed: the grammar of the
config's `matching.blocking.rules[].keys`.

A leaf in pure Python: config.py validates keys with it at load (so loading a config loads no
array library and imports no stage), matching/blocking.py compiles the parsed keys. Identity keys
(member, person, salted, review item) are in resolver/ids.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

# function name -> (number of columns, number of integer arguments)
KEY_FUNCTIONS = {
    None: (1, 0),
    "prefix": (1, 1),
    "last_digits": (1, 1),
    "year": (1, 0),
    "metaphone": (1, 0),
    "soundex": (1, 0),
    "email_local": (1, 0),
    "email_domain": (1, 0),
    "initials": (1, 0),
    "unordered": (2, 0),
}


@dataclass(frozen=True)
class KeyExpr:
    function: str | None
    columns: tuple[str, ...]
    args: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.function is None:
            return self.columns[0]
        return f"{self.function}({', '.join([*self.columns, *map(str, self.args)])})"


def parse_key(text: str) -> KeyExpr:
    """`column` or `function(column[, column], int...)`; raises ValueError naming the problem."""
    text = text.strip()
    call = re.fullmatch(r"([a-z_]+)\((.*)\)", text)
    if not call:
        return KeyExpr(None, (text,))
    function, inner = call.group(1), [p.strip() for p in call.group(2).split(",")]
    if function not in KEY_FUNCTIONS:
        known = ", ".join(sorted(k for k in KEY_FUNCTIONS if k))
        raise ValueError(f"unknown key function {function!r} in {text!r} (known: {known})")
    n_columns, n_args = KEY_FUNCTIONS[function]
    if len(inner) != n_columns + n_args:
        raise ValueError(f"{text!r}: {function} takes {n_columns} column(s) and {n_args} number(s)")
    columns, args = inner[:n_columns], inner[n_columns:]
    if not all(a.isdigit() and int(a) > 0 for a in args):
        raise ValueError(f"{text!r}: {function}'s argument must be a positive integer")
    return KeyExpr(function, tuple(columns), tuple(int(a) for a in args))
