"""Stage entry points (prepare, tune, train, evaluate, predict, bench) and the Ray / MLflow glue."""
