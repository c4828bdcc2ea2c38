"""vmmtui's benchmark runner: `python -m bench` (full) or `python -m bench --quick`.

See bench/README.md. Every measured workload runs in a fresh child process
(`python -m bench.worker ...`); the parent only schedules, collects and reports.
"""
