"""Hot loops written once as plain functions over Arrow-style buffers (offsets + bytes), compiled by
numba. The CPU build is used today; the same sources are meant for numba-cuda (DESIGN.md)."""
