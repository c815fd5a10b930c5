"""Stage 2, the task space: distances between tasks built on d_sym, the trivial task t0, task maps."""
