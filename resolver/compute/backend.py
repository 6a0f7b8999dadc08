"""Backends: where the hot stages run, and the few array operations numpy and CuPy spell differently.

A `Backend` names the array module of the stages (`xp`: numpy or CuPy), the numba target of the
string kernels ("cpu" or "cuda"), and what computes connected components and group-bys (scipy /
cuGraph / the CuPy fallback; host numpy / cuDF). GPU libraries are imported only when a GPU backend
is asked for; cuDF and cuGraph are used when they are installed, never required.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from types import ModuleType

import numpy as np

BACKENDS = ("cpu", "gpu", "auto")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu" or "gpu"
    xp: ModuleType  # numpy or cupy: the array module of the stages
    kernels: str  # numba target of the string kernels: "cpu" or "cuda"
    components: str  # "scipy", "cugraph" or "xp" (min-label hooking over xp); the engine may choose another
    frames: str  # group-bys: "host" (numpy), "cudf", or "pandas" (the cuDF code path on pandas)
    note: str = ""  # why `auto` chose this backend, or that this is the simulator

    @property
    def on_gpu_path(self) -> bool:
        """True when the stages take their GPU code paths (also in the simulator)."""
        return self.name != "cpu"

    def describe(self, components: str | None = None) -> dict:
        """What the run summary says of the backend; `components`: the implementation the engine
        chose (compute/dispatch.py: the cluster's, on the dask engine), by default the backend's."""
        return {"backend": self.name, "arrays": self.xp.__name__, "kernels": self.kernels,
                "components": components or self.components, "group_bys": self.frames, **({"note": self.note} if self.note else {})}


CPU = Backend("cpu", np, "cpu", "scipy", "host")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def array_module(backend: str) -> ModuleType:
    """numpy for "cpu"; CuPy for "gpu" (a clear error when CuPy or a CUDA device is missing)."""
    if backend == "cpu":
        return np
    if backend != "gpu":
        raise ValueError(f"unknown backend {backend!r} (expected cpu or gpu)")
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable("the gpu backend needs CuPy: pip install 'resolver-identity[gpu]'") from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendUnavailable("the gpu backend needs a CUDA device; none is visible")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise BackendUnavailable(f"the gpu backend needs a CUDA device: {exc}") from exc
    return cupy


def _gpu_backend() -> Backend:
    xp = array_module("gpu")
    try:
        from numba import cuda

        visible = cuda.is_available()
    except ImportError:  # pragma: no cover - numba is a dependency
        visible = False
    if not visible:
        raise BackendUnavailable("the gpu backend needs numba-cuda to see the GPU: pip install 'resolver-identity[gpu]'")
    return Backend("gpu", xp, "cuda", "cugraph" if _installed("cugraph") else "xp",
                   "cudf" if _installed("cudf") else "host")


def select_backend(requested: str) -> Backend:
    """cpu; gpu (or a one-line BackendUnavailable saying what is missing); auto: gpu when CuPy sees a
    CUDA device and numba can compile for it, else cpu with the reason in `note`."""
    if requested == "cpu":
        return CPU
    if requested == "gpu":
        return _gpu_backend()
    if requested == "auto":
        try:
            return _gpu_backend()
        except BackendUnavailable as exc:
            return replace(CPU, note=f"auto chose cpu: {exc}")
    raise ValueError(f"unknown backend {requested!r} (expected one of {', '.join(BACKENDS)})")


def simulated_gpu() -> Backend:
    """The GPU code paths with numpy arrays and the CUDA kernels in numba's simulator: how CI checks
    the gpu backend's logic without a GPU (needs NUMBA_ENABLE_CUDASIM=1 before numba is imported)."""
    from numba import config

    if not config.ENABLE_CUDASIM:
        raise BackendUnavailable("the simulated gpu backend needs NUMBA_ENABLE_CUDASIM=1 before numba is imported")
    return Backend("gpu", np, "cuda", "xp", "pandas",
                   note="simulated: numpy arrays, CUDA kernels in numba's simulator, group-bys on cuDF's pandas API")


def module_of(array) -> ModuleType:
    """CuPy for a GPU array, numpy otherwise."""
    if hasattr(array, "__cuda_array_interface__"):
        import cupy

        return cupy
    return np


def to_host(array) -> np.ndarray:
    """A numpy copy (or the array itself) of a numpy or CuPy array."""
    return array.get() if hasattr(array, "__cuda_array_interface__") else np.asarray(array)


def scatter_min(xp: ModuleType, target, index, values) -> None:
    """target[index] = min(target[index], values), with repeated indexes handled (in place)."""
    if xp is np:
        np.minimum.at(target, index, values)
    else:  # CuPy
        import cupyx

        cupyx.scatter_min(target, index, values)

