"""medseg's benchmark suites: `python -m benchmarks list | run NAME | table` from the repository root.

`harness` records what every result needs (machine, commit, date, settings) in one envelope and
times A/B comparisons in alternating rounds; `datasets` splits the real datasets and scores masks
independently of medseg; `suites/` holds one module per suite; `table` writes BENCHMARKS.md.
"""
