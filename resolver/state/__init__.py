"""What persists between runs: the state store and its commit, snapshots, history, review decisions and erasure."""
