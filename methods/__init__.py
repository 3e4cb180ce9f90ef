"""Built-in method plugins, importable as cl_bench.methods.<name>."""
