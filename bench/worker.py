"""One measurement in a fresh process: `python -m bench.worker WORKLOAD --image NAME ...`.

Prints one JSON object on stdout: the workload's result plus `maxrss_kib`, this
process's peak resident set size (getrusage ru_maxrss, KiB on Linux). On an
error it prints {"error": "..."} and exits with 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import traceback

from .workloads import WORKLOADS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.splitlines()[0],
                                     epilog="examples: python -m bench.worker engine --image bench_out.img "
                                            "--count 100000 --vendor amd\n"
                                            "          python -m bench.worker tui --image hello.img\n"
                                            "          python -m bench.worker pyimport --module textual\n"
                                            "          python -m bench.worker exit_log --count 1000000\n"
                                            "          python -m bench.worker trace --count 100000 --rounds 3",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--image", default=None, help="a guests/*.img name (engine, idle, raw, kvm, tui)")
    parser.add_argument("--count", type=int, default=None,
                        help="loop count to patch in (default: as built); exit_log: exits in the log")
    parser.add_argument("--vendor", choices=("intel", "amd"), default=None, help="engine, idle")
    parser.add_argument("--hooks", choices=("stop", "out", "cpuid", "counted"), default=None, help="raw")
    parser.add_argument("--mode", choices=("exact", "fast"), default=None, help="engine: the run mode (default exact)")
    parser.add_argument("--vcpus", type=int, default=None, help="engine: vCPUs (default 1)")
    parser.add_argument("--module", default=None, help="pyimport: the module to import (default textual)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="trace: alternating recording off / on runs inside trace_bench.measure()")
    args = parser.parse_args(argv)
    if args.image is None and args.workload in ("engine", "idle", "raw", "kvm", "tui"):
        parser.error(f"{args.workload} needs --image")
    kwargs = {}
    if args.vendor is not None:
        kwargs["vendor"] = args.vendor
    if args.hooks is not None:
        kwargs["hooks"] = args.hooks
    if args.mode is not None:
        kwargs["mode"] = args.mode
    if args.vcpus is not None:
        kwargs["vcpus"] = args.vcpus
    if args.module is not None:
        kwargs["module"] = args.module
    if args.rounds is not None:
        kwargs["rounds"] = args.rounds
    try:
        result = WORKLOADS[args.workload](args.image, args.count, **kwargs)
    except Exception as e:  # reported to the runner, which shows it in the table
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        print(json.dumps(result))
        return 1
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result, default=str))  # a script's measure() may hold a Path or the like
    return 0


if __name__ == "__main__":
    sys.exit(main())
