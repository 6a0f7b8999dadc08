#!/usr/bin/env bash
# Fetch, into .whl/, the wheels that benchmarks/gpu_check.sh needs on the lent H200 (CPython 3.12,
# x86-64, no network there). Its image already has numpy, scipy, pyarrow, numba, numba-cuda, CuPy,
# PyYAML, rich, pytest and hypothesis; pandas travels too, since the image's version is unknown and
# resolver needs pandas 3, and so do dask and dask-cuda. Run here, then name .whl in the device
# call's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
py=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps -d .whl)
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q "${py[@]}" "${plat[@]}" \
  pandas==3.1.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection \
  phonenumbers==9.0.43 orjson==3.13.0 Unidecode==1.4.0 jellyfish==1.3.0 RapidFuzz==3.14.6 \
  tzdata typing-extensions ua-parser==1.0.2 ua-parser-builtins==202610 nicknames==1.0.1
# Dask, distributed and dask-cuda (4.6 MB with their dependencies): the multi-worker path runs on a
# one-GPU machine with one or two workers.
python3 -m pip download -q "${py[@]}" "${plat[@]}" \
  dask==2026.8.0 distributed==2026.8.0 dask-cuda==0.18.0 click cloudpickle fsspec importlib-metadata zipp jinja2 \
  markupsafe locket msgpack nvidia-ml-py pynvml partd psutil sortedcontainers tblib toolz tornado zict \
  lazy-importer packaging
du -sh .whl
ls .whl
