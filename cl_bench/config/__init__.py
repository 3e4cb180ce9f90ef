"""A run's settings (`RunConfig`), configuration files, and the registry of plugins.
Layer 3: imports the leaves, the contracts and the results layer."""
