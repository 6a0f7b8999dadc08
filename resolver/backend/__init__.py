"""Array backends: the few primitives the stages need, written once over an array module `xp`
(numpy on the CPU, CuPy on a GPU). GPU libraries are imported only when asked for."""
