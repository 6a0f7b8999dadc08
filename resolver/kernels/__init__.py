"""Hot loops written once as plain functions over Arrow-style buffers (offsets + bytes), compiled by
numba for the CPU and, from the same sources, by numba-cuda for the GPU (DESIGN.md)."""

import numpy as np

# numpy 2.5 removed np.row_stack, which numba-cuda (every release up to 0.30.4) still calls while it
# compiles: without this alias the first CUDA compile raises AttributeError on the GPU machines.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
