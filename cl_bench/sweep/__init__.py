"""Many runs: the grid of a sweep and its engines (local processes, Ray). Layer 5."""
