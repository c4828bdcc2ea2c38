#!/usr/bin/env python3
"""Build vmmtui's bundled guest images from their GNU assembler sources.

    python guests/build.py              # writes the images into guests/
    python guests/build.py --out DIR    # writes them into DIR instead

Needs GNU as and ld with x86 support (binutils); the AS and LD environment
variables name other binaries (for example AS=x86_64-linux-gnu-as). Only the
standard library is used. The build is reproducible: the same sources and the
same binutils give the same bytes, wherever the output goes (the assembler and
the linker run in fixed directories with relative file names, with no build id
and no debug information).
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

GUESTS_DIR = Path(__file__).resolve().parent

SECTOR = 512
# A PC BIOS loads sector 0; the boot sector then reads cylinder 0, head 0,
# sectors 2..18 of a 1.44 MB floppy: 18 sectors in all.
MAX_RAW_SECTORS = 18
STAGE2_MAGIC = 0x324D4D56  # lib/boot16.S: the dword at image offset 512
MULTIBOOT_MAGIC = 0x1BADB002


@dataclass(frozen=True)
class Guest:
    output: str  # file written into the output directory
    source: str  # assembler source, relative to guests/
    kind: str  # "raw" (boot image at 0x7C00), "elf32" or "elf64"


GUESTS = (
    Guest("hello.img", "hello.S", "raw"),
    Guest("cpuid.img", "cpuid.S", "raw"),
    Guest("hypercall.img", "hypercall.S", "raw"),
    Guest("paging.img", "paging.S", "raw"),
    Guest("memory.img", "memory.S", "raw"),
    Guest("hello32.elf", "hello32.S", "elf32"),
    Guest("hello64.elf", "hello64.S", "elf64"),
    Guest("exceptions.img", "exceptions.S", "raw"),
    Guest("timer.img", "timer.S", "raw"),
    Guest("smp.img", "smp.S", "raw"),
    Guest("ipi.img", "ipi.S", "raw"),
    # Benchmark guests (bench/): one sector each, the loop count at offset 0x1F8.
    Guest("bench_loop.img", "bench_loop.S", "raw"),
    Guest("bench_out.img", "bench_out.S", "raw"),
    Guest("bench_cpuid.img", "bench_cpuid.S", "raw"),
)

# Assembler flags per kind (raw images mix 16-, 32- and 64-bit code in one
# ELF32 object, switched with .code16/.code32/.code64).
AS_FLAGS = {
    "raw": ["--32"],
    "elf32": ["--32"],
    "elf64": ["--64"],
}
# Linker scripts (the *.ld names) are in guests/lib/.
LD_FLAGS = {
    "raw": ["-m", "elf_i386", "-T", "raw.ld", "--oformat", "binary"],
    "elf32": ["-m", "elf_i386", "-z", "max-page-size=0x1000", "-T", "elf32.ld"],
    "elf64": ["-m", "elf_x86_64", "-z", "max-page-size=0x1000", "-T", "elf64.ld"],
}
COMMON_AS_FLAGS = ["--noexecstack", "-I", "lib"]
COMMON_LD_FLAGS = ["--build-id=none", "-nostdlib"]


class BuildError(Exception):
    """A build step failed; the message is one line for the user."""


def find_tool(env_name: str, default: str, banner: str, what: str) -> str:
    """Return the path of a GNU binutils tool, or raise BuildError."""
    name = os.environ.get(env_name, default)
    path = shutil.which(name)
    if path is None:
        raise BuildError(
            f"{what} not found ({name!r} is not on PATH): install binutils, "
            f"or set {env_name} to a GNU {what} for x86"
        )
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, check=False
        ).stdout
    except OSError as exc:
        raise BuildError(f"cannot run {path}: {exc}") from exc
    if banner not in version:
        raise BuildError(
            f"{path} is not {what} (binutils); set {env_name} to a GNU {what} for x86"
        )
    return path


def run(cmd: list[str], cwd: Path, step: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    # Anything the tools print (even warnings) is worth seeing.
    if proc.stdout or proc.stderr:
        sys.stderr.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BuildError(f"{step} failed (exit {proc.returncode}): {' '.join(cmd)}")


def check_raw(name: str, image: bytes) -> None:
    """The loader contracts of a raw image (see lib/boot16.S)."""
    size = len(image)
    if size == 0 or size % SECTOR:
        raise BuildError(f"{name}: {size} bytes is not a whole number of sectors")
    if size > MAX_RAW_SECTORS * SECTOR:
        raise BuildError(f"{name}: {size} bytes, more than a BIOS boot sector loads")
    if image[510:512] != b"\x55\xaa":
        raise BuildError(f"{name}: no boot signature 0x55AA at offset 510")
    if size > SECTOR and struct.unpack_from("<I", image, SECTOR)[0] != STAGE2_MAGIC:
        raise BuildError(f"{name}: no stage-2 magic at offset 512")


def check_multiboot(name: str, image: bytes) -> None:
    """A multiboot v1 header: 4-byte aligned within the first 8 KiB."""
    for off in range(0, min(len(image), 8192) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", image, off)
        if magic == MULTIBOOT_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return
    raise BuildError(f"{name}: no multiboot header in the first 8 KiB")


def build(out_dir: Path) -> list[tuple[str, int]]:
    as_path = find_tool("AS", "as", "GNU assembler", "as")
    ld_path = find_tool("LD", "ld", "GNU ld", "ld")
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    with tempfile.TemporaryDirectory(prefix="vmmtui-guests-") as tmp:
        tmp_dir = Path(tmp)
        for guest in GUESTS:
            stem = Path(guest.source).stem
            obj = tmp_dir / f"{stem}.o"
            image_tmp = tmp_dir / guest.output
            # Relative names only, run from guests/: nothing in the output
            # depends on where the sources or the output directory are.
            run(
                [as_path, *AS_FLAGS[guest.kind], *COMMON_AS_FLAGS,
                 "-o", str(obj), guest.source],
                cwd=GUESTS_DIR,
                step=f"assembling {guest.source}",
            )
            ld_flags = [
                str(GUESTS_DIR / "lib" / arg) if arg.endswith(".ld") else arg
                for arg in LD_FLAGS[guest.kind]
            ]
            run(
                [ld_path, *ld_flags, *COMMON_LD_FLAGS,
                 "-o", image_tmp.name, obj.name],
                cwd=tmp_dir,
                step=f"linking {guest.output}",
            )
            image = image_tmp.read_bytes()
            if guest.kind == "raw":
                check_raw(guest.output, image)
            elif guest.kind == "elf32":
                check_multiboot(guest.output, image)
            (out_dir / guest.output).write_bytes(image)
            built.append((guest.output, len(image)))
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build vmmtui's guest images with GNU as and ld.",
        epilog="example: python guests/build.py --out /tmp/guests",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=GUESTS_DIR,
        metavar="DIR",
        help="directory for the images (default: guests/, beside this script)",
    )
    args = parser.parse_args(argv)
    try:
        built = build(args.out)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    for name, size in built:
        print(f"{args.out / name}  {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
