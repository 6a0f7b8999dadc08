"""Where the work runs: the array backend (numpy or CuPy), the engines that map stages over jobs, connected components, group-bys."""
