"""What each column holds, told from its values: `detect_column` for one column, `detect_frame`
for a file (the record key, year/month/day parts, one column per kind).

Content decides; the column name only breaks ties that values cannot (a surname and a suburb are
both single capitalised words) and names columns about someone else (spouse_, employer_...),
which are skipped. Every decision carries a reason that `resolver init` writes into the config.

The order of the tests matters and is the documentation of the rules:

1. missing in almost every row -> empty; one value -> constant (both skipped);
2. emails (an @ and a domain); US SSN-shaped ids; phones (7-15 digits in phone punctuation that
   libphonenumber accepts: US rules unless values carry "+" or a trunk "0", then the region that
   validates most; bare digit strings only when the name says phone); dates (one format for at
   least 80% of the values: ISO, YYYY/MM/DD, MM/DD/YYYY, DD/MM/YYYY, DD.MM.YYYY, YYYYMMDD, MMDDYYYY; a birth
   date when the name says so or the years span 15+);
3. digit strings: year / month / day parts, postcodes (one length of 3-6 digits, values shared by
   many rows), ids (7+ digits, or mostly distinct), street numbers (1-6 digits of any length, with
   a letter or a range), other numbers (skipped);
4. short codes: postcodes of the UK / Canada / Netherlands, ids (digits and letters, mostly distinct);
5. words: flags, gender, state and country (vocabularies), initials, first names (at least 12% of
   the rows start with a full given name of the `nicknames` package's table), full names (2-4 words starting
   with a given name), streets (a street-type word after the first), cities (place words: "port",
   "mount", "lake", "north"... in 4% of the rows, or the name says city), categories (few distinct
   values), free text (long), unit designations, else last names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from resolver.matching.compare import nickname_neighbours
from resolver.normalize import normalize_date, normalize_phone

# Kinds. Compared kinds become attributes; the others are skipped with their reason.
KEY, ID = "record key", "id"
FIRST_NAME, LAST_NAME, FULL_NAME, MIDDLE = "first name", "last name", "full name", "middle name"
EMAIL, PHONE = "email", "phone"
BIRTH_DATE, DATE, TIMESTAMP = "birth date", "date", "timestamp"
YEAR, MONTH, DAY = "year", "month", "day"
POSTCODE, STREET_NUMBER, STREET, UNIT = "postcode", "street number", "street", "unit"
CITY, STATE, COUNTRY = "city", "state", "country"
GENDER = "gender"
NUMBER, CATEGORY, FLAG, TEXT = "number", "category", "flag", "free text"
EMPTY, CONSTANT, EXCLUDED, DUPLICATE = "empty", "constant", "excluded", "second column"
OTHER_ENTITY = "about someone else"

COMPARED = (FIRST_NAME, LAST_NAME, FULL_NAME, MIDDLE, EMAIL, PHONE, BIRTH_DATE, YEAR, MONTH, DAY, POSTCODE,
            STREET_NUMBER, STREET, CITY, STATE, COUNTRY, GENDER, ID)

REPEAT = " [repeated "  # sample.py names a repeated header "name [repeated 2]"
NULL_TOKENS = frozenset({"na", "n/a", "null", "none", "nan", "\\n", "-", "--", "?", "unknown", "nil"})

_MIN_SHARE = 0.8  # share of the values that must fit a shape

# Column-name words (the name split at _, -, spaces and camelCase) that break ties.
HINTS: dict[str, frozenset[str]] = {
    KEY: frozenset({"id", "key", "rec", "record", "uuid", "guid", "pk", "row", "recid"}),
    FIRST_NAME: frozenset({"first", "given", "fname", "forename", "firstname", "givenname", "christian"}),
    LAST_NAME: frozenset({"last", "surname", "family", "lname", "lastname", "familyname", "sur"}),
    FULL_NAME: frozenset({"name", "fullname"}),
    MIDDLE: frozenset({"middle", "mi", "middlename", "middleinitial", "initial"}),
    EMAIL: frozenset({"email", "mail", "emailaddress"}),
    PHONE: frozenset({"phone", "tel", "telephone", "mobile", "cell", "phonenumber"}),
    BIRTH_DATE: frozenset({"birth", "dob", "born", "birthdate", "birthday", "bday"}),
    POSTCODE: frozenset({"zip", "zipcode", "postcode", "postal", "postalcode", "plz", "post"}),
    STREET_NUMBER: frozenset({"number", "no", "num", "nr", "house", "housenumber", "streetnumber", "streetno"}),
    STREET: frozenset({"street", "address", "addr", "road", "line1", "address1", "line", "streetname"}),
    CITY: frozenset({"city", "suburb", "town", "locality", "municipality", "place", "village"}),
    STATE: frozenset({"state", "province", "region", "territory"}),
    COUNTRY: frozenset({"country", "nation", "countrycode"}),
    GENDER: frozenset({"gender", "sex"}),
    ID: frozenset({"id", "ssn", "sin", "nin", "passport", "licence", "license", "national", "soc", "sec", "social",
                   "tax", "nid", "identifier", "uuid", "number", "no", "nr", "code"}),
    YEAR: frozenset({"year", "yr", "yob", "yyyy"}),
    MONTH: frozenset({"month", "mon", "mm", "mob"}),
    DAY: frozenset({"day", "dd"}),
}
# Name words of columns that describe another person or thing: never evidence about this record.
OTHER_ENTITIES = frozenset({
    "spouse", "dependent", "dependant", "guardian", "employer", "household", "parent", "mother", "father", "child",
    "children", "partner", "emergency", "account", "company", "organization", "organisation", "org", "manager",
    "owner", "agent", "beneficiary", "relative", "referrer", "referral", "doctor", "physician", "master",
    "converted", "reports", "assistant",
})
SSN_WORDS = frozenset({"ssn", "soc", "social", "sin", "nin"})


def name_words(column: str) -> list[str]:
    """"MailingPostalCode" -> [mailing, postal, code]; "date_of_birth" -> [date, of, birth]."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", column)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def hinted(column: str, kind: str) -> bool:
    words = name_words(column)
    joined = "".join(words)
    return any(w in HINTS.get(kind, ()) for w in words) or joined in HINTS.get(kind, ())


# --------------------------------------------------------------------------------- vocabularies
def given_names() -> frozenset[str]:
    """The full given names of the nickname table: those it lists a shorter nickname for (about a
    thousand). Its short forms are left out: many are words or surnames too (bill, art, will),
    and the detection thresholds below count rows that start with a given name."""
    return frozenset(name for name, others in nickname_neighbours().items() if any(len(o) < len(name) for o in others))


US_STATES = {
    "al": "alabama", "ak": "alaska", "az": "arizona", "ar": "arkansas", "ca": "california", "co": "colorado",
    "ct": "connecticut", "de": "delaware", "fl": "florida", "ga": "georgia", "hi": "hawaii", "id": "idaho",
    "il": "illinois", "in": "indiana", "ia": "iowa", "ks": "kansas", "ky": "kentucky", "la": "louisiana",
    "me": "maine", "md": "maryland", "ma": "massachusetts", "mi": "michigan", "mn": "minnesota",
    "ms": "mississippi", "mo": "missouri", "mt": "montana", "ne": "nebraska", "nv": "nevada",
    "nh": "new hampshire", "nj": "new jersey", "nm": "new mexico", "ny": "new york", "nc": "north carolina",
    "nd": "north dakota", "oh": "ohio", "ok": "oklahoma", "or": "oregon", "pa": "pennsylvania",
    "ri": "rhode island", "sc": "south carolina", "sd": "south dakota", "tn": "tennessee", "tx": "texas",
    "ut": "utah", "vt": "vermont", "va": "virginia", "wa": "washington", "wv": "west virginia",
    "wi": "wisconsin", "wy": "wyoming", "dc": "district of columbia", "pr": "puerto rico",
}
_OTHER_STATES = {  # Australia, Canada, a few more
    "nsw", "vic", "qld", "sa", "wa", "tas", "nt", "act", "new south wales", "victoria", "queensland",
    "south australia", "western australia", "tasmania", "northern territory", "australian capital territory",
    "on", "qc", "bc", "ab", "mb", "sk", "ns", "nb", "nl", "pe", "yt", "nu", "ontario", "quebec",
    "british columbia", "alberta", "manitoba", "saskatchewan", "nova scotia", "new brunswick",
}
STATES = frozenset(US_STATES) | frozenset(US_STATES.values()) | frozenset(_OTHER_STATES)
COUNTRIES = frozenset({
    "us", "usa", "u.s.", "u.s.a.", "united states", "united states of america", "america", "uk", "gb", "gbr",
    "united kingdom", "great britain", "england", "scotland", "wales", "ireland", "ie", "irl", "ca", "can",
    "canada", "au", "aus", "australia", "nz", "nzl", "new zealand", "de", "deu", "germany", "deutschland", "fr",
    "fra", "france", "es", "esp", "spain", "españa", "it", "ita", "italy", "nl", "nld", "netherlands", "be",
    "belgium", "ch", "switzerland", "at", "austria", "se", "sweden", "no", "norway", "dk", "denmark", "fi",
    "finland", "pl", "poland", "pt", "portugal", "mx", "mex", "mexico", "br", "bra", "brazil", "ar",
    "argentina", "in", "ind", "india", "cn", "china", "jp", "japan", "kr", "korea", "sg", "singapore", "za",
    "south africa", "ng", "nigeria", "ke", "kenya", "eg", "egypt", "ae", "uae", "united arab emirates",
})
GENDERS = frozenset({"m", "f", "male", "female", "man", "woman", "u", "x", "other", "nb", "non-binary",
                     "nonbinary", "w", "unspecified", "not stated"})
FLAGS = frozenset({"true", "false", "t", "f", "yes", "no", "y", "n", "0", "1"})
STREET_WORDS = frozenset({
    "st", "street", "rd", "road", "ave", "av", "avenue", "dr", "drive", "ln", "lane", "ct", "court", "pl",
    "place", "blvd", "boulevard", "way", "wy", "cres", "crescent", "cr", "tce", "terrace", "pde", "parade",
    "hwy", "highway", "cir", "circle", "circuit", "close", "cl", "sq", "square", "trl", "trail", "pkwy",
    "parkway", "gardens", "gdns", "grove", "row", "mews", "walk", "esplanade", "loop", "path", "pike",
    "expressway", "fwy", "avenu", "stre", "rte", "route",
})
PLACE_WORDS = frozenset({
    "port", "mount", "mt", "lake", "lakes", "north", "south", "east", "west", "new", "saint", "st", "san",
    "santa", "fort", "ft", "city", "beach", "heights", "hills", "springs", "falls", "creek", "bay", "valley",
    "island", "point", "harbor", "harbour", "village", "park", "junction", "glen", "vale", "upper", "lower",
    "los", "las", "el", "river", "plains", "ridge", "forest", "gardens", "downs", "head", "heads", "grove",
})
_UNITS = r"^(?:apt|apartment|unit|suite|ste|flat|fl|floor|no|#|lot|room|po box|p\.o\.)\b"


# ------------------------------------------------------------------------------------- profile
@dataclass
class Profile:
    """A column's values (trimmed text, null tokens out) and the counts every test reads."""

    column: str
    rows: int
    values: pd.Series  # non-missing, trimmed, original case
    lower: pd.Series
    distinct: int
    top_count: int

    @classmethod
    def of(cls, column: str, series: pd.Series) -> Profile:
        text = series.astype("str").str.strip()
        lower = text.str.lower()
        keep = text.notna() & (text != "") & ~lower.isin(NULL_TOKENS)
        values, lower = text[keep].reset_index(drop=True), lower[keep].reset_index(drop=True)
        counts = values.value_counts()
        return cls(column, len(series), values, lower, len(counts), int(counts.iloc[0]) if len(counts) else 0)

    @property
    def filled(self) -> int:
        return len(self.values)

    @property
    def fill(self) -> float:
        return self.filled / self.rows if self.rows else 0.0

    @property
    def distinct_share(self) -> float:
        return self.distinct / self.filled if self.filled else 0.0

    def share(self, mask: pd.Series | np.ndarray) -> float:
        return float(np.mean(mask)) if self.filled else 0.0

    def matches(self, pattern: str, lower: bool = False) -> float:
        return self.share((self.lower if lower else self.values).str.fullmatch(pattern).fillna(False).to_numpy(bool))


@dataclass(frozen=True)
class Detection:
    column: str
    kind: str
    reason: str
    detail: dict = field(default_factory=dict, compare=False)  # date format, phone region, part...

    @property
    def compared(self) -> bool:
        return self.kind in COMPARED


# ------------------------------------------------------------------------------------- content
EMAIL_RE = r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}"
SSN_RE = r"\d{3}-\d{2}-\d{4}"
_PHONE_SHAPE = r"\+?[\d\s().\-/]{7,22}(?:\s*(?:x|ext\.?|#)\s*\d{1,6})?"
PHONE_REGIONS = ("US", "GB", "CA", "AU", "NZ", "IE", "DE", "FR", "NL", "ES", "IT", "IN", "BR", "MX", "ZA")
_STREET_NUMBER = r"\d{1,6}[a-z]?(?:\s?[-/]\s?\d{1,6}[a-z]?)?|[a-z]\s?\d{1,6}"
_POSTCODES = {  # alphanumeric postcodes
    "UK": r"[a-z]{1,2}\d[a-z\d]?\s*\d[a-z]{2}",
    "Canada": r"[a-z]\d[a-z]\s?\d[a-z]\d",
    "Netherlands": r"\d{4}\s?[a-z]{2}",
}


@dataclass(frozen=True)
class DateFormat:
    name: str  # as written in the reason
    shape: str  # full-match regex of the written value
    strptime: str  # the format of its first 10 characters
    day_first: bool | None = None  # for slash dates: which reading this is


DATE_FORMATS = (
    DateFormat("YYYY-MM-DD", r"\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)?", "%Y-%m-%d"),
    DateFormat("YYYY/MM/DD", r"\d{4}/\d{2}/\d{2}", "%Y/%m/%d"),
    DateFormat("YYYYMMDD", r"\d{8}", "%Y%m%d"),
    DateFormat("MMDDYYYY", r"\d{8}", "%m%d%Y", day_first=False),
    DateFormat("MM/DD/YYYY", r"\d{2}/\d{2}/\d{4}", "%m/%d/%Y", day_first=False),
    DateFormat("DD/MM/YYYY", r"\d{2}/\d{2}/\d{4}", "%d/%m/%Y", day_first=True),
    DateFormat("M/D/YYYY", r"\d{1,2}/\d{1,2}/\d{4}", "%m/%d/%Y", day_first=False),
    DateFormat("D/M/YYYY", r"\d{1,2}/\d{1,2}/\d{4}", "%d/%m/%Y", day_first=True),
    DateFormat("DD.MM.YYYY", r"\d{2}\.\d{2}\.\d{4}", "%d.%m.%Y"),
    DateFormat("DD-MM-YYYY", r"\d{2}-\d{2}-\d{4}", "%d-%m-%Y", day_first=True),
    DateFormat("MM-DD-YYYY", r"\d{2}-\d{2}-\d{4}", "%m-%d-%Y", day_first=False),
)


def _parsed_dates(p: Profile, fmt: DateFormat) -> pd.Series:
    fits = p.values.str.fullmatch(fmt.shape).fillna(False)
    text = p.values.where(fits).str.slice(0, 10)  # an ISO timestamp's date
    return pd.to_datetime(text, format=fmt.strptime, errors="coerce")


def _date_format(p: Profile) -> tuple[DateFormat, pd.Series] | None:
    """The format most values are written in (at least 80% valid dates between 1800 and 2100);
    slash dates read month first unless some first field is over 12."""
    best = None
    for fmt in DATE_FORMATS:
        if p.matches(fmt.shape) < _MIN_SHARE:
            continue
        parsed = _parsed_dates(p, fmt)
        ok = parsed.notna() & parsed.dt.year.between(1800, 2100)
        share = p.share(ok.to_numpy(bool))
        if share >= _MIN_SHARE and (best is None or share > best[2] + 0.01):
            best = (fmt, parsed.where(ok), share)
    return None if best is None else (best[0], best[1])


def _readable_by_normalizer(p: Profile, share_of: float) -> bool:
    """Whether resolver.normalize.normalize_date reads (almost) every value this detector read."""
    sample = p.values.drop_duplicates().head(2000).reset_index(drop=True)
    read = normalize_date(sample).notna().mean() if len(sample) else 0.0
    return bool(read >= share_of - 0.02)


def detect_date(p: Profile) -> Detection | None:
    found = _date_format(p)
    if found is None:
        return None
    fmt, parsed = found
    years = parsed.dt.year.dropna()
    low, high = (int(years.quantile(0.05)), int(years.quantile(0.95))) if len(years) else (0, 0)
    readable = _readable_by_normalizer(p, p.share(parsed.notna().to_numpy(bool)))
    detail = {"format": fmt.name, "readable": readable, "years": (low, high)}
    timed = p.values.str.contains(r"[T ]\d{2}:\d{2}", regex=True).fillna(False)
    midnight = p.values.str.contains(r"[T ]00:00(?::00(?:\.0+)?)?(?:Z|[+-]00:?00)?$", regex=True).fillna(False)
    how = f"{p.share(parsed.notna().to_numpy(bool)):.0%} {fmt.name} dates, years {low}-{high}"
    if p.share((timed & ~midnight).to_numpy(bool)) > 0.5:
        return Detection(p.column, TIMESTAMP, f"{how} with times of day; not compared", detail)
    if hinted(p.column, BIRTH_DATE):
        return Detection(p.column, BIRTH_DATE, f"{how}; the name says birth", detail)
    if high - low >= 15 and high <= date.today().year:
        return Detection(p.column, BIRTH_DATE, f"{how}: decades apart, as birth dates are", detail)
    return Detection(p.column, DATE, f"{how}: not a birth date (the years span {high - low}); not compared", detail)


def detect_phone(p: Profile) -> Detection | None:
    if p.matches(_PHONE_SHAPE) < _MIN_SHARE:
        return None
    digits = p.values.str.replace(r"\D", "", regex=True).str.len()
    if p.share(digits.between(7, 15).to_numpy(bool)) < _MIN_SHARE:
        return None
    if p.matches(r"\d+") >= 0.9 and not hinted(p.column, PHONE):
        return None  # bare digit strings are ids or numbers unless the name says phone
    sample = p.values.drop_duplicates().head(2000).reset_index(drop=True)
    # A bare digit string is a phone only by US rules: elsewhere too many ids pass as numbers.
    formatted = sample.str.match(r"^\s*(?:\+|0)").mean() > 0.3
    regions = PHONE_REGIONS if formatted else ("US",)
    scores = {r: float(normalize_phone(sample, r)[0].notna().mean()) for r in regions}
    region = max(scores, key=scores.get)
    if scores[region] < 0.6:
        return None
    return Detection(p.column, PHONE, f"{scores[region]:.0%} valid phone numbers ({region} rules)", {"region": region})


def _ints(p: Profile) -> pd.Series:
    return pd.to_numeric(p.values, errors="coerce")


def detect_digits(p: Profile) -> Detection | None:
    """Columns of digit strings: date parts, postcodes, ids, street numbers, numbers."""
    digits = p.values.str.fullmatch(r"\d+").fillna(False)
    if p.share(digits.to_numpy(bool)) < 0.95:
        if p.matches(r"\d{5}-\d{4}|\d{5}") >= 0.95 and p.matches(r"\d{5}-\d{4}") > 0:
            return Detection(p.column, POSTCODE, "US ZIP / ZIP+4 codes")
        if p.matches(r"-?\d+(?:\.\d+)?") >= 0.95:
            return Detection(p.column, NUMBER, "numbers with decimals: not compared")
        return None
    numbers, lengths = _ints(p), p.values.str.len()
    length_counts = lengths.value_counts(normalize=True)
    common_length, common_share = int(length_counts.index[0]), float(length_counts.iloc[0])
    padded = p.share(p.values.str.match(r"0\d").fillna(False).to_numpy(bool))
    shared = p.distinct_share < 0.6 or p.top_count >= max(3, 0.002 * p.filled)
    yearly = numbers.between(1900, 2100).mean() >= 0.95 and p.distinct >= 3
    if common_length == 4 and yearly and not hinted(p.column, POSTCODE):
        return Detection(p.column, YEAR, f"years {int(numbers.min())}-{int(numbers.max())}")
    if numbers.between(1, 12).mean() >= 0.98 and p.distinct >= 6 and lengths.max() <= 2:
        return Detection(p.column, MONTH, "numbers 1-12")
    days = numbers.between(1, 31).mean() >= 0.98 and (numbers > 12).mean() > 0.1
    if days and lengths.max() <= 2 and p.distinct >= 15:
        return Detection(p.column, DAY, "numbers 1-31")
    if common_share >= 0.9 and 3 <= common_length <= 6 and shared:
        return Detection(p.column, POSTCODE, f"{common_share:.0%} are {common_length} digits, "
                                              f"{p.filled / max(p.distinct, 1):.1f} rows a value")
    if lengths.mean() >= 7 or (common_share >= 0.9 and common_length >= 5) or padded > 0.05:
        return Detection(p.column, ID, f"digit strings of {int(lengths.min())}-{int(lengths.max())} digits, "
                                        f"{p.distinct_share:.0%} distinct")
    if numbers.max() <= 120:
        return Detection(p.column, NUMBER, f"small numbers ({int(numbers.min())}-{int(numbers.max())}: "
                                            "an age or a count); not compared")
    return Detection(p.column, STREET_NUMBER, f"numbers of {int(lengths.min())}-{int(lengths.max())} digits",
                     {"tentative": True})


def detect_code(p: Profile) -> Detection | None:
    """Short codes with letters and digits: postcodes, street numbers, ids."""
    for country, pattern in _POSTCODES.items():
        if p.matches(pattern, lower=True) >= _MIN_SHARE:
            return Detection(p.column, POSTCODE, f"{country} postcodes")
    if p.matches(_STREET_NUMBER, lower=True) >= 0.9 and p.matches(r"\d{1,6}", lower=True) >= 0.5:
        return Detection(p.column, STREET_NUMBER, "house numbers (digits, a letter or a range)", {"tentative": True})
    postcode = p.lower.str.fullmatch("|".join([r"\d{4,5}(?:-\d{4})?", *_POSTCODES.values()])).fillna(False)
    if p.share(postcode.to_numpy(bool)) >= 0.9 and (p.distinct_share < 0.6 or p.top_count >= 3):
        return Detection(p.column, POSTCODE, "postcodes of several countries (US, UK, Canada...)")
    idlike = p.values.str.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-.:/]{3,}").fillna(False)
    with_digits = p.values.str.count(r"\d") >= 1
    if p.share((idlike & with_digits).to_numpy(bool)) >= _MIN_SHARE and p.distinct_share >= 0.3:
        return Detection(p.column, ID, f"codes of letters and digits, {p.distinct_share:.0%} distinct")
    return None


def _place_score(lower: pd.Series) -> float:
    words = lower.str.split()
    multi = words.str.len() >= 2
    placey = words.map(lambda ws: any(w in PLACE_WORDS for w in ws) if isinstance(ws, list) else False)
    return float((multi & placey).mean()) if len(lower) else 0.0


def detect_words(p: Profile, names: frozenset[str]) -> Detection | None:
    lower = p.lower
    values = set(lower.unique())
    if p.share(lower.str.contains(r"\d").fillna(False).to_numpy(bool)) > 0.5:
        return None
    if values <= FLAGS and p.distinct <= 2:
        return Detection(p.column, FLAG, f"yes/no values ({', '.join(sorted(values))}); not compared")
    if values <= GENDERS and values & {"m", "male", "man", "f", "female", "woman", "w"}:
        return Detection(p.column, GENDER, f"values {', '.join(sorted(values)[:6])}")
    if p.share(lower.isin(STATES).to_numpy(bool)) >= 0.9 and p.distinct <= 80:
        return Detection(p.column, STATE, f"{p.distinct} states or provinces")
    if p.share(lower.isin(COUNTRIES).to_numpy(bool)) >= 0.9 and p.distinct <= 250:
        return Detection(p.column, COUNTRY, f"{p.distinct} country names or codes")
    words = lower.str.split()
    tokens = words.str.len()
    first_word = words.str[0]
    given = p.share(first_word.isin(names).to_numpy(bool))
    one_letter = p.share(lower.str.fullmatch(r"[a-z]\.?").fillna(False).to_numpy(bool))
    mean_tokens = float(tokens.mean())
    if one_letter >= 0.9 and p.distinct >= 5:
        return Detection(p.column, MIDDLE, "single letters: initials")
    if given >= 0.12 and mean_tokens < 1.5:
        return Detection(p.column, FIRST_NAME, f"{given:.0%} of the rows are given names")
    if given >= 0.12 and 1.7 <= mean_tokens <= 4:
        return Detection(p.column, FULL_NAME, f"{mean_tokens:.1f} words a value, {given:.0%} start with a given name")
    street = p.share(words.map(lambda ws: any(w.strip(".,") in STREET_WORDS for w in ws[1:])).to_numpy(bool))
    if street >= 0.2:
        return Detection(p.column, STREET, f"{street:.0%} name a street type (st, road, avenue...)")
    place = _place_score(lower)
    detail = {"place": place, "given": given}
    if p.distinct >= 3 and (hinted(p.column, CITY) or place >= 0.04) and mean_tokens <= 3:
        why = f"{place:.0%} with words like port, mount, north" if place >= 0.04 else "the name says city"
        return Detection(p.column, CITY, f"place names ({why})", detail)
    if p.distinct <= min(50, 0.2 * p.filled):
        return Detection(p.column, CATEGORY, f"{p.distinct} distinct values: a category; not compared")
    if float(p.values.str.len().mean()) > 30 or mean_tokens > 4:
        return Detection(p.column, TEXT, f"free text ({mean_tokens:.1f} words a value); not compared")
    if p.share(lower.str.contains(_UNITS).fillna(False).to_numpy(bool)) >= 0.5:
        return Detection(p.column, UNIT, "unit or apartment designations: part of the address")
    return Detection(p.column, LAST_NAME, f"single words, {p.distinct:,} distinct, few given names ({given:.0%})",
                     detail)


def detect_mixed(p: Profile) -> Detection | None:
    """Words with digits: street addresses ("12 Main St") or unit designations."""
    lower = p.lower
    house = p.share(lower.str.match(r"^\d+[a-z]?\s+\D").fillna(False).to_numpy(bool))
    if house >= 0.3:
        return Detection(p.column, STREET, f"{house:.0%} are a house number and a street")
    if p.share(lower.str.contains(_UNITS).fillna(False).to_numpy(bool)) >= 0.5:
        return Detection(p.column, UNIT, "unit or apartment designations: part of the address")
    if float(p.values.str.len().mean()) > 30:
        return Detection(p.column, TEXT, "free text; not compared")
    return None


def detect_column(column: str, series: pd.Series, names: frozenset[str] | None = None) -> Detection:
    """The kind of one column from its values (and, for ties, its name)."""
    names = given_names() if names is None else names
    if set(name_words(column)) & OTHER_ENTITIES:
        entity = sorted(set(name_words(column)) & OTHER_ENTITIES)[0]
        return Detection(column, OTHER_ENTITY, f"the name says {entity}; not compared")
    p = Profile.of(column, series)
    if p.fill < 0.01 or p.filled < 2:
        return Detection(column, EMPTY, f"{p.fill:.1%} of the rows have a value; not compared")
    if p.distinct == 1:
        return Detection(column, CONSTANT, f"one value ({p.values.iloc[0][:20]!r}) in every row that has one; "
                                           "not compared")
    if p.matches(EMAIL_RE) >= _MIN_SHARE:
        return Detection(column, EMAIL, f"{p.matches(EMAIL_RE):.0%} are email addresses")
    if p.matches(SSN_RE) >= _MIN_SHARE:
        return Detection(column, ID, "US social security numbers (ddd-dd-dddd)", {"ssn": True})
    for test in (detect_date, detect_phone, detect_digits, detect_code, detect_mixed):
        found = test(p)
        if found is not None:
            return found
    found = detect_words(p, names)
    if found is not None:
        return found
    return Detection(column, TEXT, "no known shape; not compared")


# -------------------------------------------------------------------------------------- a file
def _key(frame: pd.DataFrame, found: dict[str, Detection]) -> str | None:
    """The record key: unique and present in every sampled row, id-like, the name saying so first."""
    candidates = []
    for position, column in enumerate(frame.columns):
        d = found[column]
        if d.kind in (EMAIL, PHONE, FIRST_NAME, LAST_NAME, FULL_NAME, STREET, CITY, BIRTH_DATE, DATE,
                      TEXT, OTHER_ENTITY, EMPTY, CONSTANT, EXCLUDED):
            continue
        values = frame[column]
        if values.isna().any() or not values.is_unique:
            continue
        candidates.append((not hinted(column, KEY), d.kind not in (ID, NUMBER, STREET_NUMBER), position, column))
    return min(candidates)[-1] if candidates else None


_LIST_KINDS = (EMAIL, PHONE)  # several columns become one attribute: the first non-empty wins


def detect_frame(frame: pd.DataFrame, exclude: tuple[str, ...] = (), names: frozenset[str] | None = None
                 ) -> tuple[list[Detection], str | None]:
    """Every column's detection, in column order, and the record key (None when no column is unique)."""
    names = given_names() if names is None else names
    excluded = {e.strip().casefold() for e in exclude}
    found: dict[str, Detection] = {}
    for column in frame.columns:
        if REPEAT in column:
            found[column] = Detection(column, DUPLICATE, "a repeated header name (a config cannot name it); "
                                      "not compared")
        elif column.casefold() in excluded:
            found[column] = Detection(column, EXCLUDED, "left out by --exclude; not compared")
        else:
            found[column] = detect_column(column, frame[column], names)
    key = _key(frame, found)
    if key is not None:
        found[key] = Detection(key, KEY, f"unique and present in all {len(frame):,} sampled rows"
                               + ("; the name says id" if hinted(key, KEY) else ""))
    _date_parts(found)
    _street_numbers(found)
    _names_and_places(found)
    _one_per_kind(found, list(frame.columns))
    return [found[c] for c in frame.columns], key


def _date_parts(found: dict[str, Detection]) -> None:
    """Year, month and day columns make a birth date together; a lone part is a birth year (when
    the name says birth) or a number."""
    parts = {kind: [c for c, d in found.items() if d.kind == kind] for kind in (YEAR, MONTH, DAY)}

    def pick(kind: str) -> str | None:
        columns = parts[kind]
        hinted_columns = [c for c in columns if hinted(c, kind)]
        return (hinted_columns or columns or [None])[0]

    trio = {kind: pick(kind) for kind in (YEAR, MONTH, DAY)}
    complete = all(trio.values())
    for kind, columns in parts.items():
        for column in columns:
            d = found[column]
            if complete and column == trio[kind]:
                others = ", ".join(f"{k} {trio[k]}" for k in (YEAR, MONTH, DAY))
                found[column] = Detection(column, kind, f"{d.reason}; with {others}: a birth date", {"part": kind})
            elif kind == YEAR and hinted(column, BIRTH_DATE) and not complete:
                found[column] = Detection(column, YEAR, f"{d.reason}; the name says birth: a birth year",
                                          {"part": YEAR})
            else:
                missing = ", ".join(k for k in trio if not trio[k]) or "use"
                found[column] = Detection(column, NUMBER, f"{d.reason}, but no {missing} to make a date of; "
                                          "not compared")


def _street_numbers(found: dict[str, Detection]) -> None:
    """Numbers are street numbers only next to a street column, or when their name says so."""
    has_street = any(d.kind == STREET for d in found.values())
    for column, d in list(found.items()):
        if d.kind == STREET_NUMBER and d.detail.get("tentative"):
            if hinted(column, STREET_NUMBER) or hinted(column, STREET) or has_street:
                named = hinted(column, STREET_NUMBER) or hinted(column, STREET)
                why = "the name says so" if named else "a street column is present"
                found[column] = Detection(column, STREET_NUMBER, f"{d.reason}; {why}")
            else:
                found[column] = Detection(column, NUMBER, f"{d.reason}, no street column: not compared")


def _names_and_places(found: dict[str, Detection]) -> None:
    """Single-word columns the values cannot tell apart (a surname and a suburb) go by their names:
    a column named for a street, city, state or country is that; then the most place-like of two
    last-name columns is the city."""
    for column, d in list(found.items()):
        if d.kind not in (LAST_NAME, CITY):
            continue
        for kind in (LAST_NAME, CITY, STREET, STATE, COUNTRY, FIRST_NAME, FULL_NAME, MIDDLE):
            if kind != d.kind and hinted(column, kind) and not hinted(column, d.kind):
                if kind == FULL_NAME and any(hinted(column, k) for k in (LAST_NAME, FIRST_NAME)):
                    continue
                found[column] = Detection(column, kind, f"{d.reason}; the name says {kind}", d.detail)
                break
    last = [c for c, d in found.items() if d.kind == LAST_NAME and not hinted(c, LAST_NAME)]
    has_city = any(d.kind == CITY for d in found.values())
    if len(last) >= 2 and not has_city:
        city = max(last, key=lambda c: found[c].detail.get("place", 0.0))
        found[city] = Detection(city, CITY, f"{found[city].reason}; the most place-like of {', '.join(last)}",
                                found[city].detail)


def _one_per_kind(found: dict[str, Detection], order: list[str]) -> None:
    """One column per compared kind (emails and phones may have several); the name that says the
    kind wins, then the first. A middle-name column named so stays a middle name."""
    by_kind: dict[str, list[str]] = {}
    for column in order:
        d = found[column]
        if d.kind == FIRST_NAME and hinted(column, MIDDLE):
            found[column] = Detection(column, MIDDLE, f"{d.reason}; the name says middle")
        if found[column].compared and found[column].kind not in _LIST_KINDS + (ID, STREET):
            by_kind.setdefault(found[column].kind, []).append(column)
    for kind, columns in by_kind.items():
        if len(columns) < 2:
            continue
        primary = min(columns, key=lambda c: (not hinted(c, kind), len(name_words(c)), order.index(c)))
        for column in columns:
            if column != primary:
                found[column] = Detection(column, DUPLICATE, f"{found[column].reason}; a second {kind} column "
                                          f"({primary} is the {kind}): not compared")
