"""The command line: `vmmtui GUEST` opens the TUI; subcommands do headless work.

Errors are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from collections.abc import Sequence

from engine.config import DEFAULT_MEM, DEFAULT_QUANTUM, MAX_VCPUS, MachineConfig, parse_size
from engine.errors import EngineError
from engine.loader import load
from engine.machine import Machine, Stop, StopReason

from . import __version__

# Process exit statuses for stops the guest did not choose (README, "Exit status").
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_SHUTDOWN = 71
EXIT_MAX_EXITS = 72
EXIT_TIMEOUT = 73
EXIT_GUEST_ERROR = 74
_STOP_STATUS = {
    StopReason.SHUTDOWN: EXIT_SHUTDOWN,
    StopReason.MAX_EXITS: EXIT_MAX_EXITS,
    StopReason.TIMEOUT: EXIT_TIMEOUT,
    StopReason.ERROR: EXIT_GUEST_ERROR,
}

_RUN_EXAMPLE = """\
examples:
  vmmtui run guests/hello.img
  vmmtui run guests/cpuid.img --vendor amd --json
  vmmtui run guests/memory.img --page-size 4K --exit io=off
"""


class UsageError(Exception):
    """A bad command line, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def _add_machine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("guest", metavar="GUEST", help="guest image: a raw *.img boot image, or an ELF32 (multiboot) / ELF64")
    p.add_argument("--vendor", choices=("intel", "amd"), default="intel",
                   help="the CPU's virtualization: intel (VT-x, VMCS, EPT) or amd (AMD-V, VMCB, NPT); default intel")
    p.add_argument("--mem", default=f"{DEFAULT_MEM >> 20}M", metavar="SIZE",
                   help="guest memory, e.g. 64M or 1G (a multiple of 2M; default %(default)s)")
    p.add_argument("--page-size", default="2M", metavar="4K|2M",
                   help="how the VMM backs guest RAM on first touch: 2M large pages (default) or 4K pages")
    p.add_argument("--exit", action="append", default=[], metavar="NAME=on|off",
                   help="turn one exit control on or off (repeatable): io, msr, cpuid, hlt, invlpg, rdtsc, "
                        "cr0, cr3, cr4, hypercall, pause, extint, intwin, init, preempt, or an exception vector de, db, bp, "
                        "ud, gp, pf, ...")
    p.add_argument("--vcpus", type=int, default=1, metavar="N",
                   help=f"number of vCPUs, 1 to {MAX_VCPUS}; the APs wait for INIT-SIPI-SIPI (default 1)")
    p.add_argument("--quantum", type=int, default=DEFAULT_QUANTUM, metavar="N",
                   help="guest instructions a vCPU runs before the next vCPU's turn (default %(default)s)")
    p.add_argument("--fast", action="store_true",
                   help="run one vCPU without counting instructions while no timer is armed: faster, "
                        "but virtual time then stands still between exits")


_TUI_EXAMPLE = """\
keys: s step, n next exit, c continue, p pause, b break, : command line, 1-9 panes, q quit
examples:
  vmmtui guests/hello.img
  vmmtui guests/cpuid.img --vendor amd
  vmmtui guests/cpuid.img --script demo.vmmtui     # commands from a file, no terminal
"""
SUBCOMMANDS = ("run", "record", "replay", "stats", "export")


def build_tui_parser() -> argparse.ArgumentParser:
    """The parser of `vmmtui GUEST`: the interactive debugger."""
    p = _Parser(prog="vmmtui", description="Debug GUEST in the terminal: registers, the VMCS / VMCB, every VM "
                                           "exit, the vCPU schedule, guest and EPT/NPT page tables. "
                                           f"Headless commands: {', '.join(SUBCOMMANDS)} (vmmtui run --help).",
                epilog=_TUI_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"vmmtui {__version__}")
    _add_machine_options(p)
    p.add_argument("--script", metavar="FILE",
                   help="run debugger commands from FILE without a terminal and print what each shows")
    return p


def cmd_tui(args: argparse.Namespace) -> int:
    """`vmmtui GUEST`: the TUI, or a script of its commands."""
    config = machine_config(args)
    config.check()
    if not Path(args.guest).is_file():
        raise UsageError(f"{args.guest}: no such file" if not Path(args.guest).exists()
                         else f"{args.guest}: not an image file")
    if args.script is not None:
        from rich.console import Console

        from .script import run_script
        from .session import Session

        try:
            with open(args.script, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise UsageError(f"{args.script}: {e.strerror}") from None
        session = Session.open(args.guest, config)
        return run_script(session, lines, Console(highlight=False))
    from .app import make_app

    make_app(args.guest, config).run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the headless subcommands (`vmmtui run ...`)."""
    parser = _Parser(prog="vmmtui", description="A terminal debugger for virtual machine monitors.",
                     epilog="Run `vmmtui COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"vmmtui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="run a guest headless and summarise its VM exits",
                         description="Run GUEST headless: its serial output to stdout, an exit summary to "
                                     "stderr, and the guest's debug-exit status as the process status.",
                         epilog=_RUN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_machine_options(run)
    run.add_argument("--max-exits", type=int, metavar="N", help="stop after N exits")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this many seconds")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object (serial output, every exit, counts) on stdout instead")
    _add_trace_commands(sub)
    return parser


# -- exit traces (docs/trace-format.md) ------------------------------------------------

_TRACE_EXAMPLES = {
    "record": "example:\n  vmmtui record guests/cpuid.img -o cpuid.vmtrace --vendor amd\n"
              "  sqlite3 cpuid.vmtrace 'SELECT * FROM exit_counts'\n",
    "replay": "examples:\n  vmmtui replay cpuid.vmtrace                    # the TUI on the trace\n"
              "  vmmtui replay --verify cpuid.vmtrace           # re-run the guest, compare every exit\n"
              "  vmmtui replay --verify cpuid.vmtrace new.img --allow-image-change\n",
    "stats": "example:\n  vmmtui stats cpuid.vmtrace --json\n",
    "export": "examples:\n  vmmtui export cpuid.vmtrace --format chrome -o cpuid.json   # open in ui.perfetto.dev\n"
              "  vmmtui export cpuid.vmtrace --format csv -o - --registers\n",
}


def _add_trace_commands(sub: argparse._SubParsersAction) -> None:
    def parser(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, epilog=_TRACE_EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    rec = parser("record", "run a guest headless and record its exit trace",
                 "Run GUEST as `vmmtui run` does (serial output to stdout, exit summary to stderr, the same "
                 "exit status) and record every exit, the registers at each, the console output and the "
                 "configuration into an SQLite trace (docs/trace-format.md).")
    _add_machine_options(rec)
    rec.add_argument("-o", "--output", required=True, metavar="TRACE", help="the trace file to write")
    rec.add_argument("--force", action="store_true", help="overwrite TRACE if it exists")
    rec.add_argument("--max-exits", type=int, metavar="N", help="stop after N exits")
    rec.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this many seconds")
    rep = parser("replay", "show a recorded trace in the TUI, or verify it by re-running the guest",
                 "Open the TUI on TRACE: exits, registers and console come from the file; memory, page tables, "
                 "disassembly and the VMCS / VMCB at the selected exit from the guest re-run to it (from the "
                 "image the trace carries, checked against the trace). With --verify re-run the guest with the "
                 "recorded configuration and inputs and compare every exit: status 0 when identical, 1 at the "
                 "first divergence (which exit, which field, expected, got).")
    rep.add_argument("trace", metavar="TRACE", help="a trace written by vmmtui record")
    rep.add_argument("guest", metavar="GUEST", nargs="?",
                     help="with --verify: the image to re-run (default: the image path in the trace, or the "
                          "copy the trace carries when that file is gone)")
    rep.add_argument("--verify", action="store_true", help="re-run the guest and compare it with the trace")
    rep.add_argument("--allow-image-change", action="store_true",
                     help="with --verify: compare even when GUEST's SHA-256 differs from the traced image's")
    rep.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="with --verify: give up on the re-run after this many seconds")
    rep.add_argument("--script", metavar="FILE", help="run replay commands from FILE without a terminal")
    st = parser("stats", "exit statistics of a trace (as perf kvm stat report)",
                "Per exit reason: count, share, time in the VMM (min / avg / max) and in the guest, for all "
                "vCPUs and per vCPU; guest time in instructions retired (virtual time), VMM time in measured "
                "host microseconds; and the overhead model with its constants.")
    st.add_argument("trace", metavar="TRACE")
    st.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ex = parser("export", "export a trace as Chrome/Perfetto trace events, CSV or JSON",
                "Write TRACE's exits to FILE: chrome = Trace Event Format (one track per vCPU, loadable in "
                "Perfetto), csv / json = one record per exit with decoded names.")
    ex.add_argument("trace", metavar="TRACE")
    ex.add_argument("--format", required=True, choices=("chrome", "csv", "json"))
    ex.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write (- for stdout)")
    ex.add_argument("--registers", action="store_true", help="csv / json: add the registers at each exit")


def _open_trace(path: str):  # noqa: ANN202
    from engine.trace import open_trace

    trace = open_trace(path)
    if not trace.complete:
        wal = f"; its {Path(path).name}-wal file is missing, copy it with the trace" if trace.wal_missing else ""
        print(f"vmmtui: warning: {path} is incomplete (its recorder did not close it): "
              f"{len(trace):,} exits, up to its last committed batch{wal}", file=sys.stderr)
    return trace


def cmd_record(args: argparse.Namespace) -> int:
    """`vmmtui record`: `vmmtui run` that writes a trace."""
    from engine.trace import TraceWriter

    if args.max_exits is not None and args.max_exits < 1:
        raise UsageError("--max-exits must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    machine = Machine(machine_config(args))
    image = load(machine, args.guest)
    writer = TraceWriter(args.output, machine, image, force=args.force)
    out = sys.stdout.buffer

    def echo(data: bytes) -> None:
        out.write(data)
        out.flush()

    machine.on_serial(echo)
    started = time.perf_counter()
    try:
        stop = machine.run(max_exits=args.max_exits, timeout=args.timeout)
    except BaseException:
        writer.abort()
        raise
    elapsed = time.perf_counter() - started
    info = writer.close(stop, elapsed)
    from .summary import print_summary

    print_summary(machine, stop, elapsed)
    print(f"trace: {info['path']}: {info['exits']:,} exits, {info['bytes']:,} bytes "
          f"({info['bytes_per_exit']:.1f} bytes per exit)", file=sys.stderr)
    return exit_status(stop)


def cmd_replay(args: argparse.Namespace) -> int:
    """`vmmtui replay`: the TUI on a trace, or --verify."""
    if not args.verify and (args.guest or args.allow_image_change or args.timeout is not None):
        raise UsageError("GUEST, --allow-image-change and --timeout go with --verify")
    trace = _open_trace(args.trace)
    if args.verify:
        from engine.trace.verify import verify

        if args.timeout is not None and args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        result = verify(trace, args.guest, allow_image_change=args.allow_image_change, timeout=args.timeout)
        print(result.report())
        return 0 if result.identical else 1
    from .replay import REPLAY, ReplaySession, make_replay_app
    from .script import run_script

    if args.script is not None:
        from rich.console import Console

        try:
            with open(args.script, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise UsageError(f"{args.script}: {e.strerror}") from None
        return run_script(ReplaySession(trace), lines, Console(highlight=False), REPLAY)
    make_replay_app(trace).run()
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """`vmmtui stats`: perf-kvm-stat-like figures of a trace."""
    from engine.trace.stats import compute, format_report

    figures = compute(_open_trace(args.trace))
    if args.json:
        json.dump(figures, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        print(format_report(figures))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`vmmtui export`: chrome / csv / json."""
    from engine.trace.export import export

    trace = _open_trace(args.trace)
    if args.registers and args.format == "chrome":
        raise UsageError("--registers goes with --format csv or json")
    if args.output == "-":
        try:
            export(trace, args.format, sys.stdout, args.registers)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has seen enough
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            n = export(trace, args.format, f, args.registers)
    except OSError as e:
        raise UsageError(f"{args.output}: {e.strerror}") from None
    print(f"{args.output}: {n:,} {'events' if args.format == 'chrome' else 'exits'} ({args.format})",
          file=sys.stderr)
    return 0


def machine_config(args: argparse.Namespace) -> MachineConfig:
    """The machine the options describe."""
    return MachineConfig(vendor=args.vendor, mem_size=parse_size(args.mem), page_size=parse_size(args.page_size),
                         exits=list(args.exit), vcpus=args.vcpus, quantum=args.quantum, fast=args.fast)


def cmd_run(args: argparse.Namespace) -> int:
    """`vmmtui run`: run headless."""
    if args.max_exits is not None and args.max_exits < 1:
        raise UsageError("--max-exits must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    machine = Machine(machine_config(args))
    image = load(machine, args.guest)
    if not args.json:
        out = sys.stdout.buffer

        def echo(data: bytes) -> None:
            out.write(data)
            out.flush()

        machine.on_serial(echo)
    started = time.perf_counter()
    stop = machine.run(max_exits=args.max_exits, timeout=args.timeout)
    elapsed = time.perf_counter() - started
    if args.json:
        json.dump(run_json(machine, stop, image.sha256), sys.stdout)
        sys.stdout.write("\n")
    else:
        from .summary import print_summary

        print_summary(machine, stop, elapsed)
    return exit_status(stop)


def exit_status(stop: Stop) -> int:
    """The process exit status for a stop (README, "Exit status")."""
    if stop.reason in (StopReason.DEBUG_EXIT, StopReason.HYPERCALL_EXIT):
        return (stop.status or 0) & 0xFF
    if stop.reason == StopReason.HALT:
        return 0
    return _STOP_STATUS.get(stop.reason, EXIT_INTERNAL)


def run_json(machine: Machine, stop: Stop, sha256: str) -> dict[str, object]:
    """The `--json` document of a run."""
    return {
        "vendor": machine.vendor,
        "stop": stop.reason.value,
        "exit_status": stop.status,
        "message": stop.message,
        "serial": machine.serial.decode("utf-8", errors="replace"),
        "exits": [e.as_json() for e in machine.exits],
        "counts": dict(machine.exits.counts()),
        "controls": machine.controls.as_json(),
        "vmm": machine.hw.vmm_log,
        "image": {"sha256": sha256},
        "mem": machine.config.mem_size,
        "vcpus": machine.config.vcpus,
        "quantum": machine.config.quantum,
        "time": machine.time,
        "retired": machine.sched.retired,
        "schedule": machine.sched.as_json(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vmmtui` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
            return cmd_tui(build_tui_parser().parse_args(argv))
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            build_tui_parser().print_help()
            return EXIT_USAGE
        return {"run": cmd_run, "record": cmd_record, "replay": cmd_replay, "stats": cmd_stats,
                "export": cmd_export}[args.command](args)
    except UsageError as e:
        print(f"vmmtui: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except EngineError as e:
        print(f"vmmtui: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vmmtui: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the last line of defence: never a traceback
        print(f"vmmtui: internal error: {type(e).__name__}: {e} (please report this)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
