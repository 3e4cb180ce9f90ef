"""Building blocks that methods, backbones and streams of either track share, exported through
the public API (`cl_bench.<name>`). Layer 2: imports the leaves and the contracts only."""
