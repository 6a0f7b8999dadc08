"""The array module of a backend, and the scatter operations numpy and CuPy spell differently."""

from __future__ import annotations

from types import ModuleType

import numpy as np


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


def array_module(backend: str) -> ModuleType:
    """numpy for "cpu"; CuPy for "gpu" (a clear error when CuPy or a CUDA device is missing)."""
    if backend == "cpu":
        return np
    if backend != "gpu":
        raise ValueError(f"unknown backend {backend!r} (expected cpu or gpu)")
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable("the gpu backend needs CuPy: pip install 'resolver[gpu]'") from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendUnavailable("the gpu backend needs a CUDA device; none is visible")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise BackendUnavailable(f"the gpu backend needs a CUDA device: {exc}") from exc
    return cupy


def scatter_min(xp: ModuleType, target, index, values) -> None:
    """target[index] = min(target[index], values), with repeated indexes handled (in place)."""
    if xp is np:
        np.minimum.at(target, index, values)
    else:  # CuPy
        import cupyx

        cupyx.scatter_min(target, index, values)

