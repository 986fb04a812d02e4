"""Benchmarks and evaluations (`skv bench speed|scale`, `skv eval passkey|niah|kl|qa`): one module a benchmark, what
they share in harness.py, writers in report.py, the protocol options in protocol.py. The CLI glue is engine/cli/bench.py.

Each command prints a table and writes JSON + Markdown (+ PNG plots when matplotlib is importable) to a folder.
"""
