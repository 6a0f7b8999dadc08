"""Normalizers, blocklist and hashing (resolver.normalize).

Phone numbers are checked value for value against phonenumbers itself (the oracle), over
hypothesis-generated numbers in many formats and regions.
"""

import ipaddress
import random
import re
import time
import unicodedata

import numpy as np
import pandas as pd
import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unidecode import unidecode

from resolver import normalize as nz
from resolver.kernels.hashing import hash_bytes
from resolver.normalize import (
    Blocklist,
    hash_identifiers,
    normalize_email,
    normalize_identifier,
    normalize_ip,
    normalize_lower,
    normalize_name,
    normalize_phone,
    normalize_trim,
    salesforce_id_18,
)


def values(series: pd.Series) -> list:
    """Series as a list with every missing value as None."""
    return [None if pd.isna(v) else v for v in series]


# ---------------------------------------------------------------------------------------------
# trim / lower
# ---------------------------------------------------------------------------------------------


def test_trim_and_lower():
    raw = pd.Series(["  Abc ", "", "   ", None, np.nan, "x\t"], index=[5, 6, 7, 8, 9, 10], name="col")
    assert values(normalize_trim(raw)) == ["Abc", None, None, None, None, "x"]
    low = normalize_lower(raw)
    assert values(low) == ["abc", None, None, None, None, "x"]
    assert list(low.index) == [5, 6, 7, 8, 9, 10] and low.name == "col" and low.dtype == "str"


def test_numbers_read_as_floats_keep_their_integer_text():
    # An id column with gaps arrives as float64; "2125551234.0" would be a different identifier.
    assert values(normalize_trim(pd.Series([12345.0, np.nan]))) == ["12345", None]
    assert values(normalize_trim(pd.Series([1.5]))) == ["1.5"]


def test_plain_lists_are_accepted():
    assert values(normalize_trim([" a", None])) == ["a", None]


@pytest.mark.parametrize(
    "raw",
    [
        pd.Series([], dtype=object),
        pd.Series([None, np.nan]),
        pd.Series([1, 2]),
        pd.Series([2125550234.0, np.nan]),
        pd.Series(["a"], dtype="category"),
    ],
)
def test_every_function_keeps_length_and_index(raw):
    raw.index = range(10, 10 + len(raw))
    outputs = [
        normalize_trim(raw),
        normalize_lower(raw),
        normalize_email(raw),
        normalize_name(raw),
        normalize_ip(raw),
        *salesforce_id_18(raw),
        *normalize_phone(raw),
        Blocklist.from_config().blocked("x", raw),
    ]
    for out in outputs:
        assert list(out.index) == list(raw.index) and out.dtype == "str"
    assert len(hash_identifiers("x", raw)) == len(raw)


# ---------------------------------------------------------------------------------------------
# email
# ---------------------------------------------------------------------------------------------


def test_email_reference_examples():
    raw = pd.Series(
        [
            "Jane.ONeil@Example.com ",
            "J.a.n.e+news@GoogleMail.com",
            "jane+promo@gmail.com",
            "bob+shop@outlook.com",
            "Bob.Smith@Outlook.com",
        ]
    )
    assert values(normalize_email(raw)) == [
        "jane.oneil@example.com",
        "jane@gmail.com",
        "jane@gmail.com",
        "bob@outlook.com",
        "bob.smith@outlook.com",  # dots only fold for gmail
    ]


def test_email_folding_can_be_switched_off():
    raw = pd.Series(["J.a.n.e+news@GoogleMail.com"])
    assert values(normalize_email(raw, fold_gmail_dots=False, fold_plus_tags=False)) == ["j.a.n.e+news@gmail.com"]
    assert values(normalize_email(raw, fold_gmail_dots=True, fold_plus_tags=False)) == ["jane+news@gmail.com"]
    assert values(normalize_email(raw, fold_gmail_dots=False, fold_plus_tags=True)) == ["j.a.n.e@gmail.com"]


def test_invalid_emails_are_missing():
    raw = pd.Series(
        ["no-at-sign", "two@@x.com", "a@b@c.com", "@x.com", "x@", "jo hn@x.com", "john@x .com", "", " ", None]
    )
    assert values(normalize_email(raw)) == [None] * len(raw)


def test_email_edge_cases():
    raw = pd.Series(["+tag@x.com", ".@gmail.com", "a+b+c@x.com", "José@Exämple.com"])
    assert values(normalize_email(raw)) == ["+tag@x.com", None, "a@x.com", "josé@exämple.com"]


def test_email_is_nfc_normalized():
    decomposed = "Jose\u0301@x.com"  # e + combining acute
    out = normalize_email(pd.Series([decomposed])).iloc[0]
    assert out == unicodedata.normalize("NFC", "josé@x.com") and len(out) == len("josé@x.com")


def email_reference(raw: str, dots: bool, plus: bool) -> str | None:
    """The documented rules, one value at a time."""
    text = unicodedata.normalize("NFC", raw.strip()).lower()
    if text.count("@") != 1 or any(ch.isspace() for ch in text):
        return None
    local, domain = text.split("@")
    if not local or not domain:
        return None
    domain = "gmail.com" if domain == "googlemail.com" else domain
    if plus and "+" in local and not local.startswith("+"):
        local = local.split("+")[0]
    if dots and domain == "gmail.com":
        local = local.replace(".", "")
    return f"{local}@{domain}" if local else None


_email_text = st.text(alphabet="aAbZ19.+-_@ \tÉé\u0301ßØ", max_size=14)
_email_like = st.builds(
    lambda local, domain, pad: f"{pad}{local}@{domain}{pad}",
    st.text(alphabet="aAbZ19.+-_É\u0301", max_size=8),
    st.sampled_from(["gmail.com", "GoogleMail.com", "GMAIL.COM", "outlook.com", "x.io", "", "a b.com"]),
    st.sampled_from(["", " ", "\t"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_email_text, _email_like), max_size=30), st.booleans(), st.booleans())
def test_email_matches_reference(raw, dots, plus):
    got = normalize_email(pd.Series(raw, dtype=object), fold_gmail_dots=dots, fold_plus_tags=plus)
    assert values(got) == [email_reference(v, dots, plus) for v in raw]


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Dr. José O'Neil-Smith Jr.", "jose oneil smith"),
        ("  MARY   ann ", "mary ann"),
        ("Renée Zoë Müller", "renee zoe muller"),
        ("O’Brien", "obrien"),  # typographic apostrophe
        ("Mr. and Mrs. Smith", "and mrs smith"),  # only leading titles go
        ("Mrs Prof Ada Lovelace PhD", "ada lovelace"),
        ("John Smith III", "john smith"),
        ("Smith, John", "smith john"),
        ("Md Rahman", "md rahman"),  # "Md" leads: a name here, not a suffix
        ("Björn Ø. Åberg", "bjorn o aberg"),
        ("Dr.", None),
        ("", None),
        ("...", None),
        (None, None),
    ],
)
def test_normalize_name(raw, expected):
    assert values(normalize_name(pd.Series([raw], dtype=object))) == [expected]


def name_reference(raw: str) -> str | None:
    """The documented rules, one value at a time, with unidecode and Python regexes."""
    text = re.sub(r"['`.]+", "", unidecode(raw).lower())
    text = re.sub(r"[^a-z0-9]+", " ", text).strip()
    text = re.sub(nz._LEADING_TITLES, "", text)
    text = re.sub(nz._TRAILING_SUFFIXES, "", text).strip()
    return text or None


_name_words = st.sampled_from(
    [
        "Dr.",
        "mr",
        "Mrs",
        "Prof",
        "sir",
        "Jr.",
        "SR",
        "iii",
        "PhD",
        "md",
        "José",
        "O'Neil",
        "O’Brien",
        "Smith-Jones",
        "Zoë",
        "ßtraße",
        "Øst",
        "Ñoño",
        "J.R.",
        "Mary",
        "",
        "  ",
        ",",
        "-",
        "`",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.lists(_name_words, max_size=5).map(" ".join), st.text(alphabet="aZ09 .'`-,éüñçøß’\t", max_size=15)
        ),
        max_size=30,
    )
)
def test_name_matches_reference(raw):
    assert values(normalize_name(pd.Series(raw, dtype=object))) == [name_reference(v) for v in raw]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="aB9 .'`-,_\t", max_size=12), max_size=40))
def test_words_equals_the_regex_pipeline(raw):
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(raw, pa.large_string())
    text = pc.replace_substring_regex(pc.ascii_lower(arr), "['`.]+", "")
    expected = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, "[^a-z0-9]+", " "))
    assert nz._words(arr).to_pylist() == expected.to_pylist()
    if len(raw) > 2:  # a sliced array (non-zero offset) too
        assert nz._words(arr.slice(1)).to_pylist() == expected.slice(1).to_pylist()


# ---------------------------------------------------------------------------------------------
# IP addresses
# ---------------------------------------------------------------------------------------------


def test_ip_examples():
    raw = pd.Series(
        ["1.2.3.4", " 10.0.0.1 ", "01.2.3.4", "256.1.1.1", "1.2.3", "2001:DB8:0:0::1", "::ffff:1.2.3.4", "x", "", None]
    )
    assert values(normalize_ip(raw)) == [
        "1.2.3.4",
        "10.0.0.1",
        None,
        None,
        None,
        "2001:db8::1",
        str(ipaddress.ip_address("::ffff:1.2.3.4")),
        None,
        None,
        None,
    ]


def _ip_oracle(text):
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


_octet = st.one_of(
    st.integers(0, 300).map(str), st.from_regex(r"0[0-9]{1,3}", fullmatch=True), st.just(""), st.just("a")
)
_ipv4ish = st.lists(_octet, min_size=3, max_size=5).map(".".join)
_ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_ipv6_upper = st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).exploded.upper())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_ipv4ish, _ipv6, _ipv6_upper, st.text(max_size=12)), max_size=30))
def test_ip_matches_ipaddress(raw):
    assert values(normalize_ip(pd.Series(raw, dtype=object))) == [_ip_oracle(v) for v in raw]


# ---------------------------------------------------------------------------------------------
# Salesforce ids
# ---------------------------------------------------------------------------------------------


def _checksum(id15: str) -> str:
    """The documented algorithm, one id at a time."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    out = ""
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]) if "A" <= ch <= "Z")
        out += alphabet[bits]
    return out


def test_salesforce_reference_example():
    ids, reasons = salesforce_id_18(pd.Series(["0036000000QKv5T", "0036000000QKv5TAAT", " 0036000000QKv5T "]))
    assert values(ids) == ["0036000000QKv5TAAT"] * 3
    assert values(reasons) == [None] * 3


def test_salesforce_bad_checksum_and_junk():
    raw = pd.Series(
        ["0036000000QKv5TAAA", "0036000000QKv5", "0036000000QKv5T!", "003-6000000QKv5T", "", None, "00Q5e00000AbCdEfGh"]
    )
    ids, reasons = salesforce_id_18(raw)
    assert values(ids) == [
        "0036000000QKv5TAAT",
        None,
        None,
        None,
        None,
        None,
        "00Q5e00000AbCdE" + _checksum("00Q5e00000AbCdE"),
    ]
    assert values(reasons) == [
        "bad checksum repaired",
        "not a Salesforce id",
        "not a Salesforce id",
        "not a Salesforce id",
        None,
        None,
        "bad checksum repaired",
    ]


_sfid15 = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=15, max_size=15)


@settings(max_examples=100, deadline=None)
@given(st.lists(_sfid15, max_size=40))
def test_salesforce_15_and_18_forms_agree(ids15):
    long, reasons = salesforce_id_18(pd.Series(ids15, dtype=object))
    assert values(long) == [i + _checksum(i) for i in ids15]
    assert values(reasons) == [None] * len(ids15)
    again, reasons = salesforce_id_18(long)
    assert values(again) == values(long) and values(reasons) == [None] * len(ids15)


# ---------------------------------------------------------------------------------------------
# phone: examples
# ---------------------------------------------------------------------------------------------


def test_phone_examples():
    raw = pd.Series(
        [
            "(212) 555-0134",
            "212.555.0134",
            "+1 212-555-0134",
            "1-212-555-0134",
            "+1 (212) 555-0134",
            "011 44 20 7946 0958",
            "+44 20 7946 0958",
            "+44 (0)20 7946 0958",
            "212-555-0134 x12",
            "abc",
            "12",
            "123-4567",
            "",
            "  ",
            None,
        ],
        index=range(100, 115),
    )
    e164, reasons = normalize_phone(raw)
    assert values(e164) == ["+12125550134"] * 5 + ["+442079460958"] * 3 + ["+12125550134"] + [None] * 6
    assert values(reasons) == [None] * 9 + ["unparseable", "invalid number", "invalid number", None, None, None]
    assert list(e164.index) == list(raw.index) and list(reasons.index) == list(raw.index)


def test_phone_international_prefixes_follow_libphonenumber():
    # US dials out with 011; "00" and "001" are not US international prefixes, so such numbers are
    # read as national digits, which are invalid (exactly what phonenumbers answers).
    e164, reasons = normalize_phone(pd.Series(["011 44 20 7946 0958", "0044 20 7946 0958", "001 212 555 0134"]))
    assert values(e164) == ["+442079460958", None, None]
    assert values(reasons) == [None, "invalid number", "invalid number"]
    e164, _ = normalize_phone(pd.Series(["0044 20 7946 0958", "020 7946 0958"]), default_region="GB")
    assert values(e164) == ["+442079460958", "+442079460958"]


def test_phone_reasons():
    _, reasons = normalize_phone(pd.Series(["+999 123456", "011 12", "1" * 30, "+1 212 555 01349", "+1 2"]))
    assert values(reasons) == ["invalid country code", "too short", "too long", "invalid number", "unparseable"]


def test_too_long_matches_phonenumbers():
    test_length = getattr(phonenumbers.phonenumberutil, "_test_number_length", None)
    if test_length is None:
        pytest.skip("private phonenumbers helper not available")
    too_long = phonenumbers.phonenumberutil.ValidationResult.TOO_LONG
    for region in phonenumbers.SUPPORTED_REGIONS:
        md = phonenumbers.PhoneMetadata.metadata_for_region(region)
        for length in range(25):
            assert nz._too_long(md, length) == (test_length("1" * length, md) == too_long), (region, length)


# ---------------------------------------------------------------------------------------------
# phone: the vectorized path equals phonenumbers value for value
# ---------------------------------------------------------------------------------------------


def oracle(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def oracle_reason(raw: str, region: str) -> str | None:
    return None if not raw.strip() else nz._phone_oracle(raw, region)[1]


def assert_same_as_phonenumbers(raw: list[str], region: str) -> None:
    e164, reasons = normalize_phone(pd.Series(raw, dtype=object), default_region=region)
    got = values(e164)
    for value, number, reason in zip(raw, got, values(reasons), strict=True):
        assert number == oracle(value, region), (value, region)
        assert reason == oracle_reason(value, region), (value, region)


REGIONS = ["US", "CA", "GB", "DE", "IT", "AG", "AU", "BR", "IN", "JP", "RU", "FR"]
SEPARATORS = ["", " ", "-", ".", "/", "(", ")", "  ", " - "]

_digits = st.text(alphabet="0123456789", min_size=0, max_size=18)
_separator = st.sampled_from(SEPARATORS)


@st.composite
def formatted(draw, digits: str) -> str:
    """The digits with random separators in between."""
    out = []
    for ch in digits:
        if draw(st.booleans()) and draw(st.booleans()):
            out.append(draw(_separator))
        out.append(ch)
    return "".join(out)


@st.composite
def nanp_numbers(draw) -> str:
    area = draw(st.from_regex(r"[2-9][0-9]{2}", fullmatch=True) | st.from_regex(r"[0-9]{3}", fullmatch=True))
    exchange = draw(st.from_regex(r"[2-9][0-9]{2}", fullmatch=True) | st.from_regex(r"[0-9]{3}", fullmatch=True))
    line = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    pattern = draw(
        st.sampled_from(
            [
                "{a}-{e}-{l}",
                "({a}) {e}-{l}",
                "{a}.{e}.{l}",
                "{a}{e}{l}",
                "{a} {e} {l}",
                "1-{a}-{e}-{l}",
                "1{a}{e}{l}",
                "1 ({a}) {e}-{l}",
                "+1 {a} {e} {l}",
                "+1 ({a}) {e}-{l}",
                "+1{a}{e}{l}",
                "(+1) {a}/{e}-{l}",
                "011 1 {a} {e} {l}",
                "001 {a} {e} {l}",
                "00 1 {a} {e} {l}",
                " {a} {e} {l} ",
                "{e}-{l}",
            ]
        )
    )
    return pattern.format(a=area, e=exchange, l=line)


@st.composite
def prefixed_digits(draw) -> str:
    prefix = draw(st.sampled_from(["", "+", "00", "011", "001", "+0", "0", "1", "++", "(+", "+ ", "+(", "-", "."]))
    return prefix + draw(formatted(draw(_digits)))


@st.composite
def other_countries(draw) -> str:
    cc = draw(st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)))
    prefix = draw(st.sampled_from(["+", "00", "011", "+ ", "+(", "0011"]))
    trunk = draw(st.sampled_from(["", " ", " (0) ", "0", " 0"]))
    rest = draw(st.text(alphabet="0123456789", min_size=2, max_size=14))
    return f"{prefix}{cc}{trunk}{draw(formatted(rest))}"


@st.composite
def example_numbers(draw) -> str:
    """Real example numbers of every region and type, in every format, sometimes with a digit changed."""
    region = draw(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)))
    kind = draw(
        st.sampled_from(
            [
                phonenumbers.PhoneNumberType.FIXED_LINE,
                phonenumbers.PhoneNumberType.MOBILE,
                phonenumbers.PhoneNumberType.TOLL_FREE,
            ]
        )
    )
    number = phonenumbers.example_number_for_type(region, kind)
    if number is None:
        return "+" + draw(_digits)
    style = draw(
        st.sampled_from(
            [
                phonenumbers.PhoneNumberFormat.E164,
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                phonenumbers.PhoneNumberFormat.NATIONAL,
            ]
        )
    )
    text = phonenumbers.format_number(number, style)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text) - 1))
        if text[at].isdigit():
            text = text[:at] + draw(st.sampled_from("0123456789")) + text[at + 1 :]
    return text


@st.composite
def with_extension(draw) -> str:
    base = draw(nanp_numbers() | other_countries() | prefixed_digits())
    label = draw(
        st.sampled_from(["x", "X", "ext", "ext.", "EXT", "Ext.", "extension", "#", ",", ";", "ext:", "x.", "/x", "e"])
    )
    gap = draw(st.sampled_from(["", " ", "  ", "\t", "-", "/"]))
    return (
        base
        + gap
        + label
        + draw(st.sampled_from(["", " ", "-"]))
        + draw(_digits)
        + draw(st.sampled_from(["", "#", " "]))
    )


garbage = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\t",
            "n/a",
            "N/A",
            "unknown",
            "1-800-FLOWERS",
            "tel:+1-212-555-0134",
            "212\t555\t0134",
            "２１２５５５０１３４",
            "+",
            "++",
            "+1",
            "12",
            "1",
            "()",
            "212,555,0134",
            "0" * 260,
        ]
    ),
    st.text(max_size=20),
    st.text(alphabet="0123456789+-() .x#", max_size=25),
)

phone_inputs = st.one_of(
    nanp_numbers(), prefixed_digits(), other_countries(), example_numbers(), with_extension(), garbage
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(phone_inputs, max_size=40))
def test_phone_equals_phonenumbers_us(raw):
    assert_same_as_phonenumbers(raw, "US")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(phone_inputs, max_size=30), st.sampled_from(REGIONS))
def test_phone_equals_phonenumbers_other_regions(raw, region):
    assert_same_as_phonenumbers(raw, region)


def test_phone_equals_phonenumbers_on_a_large_batch():
    """One big batch too: the vectorized path groups by country code and region."""
    rnd = random.Random(5)
    raw = []
    for _ in range(4000):
        area, exchange, line = rnd.randrange(100, 1000), rnd.randrange(100, 1000), rnd.randrange(10000)
        cc = rnd.choice(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE))
        rest = "".join(rnd.choice("0123456789") for _ in range(rnd.randrange(4, 13)))
        raw.append(
            rnd.choice(
                [
                    f"({area}) {exchange}-{line:04d}",
                    f"+1 {area} {exchange} {line:04d}",
                    f"1{area}{exchange}{line:04d}",
                    f"+{cc} {rest}",
                    f"011{cc}{rest}",
                    f"{rest}",
                    f"{area}-{exchange}-{line:04d} x{rest[:3]}",
                ]
            )
        )
    for region in ("US", "GB", "CA"):
        assert_same_as_phonenumbers(raw, region)


def test_phone_speed_sanity(capsys):
    rnd = random.Random(1)
    raw = [
        rnd.choice(
            ["({a}) {e}-{l}", "{a}.{e}.{l}", "+1 {a}-{e}-{l}", "1{a}{e}{l}", "+44 20 {e}{l}", "{a}-{e}-{l} x12"]
        ).format(a=rnd.randrange(200, 1000), e=rnd.randrange(200, 1000), l=f"{rnd.randrange(10000):04d}")
        for _ in range(200_000)
    ]
    start = time.perf_counter()
    e164, _ = normalize_phone(pd.Series(raw))
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nnormalize_phone: 200k numbers in {elapsed:.2f}s ({e164.notna().mean():.0%} valid)")
    assert len(e164) == len(raw)


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------


def test_normalize_identifier_dispatch():
    raw = pd.Series([" Foo@Gmail.com ", "bad", None])
    out, reason = normalize_identifier("email", raw)
    assert values(out) == ["foo@gmail.com", None, None]
    assert values(reason) == [None, "invalid email", None]
    out, _ = normalize_identifier(
        "email", pd.Series(["a.b+c@gmail.com"]), email_options={"fold_gmail_dots": False, "fold_plus_tags": True}
    )
    assert values(out) == ["a.b@gmail.com"]
    out, reason = normalize_identifier("phone", pd.Series(["020 7946 0958"]), default_region="GB")
    assert values(out) == ["+442079460958"] and values(reason) == [None]
    out, reason = normalize_identifier("sfid", pd.Series(["0036000000QKv5T"]))
    assert values(out) == ["0036000000QKv5TAAT"]
    out, reason = normalize_identifier("ip", pd.Series(["1.2.3.4", "nope"]))
    assert values(out) == ["1.2.3.4", None] and values(reason) == [None, "invalid ip address"]
    out, reason = normalize_identifier("trim", pd.Series([" A "]))
    assert values(out) == ["A"] and values(reason) == [None]
    out, reason = normalize_identifier("lower", pd.Series([" A "]))
    assert values(out) == ["a"] and values(reason) == [None]


def test_unknown_normalizer_is_named():
    with pytest.raises(ValueError, match="soundex"):
        normalize_identifier("soundex", pd.Series(["x"]))


# ---------------------------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------------------------


def test_hash_is_deterministic_and_typed():
    raw = pd.Series(["jane@gmail.com", None, "jane@gmail.com", "+12125550134"])
    first = hash_identifiers("email", raw)
    assert first.dtype == np.uint64
    assert first[1] == 0 and first[0] == first[2] and first[0] != first[3] and first[0] != 0
    assert np.array_equal(first, hash_identifiers("email", raw.astype(object)))  # input dtype does not matter
    assert not np.array_equal(first[[0]], hash_identifiers("phone", raw)[[0]])  # same value, other type


def test_hash_values_are_stable_across_runs_and_platforms():
    # FNV-1a + splitmix64 of "email\x1fjane@gmail.com": a stored identifier map stays valid only
    # while these numbers do not change.
    got = hash_identifiers("email", pd.Series(["jane@gmail.com", "a"]))
    assert got.tolist() == [hash_bytes(b"email\x1fjane@gmail.com"), hash_bytes(b"email\x1fa")]
    assert got.tolist() == [13893201158757964300, 15582311522022163674]


def test_hash_of_all_missing():
    assert hash_identifiers("x", pd.Series([None, np.nan], dtype=object)).tolist() == [0, 0]
    assert hash_identifiers("x", pd.Series([], dtype=object)).tolist() == []


# ---------------------------------------------------------------------------------------------
# blocklist
# ---------------------------------------------------------------------------------------------


def test_vendor_blocked_values():
    block = Blocklist.from_config()
    raw = pd.Series(
        [
            "NULL",
            "Anonymous",
            "-1",
            "void",
            "abc123",
            "invalid",
            "undefined",
            "Unknown",
            "not set",
            "00000000-0000-0000-0000-000000000000",
            "0",
            "000-000-0000",
            "real-user-42",
            None,
            "",
        ]
    )
    assert values(block.blocked("user_id", raw)) == [
        "blocked value (segment)",
        "blocked value (segment)",
        "blocked value (segment)",
        "blocked value (segment)",
        "blocked value (segment)",
        "blocked value (adobe)",
        "blocked value (tealium)",
        "blocked value (tealium)",
        "blocked value (tealium)",
        "blocked pattern ^[0-]*$",
        "blocked pattern ^[0-]*$",
        "blocked pattern ^[0-]*$",
        None,
        None,
        "blocked value (adobe)",
    ]


def test_fake_emails_are_blocked():
    block = Blocklist.from_config()
    raw = pd.Series(
        [
            "test@test.com",
            "ASDF@asdf.com",
            "test@gmail.com",
            "noreply@shop.com",
            "no-reply@x.io",
            "donotreply@x.io",
            "jane@example.com",
            "jane@mail.example.org",
            "a@foo.test",
            "a@foo.invalid",
            "a@localhost",
            "jane@gmail.com",
            "jane@examples.com",
        ]
    )
    assert values(block.blocked("email", raw)) == ["fake email"] * 6 + ["reserved email domain"] * 5 + [None, None]


def test_junk_phones_are_blocked():
    block = Blocklist.from_config()
    raw = pd.Series(
        [
            "+11111111111",  # one digit repeated
            "+10000000000",
            "+12222222222",
            "+11234567890",  # sequential
            "+12125550123",  # NANP fictional 555-01XX
            "+12125551212",  # 555-1212
            "+12125550234",
            "+14155552671",
            "+442079460958",
        ]
    )
    assert values(block.blocked("phone", raw)) == ["junk phone"] * 6 + [None] * 3


def test_config_values_and_patterns():
    block = Blocklist.from_config(values=["Guest", "kiosk-1"], patterns=[r"temp_\d+", r"(?i)demo.*"])
    raw = pd.Series(["guest", "KIOSK-1", "temp_12", "temp_12x", "Demo-user", "alice"], index=list("abcdef"))
    out = block.blocked("user_id", raw)
    assert list(out.index) == list("abcdef")
    assert values(out) == [
        "blocked value (config)",
        "blocked value (config)",
        r"blocked pattern temp_\d+",
        None,
        "blocked pattern (?i)demo.*",
        None,
    ]


def test_config_lists_can_be_scoped_to_one_type():
    block = Blocklist.from_config(values={"device_id": ["shared-ipad"]}, patterns={"user_id": ["x+"]})
    raw = pd.Series(["shared-ipad", "xxx"])
    assert values(block.blocked("device_id", raw)) == ["blocked value (config)", None]
    assert values(block.blocked("user_id", raw)) == [None, "blocked pattern x+"]


def test_vendor_lists_can_be_switched_off():
    block = Blocklist.from_config(values=["foo"], vendor_lists=False)
    raw = pd.Series(["null", "0000", "test@test.com", "+11111111111", "FOO"])
    assert values(block.blocked("user_id", raw)) == [None, None, None, None, "blocked value (config)"]


def test_blocked_values_work_on_normalized_output():
    block = Blocklist.from_config()
    email = normalize_email(pd.Series([" Test@Test.com ", "jane@gmail.com"]))
    assert values(block.blocked("email", email)) == ["fake email", None]
    phone, _ = normalize_phone(pd.Series(["(212) 555-1212", "(212) 555-0234"]))
    assert values(block.blocked("phone", phone)) == ["junk phone", None]


def test_dates_in_every_accepted_shape_and_nothing_impossible():
    values = pd.Series(["1985-10-22", "1985/10/22", "10/22/1985", "22.10.1985", "19851022", "10221985",
                        "02/30/1990", "13011990", "1985-13-01", "yesterday", None], dtype="str")
    got = nz.normalize_date(values).tolist()
    assert got[:6] == ["1985-10-22"] * 6
    assert all(pd.isna(v) for v in got[6:])
