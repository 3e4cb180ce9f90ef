"""Specs whose names cannot be names: an int, None, a path, a space."""
import cl_bench


@cl_bench.hookimpl
def cl_bench_methods():
    return [cl_bench.MethodSpec(name=name, factory=dict, summary="bad name") for name in (7, None, "../../../escape", "has space")]
