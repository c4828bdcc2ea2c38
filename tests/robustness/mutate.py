"""Mutated ELF images (from guests/hello32.elf and guests/hello64.elf) for `vmmtui run`.

Mutations: flip random bytes (anywhere, or in the headers where they matter most),
truncate, set an ELF / program-header field to a boundary value (0, 1, the file
size, 0x7FFF..., all ones...), change the identification bytes (class, data
encoding, version), append or insert garbage. Each case is a command line that
the child runs through `vmmtui.cli.main` (see `child.run_cli_case`): the expected
outcome is a run that ends with a documented status, or one line
"vmmtui: error: ..." and status 2 — never a traceback, never "internal error".
"""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import strategies as st

GUESTS = Path(__file__).resolve().parents[2] / "guests"
SOURCES = ("hello32.elf", "hello64.elf")

# (offset, struct format) of the fields worth growing, per ELF class.
_EHDR32 = {"e_type": (16, "H"), "e_machine": (18, "H"), "e_version": (20, "I"), "e_entry": (24, "I"),
           "e_phoff": (28, "I"), "e_shoff": (32, "I"), "e_ehsize": (40, "H"), "e_phentsize": (42, "H"),
           "e_phnum": (44, "H"), "e_shentsize": (46, "H"), "e_shnum": (48, "H"), "e_shstrndx": (50, "H")}
_EHDR64 = {"e_type": (16, "H"), "e_machine": (18, "H"), "e_version": (20, "I"), "e_entry": (24, "Q"),
           "e_phoff": (32, "Q"), "e_shoff": (40, "Q"), "e_ehsize": (52, "H"), "e_phentsize": (54, "H"),
           "e_phnum": (56, "H"), "e_shentsize": (58, "H"), "e_shnum": (60, "H"), "e_shstrndx": (62, "H")}
_PHDR32 = {"p_type": (0, "I"), "p_offset": (4, "I"), "p_vaddr": (8, "I"), "p_paddr": (12, "I"),
           "p_filesz": (16, "I"), "p_memsz": (20, "I"), "p_flags": (24, "I"), "p_align": (28, "I")}
_PHDR64 = {"p_type": (0, "I"), "p_flags": (4, "I"), "p_offset": (8, "Q"), "p_vaddr": (16, "Q"),
           "p_paddr": (24, "Q"), "p_filesz": (32, "Q"), "p_memsz": (40, "Q"), "p_align": (48, "Q")}
_SHDR_FIELDS32 = {"sh_name": (0, "I"), "sh_type": (4, "I"), "sh_offset": (16, "I"), "sh_size": (20, "I"),
                  "sh_link": (24, "I"), "sh_entsize": (36, "I")}
_SHDR_FIELDS64 = {"sh_name": (0, "I"), "sh_type": (4, "I"), "sh_offset": (24, "Q"), "sh_size": (32, "Q"),
                  "sh_link": (40, "I"), "sh_entsize": (56, "Q")}


def source(name: str) -> bytes:
    return (GUESTS / name).read_bytes()


def _boundary(fmt: str, size: int):
    bits = struct.calcsize(fmt) * 8
    top = (1 << bits) - 1
    return st.one_of(
        st.sampled_from(sorted(v for v in {0, 1, 2, 3, 0x34, 0x40, 0x100, 0x1000, 0xFFF, 0x9_FFFF, 0xA_0000,
                                           0x10_0000, 0x20_0000, 0x3FF_FFFF, 0x400_0000, 0xFEE0_0000, 0xFFFF_F000,
                                           size - 1, size, size + 1, top >> 1, top - 1, top, top - 0xFFF}
                               if 0 <= v <= top)),
        st.integers(0, top))


@st.composite
def mutated_elf(draw) -> tuple[str, bytes, list[str]]:
    """(source name, mutated bytes, what was done)."""
    name = draw(st.sampled_from(SOURCES))
    data = bytearray(source(name))
    is64 = name == "hello64.elf"
    ehdr, phdr, shdr = (_EHDR64, _PHDR64, _SHDR_FIELDS64) if is64 else (_EHDR32, _PHDR32, _SHDR_FIELDS32)
    phoff, phentsize = (64, 56) if is64 else (52, 32)
    shoff = struct.unpack_from("<Q" if is64 else "<I", data, 40 if is64 else 32)[0]
    shentsize = 64 if is64 else 40
    done: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip_header", "field", "phdr", "shdr", "ident", "truncate",
                                     "append", "insert"]))
        if kind in ("flip", "flip_header"):
            limit = min(len(data), 0x100 if kind == "flip_header" else len(data))
            if limit == 0:
                continue
            pos = draw(st.integers(0, limit - 1))
            value = draw(st.integers(0, 255))
            data[pos] = value
            done.append(f"byte {pos:#x} = {value:#04x}")
        elif kind in ("field", "phdr", "shdr"):
            if kind == "field":
                fname = draw(st.sampled_from(sorted(ehdr)))
                off, fmt = ehdr[fname]
                where = fname
            elif kind == "phdr":
                index = draw(st.integers(0, 1))
                fname = draw(st.sampled_from(sorted(phdr)))
                off, fmt = phdr[fname]
                off += phoff + index * phentsize
                where = f"phdr[{index}].{fname}"
            else:
                index = draw(st.integers(0, 5))
                fname = draw(st.sampled_from(sorted(shdr)))
                off, fmt = shdr[fname]
                off += shoff + index * shentsize
                where = f"shdr[{index}].{fname}"
            if off + struct.calcsize(fmt) > len(data):
                continue
            value = draw(_boundary(fmt, len(data)))
            struct.pack_into("<" + fmt, data, off, value)
            done.append(f"{where} = {value:#x}")
        elif kind == "ident":
            pos = draw(st.sampled_from([4, 5, 6, 7]))  # EI_CLASS, EI_DATA, EI_VERSION, EI_OSABI
            value = draw(st.sampled_from([0, 1, 2, 3, 0xFF]))
            if pos < len(data):
                data[pos] = value
                done.append(f"e_ident[{pos}] = {value}")
        elif kind == "truncate":
            cut = draw(st.integers(0, len(data)))
            del data[cut:]
            done.append(f"truncated to {cut} bytes")
        elif kind == "append":
            extra = draw(st.binary(min_size=1, max_size=64))
            data += extra
            done.append(f"appended {len(extra)} bytes")
        else:
            pos = draw(st.integers(0, len(data)))
            extra = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos] = extra
            done.append(f"inserted {len(extra)} bytes at {pos:#x}")
    return name, bytes(data), done


@st.composite
def mutated_cli_case(draw, vendor: str, timeout: float = 2.0) -> dict:
    """A `vmmtui run` command line on a mutated ELF image."""
    name, data, done = draw(mutated_elf())
    argv = ["run", "{image}", "--vendor", vendor, "--max-exits", "10000", "--timeout", str(timeout)]
    if draw(st.booleans()):
        argv.append("--json")
    if draw(st.integers(0, 3)) == 0:
        argv += ["--mem", draw(st.sampled_from(["2M", "4M", "16M"]))]
    return {"argv": argv, "image": data.hex(), "name": draw(st.sampled_from([name, "guest.img", "guest.bin"])),
            "mutations": done, "source": name, "mode": "elf", "vendor": vendor, "code": f"<{name} mutated>"}


# -- mutated exit traces ------------------------------------------------------------------------

#: Base traces recorded from bundled guests: (file name, `vmmtui record` arguments after GUEST).
TRACE_SOURCES = {
    "cpuid-intel.vmtrace": ("cpuid.img", ["--vendor", "intel"]),
    "cpuid-amd.vmtrace": ("cpuid.img", ["--vendor", "amd"]),
    "hello64-cut.vmtrace": ("hello64.elf", ["--vendor", "intel", "--max-exits", "50"]),
}
TRACE_COMMANDS = (
    ["stats", "{trace}"],
    ["stats", "{trace}", "--json"],
    ["export", "{trace}", "--format", "chrome", "-o", "-"],
    ["export", "{trace}", "--format", "csv", "-o", "-", "--registers"],
    ["export", "{trace}", "--format", "json", "-o", "-", "--registers"],
    ["replay", "{trace}", "--verify", "--timeout", "2"],
    ["replay", "{trace}", "--script", "{script}"],
)
REPLAY_SCRIPT = "goto 1\nregs\nnext\ninfo\nexit 3\ngoto 100000\nregs\ngoto 0\n"
_META_KEYS = ("format", "format_version", "vendor", "vcpus", "mem_size", "page_size", "exit_options", "controls",
              "hw_controls", "structure", "image_path", "image_sha256", "image_kind", "image_size", "image_entry",
              "registers", "time_per_exit", "batch", "ok", "exits", "serial_bytes", "end_time", "vmm_log", "stop",
              "stop_status", "stop_message")
_ODD_VALUES = ("NULL", "''", "'x'", "-1", "0", "1", "2", "9223372036854775807", "-9223372036854775808", "1.5",
               "'{'", "'[]'", "'{}'", "'[1, 2]'", "'amd'", "'intel'", "'via'", "'999'", "'2M'", "x'00ff'",
               "randomblob(8)", "'/nonexistent/guest.img'", "'/'", "1e300")
_TABLES = ("exits", "reasons", "registers", "keyframes", "regs", "serial", "inputs", "schedule")
_EXIT_COLUMNS = ("seq", "vcpu", "time", "reason", "rip", "length", "info1", "info2", "aux1", "aux2")
_REGS_COLUMNS = ("first_seq", "vcpu", "last_seq", "count", "changed", "data")


def record_sources(directory: Path) -> dict[str, bytes]:
    """Record the base traces (in this process: known-good guests) and return their bytes."""
    import contextlib
    import io

    from vmmtui.cli import main as cli_main

    out: dict[str, bytes] = {}
    for name, (guest, extra) in TRACE_SOURCES.items():
        path = directory / name
        if not path.exists():
            with contextlib.redirect_stdout(io.TextIOWrapper(io.BytesIO())), \
                    contextlib.redirect_stderr(io.StringIO()):
                cli_main(["record", str(GUESTS / guest), "-o", str(path), "--force", *extra])
        out[name] = path.read_bytes()
    return out


@st.composite
def sql_mutation(draw) -> str:
    kind = draw(st.sampled_from(["meta", "meta_delete", "delete_rows", "drop", "exit_value", "regs_value",
                                 "keyframe_value", "reason_value", "register_name", "insert_exit"]))
    odd = draw(st.sampled_from(_ODD_VALUES))
    if kind == "meta":
        return f"UPDATE meta SET value = {odd} WHERE key = '{draw(st.sampled_from(_META_KEYS))}'"
    if kind == "meta_delete":
        return f"DELETE FROM meta WHERE key = '{draw(st.sampled_from(_META_KEYS))}'"
    if kind == "delete_rows":
        table = draw(st.sampled_from(_TABLES))
        return f"DELETE FROM {table} WHERE rowid % {draw(st.integers(1, 7))} = {draw(st.integers(0, 3))}"
    if kind == "drop":
        name = draw(st.sampled_from(_TABLES + ("meta",)))
        return f"DROP TABLE {name}"
    if kind == "exit_value":
        col = draw(st.sampled_from(_EXIT_COLUMNS))
        where = draw(st.sampled_from(["", f" WHERE seq = {draw(st.integers(0, 600))}", " WHERE seq % 2 = 1"]))
        return f"UPDATE OR IGNORE exits SET {col} = {odd}{where}"
    if kind == "regs_value":
        col = draw(st.sampled_from(_REGS_COLUMNS))
        if col == "data":
            odd = draw(st.sampled_from(["randomblob(64)", "zeroblob(16)", "x''", "substr(data, 1, length(data) / 2)",
                                        "data || x'00'", "'text'", "NULL"]))
        return f"UPDATE OR IGNORE regs SET {col} = {odd}"
    if kind == "keyframe_value":
        col = draw(st.sampled_from(["seq", "vcpu", "rip", "rax", "cr0", "cs"]))
        return f"UPDATE OR IGNORE keyframes SET {col} = {odd}"
    if kind == "reason_value":
        return f"UPDATE OR IGNORE reasons SET {draw(st.sampled_from(['reason', 'name']))} = {odd}"
    if kind == "register_name":
        return f"UPDATE OR IGNORE registers SET name = {odd} WHERE idx = {draw(st.integers(0, 30))}"
    seq = draw(st.sampled_from([-1, 10_000, 2**62, 563, 51]))
    return f"INSERT OR IGNORE INTO exits VALUES ({seq}, 0, 5, 30, 0, 1, 0, 0, 0, 0)"


def apply_sql(data: bytes, statements: list[str]) -> tuple[bytes, list[str]]:
    """Run `statements` on a copy of the trace `data`; those SQLite refuses are left out."""
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.vmtrace"
        path.write_bytes(data)
        db = sqlite3.connect(path, isolation_level=None)
        done = []
        for sql in statements:
            try:
                db.execute(sql)
                done.append(sql)
            except sqlite3.Error:
                pass
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        return path.read_bytes(), done


@st.composite
def mutated_trace_case(draw, sources: dict[str, bytes]) -> dict:
    """A trace command (stats, export, replay --verify / --script) on a mutated trace."""
    name = draw(st.sampled_from(sorted(sources)))
    data = sources[name]
    done: list[str] = []
    if draw(st.booleans()):
        data, done = apply_sql(data, draw(st.lists(sql_mutation(), min_size=1, max_size=3)))
    if not done or draw(st.integers(0, 2)) == 0:
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["flip", "flip_header", "flip_page_header", "truncate", "append"]))
            if kind == "truncate":
                cut = draw(st.one_of(st.integers(0, len(raw)),
                                     st.sampled_from([0, 16, 99, 100, 4096, len(raw) - 4096, len(raw) - 1])))
                del raw[max(0, cut):]
                done.append(f"truncated to {len(raw)} bytes")
            elif kind == "append":
                raw += draw(st.binary(min_size=1, max_size=4096))
                done.append("appended bytes")
            elif raw:
                if kind == "flip_header":
                    pos = draw(st.integers(0, min(99, len(raw) - 1)))
                elif kind == "flip_page_header":  # the b-tree page headers at the start of each 4 KiB page
                    pos = min(len(raw) - 1, draw(st.integers(0, len(raw) // 4096)) * 4096 + draw(st.integers(0, 12)))
                else:
                    pos = draw(st.integers(0, len(raw) - 1))
                raw[pos] = draw(st.integers(0, 255))
                done.append(f"byte {pos:#x} = {raw[pos]:#04x}")
        data = bytes(raw)
    argv = list(draw(st.sampled_from(TRACE_COMMANDS)))
    files = {"trace.vmtrace": data.hex()}
    if "{script}" in argv:
        files["script.txt"] = REPLAY_SCRIPT.encode().hex()
    return {"argv": argv, "files": files, "source": name, "mutations": done, "mode": "trace",
            "vendor": name.split("-")[1].split(".")[0], "code": f"<{name} mutated>"}
