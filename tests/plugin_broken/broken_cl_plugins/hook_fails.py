import cl_bench


@cl_bench.hookimpl
def cl_bench_methods():
    raise ValueError("hook exploded")
