"""Vectorized normalization of identifier values, blocked (junk) values, and identifier hashing.

Every public function takes a pandas Series (or anything a Series can be built from) and returns
Series aligned with it (same index and name) of the pandas ``str`` dtype, missing values as NA.
The work runs in pyarrow compute kernels over the *distinct* values; per-value Python only
happens for the rare values the vectorized rules cannot decide (odd phone formats, IPv6,
non-ASCII names).

Conventions (reference: input-formats.md sections 1.1, 6 and 7):

* email: ``strip -> NFC -> lower``; gmail/googlemail dots folded, ``+tags`` dropped (match key only).
* phone: E.164, answers identical to ``phonenumbers.parse`` + ``is_valid_number``.
* name: ASCII-folded, lower case, no punctuation, no leading titles / trailing suffixes.
* sfid: 15-char Salesforce ids widened to the 18-char case-safe form.
* ip: canonical text of :mod:`ipaddress`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import NumberParseException, PhoneMetadata
from unidecode import unidecode

from resolver.kernels.hashing import hash_strings

__all__ = [
    "Blocklist",
    "hash_identifiers",
    "normalize_email",
    "normalize_identifier",
    "normalize_ip",
    "normalize_lower",
    "normalize_name",
    "normalize_phone",
    "normalize_trim",
    "salesforce_id_18",
]

STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default ``str`` dtype
NORMALIZERS = ("trim", "lower", "email", "phone", "sfid", "ip")

# ---------------------------------------------------------------------------------------------
# Series <-> Arrow plumbing
# ---------------------------------------------------------------------------------------------


def _as_series(values) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)


def to_arrow(series: pd.Series) -> pa.Array:
    """The values as one Arrow string array (nulls for NA)."""
    if pd.api.types.is_float_dtype(series.dtype):
        series = _integral_floats_as_int(series)
    if series.dtype != STR:
        series = series.astype(STR)
    arr = pa.array(series.array)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr.cast(pa.large_string())


def _integral_floats_as_int(series: pd.Series) -> pd.Series:
    # An id column with gaps is read as float: write 2125551234.0 as "2125551234", not "2125551234.0".
    finite = series.dropna()
    if len(finite) and np.all(np.mod(finite.to_numpy(), 1) == 0) and np.all(np.abs(finite.to_numpy()) < 2**53):
        return series.astype("Int64")
    return series


def to_series(arr: pa.Array, like: pd.Series) -> pd.Series:
    return pd.Series(arr, dtype=STR, index=like.index, name=like.name)


def _per_unique(arr: pa.Array, fn: Callable[[pa.Array], tuple[pa.Array, ...]],
                distinct: bool = False) -> tuple[pa.Array, ...]:
    """Apply ``fn`` to the distinct non-null values only, then expand back (null stays null).
    `distinct`: the caller's values are (nearly) all distinct already: ``fn`` goes over them as
    they are (hashing a million distinct strings costs a third of normalizing them)."""
    if distinct:
        if arr.null_count == 0:
            return fn(arr)
        valid = pc.is_valid(arr).to_numpy(zero_copy_only=False)
        at = pa.array(np.cumsum(valid) - 1, mask=~valid)  # null stays null
        return tuple(pc.take(out, at) for out in fn(arr.filter(pa.array(valid))))
    encoded = pc.dictionary_encode(arr)
    return tuple(pc.take(out, encoded.indices) for out in fn(encoded.dictionary))


def _null_strings(n: int) -> pa.Array:
    return pa.nulls(n, pa.large_string())


def _where(mask: np.ndarray | pa.Array, values: pa.Array) -> pa.Array:
    """``values`` where mask is true, null elsewhere."""
    return pc.if_else(mask, values, pa.scalar(None, values.type))


def _concat(*parts: pa.Array | str) -> pa.Array:
    """Element-wise string concatenation (str parts broadcast; null in -> null out)."""
    large = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*large, pa.scalar("", pa.large_string()))


def _null_if_empty(arr: pa.Array) -> pa.Array:
    return _where(pc.greater(pc.binary_length(arr), 0), arr)


def _scatter(n: int, parts: Iterable[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """A length-n string array: each part's values at the positions its mask marks, null elsewhere."""
    out = _null_strings(n)
    for mask, values in parts:
        if mask.any():
            out = pc.replace_with_mask(out, pa.array(mask), values.cast(pa.large_string()))
    return out


def _matches(arr: pa.Array, regex: str) -> np.ndarray:
    """RE2 search over an Arrow string array as a numpy bool array (null -> False)."""
    if len(arr) == 0:
        return np.zeros(0, dtype=bool)
    return pc.fill_null(pc.match_substring_regex(arr, regex), False).to_numpy(zero_copy_only=False)


def _fullmatch(arr: pa.Array, pattern: str) -> np.ndarray:
    return _matches(arr, f"^(?:{pattern})$")


def _prefix_match(arr: pa.Array, pattern: str) -> np.ndarray:
    """Like Python's ``re.match``: the pattern matches at the start of the string."""
    return _matches(arr, f"^(?:{pattern})")


def _starts_with(arr: pa.Array, prefix: str) -> np.ndarray:
    return pc.starts_with(arr, prefix).to_numpy(zero_copy_only=False)


def _offsets_data(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and UTF-8 bytes of a null-free string array, as numpy views."""
    arr = arr.cast(pa.large_string())
    if len(arr) == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    return offsets, np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)


def _from_buffers(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    data = np.ascontiguousarray(data, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _keep_bytes(arr: pa.Array, keep: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> pa.Array:
    """Drop bytes from every string of a null-free array; ``keep(data, offsets)`` marks the bytes
    to keep (about half the cost of a regex replace)."""
    offsets, data = _offsets_data(arr)
    data, offsets = data[offsets[0] : offsets[-1]], offsets - offsets[0]
    kept = keep(data, offsets)
    counts = np.concatenate([[0], np.cumsum(kept, dtype=np.int64)])
    return _from_buffers(counts[offsets], data[kept])


def _digits_only(arr: pa.Array) -> pa.Array:
    # UTF-8 continuation bytes are >= 0x80, so this is exact for any text.
    return _keep_bytes(arr, lambda data, _: (data >= ord("0")) & (data <= ord("9")))


def _lengths(arr: pa.Array) -> np.ndarray:
    return pc.utf8_length(arr).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------
# trim / lower
# ---------------------------------------------------------------------------------------------


def _trim(arr: pa.Array) -> pa.Array:
    return _null_if_empty(pc.utf8_trim_whitespace(arr))


def normalize_trim(values) -> pd.Series:
    """Leading/trailing whitespace removed; empty -> NA."""
    s = _as_series(values)
    return to_series(_trim(to_arrow(s)), s)


def normalize_lower(values) -> pd.Series:
    """Whitespace-trimmed and lower-cased; empty -> NA."""
    s = _as_series(values)
    return to_series(pc.utf8_lower(_trim(to_arrow(s))), s)


# ---------------------------------------------------------------------------------------------
# email
# ---------------------------------------------------------------------------------------------

# Exactly one '@' with something on both sides and no whitespace/control characters anywhere.
_EMAIL_SHAPE = r"^[^@\s\p{Z}\p{Cc}]+@[^@\s\p{Z}\p{Cc}]+$"


def normalize_email(values: pd.Series, *, fold_gmail_dots: bool = True, fold_plus_tags: bool = True,
                    distinct: bool = False) -> pd.Series:
    """Match key of an email: ``strip -> NFC -> lower``, googlemail.com -> gmail.com, then optionally
    gmail dots removed from the local part and ``+tag`` sub-addresses dropped (any domain).
    Invalid addresses (not exactly one '@', an empty side, spaces inside) -> NA."""
    s = _as_series(values)

    def fold(u: pa.Array) -> tuple[pa.Array]:
        return (_email_keys(u, fold_gmail_dots, fold_plus_tags),)

    (out,) = _per_unique(to_arrow(s), fold, distinct)
    return to_series(out, s)


def _split_emails(raw: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(valid, local part, domain) after strip -> NFC -> lower, googlemail.com as gmail.com."""
    text = pc.utf8_lower(pc.utf8_normalize(pc.utf8_trim_whitespace(raw), "NFC"))
    valid = pc.match_substring_regex(text, _EMAIL_SHAPE)
    local, domain = _split_once(pc.if_else(valid, text, "@"), "@")  # invalid rows: "" and ""
    domain = pc.if_else(pc.equal(domain, "googlemail.com"), "gmail.com", domain)
    return valid, local, domain


def _split_once(text: pa.Array, separator: str) -> tuple[pa.Array, pa.Array]:
    """(before, after) the first separator; every value must contain it."""
    parts = pc.split_pattern(text, separator, max_splits=1)
    return pc.list_element(parts, 0), pc.list_element(parts, 1)


def _email_keys(raw: pa.Array, fold_gmail_dots: bool, fold_plus_tags: bool) -> pa.Array:
    valid, local, domain = _split_emails(raw)
    if fold_plus_tags:
        # "jane+news" -> "jane"; a leading '+' has no mailbox before it and stays. (A value
        # without '+' splits into itself.)
        base = pc.list_element(pc.split_pattern(local, "+", max_splits=1), 0)
        local = pc.if_else(pc.greater(pc.binary_length(base), 0), base, local)
    if fold_gmail_dots:
        local = pc.if_else(pc.equal(domain, "gmail.com"), pc.replace_substring(local, ".", ""), local)
    valid = pc.and_(valid, pc.greater(pc.binary_length(local), 0))  # ".@gmail.com" folds to nothing
    return _where(valid, _concat(local, "@", domain))


# ---------------------------------------------------------------------------------------------
# phone
# ---------------------------------------------------------------------------------------------
#
# The answer must equal ``format_number(parse(raw, region), E164) if is_valid_number(...) else None``
# but phonenumbers costs ~50 us a number. Two vectorized halves replace it:
#
# 1. Parsing. For the plain shapes where every branch of ``parse`` can be followed exactly, the
#    (country code, national significant number) pair is derived with Arrow/numpy kernels:
#      A  "+" then digits -> country code = shortest 1-3 digit prefix that is a code
#      B  literal IDD ("011" for US) + digits not starting with 0 -> as A
#      C  national digits, no IDD, not starting with the region's code -> region's code + digits
#      D  region code + digits, where the whole is TOO_LONG for the region (US "1NXXNXXXXXX")
#    Only digits, spaces and ()-./ are allowed (plus a plain " x123" / " ext. 123" extension; no
#    letters, other extension forms or second numbers), and a number whose national part would
#    lose a national prefix (national_prefix_for_parsing matches) is left out, so the national
#    significant number is exactly the digits left.
#    Everything else is parsed one distinct value at a time by ``phonenumbers.parse`` itself.
# 2. Validity replays ``is_valid_number`` from phonenumbers' own metadata, one regex pass per
#    pattern over all numbers of a country code.

_PHONE_SHAPE = r"^[ ()\-./]*\+?[0-9 ()\-./]*$"
# A trailing extension after a digit, e.g. " x123" / " ext. 45": parse() strips exactly this and
# then treats the rest like a number without it (the extension is not part of E.164).
_EXTENSION = r"[ ]*(?:[xX]|[eE][xX][tT]\.?)[ ]*[0-9]{1,9}$"
_MAX_PARSE_INPUT = 250  # phonenumbers rejects longer input outright
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' bounds on a national significant number
_TYPE_DESCS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "invalid country code",
    NumberParseException.NOT_A_NUMBER: "unparseable",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_INVALID_NUMBER = "invalid number"
_COUNTRY_CODES = np.array(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE), dtype=np.int64)


def normalize_phone(values: pd.Series, default_region: str = "US", distinct: bool = False) -> tuple[pd.Series, pd.Series]:
    """(E.164 number or NA, reason or NA). Reasons: "invalid number", "unparseable", "too short",
    "too long", "invalid country code". Empty or missing input -> (NA, NA).

    Equal, value for value, to ``phonenumbers.format_number(parse(raw, default_region), E164)``
    where ``is_valid_number`` holds (region codes are taken case-insensitively)."""
    s = _as_series(values)
    region = default_region.upper() if default_region else None
    numbers, reasons = _per_unique(to_arrow(s), lambda u: _phones(u, region), distinct)
    return to_series(numbers, s), to_series(reasons, s)


def _phone_oracle(raw: str, region: str | None) -> tuple[str | None, str | None]:
    """The reference answer, phonenumbers on one value (what the vectorized path must equal)."""
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException as exc:
        return None, _PARSE_REASONS.get(exc.error_type, "unparseable")
    if not phonenumbers.is_valid_number(number):
        return None, _INVALID_NUMBER
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


@dataclass
class _Parsed:
    """Parsed numbers: positions among the distinct inputs, country codes, ``full`` = country code
    followed by the national significant number (E.164 without the '+'), and whether the number
    was written nationally."""

    rows: np.ndarray
    cc: np.ndarray
    full: pa.Array
    national: np.ndarray


def _phones(raw: pa.Array, region: str | None) -> tuple[pa.Array, pa.Array]:
    """E.164 numbers and reasons for distinct, non-null raw strings."""
    n = len(raw)
    empty = _lengths(pc.utf8_trim_whitespace(raw)) == 0
    fast = _parse_fast(raw, region)
    exact, fast_valid = _check_numbers(fast, region, exact=True)
    todo = ~empty
    todo[fast.rows[exact]] = False
    slow, failed = _parse_slow(raw, np.flatnonzero(todo), region)
    _, slow_valid = _check_numbers(slow, region, exact=False)

    good_fast, good_slow, invalid, failed_at = (np.zeros(n, dtype=bool) for _ in range(4))
    good_fast[fast.rows[exact & fast_valid]] = True
    good_slow[slow.rows[slow_valid]] = True
    invalid[fast.rows[exact & ~fast_valid]] = True
    invalid[slow.rows[~slow_valid]] = True
    failed_at[list(failed)] = True
    numbers = _scatter(
        n,
        [
            (good_fast, _concat("+", fast.full.filter(pa.array(exact & fast_valid)))),
            (good_slow, _concat("+", slow.full.filter(pa.array(slow_valid)))),
        ],
    )
    failures = _scatter(n, [(failed_at, pa.array([failed[i] for i in sorted(failed)], pa.large_string()))])
    return numbers, _fill(_labelled(invalid, _INVALID_NUMBER), failures)


def _parse_slow(raw: pa.Array, rows: np.ndarray, region: str | None) -> tuple[_Parsed, dict[int, str]]:
    """phonenumbers.parse one value at a time: parsed numbers, and reasons for the failures."""
    ok_rows, ccs, fulls, failed = [], [], [], {}
    for row, text in zip(rows.tolist(), raw.take(rows).to_pylist(), strict=True):
        try:
            number = phonenumbers.parse(text, region)
        except NumberParseException as exc:
            failed[row] = _PARSE_REASONS.get(exc.error_type, "unparseable")
            continue
        ok_rows.append(row)
        ccs.append(number.country_code)
        fulls.append(f"{number.country_code}{phonenumbers.national_significant_number(number)}")
    parsed = _Parsed(
        np.array(ok_rows, dtype=np.int64),
        np.array(ccs, dtype=np.int64),
        pa.array(fulls, pa.large_string()),
        np.zeros(len(ok_rows), dtype=bool),
    )
    return parsed, failed


def _parse_fast(raw: pa.Array, region: str | None) -> _Parsed:
    """The values whose parse() result can be derived without phonenumbers (classes A-D above).
    _check_numbers(exact=True) still has to confirm the national significant number."""
    text, shaped = _without_extension(pc.utf8_trim_whitespace(raw))
    rows = np.flatnonzero(shaped & (_lengths(raw) <= _MAX_PARSE_INPUT))
    text = text.take(rows)
    digits = _digits_only(text)
    n_digits = _lengths(digits)
    plus = pc.match_substring(text, "+").to_numpy(zero_copy_only=False)

    full, intl = digits, plus.copy()
    national = np.zeros(len(rows), dtype=bool)
    md = _default_metadata(region)
    if md is not None:
        full, intl, national = _national_forms(md, digits, n_digits, plus)

    cc = _country_codes(full, intl & (_lengths(full) >= 3))  # parse() needs > 2 digits after an IDD
    if md is not None:
        cc[national] = md.country_code
    keep = cc > 0
    return _Parsed(rows[keep], cc[keep], full.filter(pa.array(keep)), national[keep])


def _default_metadata(region: str | None):
    """Metadata of the default region, None where parse() rejects national numbers."""
    return PhoneMetadata.metadata_for_region(region) if region in phonenumbers.SUPPORTED_REGIONS else None


def _without_extension(trimmed: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Values with a plain extension dropped, and which (then) have the fast-path shape."""
    shaped = _matches(trimmed, _PHONE_SHAPE)
    other = np.flatnonzero(~shaped)
    if not len(other):
        return trimmed, shaped
    candidates = trimmed.take(other)
    body = pc.replace_substring_regex(candidates, _EXTENSION, "")
    ok = _matches(candidates, "[0-9]" + _EXTENSION) & _matches(body, _PHONE_SHAPE)
    mask = np.zeros(len(trimmed), dtype=bool)
    mask[other[ok]] = True
    shaped |= mask
    return pc.replace_with_mask(trimmed, pa.array(mask), body.filter(pa.array(ok))), shaped


def _national_forms(md: PhoneMetadata, digits: pa.Array, n_digits: np.ndarray, plus: np.ndarray):
    """Classes B, C and D for the default region: (full digits, international?, national?)."""
    idd = md.international_prefix or ""
    own = str(md.country_code)
    full, intl = digits, plus.copy()
    literal_idd = re.fullmatch(r"[0-9]+", idd) is not None
    if literal_idd:
        starts_idd = _starts_with(digits, idd)
        # _parse_prefix_as_idd strips a literal IDD unless a 0 follows it.
        from_idd = ~plus & starts_idd & (n_digits > len(idd)) & ~_starts_with(digits, idd + "0")
        full = pc.if_else(pa.array(from_idd), pc.utf8_slice_codeunits(digits, len(idd)), digits)
        intl |= from_idd
    else:
        starts_idd = _prefix_match(digits, idd) if idd else np.zeros(len(digits), dtype=bool)
    domestic = ~plus & ~starts_idd & (n_digits >= 3)
    starts_own = _starts_with(digits, own)
    too_long = np.array([_too_long(md, length) for length in range(int(n_digits.max(initial=0)) + 1)])
    national_c = domestic & ~starts_own
    national_d = domestic & starts_own & too_long[n_digits]
    full = pc.if_else(pa.array(national_c), _concat(own, full), full)
    return full, intl, national_c | national_d


def _too_long(md: PhoneMetadata, length: int) -> bool:
    """_test_number_length(number, md) == TOO_LONG for a number of this length."""
    possible = md.general_desc.possible_length
    local = md.general_desc.possible_length_local_only
    if not possible or length in local or length == possible[0] or possible[0] > length:
        return False
    return possible[-1] < length


def _country_codes(full: pa.Array, mask: np.ndarray) -> np.ndarray:
    """_extract_country_code: the shortest 1-3 digit prefix that is a calling code (0 = none)."""
    offsets, data = _offsets_data(full)
    three = np.zeros(len(full), dtype=np.int64)
    starts = offsets[:-1][mask]  # masked values have at least 3 digits

    def digit(k: int) -> np.ndarray:
        return data[starts + k].astype(np.int64) - ord("0")

    three[mask] = 100 * digit(0) + 10 * digit(1) + digit(2)
    cc = np.zeros(len(full), dtype=np.int64)
    live = mask & (three >= 100)  # a leading 0 is never a country code
    for divisor in (100, 10, 1):
        prefix = three // divisor
        hit = live & (cc == 0) & np.isin(prefix, _COUNTRY_CODES)
        cc[hit] = prefix[hit]
    return cc


def _check_numbers(parsed: _Parsed, region: str | None, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """(exact, valid) per parsed number, one country code at a time.

    exact: the digits after the country code are parse()'s national significant number: a
    possible NSN length and no national prefix parse() would strip (always true for numbers
    phonenumbers parsed itself). valid: is_valid_number."""
    n = len(parsed.rows)
    ok = np.ones(n, dtype=bool)
    valid = np.zeros(n, dtype=bool)
    md = _default_metadata(region)
    default_prefix = md.national_prefix_for_parsing if md is not None else None
    for code, group in _groups(parsed.cc):
        nsn = pc.utf8_slice_codeunits(parsed.full.take(group), len(str(code)))
        lengths = _lengths(nsn)
        if exact:
            main = _region_rules(code, phonenumbers.region_code_for_country_code(code))
            sure = (lengths >= _MIN_NSN) & (lengths <= _MAX_NSN) & (main is not None)
            if main is not None and main.national_prefix:
                sure &= ~_prefix_match(nsn, main.national_prefix)
            national = parsed.national[group]
            if default_prefix and national.any():
                sure &= ~(national & _prefix_match(nsn, default_prefix))
            ok[group] = sure
        at = np.flatnonzero(ok[group])
        valid[group[at]] = _valid_for_code(code, nsn.take(at), lengths[at])
    return ok, valid


def _groups(keys: np.ndarray):
    """(key, positions) for each distinct key."""
    order = np.argsort(keys, kind="stable")
    for group in np.split(order, np.flatnonzero(np.diff(keys[order])) + 1):
        if len(group):
            yield int(keys[group[0]]), group


# -- validity -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Desc:
    """One PhoneNumberDesc: its pattern and possible lengths (empty = any length)."""

    pattern: str
    lengths: frozenset[int]


@dataclass(frozen=True)
class _RegionRules:
    region: str
    general: _Desc | None
    types: tuple[_Desc, ...]  # any of these makes the number type known (not UNKNOWN)
    leading_digits: str | None
    national_prefix: str | None  # national_prefix_for_parsing
    country_code_ok: bool  # is_valid_number_for_region's country-code check


def _desc(desc) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None  # _match_national_number is False for a missing pattern
    return _Desc(desc.national_number_pattern, frozenset(desc.possible_length))


@functools.cache
def _region_rules(cc: int, region: str) -> _RegionRules | None:
    md = PhoneMetadata.metadata_for_region_or_calling_code(cc, region.upper())
    if md is None:
        return None
    # _number_type_helper only looks at mobile when it differs from fixed_line.
    names = _TYPE_DESCS if md.same_mobile_and_fixed_line_pattern else (*_TYPE_DESCS, "mobile")
    types = tuple(d for d in (_desc(getattr(md, name)) for name in names) if d is not None)
    return _RegionRules(
        region=region,
        general=_desc(md.general_desc),
        types=types,
        leading_digits=md.leading_digits,  # "" claims everything, as in phonenumbers
        national_prefix=md.national_prefix_for_parsing or None,
        country_code_ok=region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY or md.country_code == cc,
    )


@functools.cache
def _types_pattern(cc: int, region: str, length: int) -> str | None:
    """One alternation of the type patterns that allow this length (one regex pass, not ten)."""
    rules = _region_rules(cc, region)
    pats = [d.pattern for d in rules.types if not d.lengths or length in d.lengths]
    return "|".join(f"(?:{p})" for p in pats) if pats else None


def _valid_for_code(cc: int, nsn: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """Find the region like region_code_for_number, then require a known number type there."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc, ())
    if len(regions) == 1:
        rules = _region_rules(cc, regions[0])
        if rules is None or not rules.country_code_ok:
            return np.zeros(len(nsn), dtype=bool)
        return _type_known(cc, rules, nsn, lengths)
    valid = np.zeros(len(nsn), dtype=bool)
    open_ = np.ones(len(nsn), dtype=bool)  # no region has claimed these yet
    for run in _region_runs(cc):
        idx = np.flatnonzero(open_)
        if not len(idx):
            break
        sub, sub_len = nsn.take(idx), lengths[idx]
        if run[0].leading_digits is None:  # the region claims what has a known type there
            known = _type_known(cc, run[0], sub, sub_len)
            valid[idx[known]] = run[0].country_code_ok
            open_[idx[known]] = False
            continue
        # Regions with leading digits claim what starts with them, the first in order winning.
        for rules, claimed in zip(run, _leading_digit_claims(sub, [r.leading_digits for r in run]), strict=True):
            at = np.flatnonzero(claimed)
            valid[idx[at]] = _type_known(cc, rules, sub.take(at), sub_len[at]) & rules.country_code_ok
            open_[idx[at]] = False
    return valid


@functools.cache
def _region_runs(cc: int) -> tuple[tuple[_RegionRules, ...], ...]:
    """The code's regions in order, consecutive leading-digit regions batched into one run
    (one regex pass for the run instead of one per region)."""
    runs: list[list[_RegionRules]] = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[cc]:
        rules = _region_rules(cc, region)
        if rules is None:
            continue
        if _batchable(rules) and runs and all(_batchable(r) for r in runs[-1]):
            runs[-1].append(rules)
        else:
            runs.append([rules])
    return tuple(tuple(run) for run in runs)


def _batchable(rules: _RegionRules) -> bool:
    # Not batched: a pattern that can match "" (ambiguous in _leading_digit_claims) or that has
    # groups of its own (extract_regex wants named groups only).
    if rules.leading_digits is None:
        return False
    pattern = re.compile(rules.leading_digits)
    return pattern.groups == 0 and pattern.match("") is None


def _leading_digit_claims(nsn: pa.Array, patterns: list[str]) -> list[np.ndarray]:
    """For each pattern, the numbers it is the first (in order) to match at the start."""
    if len(patterns) == 1:
        return [_prefix_match(nsn, patterns[0])]
    claims = [np.zeros(len(nsn), dtype=bool) for _ in patterns]
    any_ = np.flatnonzero(_prefix_match(nsn, "|".join(f"(?:{p})" for p in patterns)))
    if not len(any_):
        return claims
    # One named group per pattern: RE2 picks the first alternative that matches, like trying
    # the patterns one by one; groups that did not take part come back as "".
    regex = "^(?:" + "|".join(f"(?P<r{i}>{p})" for i, p in enumerate(patterns)) + ")"
    found = pc.extract_regex(nsn.take(any_), regex)
    for i, claim in enumerate(claims):
        claim[any_] = _lengths(found.field(i)) > 0
    return claims


def _type_known(cc: int, rules: _RegionRules, nsn: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """_number_type_helper(nsn, metadata) != UNKNOWN: the general desc and any type desc match."""
    known = _desc_matches(rules.general, nsn, lengths)
    idx = np.flatnonzero(known)
    for length in np.unique(lengths[idx]):
        at = idx[lengths[idx] == length]
        pattern = _types_pattern(cc, rules.region, int(length))
        known[at] = _fullmatch(_take(nsn, at), pattern) if pattern else False
    return known


def _desc_matches(desc: _Desc | None, nsn: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """_is_number_matching_desc: a possible length and a full match of the pattern."""
    out = np.zeros(len(nsn), dtype=bool)
    if desc is None:
        return out
    ok = np.isin(lengths, list(desc.lengths)) if desc.lengths else np.ones(len(nsn), dtype=bool)
    idx = np.flatnonzero(ok)
    out[idx] = _fullmatch(_take(nsn, idx), desc.pattern)
    return out


def _take(arr: pa.Array, idx: np.ndarray) -> pa.Array:
    """arr.take(idx), skipping the copy when idx is every position in order."""
    return arr if len(idx) == len(arr) else arr.take(idx)


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------

_TITLES = ("mr", "mrs", "ms", "miss", "dr", "prof", "sir")
_SUFFIXES = ("jr", "sr", "ii", "iii", "iv", "phd", "md")
# Titles only lead and suffixes only trail: "Md Rahman" and "Sir Elton" keep meaning elsewhere.
_LEADING_TITLES = rf"^(?:(?:{'|'.join(_TITLES)})(?: |$))+"
_TRAILING_SUFFIXES = rf"(?:(?:^| )(?:{'|'.join(_SUFFIXES)}))+$"


def normalize_name(values: pd.Series) -> pd.Series:
    """Name match key: ASCII-folded (NFKD accent stripping, unidecode for the rest), lower case,
    apostrophes and periods removed, hyphens and other punctuation -> space, leading titles
    (mr, dr, ...) and trailing suffixes (jr, iii, phd, ...) dropped, whitespace collapsed;
    empty -> NA.
    "Dr. José O'Neil-Smith Jr." -> "jose oneil smith"."""
    s = _as_series(values)
    (out,) = _per_unique(to_arrow(s), lambda u: (_fold_names(u),))
    return to_series(out, s)


def normalize_text(values: pd.Series) -> pd.Series:
    """Free-text match key (streets, cities, companies): ASCII-folded, lower case, punctuation ->
    space, whitespace collapsed; empty -> NA. "5788 Church Dr." -> "5788 church dr"."""
    s = _as_series(values)
    (out,) = _per_unique(to_arrow(s), lambda u: (_null_if_empty(_words(_ascii_fold(u))),))
    return to_series(out, s)


# In order: an 8-digit value is YYYYMMDD when it is a valid one, else US MMDDYYYY (pseudopeople,
# many US exports); round trips make a wrong reading of either impossible but for a few dates
# such as 10101010.
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%d.%m.%Y", "%Y%m%d", "%m%d%Y")


def normalize_date(values: pd.Series) -> pd.Series:
    """Calendar date as ISO ``YYYY-MM-DD`` from ISO dates or timestamps, ``YYYY/MM/DD``,
    US ``MM/DD/YYYY``, ``DD.MM.YYYY``, ``YYYYMMDD`` or ``MMDDYYYY`` (zero-padded); anything else,
    or an impossible date, -> NA."""
    s = _as_series(values)

    def parse(u: pa.Array) -> tuple[pa.Array]:
        text = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(u), 0, 10)
        out = pa.nulls(len(u), pa.date32())
        for fmt in _DATE_FORMATS:
            parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
            # Arrow rolls impossible dates over (02-30 -> 03-01): keep only exact round trips.
            exact = pc.equal(pc.strftime(parsed, format=fmt), text)
            out = pc.coalesce(out, pc.if_else(exact, parsed.cast(pa.date32()), None))
        return (pc.strftime(out, format="%Y-%m-%d"),)

    (out,) = _per_unique(to_arrow(s), parse)
    return to_series(out, s)


def _fold_names(raw: pa.Array) -> pa.Array:
    text = _words(_ascii_fold(raw))
    text = pc.replace_substring_regex(text, _LEADING_TITLES, "")
    text = pc.replace_substring_regex(text, _TRAILING_SUFFIXES, "")
    return _null_if_empty(pc.utf8_trim_whitespace(text))


# _words byte tables: ' ` . are dropped (O'Neil -> oneil, J.R. -> jr); letters are lower-cased;
# digits stay; every other byte becomes a space.
_DROPPED = np.zeros(256, dtype=bool)
_DROPPED[[ord(c) for c in "'`."]] = True
_WORD_BYTE = np.full(256, ord(" "), dtype=np.uint8)
_WORD_BYTE[ord("a") : ord("z") + 1] = np.arange(ord("a"), ord("z") + 1)
_WORD_BYTE[ord("A") : ord("Z") + 1] = np.arange(ord("a"), ord("z") + 1)
_WORD_BYTE[ord("0") : ord("9") + 1] = np.arange(ord("0"), ord("9") + 1)


def _words(arr: pa.Array) -> pa.Array:
    """ASCII text as lower-case words [a-z0-9]+ joined by single spaces, none at either end.
    Same as lower + two regex replaces + trim, at about half the cost (byte tables in numpy)."""
    arr = _keep_bytes(arr, lambda data, _: ~_DROPPED[data])
    offsets, data = _offsets_data(arr)
    arr = _from_buffers(offsets - offsets[0], _WORD_BYTE[data[offsets[0] : offsets[-1]]])
    return pc.utf8_rtrim_whitespace(_keep_bytes(arr, _first_spaces))


def _first_spaces(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Keep-mask dropping every space that follows a space or starts its string."""
    space = data == ord(" ")
    drop = space & np.r_[True, space[:-1]]
    starts = offsets[:-1][offsets[:-1] < len(data)]
    drop[starts] = space[starts]
    return ~drop


def _ascii_fold(arr: pa.Array) -> pa.Array:
    """ASCII transliteration of the non-ASCII values: accents dropped with NFKD in Arrow (José,
    Zoë, Åberg), unidecode (Python, per value) only for what is left (ß, Ø, ’, 王)."""
    other = ~pc.string_is_ascii(arr).to_numpy(zero_copy_only=False)
    if not other.any():
        return arr
    # Marks go, and typographic apostrophes too (O’Brien): _words would delete them anyway.
    decomposed = pc.utf8_normalize(arr.filter(pa.array(other)), "NFKD")
    folded = pc.replace_substring_regex(decomposed, r"[\p{M}\x{2018}\x{2019}\x{02BC}]+", "")
    rest = ~pc.string_is_ascii(folded).to_numpy(zero_copy_only=False)
    if rest.any():
        transliterated = [unidecode(v) for v in folded.filter(pa.array(rest)).to_pylist()]
        folded = pc.replace_with_mask(folded, pa.array(rest), pa.array(transliterated, folded.type))
    return pc.replace_with_mask(arr, pa.array(other), folded)


# ---------------------------------------------------------------------------------------------
# IP addresses
# ---------------------------------------------------------------------------------------------

# ipaddress accepts exactly this for IPv4 (no leading zeros, 0-255), and prints it back unchanged.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"


def normalize_ip(values) -> pd.Series:
    """Canonical IPv4/IPv6 text (``str(ipaddress.ip_address(v.strip()))``) or NA when invalid."""
    s = _as_series(values)
    (out,) = _per_unique(to_arrow(s), lambda u: (_canonical_ips(u),))
    return to_series(out, s)


def _canonical_ips(raw: pa.Array) -> pa.Array:
    text = pc.utf8_trim_whitespace(raw)
    v4 = _matches(text, _IPV4)
    v6 = ~v4 & _matches(text, ":")  # anything else without ':' is no address ipaddress accepts
    parsed = [_ip_or_none(v) for v in text.filter(pa.array(v6)).to_pylist()]
    ok6 = np.zeros(len(raw), dtype=bool)
    ok6[np.flatnonzero(v6)] = [p is not None for p in parsed]
    return _scatter(
        len(raw),
        [(v4, text.filter(pa.array(v4))), (ok6, pa.array([p for p in parsed if p is not None], pa.large_string()))],
    )


def _ip_or_none(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Salesforce ids
# ---------------------------------------------------------------------------------------------

_SFID_SHAPE = r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$"
_SFID_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", dtype=np.uint8)
_BAD_CHECKSUM = "bad checksum repaired"
_NOT_SFID = "not a Salesforce id"


def salesforce_id_18(values) -> tuple[pd.Series, pd.Series]:
    """(18-char id or NA, reason or NA). 15-char ids get their case-folding checksum; 18-char ids
    are verified and, when the suffix is wrong, rebuilt from the first 15 chars (reason
    "bad checksum repaired"). Other shapes -> NA, "not a Salesforce id"; empty -> (NA, NA)."""
    s = _as_series(values)
    ids, reasons = _sfids(to_arrow(s))
    return to_series(ids, s), to_series(reasons, s)


def _sfids(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    text = pc.utf8_trim_whitespace(raw)
    present = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False).to_numpy(zero_copy_only=False)
    shaped = _matches(text, _SFID_SHAPE)
    head = pc.if_else(pa.array(shaped), pc.utf8_slice_codeunits(text, 0, 15), "0" * 15)
    chars = _fixed_width(head, 15)
    upper = (chars >= ord("A")) & (chars <= ord("Z"))
    # Each 5-char chunk: bit i set when char i is upper case; the 5-bit number picks the letter.
    index = upper.reshape(-1, 3, 5) @ (1 << np.arange(5))
    ids = np.concatenate([chars, _SFID_ALPHABET[index]], axis=1)
    id18 = _from_fixed_width(ids)
    given = pc.utf8_slice_codeunits(text, 15, 18)
    right = pc.fill_null(pc.equal(given, pc.utf8_slice_codeunits(id18, 15, 18)), False)
    wrong = shaped & (_lengths(text) == 18) & ~right.to_numpy(zero_copy_only=False)
    reasons = _fill(_labelled(present & ~shaped, _NOT_SFID), _labelled(wrong, _BAD_CHECKSUM))
    return _where(pa.array(shaped), id18), reasons


def _fixed_width(arr: pa.Array, width: int) -> np.ndarray:
    """(n, width) uint8 matrix of an Arrow string array whose values all have ``width`` bytes."""
    offsets, data = _offsets_data(arr)
    return data[offsets[0] : offsets[0] + width * len(arr)].reshape(len(arr), width)


def _from_fixed_width(chars: np.ndarray) -> pa.Array:
    n, width = chars.shape
    return _from_buffers(np.arange(0, width * (n + 1), width, dtype=np.int64), chars.ravel())


# ---------------------------------------------------------------------------------------------
# dispatch and hashing
# ---------------------------------------------------------------------------------------------


def _invalid_where_dropped(s: pd.Series, out: pd.Series, reason: str) -> pd.Series:
    """Reason for non-empty input that normalized to NA."""
    given = normalize_trim(s).notna() & out.isna()
    return pd.Series(np.where(given, reason, None), index=s.index, dtype=STR, name=s.name)


def normalize_identifier(
    kind: str,
    values: pd.Series,
    *,
    default_region: str = "US",
    email_options: dict | None = None,
    distinct: bool = False,
) -> tuple[pd.Series, pd.Series]:
    """Normalize with the named normalizer (trim, lower, email, phone, sfid, ip):
    (normalized value or NA, reason why a non-empty value was rejected or NA). `distinct`: the
    values are distinct already (not deduplicated again)."""
    s = _as_series(values)
    if kind == "trim":
        out = normalize_trim(s)
        return out, pd.Series(np.nan, index=s.index, dtype=STR, name=s.name)
    if kind == "lower":
        out = normalize_lower(s)
        return out, pd.Series(np.nan, index=s.index, dtype=STR, name=s.name)
    if kind == "email":
        out = normalize_email(s, **(email_options or {}), distinct=distinct)
        return out, _invalid_where_dropped(s, out, "invalid email")
    if kind == "phone":
        return normalize_phone(s, default_region, distinct)
    if kind == "sfid":
        return salesforce_id_18(s)
    if kind == "ip":
        out = normalize_ip(s)
        return out, _invalid_where_dropped(s, out, "invalid ip address")
    raise ValueError(f"unknown normalizer {kind!r}; expected one of {', '.join(NORMALIZERS)}")


def hash_identifiers(type_name: str, values: pd.Series) -> np.ndarray:
    """uint64 hash of ``type_name + "\\x1f" + value`` (resolver.kernels.hashing: FNV-1a plus a
    splitmix64 finalizer, compiled over the Arrow buffers; stable across runs and platforms).
    NA -> 0; 0 is never the hash of a value."""
    return hash_strings(to_arrow(_as_series(values)), prefix=f"{type_name}\x1f".encode())


# ---------------------------------------------------------------------------------------------
# blocked values
# ---------------------------------------------------------------------------------------------

# Vendor-documented placeholder values (input-formats.md 6.4), compared case-insensitively.
# A value in two lists is reported under the first.
_VENDOR_VALUES = {
    "segment": ("-1", "null", "anonymous", "void", "abc123"),
    "adobe": ("null", "anonymous", "invalid", ""),  # "" = empty or whitespace-only
    "tealium": ("undefined", "unknown", "not set"),
}
_VENDOR_TABLE: dict[str, str] = {}
for _vendor, _listed in _VENDOR_VALUES.items():
    for _value in _listed:
        _VENDOR_TABLE.setdefault(_value, f"blocked value ({_vendor})")
_ZEROS_PATTERN = "^[0-]*$"  # Segment: 0, 000-000-0000, zeroed IDFA/AAID

_FAKE_EMAILS = ("test@test.com", "asdf@asdf.com", "asdfasdf@asdf.asdf")
_FAKE_LOCAL_PARTS = ("test", "asdf", "noreply", "no-reply", "donotreply", "do-not-reply")
# RFC 2606: example.com/.net/.org (and their subdomains) and the .test .example .invalid .localhost TLDs.
_RESERVED_DOMAIN = r"(?:^|\.)(?:example\.(?:com|net|org)|test|example|invalid|localhost)$"
_RESERVED_NAMES = ("example.com", "example.net", "example.org", "test", "example", "invalid", "localhost")

_SAME_DIGIT = "|".join(f"{d}{{7,}}" for d in range(10))
_JUNK_PHONE_PATTERNS = (
    rf"^\+[0-9]{{0,3}}(?:{_SAME_DIGIT})$",  # +11111111111, +10000000000
    r"^\+[0-9]{0,3}(?:0?123456789|1234567890|9876543210?|0987654321)$",  # sequential
    r"^\+1[2-9][0-9]{2}55501[0-9]{2}$",  # NANP fictional 555-0100..555-0199
    r"^\+1(?:[2-9][0-9]{2})?5551212$",  # directory assistance 555-1212
)
_JUNK_PHONE = "|".join(f"(?:{p})" for p in _JUNK_PHONE_PATTERNS)

Scoped = Iterable[str] | Mapping[str, Iterable[str]]


@dataclass(frozen=True)
class Blocklist:
    """Placeholder values that must never link records (input-formats.md 6.4).

    ``values`` compare case-insensitively with the normalized value; ``patterns`` are Python
    regexes that must match the whole normalized value. Either may be a list (every type) or a
    mapping ``{type_name: [...]}`` (that type only). With ``vendor_lists`` the Segment, Adobe and
    Tealium suggested values, fake/reserved emails and junk phone numbers are blocked too."""

    # Config lists by scope (None = every type): lowered values, compiled patterns.
    values: dict[str | None, frozenset[str]] = field(default_factory=dict)
    patterns: dict[str | None, tuple[re.Pattern, ...]] = field(default_factory=dict)
    vendor_lists: bool = True

    @classmethod
    def from_config(cls, values: Scoped = (), patterns: Scoped = (), vendor_lists: bool = True) -> Blocklist:
        table: dict[str | None, frozenset[str]] = {}
        for scope, listed in _scoped(values):
            table[scope] = table.get(scope, frozenset()) | {str(v).strip().lower() for v in listed}
        compiled: dict[str | None, tuple[re.Pattern, ...]] = {}
        for scope, listed in _scoped(patterns):
            compiled[scope] = compiled.get(scope, ()) + tuple(re.compile(p) for p in listed)
        return cls(values=table, patterns=compiled, vendor_lists=vendor_lists)

    def blocked(self, type_name: str, normalized: pd.Series, distinct: bool = False) -> pd.Series:
        """Reason string where the value is blocked, NA otherwise (and for missing values).
        `distinct`: the values are (nearly) distinct already (not deduplicated again)."""
        s = _as_series(normalized)
        (out,) = _per_unique(to_arrow(s), lambda u: (self._reasons(type_name, u),), distinct)
        return to_series(out, s)

    def _reasons(self, type_name: str, text: pa.Array) -> pa.Array:
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(text))
        reason = _null_strings(len(text))
        # Earlier checks win: exact values, then patterns, then the email and phone rules.
        if self.vendor_lists:
            reason = _fill(reason, _lookup(lowered, _VENDOR_TABLE))
        for scope in (None, type_name):
            listed = self.values.get(scope, frozenset())
            reason = _fill(reason, _lookup(lowered, dict.fromkeys(listed, "blocked value (config)")))
        if self.vendor_lists:
            reason = _fill(reason, _labelled(_matches(text, _ZEROS_PATTERN), f"blocked pattern {_ZEROS_PATTERN}"))
        for scope in (None, type_name):
            for pattern in self.patterns.get(scope, ()):
                reason = _fill(reason, _python_fullmatch(text, reason, pattern))
        if self.vendor_lists:
            reason = _fill(reason, _on_subset(lowered, _contains(lowered, "@"), _email_reasons))
            reason = _fill(reason, _on_subset(text, _plus_digits(text), _phone_reasons))
        return reason


def _scoped(listed: Scoped) -> list[tuple[str | None, Iterable[str]]]:
    if isinstance(listed, Mapping):
        return [(scope, values) for scope, values in listed.items()]
    return [(None, listed)]


def _fill(reason: pa.Array, more: pa.Array) -> pa.Array:
    # Most checks block nothing: no copy of a million values then.
    if more.null_count == len(more):
        return reason
    return pc.coalesce(reason, more)


def _contains(text: pa.Array, literal: str) -> np.ndarray:
    """_matches for a literal (no regex engine; null -> False)."""
    return pc.fill_null(pc.match_substring(text, literal), False).to_numpy(zero_copy_only=False)


def _plus_digits(text: pa.Array) -> np.ndarray:
    """A '+' then one or more digits 0-9 and nothing else (the regex ^\\+[0-9]+$), without the regex
    engine (ascii_is_decimal of "" is false)."""
    plus = pc.and_(pc.starts_with(text, "+"), pc.ascii_is_decimal(pc.utf8_slice_codeunits(text, 1)))
    return pc.fill_null(plus, False).to_numpy(zero_copy_only=False)


def _labelled(mask: np.ndarray, label: str) -> pa.Array:
    return pc.if_else(pa.array(mask), pa.scalar(label, pa.large_string()), pa.scalar(None, pa.large_string()))


def _lookup(lowered: pa.Array, table: dict[str, str]) -> pa.Array:
    if not table:
        return _null_strings(len(lowered))
    keys = pa.array(list(table), pa.large_string())
    hit = pc.index_in(lowered, value_set=keys)
    return pc.take(pa.array(list(table.values()), pa.large_string()), hit)


def _python_fullmatch(text: pa.Array, reason: pa.Array, pattern: re.Pattern) -> pa.Array:
    """Config patterns keep Python regex semantics, so they run in Python (distinct values,
    only those not blocked already)."""
    todo = np.flatnonzero(pc.is_null(reason).to_numpy(zero_copy_only=False))
    hits = np.zeros(len(text), dtype=bool)
    hits[todo] = [v is not None and pattern.fullmatch(v) is not None for v in text.take(todo).to_pylist()]
    return _labelled(hits, f"blocked pattern {pattern.pattern}")


def _on_subset(text: pa.Array, mask: np.ndarray, fn: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """fn's reasons for the masked values, null elsewhere (rules that only apply to some values)."""
    return _scatter(len(text), [(mask, fn(text.filter(pa.array(mask))))])


def _email_reasons(emails: pa.Array) -> pa.Array:
    local = pc.list_element(pc.split_pattern(emails, "@", max_splits=1), 0)
    domain = pc.list_element(pc.split_pattern(emails, "@", max_splits=1, reverse=True), 1)
    fake = pc.is_in(emails, value_set=pa.array(_FAKE_EMAILS, pa.large_string())).to_numpy(zero_copy_only=False)
    fake |= pc.is_in(local, value_set=pa.array(_FAKE_LOCAL_PARTS, pa.large_string())).to_numpy(zero_copy_only=False)
    reserved = _reserved_domain(domain)
    return _fill(_labelled(fake, "fake email"), _labelled(reserved, "reserved email domain"))


def _reserved_domain(domain: pa.Array) -> np.ndarray:
    """_matches(domain, _RESERVED_DOMAIN) as literal comparisons (a regex pass costs several)."""
    hit = np.zeros(len(domain), dtype=bool)
    for name in _RESERVED_NAMES:
        hit |= pc.fill_null(pc.or_(pc.equal(domain, name), pc.ends_with(domain, "." + name)), False).to_numpy(
            zero_copy_only=False)
    return hit


def _phone_reasons(phones: pa.Array) -> pa.Array:
    return _labelled(_matches(phones, _JUNK_PHONE), "junk phone")
