"""Shared fixtures: one generated dataset per test session (small, with every kind of noise)."""

from pathlib import Path

import pytest

from resolver.config import load_config


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    from resolver.synth import generate

    root = tmp_path_factory.mktemp("generated")
    generate(root, 6000, seed=11, chunk_people=2000, workers=1)
    return root


@pytest.fixture(scope="session")
def resolved(generated, tmp_path_factory):
    """The default (guarded) pipeline over the generated data, outputs written."""
    from resolver.pipeline import run

    config = load_config(generated / "resolver.yaml")
    config.run.output_dir = str(tmp_path_factory.mktemp("out-guarded"))
    return config, run(config)
