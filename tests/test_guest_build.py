"""The committed guest images are what guests/build.py makes from their sources."""

import shutil
import subprocess
import sys

import pytest

from conftest import GUESTS

IMAGES = ["hello.img", "cpuid.img", "hypercall.img", "paging.img", "memory.img",
          "hello32.elf", "hello64.elf", "exceptions.img", "timer.img", "smp.img", "ipi.img",
          "bench_loop.img", "bench_out.img", "bench_cpuid.img"]


@pytest.mark.skipif(shutil.which("as") is None or shutil.which("ld") is None,
                    reason="GNU as/ld not installed")
def test_rebuild_matches_committed_images(tmp_path):
    subprocess.run([sys.executable, str(GUESTS / "build.py"), "--out", str(tmp_path)], check=True)
    for name in IMAGES:
        assert (tmp_path / name).read_bytes() == (GUESTS / name).read_bytes(), name


def test_raw_images_are_boot_sectors():
    for name in IMAGES:
        if name.endswith(".img"):
            data = (GUESTS / name).read_bytes()
            assert len(data) % 512 == 0 and data[510:512] == b"\x55\xaa", name
