"""The pair-growth exponent of a blocking rule (resolver/matching/growth.py): ~1 for a key that names
one person, ~2 for a key a fixed share of the population shares; `resolver plan` warns about the
second kind and `resolver init` proposes none of it."""

import numpy as np

from resolver.matching.growth import GROWTH_LIMIT, GROWTH_WARNING, growth_warning, identifier_people, pair_growth


def _people(n_people: int, seed: int = 0) -> np.ndarray:
    """A person label per record: 1 to 3 records a person."""
    sizes = np.random.default_rng(seed).integers(1, 4, n_people)
    return np.repeat(np.arange(n_people), sizes)


def test_a_key_that_names_one_person_grows_with_the_records():
    people = _people(20_000)
    keys = (people + 1).astype(np.uint64)  # a person's email: the same on each of their records
    exponent = pair_growth(keys, people)
    assert exponent is not None and abs(exponent - 1.0) < 0.05
    assert growth_warning("email", exponent) is None


def test_a_key_the_population_shares_grows_with_their_square():
    people = _people(20_000)
    city = np.random.default_rng(1).integers(1, 40, len(people)).astype(np.uint64)  # 39 cities
    exponent = pair_growth(city, people)
    assert exponent is not None and abs(exponent - 2.0) < 0.05 and exponent > GROWTH_LIMIT > GROWTH_WARNING
    warning = growth_warning("city", exponent)
    assert warning is not None and "records^2.0" in warning and "'city'" in warning


def test_records_without_a_key_and_rules_with_few_pairs():
    people = _people(1_000)
    keys = np.zeros(len(people), dtype=np.uint64)
    assert pair_growth(keys, people) is None  # no pairs at all
    keys[:10] = 7
    assert pair_growth(keys, people) is None  # too few to tell a slope


def test_without_identifiers_joining_records_the_growth_is_unknown():
    """Each record its own person (no email, no phone: FEBRL): sampling people is sampling records,
    which makes every rule look quadratic; no exponent is claimed."""
    city = np.random.default_rng(2).integers(1, 40, 20_000).astype(np.uint64)
    assert pair_growth(city, np.arange(20_000)) is None


def test_identifier_people_follow_chains_of_shared_values():
    # records 0-1 share an email, 1-2 a phone (another code space); 3 has nothing, 4 its own value
    record = np.array([0, 1, 1, 2, 4])
    value = np.array([10, 10, 1 << 40, 1 << 40, 99])
    people = identifier_people(record, value, 5)
    assert people[0] == people[1] == people[2]
    assert len({people[0], people[3], people[4]}) == 3


def test_init_drops_a_rule_whose_pairs_grow_with_the_square():
    from resolver.propose.rules import Candidate, choose

    city, email = Candidate("city", ["city"], 0), Candidate("email", ["email"], 1)
    for c, growth in ((city, 2.0), (email, 1.0)):
        c.keyed, c.pairs, c.growth = 1.0, 100, growth
    assert choose([city, email], budget=10**6) == [email]
    assert city.verdict.startswith("dropped: its pairs grow as records^2.00")
