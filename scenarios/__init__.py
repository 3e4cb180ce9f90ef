"""Built-in stream plugins, importable as cl_bench.scenarios.<name>."""
