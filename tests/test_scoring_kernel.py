"""The compiled scoring pass (resolver/kernels/scoring.py) gives bitwise the weights and tf of the
array code (resolver/matching/model.py) that the GPU runs, on a trained model and random pairs of
every kind of level pattern."""

import numpy as np
import pytest

from resolver.config import load_config
from resolver.matching.compare import comparison_matrix
from resolver.matching.match import MatchResult
from resolver.matching.model import kept_comparisons, match_weights, tf_adjustments
from resolver.matching.score import ScoringTables
from resolver.pipeline import run
from resolver.synth.people import generate

pytestmark = pytest.mark.slow  # a generated dataset and a pipeline run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    generate(root, 1500, seed=11, workers=1, events=False)
    config = load_config(root / "resolver.yaml")
    config.run.output_dir = str(root / "out")
    with pytest.MonkeyPatch.context() as patch:  # keep what the pipeline releases once it has scored
        patch.setattr(MatchResult, "release_comparison_inputs", lambda self: None)
        patch.setattr(MatchResult, "release_explanation_inputs", lambda self: None)
        result = run(config, write=False)
    return result.match


def test_the_compiled_pass_equals_the_array_code_bit_for_bit(trained):
    model, prepared = trained.model, trained.prepared
    n_records = len(prepared[0].valid)
    rng = np.random.default_rng(3)
    left = rng.integers(0, n_records, 200_000)
    right = rng.integers(0, n_records, 200_000)
    # half random pairs, half pairs of near neighbours in the file (duplicates sit close together)
    right[::2] = np.clip(left[::2] + rng.integers(1, 4, 100_000), 0, n_records - 1)
    levels = comparison_matrix(prepared, left, right)
    rule = rng.integers(0, len(model.rules), len(left))

    keep = kept_comparisons(model, levels, rule)
    tf = tf_adjustments(model, prepared, levels, rule, left, keep)
    expected = match_weights(model, levels, rule, tf, keep)
    weight, tf_fast = ScoringTables.of(model, prepared).scores(levels, rule, left)

    assert np.array_equal(expected.view(np.uint64), weight.view(np.uint64))
    assert np.array_equal(tf.view(np.uint64), tf_fast.view(np.uint64))
    assert (tf != 0).any() and len(np.unique(expected)) > 100  # tf and many patterns were exercised
