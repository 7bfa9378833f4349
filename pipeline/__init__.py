"""Stage entry points (prepare, tune, train, evaluate, predict) and the Ray orchestration."""
