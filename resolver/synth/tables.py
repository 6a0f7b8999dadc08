"""Constant tables of the synthetic generator (resolver/synth/people.py, visitors.py): names, streets,
cities, phone numbering, email domains, companies, user agents, events and pages, and the Arrow string
tables derived from them.

Every generated string is drawn from these tables (checked on import to need no JSON escaping), which
is what lets the JSON lines be assembled by plain vectorized concatenation. Changing any value or order
here changes the generated data.
"""

from __future__ import annotations

import numpy as np
from unidecode import unidecode

from resolver.synth.columns import text

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------
# (formal name, nickname, gender 0=m 1=f)
_NICKNAMED = [
    ("William", "Bill", 0), ("Robert", "Bob", 0), ("James", "Jim", 0), ("Richard", "Dick", 0),
    ("Michael", "Mike", 0), ("Thomas", "Tom", 0), ("Christopher", "Chris", 0), ("Daniel", "Dan", 0),
    ("Matthew", "Matt", 0), ("Anthony", "Tony", 0), ("Joseph", "Joe", 0), ("Charles", "Chuck", 0),
    ("Edward", "Ted", 0), ("Samuel", "Sam", 0), ("Benjamin", "Ben", 0), ("Alexander", "Alex", 0),
    ("Nicholas", "Nick", 0), ("Jonathan", "Jon", 0), ("Steven", "Steve", 0), ("Andrew", "Andy", 0),
    ("Timothy", "Tim", 0), ("Gregory", "Greg", 0), ("Kenneth", "Ken", 0), ("Theodore", "Teddy", 0),
    ("Lawrence", "Larry", 0), ("José", "Pepe", 0),
    ("Margaret", "Peggy", 1), ("Elizabeth", "Liz", 1), ("Katherine", "Kate", 1), ("Jennifer", "Jenny", 1),
    ("Patricia", "Patty", 1), ("Susan", "Sue", 1), ("Deborah", "Debbie", 1), ("Rebecca", "Becky", 1),
    ("Jessica", "Jess", 1), ("Victoria", "Vicky", 1), ("Abigail", "Abby", 1), ("Catherine", "Cathy", 1),
    ("Kimberly", "Kim", 1), ("Christine", "Chrissy", 1), ("Dorothy", "Dot", 1), ("Barbara", "Barb", 1),
]
_PLAIN_FIRST = [
    ("Liam", 0), ("Noah", 0), ("Ethan", 0), ("Lucas", 0), ("Mason", 0), ("Omar", 0), ("Mohammed", 0),
    ("Carlos", 0), ("Luis", 0), ("Juan", 0), ("Hiroshi", 0), ("Wei", 0), ("Arjun", 0), ("Dmitri", 0),
    ("André", 0), ("François", 0), ("Björn", 0), ("Søren", 0), ("Raúl", 0), ("Olumide", 0),
    ("Min-jun", 0), ("Tomás", 0),
    ("Mary", 1), ("Linda", 1), ("Sarah", 1), ("Emily", 1), ("Olivia", 1), ("Emma", 1), ("Sophia", 1),
    ("Mia", 1), ("Ava", 1), ("Priya", 1), ("Aisha", 1), ("Fatima", 1), ("Ana", 1), ("Lucía", 1),
    ("Zoë", 1), ("Chloé", 1), ("Renée", 1), ("Anaïs", 1), ("Mónica", 1), ("Siobhán", 1), ("Ngozi", 1),
    ("Yuki", 1), ("Seo-yeon", 1), ("Ananya", 1), ("Olga", 1), ("Ingrid", 1),
]
LAST_NAMES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez",
    "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen",
    "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
    "Carter", "Roberts", "Müller", "O'Neil", "O'Brien", "García", "Núñez", "Peña", "Lefèvre",
    "Ødegaard", "Kim", "Patel", "Shah", "Chen", "Wang", "Zhang", "Li", "Liu", "Singh", "Kumar", "Khan",
    "Ali", "Cohen", "Schmidt", "Schneider", "Fischer", "Weber", "Rossi", "Russo", "Ferrari",
    "D'Angelo", "McDonald", "MacLeod", "van der Berg", "de la Cruz", "Smith-Jones", "Johansson",
    "Andersson", "Nowak", "Kowalski", "Dubois", "Moreau", "Yamamoto", "Tanaka", "Suzuki", "Sato",
    "Okafor", "Adeyemi", "Murphy", "Kelly", "Sullivan", "Walsh", "Byrne", "Ryan", "Fitzgerald",
    "Gallagher", "Reyes", "Cruz", "Morales", "Ortiz", "Gutierrez", "Chavez", "Ramos", "Ruiz",
    "Alvarez", "Mendoza", "Castillo", "Jiménez", "Vásquez", "Romero", "Herrera", "Medina", "Aguilar",
    "Vargas", "Guzmán", "Muñoz", "Rojas", "Schäfer", "Łukasik", "Björk", "Brontë",
]
TITLES = [["Mr. ", "Dr. ", "Mr "], ["Ms. ", "Mrs. ", "Dr. "]]  # by gender
STREETS = [
    "Main", "Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park", "Sunset",
    "Lincoln", "Jefferson", "Madison", "Franklin", "Highland", "Church", "Mill", "Spring", "River",
    "Valley", "Forest", "Meadow", "Ridge", "Willow", "Birch", "Chestnut", "Walnut", "Cherry", "Adams",
    "Jackson", "Market", "Broad", "Center", "Union", "Liberty", "Grove", "Harbor", "King", "Queen",
]
US_SUFFIXES = ["St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Way", "Ct", "Pl", "Street", "Avenue"]
UK_SUFFIXES = ["Road", "Street", "Lane", "Close", "Gardens", "Terrace"]
UNIT_LABELS = ["Apt ", "Suite ", "Unit ", "#", "Apt. ", "Flat "]
# (city, state code, state name, first 3 zip digits)
US_CITIES = [
    ("New York", "NY", "New York", "100"), ("Brooklyn", "NY", "New York", "112"),
    ("Los Angeles", "CA", "California", "900"), ("San Francisco", "CA", "California", "941"),
    ("San Diego", "CA", "California", "921"), ("San Jose", "CA", "California", "951"),
    ("Sacramento", "CA", "California", "958"), ("Chicago", "IL", "Illinois", "606"),
    ("Houston", "TX", "Texas", "770"), ("Dallas", "TX", "Texas", "752"), ("Austin", "TX", "Texas", "787"),
    ("Phoenix", "AZ", "Arizona", "850"), ("Philadelphia", "PA", "Pennsylvania", "191"),
    ("Pittsburgh", "PA", "Pennsylvania", "152"), ("Seattle", "WA", "Washington", "981"),
    ("Portland", "OR", "Oregon", "972"), ("Denver", "CO", "Colorado", "802"),
    ("Boston", "MA", "Massachusetts", "021"), ("Miami", "FL", "Florida", "331"),
    ("Tampa", "FL", "Florida", "336"), ("Atlanta", "GA", "Georgia", "303"),
    ("Washington", "DC", "District of Columbia", "200"), ("Minneapolis", "MN", "Minnesota", "554"),
    ("Detroit", "MI", "Michigan", "482"), ("Las Vegas", "NV", "Nevada", "891"),
    ("Salt Lake City", "UT", "Utah", "841"), ("Nashville", "TN", "Tennessee", "372"),
    ("Charlotte", "NC", "North Carolina", "282"), ("Raleigh", "NC", "North Carolina", "276"),
    ("Richmond", "VA", "Virginia", "232"), ("Columbus", "OH", "Ohio", "432"),
    ("St. Louis", "MO", "Missouri", "631"), ("Kansas City", "MO", "Missouri", "641"),
    ("Milwaukee", "WI", "Wisconsin", "532"),
]
UK_OUTCODES = ["SW1A", "EC1A", "W1D", "N1", "E2", "SE1", "NW3", "WC2H", "SW11", "E14"]
UK_INCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
US_COUNTRIES = (["United States", "US", "USA", ""], [0.55, 0.2, 0.15, 0.1])
UK_COUNTRIES = (["United Kingdom", "UK", "GB", "England"], [0.55, 0.2, 0.15, 0.1])
# Real NANP area codes; exchanges 200-999 minus 555 and N11, so numbers validate in libphonenumber.
AREA_CODES = [
    212, 213, 312, 415, 617, 646, 718, 202, 305, 404, 512, 206, 303, 702, 713, 214, 503, 602, 612,
    619, 650, 408, 510, 773, 801, 804, 813, 857, 916, 919, 347, 917, 310, 323, 818, 949, 714, 858,
    720, 480, 469, 972, 281, 832, 210, 615, 704, 980, 412, 215, 267, 216, 614, 313, 248, 314, 816,
    414, 651, 763,
]
EXCHANGES = [e for e in range(200, 1000) if e != 555 and e % 100 != 11]
JUNK_PHONES = ["12345", "000-000-0000", "555-1212", "0000000000", "1234567890"]
JUNK_EMAILS = ["test@test.com", "asdf@asdf.com", "noreply@example.com", "test@example.com"]
JUNK_USER_IDS = ["anonymous", "null", "-1", "undefined"]
ZERO_AD_ID = "00000000-0000-0000-0000-000000000000"
# Public mailbox providers and their share; the remainder use the person's company domain.
PUBLIC_DOMAINS = (
    ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "comcast.net",
     "protonmail.com"],
    [0.40, 0.12, 0.07, 0.06, 0.06, 0.02, 0.02, 0.01],
)
EMAIL_TAGS = ["news", "shop", "promo", "2024", "work", "deals"]
COMPANY_STEMS = [
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Wonka", "Hooli", "Vandelay",
    "Soylent", "Cyberdyne", "Tyrell", "Aperture", "Gringotts", "Oscorp", "Pied Piper", "Northwind",
    "Contoso", "Fabrikam", "Tailspin", "Blue Sky", "Summit", "Pioneer", "Evergreen", "Redwood",
    "Silverline", "Bright", "Cascade", "Harbor", "Keystone", "Lakeside", "Meridian", "Nimbus", "Orion",
    "Pinnacle", "Quantum", "Riverbend", "Sterling", "Trident", "Vertex",
]
COMPANY_NOUNS = [
    "Logistics", "Systems", "Labs", "Foods", "Health", "Capital", "Media", "Energy", "Software",
    "Consulting", "Retail", "Motors", "Analytics", "Partners", "Dynamics", "Robotics", "Pharma",
    "Realty", "Networks", "Studios",
]
COMPANY_SUFFIXES = ["Inc.", "LLC", "Corp.", "Ltd", "Group", "Co.", "", ", Inc."]
CONSUMER_COMPANIES = ["Individual", "N/A", "[not provided]", "Self-employed", "none"]
USER_AGENTS = {  # by device type: web, ios, android
    0: ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"],
    1: ["Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "Mozilla/5.0 (iPad; CPU OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"],
    2: ["Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36",
        "Dalvik/2.1.0 (Linux; U; Android 12; SM-G991U Build/SP1A.210812.016)"],
}
DEVICE_TYPES = ["web", "ios", "android"]
DEVICE_TYPE_WEIGHTS = [0.55, 0.25, 0.20]
# (event name, properties kind: 0 none, 1 product, 2 order), weight
TRACK_EVENTS = [("Product Viewed", 1, 0.30), ("Product Added", 1, 0.15), ("Products Searched", 0, 0.12),
                ("Checkout Started", 0, 0.08), ("Order Completed", 2, 0.07), ("Signed In", 0, 0.08),
                ("Application Opened", 0, 0.12), ("Newsletter Subscribed", 0, 0.08)]
PAGES = [("Home", "/"), ("Pricing", "/pricing"), ("Product", "/products/trail-runner"),
         ("Cart", "/cart"), ("Checkout", "/checkout"), ("Blog", "/blog/spring-sale"),
         ("Account", "/account"), ("Search", "/search")]
SITE = "https://www.evergreen-outfitters.com"
EVENT_TYPES = ["identify", "track", "page", "alias"]
IDENTIFY, TRACK, PAGE, ALIAS = 0, 1, 2, 3


def ascii_letters(name: str) -> str:
    """Lower-case ASCII letters of a name, for email local parts: "O'Neil" -> "oneil"."""
    return "".join(ch for ch in unidecode(name).lower() if ch.isalpha())


_FIRST = [(f, n, g) for f, n, g in _NICKNAMED] + [(f, "", g) for f, g in _PLAIN_FIRST]
FIRST_NAMES = text(f for f, _, _ in _FIRST)
FIRST_NICKNAMES = text(n for _, n, _ in _FIRST)
HAS_NICKNAME = np.array([bool(n) for _, n, _ in _FIRST])
FIRST_GENDER = np.array([g for _, _, g in _FIRST], dtype=np.int64)
FIRST_ASCII = text(unidecode(f) for f, _, _ in _FIRST)
FIRST_LETTERS = text(ascii_letters(f) for f, _, _ in _FIRST)
FIRST_INITIALS = text(ascii_letters(f)[0] for f, _, _ in _FIRST)
LAST = text(LAST_NAMES)
LAST_ASCII = text(unidecode(x) for x in LAST_NAMES)
LAST_LETTERS = text(ascii_letters(x) for x in LAST_NAMES)
GENDER_TITLES = text(TITLES[0] + TITLES[1])  # row = gender * 3 + k
CITY_NAMES, CITY_STATES, CITY_STATE_NAMES, CITY_ZIP3 = (text(col) for col in zip(*US_CITIES))
DIGITS2 = text(f"{i:02d}" for i in range(100))
DIGITS4 = text(f"{i:04d}" for i in range(10000))
BOOLEANS = text(["false", "true"])


def _assert_json_safe() -> None:
    """Every output string comes from these tables, so checking them once makes escaping unnecessary."""
    tables = [[f for f, _, _ in _FIRST], [n for _, n, _ in _FIRST], LAST_NAMES, STREETS, US_SUFFIXES, UK_SUFFIXES,
              UNIT_LABELS, [c for row in US_CITIES for c in row], UK_OUTCODES, US_COUNTRIES[0], UK_COUNTRIES[0],
              JUNK_PHONES, JUNK_EMAILS, JUNK_USER_IDS, PUBLIC_DOMAINS[0], EMAIL_TAGS, COMPANY_STEMS,
              COMPANY_NOUNS, COMPANY_SUFFIXES, CONSUMER_COMPANIES, [t[0] for t in TRACK_EVENTS],
              [p for page in PAGES for p in page], [SITE], TITLES[0], TITLES[1],
              [ua for uas in USER_AGENTS.values() for ua in uas]]
    for table in tables:
        for value in table:
            assert '"' not in value and "\\" not in value and all(ord(c) >= 32 for c in value), value


_assert_json_safe()


# ----------------------------------------------------------------------------------------------
# Random streams
# ----------------------------------------------------------------------------------------------
POOL_STREAM = 2**31 - 1  # spawn key of the generator for shared pools, never a chunk index
