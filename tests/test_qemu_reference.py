"""Every bundled guest prints on vmmtui what it prints on QEMU, the reference machine.

Skipped where qemu-system-x86_64 is not installed. Guests that print the
machine's identity (CPUID vendor, hypervisor signature) are compared on the
lines that do not; hello64.elf cannot boot on QEMU (no ELF64 -kernel loader).
"""

import shutil
import subprocess

import pytest

from conftest import GUESTS, run_guest

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")


def _on_qemu(image, cpus=1):
    boot = (["-drive", f"file={image},format=raw,if=floppy,snapshot=on", "-boot", "a"]
            if image.suffix == ".img" else ["-kernel", str(image)])
    proc = subprocess.run(
        ["timeout", "20", QEMU, "-accel", "tcg", "-display", "none", "-monitor", "none", "-serial", "stdio",
         "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-m", "128", "-smp", str(cpus), *boot],
        capture_output=True, stdin=subprocess.DEVNULL)
    status = proc.returncode >> 1 if proc.returncode & 1 else None  # isa-debug-exit: (value << 1) | 1
    return proc.stdout.decode(errors="replace"), status


IDENTITY = ("cpuid: vendor", "hypervisor:", "hypercall:")


#: Guests that need more than one processor: vmmtui --vcpus N, QEMU -smp N.
CPUS = {"ipi.img": 2}


@pytest.mark.parametrize("name", ["hello.img", "paging.img", "memory.img", "cpuid.img", "hello32.elf",
                                  "exceptions.img", "ipi.img"])
def test_same_output_as_qemu(name):
    cpus = CPUS.get(name, 1)
    qemu_out, qemu_status = _on_qemu(GUESTS / name, cpus)
    machine, stop = run_guest(GUESTS / name, vcpus=cpus)
    ours = machine.serial.decode()
    assert (stop.status, qemu_status) == (0, 0)
    if name == "cpuid.img":
        keep = lambda text: [line for line in text.splitlines() if not line.startswith(IDENTITY)]  # noqa: E731
        assert keep(ours) == keep(qemu_out)
    else:
        assert ours == qemu_out
