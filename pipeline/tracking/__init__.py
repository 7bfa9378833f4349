"""MLflow: runs and their lifecycle, provenance tags, per-epoch logging and the model registry."""
