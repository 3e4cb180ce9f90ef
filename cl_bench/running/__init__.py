"""One run: a torch-free plan, the build of its parts, the shared strategy, the accuracy-matrix
evaluation, checkpoints and the runner. Layer 4."""
