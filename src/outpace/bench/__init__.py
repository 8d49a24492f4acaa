"""`outpace bench`: a Spec-Bench-style benchmark of outpace's methods and their peers.

Modules: `config` (what a run is), `questions` (prompt suites and deterministic subsets),
`methods` (outpace and peer engines behind one interface), `run` (interleaved, resumable
execution), `records` (the run directory), `metrics` (pure figures), `costs` (cost profiles),
`report` and `plots` (report.md and PNGs), `profile` (measuring a cost profile), `cli`.
Nothing here imports torch at module import time except `methods` and `run`'s functions.
"""
