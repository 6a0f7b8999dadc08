"""What persists between runs: the state store and its atomic commit (store, files), the run
history (history), review decisions (review) and the rules of erasure (erasure)."""
