"""Launch to first frame: the real `vmmtui GUEST` under a pseudo-terminal.

`first_frame()` opens a pty (os.openpty), gives it a window size with
TIOCSWINSZ, and starts `python -m vmmtui.cli GUEST` with the pty's slave as its
stdin, stdout, stderr and controlling terminal (a new session, TIOCSCTTY), with
TERM=xterm-256color, as a terminal emulator would. It then reads everything the
app writes to the master until the first *full* frame is on the screen:

- the header's title text ("vmmtui") and a pane's title ("exit log") are in the
  output with the escape sequences stripped, and
- every row of the window, 1..rows, has been drawn (Textual moves the cursor to
  the start of each line it writes, ESC [ row ; col H; the first frame writes all
  of them).

The clock starts just before the spawn, so the figure is what a user waits:
interpreter start, imports, loading the guest, the app's set-up and the first
paint. Then it sends "q" (vmmtui's quit key), keeps draining the master, and
waits for the app to exit; if it has not within `quit_timeout`, it is killed.

Nothing answers the terminal's queries (Textual asks for DEC modes 2026/2048;
no reply means "not supported", and nothing waits for one).
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZE = (160, 48)  # columns, rows
TITLES = (b"vmmtui", b"exit log")

#: CSI, OSC (BEL or ST ended), DCS, and two-byte escapes.
_ESCAPE = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|P[^\x1b]*\x1b\\|[@-Z\\-_])")
_CURSOR_TO = re.compile(rb"\x1b\[(\d+);\d+H")


def plain(data: bytes) -> bytes:
    """The output with its escape sequences removed (what ends up as text on the screen)."""
    return _ESCAPE.sub(b"", data)


def _make_controlling_tty() -> None:  # runs in the child, after setsid (start_new_session)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def first_frame(argv: list[str], size: tuple[int, int] = SIZE, titles: tuple[bytes, ...] = TITLES,
                frame_timeout: float = 30.0, quit_timeout: float = 10.0, quit_key: bytes = b"q") -> dict[str, Any]:
    """Spawn `argv` under a pty of `size` and time its first full frame; see the module docstring.

    Returns seconds from just before the spawn: `elapsed` (the full frame),
    `first_output_s` (the app's first byte: the driver started), `titles_s` (the
    titles appeared: the frame is being written); and `quit_s` (from "q" to the
    exit), `status` (the exit status; negative: killed by that signal), `killed`,
    `frame_bytes` (bytes read up to the full frame). On no frame: `error`, with
    the tail of the screen's text.
    """
    cols, rows = size
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    want_rows = set(range(1, rows + 1))
    buf = bytearray()
    drawn: set[int] = set()
    out: dict[str, Any] = {"size": f"{cols}x{rows}"}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            start_new_session=True, preexec_fn=_make_controlling_tty)
    os.close(slave)
    try:
        eof = False
        while True:
            left = frame_timeout - (time.perf_counter() - start)
            if left <= 0:
                break
            ready, _, _ = select.select([master], [], [], min(left, 0.5))
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: every holder of the slave is gone
                chunk = b""
            now = time.perf_counter() - start
            if not chunk:
                eof = True
                break
            if not buf:
                out["first_output_s"] = now
            scan_from = max(0, len(buf) - 16)  # a cursor move split across two reads
            buf += chunk
            drawn.update(int(m) for m in _CURSOR_TO.findall(buf, scan_from))
            if "titles_s" not in out:
                text = plain(bytes(buf))
                if all(t in text for t in titles):
                    out["titles_s"] = now
            if "titles_s" in out and want_rows <= drawn:
                out["elapsed"] = now
                out["frame_bytes"] = len(buf)
                break
        if "elapsed" not in out:
            tail = plain(bytes(buf)).decode("utf-8", "replace").split()
            why = ("the app exited" if eof or proc.poll() is not None
                   else f"no full frame within {frame_timeout:.0f} s")
            missing = sorted(want_rows - drawn)
            out["error"] = (f"{why}: titles {'seen' if 'titles_s' in out else 'not seen'}, "
                            f"{len(drawn & want_rows)}/{rows} rows drawn"
                            + (f" (first missing: {missing[0]})" if missing else "")
                            + f"; screen text ends: {' '.join(tail[-30:])!r}")
        # Quit: "q", keep draining (the app must not block on a full pty), wait; kill on timeout.
        asked = time.perf_counter()
        try:
            os.write(master, quit_key)
        except OSError:
            pass
        out["killed"] = False
        while proc.poll() is None:
            if time.perf_counter() - asked > quit_timeout:
                proc.kill()
                out["killed"] = True
                break
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    if not os.read(master, 1 << 16):
                        time.sleep(0.01)
                except OSError:
                    time.sleep(0.01)
        out["status"] = proc.wait()
        out["quit_s"] = time.perf_counter() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return out


def vmmtui_argv(guest: str) -> list[str]:
    """`vmmtui GUEST` as the console script runs it, from this interpreter."""
    return [sys.executable, "-m", "vmmtui.cli", str(ROOT / "guests" / guest)]


def python_c(code: str) -> dict[str, Any]:
    """Seconds for `python -c CODE` in a fresh interpreter, from just before the spawn to its exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    out: dict[str, Any] = {"elapsed": elapsed, "status": proc.returncode}
    if proc.returncode:
        out["error"] = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return out


if __name__ == "__main__":  # a quick look: python -m bench.tui [GUEST]
    import json

    print(json.dumps(first_frame(vmmtui_argv(sys.argv[1] if len(sys.argv) > 1 else "hello.img")), indent=2))
