"""Python programs around the local stack that are neither tests nor the benchmark.

`local_stack` is the one place that names the stack's addresses (the tests, the benchmark and
the demo all read them from there); `demo` is `make demo`.
"""
