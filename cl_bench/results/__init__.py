"""The run-result document: its schema, a run's identity and id, validation, and the metrics
computed from an accuracy matrix. Layer 2: imports the leaves and the contracts only."""
