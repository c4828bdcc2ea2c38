"""A fuzzing campaign: random guests in every mode under both vendors, for a set time.

Unlike the pytest tests (which stop at the first failing case and shrink it), this
keeps going and logs every finding, one JSON object a line.

    python -m tests.robustness.fuzz --minutes 15 --out robustness-findings.jsonl
    python -m tests.robustness.fuzz --minutes 5 --modes long --vendors amd --timeout 2
    python -m tests.robustness.fuzz --minutes 5 --kind elf     # mutated ELF images through `vmmtui run`
    python -m tests.robustness.fuzz --minutes 5 --kind trace   # mutated traces through stats / export / replay

It prints a line per round and a summary: cases run, stop reasons, findings.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from . import strategies
from .runner import Pool, describe

ROUND = 100  # cases per (mode, vendor) before moving to the next


def _known(result: dict[str, Any]) -> str | None:
    from .known import match

    return match(result)


def campaign(args: argparse.Namespace) -> int:
    pool = Pool(limit=args.wall)
    stops: collections.Counter[str] = collections.Counter()
    findings: list[tuple[dict[str, Any], dict[str, Any]]] = []
    known: collections.Counter[str] = collections.Counter()
    messages: collections.Counter[str] = collections.Counter()
    out = open(args.out, "a") if args.out else None
    end = time.monotonic() + 60 * args.minutes
    combos = [(m, v) for m in args.modes for v in args.vendors]
    cases = 0
    trace_sources: dict[str, bytes] = {}
    if args.kind == "trace":
        import tempfile

        from .mutate import mutated_trace_case, record_sources

        trace_sources = record_sources(Path(tempfile.mkdtemp(prefix="vmmtui-traces-")))
        combos = [("trace", "-")]
    elif args.kind == "elf":
        combos = [("elf", v) for v in args.vendors]

    def record(case: dict[str, Any], result: dict[str, Any]) -> None:
        nonlocal cases
        cases += 1
        if "crash" in result or "hang" in result:
            stops["crash" if "crash" in result else "hang"] += 1
        elif "argv" in case:
            stops[f"status {result.get('status')}"] += 1
        else:
            stops[str(result.get("stop") or "load/other")] += 1
        if "argv" in case and result.get("status") == 2:
            messages[re.sub(r"0x[0-9a-f]+|\d+", "N", result.get("stderr", "").split("/")[-1].strip())[:120]] += 1
        if result.get("stop") == "error":
            messages[re.sub(r"0x[0-9a-f]+|\d+", "N", result.get("message", ""))] += 1
        if result.get("problems"):
            label = _known(result)
            if label:
                known[label] += 1
                return
            findings.append((case, result))
            print(describe(case, result), flush=True)
            if out:
                out.write(json.dumps({"case": case, "result": result}) + "\n")
                out.flush()

    try:
        rnd = 0
        while time.monotonic() < end:
            mode, vendor = combos[rnd % len(combos)]
            rnd += 1
            if args.kind == "elf":
                from .mutate import mutated_cli_case

                strategy = mutated_cli_case(vendor, timeout=args.timeout)
            elif args.kind == "trace":
                strategy = mutated_trace_case(trace_sources)
            else:
                strategy = strategies.case(mode, vendor, max_exits=args.max_exits, timeout=args.timeout)

            @settings(max_examples=ROUND, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(st.data())
            def one_round(data: st.DataObject) -> None:
                case = data.draw(strategy)
                if time.monotonic() < end:
                    record(case, pool.run(case))

            started = time.monotonic()
            n0 = cases
            one_round()
            print(f"round {rnd}: {args.kind} {mode}/{vendor}: {cases - n0} cases in "
                  f"{time.monotonic() - started:.1f} s; total {cases}, findings {len(findings)}", flush=True)
    finally:
        pool.close()
        if out:
            out.close()
    print(f"\n{cases} cases; stops: {dict(stops)}")
    if args.messages:
        for text, n in messages.most_common():
            print(f"{n:6d}  error: {text}")
    if known:
        print(f"known findings (see tests/robustness/known.py): {dict(known)}")
    print(f"{len(findings)} new findings")
    return 1 if findings else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.robustness.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--modes", nargs="+", default=["real", "protected", "long"])
    p.add_argument("--vendors", nargs="+", default=["intel", "amd"])
    p.add_argument("--kind", choices=("code", "elf", "trace"), default="code",
                   help="random guest code, mutated ELF images (vmmtui run), or mutated traces "
                        "(vmmtui stats / export / replay)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds each guest run may take (run(timeout=))")
    p.add_argument("--max-exits", type=int, default=10_000)
    p.add_argument("--wall", type=float, default=10.0, help="wall-clock limit of a child for one case")
    p.add_argument("--messages", action="store_true", help="list the messages of 'error' stops at the end")
    p.add_argument("--out", type=Path, help="append findings here, one JSON object a line")
    return campaign(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
