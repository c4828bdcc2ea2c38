"""The exit-log filter's fast paths give exactly the rows of a row-by-row filter.

`FilterPlan.select` decides each distinct encoding once and reads rows through an
`EncodingIndex` (codes per row), byte masks and `bytes.translate`; rows not coded
yet, rows past the index's limit (overflow) and rows whose operands `update_aux`
completed after they were coded each take another path. Every test here compares
`select` with the plain definition, one row at a time:

- a parsed filter keeps exit `seq` iff `ExitFilter.matches(log[seq])`;
- a substring keeps it iff the needle is in `ExitRows.text(seq).lower()`.

No timing here: speed is measured in bench/exit_log_view.py.
"""

from __future__ import annotations

import asyncio
from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textual.app import App, ComposeResult

from conftest import GUESTS
from engine.config import MachineConfig
from engine.exitlog import ExitLog
from engine.svm import exits as S
from engine.trace.reader import TraceExits, hardware_for
from engine.vmx import exits as X
from vmmtui.views.exit_log import ExitRows
from vmmtui.views.exit_select import EncodingIndex, FilterPlan

HW = {vendor: hardware_for(vendor) for vendor in ("intel", "amd")}

# -- random logs -----------------------------------------------------------------------

_u64 = st.integers(0, (1 << 64) - 1)
_small = st.integers(0, 0x1FF)
_port = st.sampled_from([0x3F8, 0x3FD, 0x80, 0xF4, 0x60, 0x1234])


@st.composite
def _intel_encoding(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    kind = draw(st.sampled_from(["io", "cpuid", "msr", "ept", "cr", "exc", "simple", "random"]))
    if kind == "io":
        info1 = X.io_qualification(port=draw(_port), size=draw(st.sampled_from([1, 2, 4])), is_in=draw(st.booleans()),
                                   string=draw(st.booleans()), rep=draw(st.booleans()), imm=draw(st.booleans()))
        return X.IO_INSTRUCTION, info1, 0, draw(_small), draw(st.integers(0, 5))
    if kind == "cpuid":
        return X.CPUID, 0, 0, draw(st.sampled_from([0, 1, 7, 0x40000000, 0x40000001, 0x8000001D])), draw(_small)
    if kind == "msr":
        return draw(st.sampled_from([X.MSR_READ, X.MSR_WRITE])), 0, 0, draw(st.sampled_from([0x1B, 0x174, 0xC0000080])), \
            draw(_u64)
    if kind == "ept":
        info1 = X.ept_violation_qualification(read=draw(st.booleans()), write=draw(st.booleans()),
                                              fetch=draw(st.booleans()), readable=draw(st.booleans()),
                                              writable=draw(st.booleans()), executable=draw(st.booleans()))
        return X.EPT_VIOLATION, info1, draw(st.integers(0, 64)) << 21, 0, 0
    if kind == "cr":
        access = draw(st.sampled_from([X.MOV_TO_CR, X.MOV_FROM_CR]))
        info1 = X.cr_qualification(cr=draw(st.sampled_from([0, 3, 4, 8])), access=access, gpr=draw(st.integers(0, 15)))
        return X.CR_ACCESS, info1, 0, draw(st.sampled_from([0, 0x1000, 0x80000011])), 0
    if kind == "exc":
        return X.EXCEPTION_NMI, draw(st.sampled_from([0, 0x1000])), draw(st.sampled_from([0x80000B0E, 0x80000306, 0])), \
            draw(st.integers(0, 3)), 0
    if kind == "simple":
        return draw(st.sampled_from([X.HLT, X.RDTSC, X.INVLPG, X.VMCALL, X.TRIPLE_FAULT])), draw(_small), 0, \
            draw(_u64), draw(_small)
    return draw(st.integers(0, 300)), draw(_u64), draw(_u64), draw(_u64), draw(_u64)


@st.composite
def _amd_encoding(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    kind = draw(st.sampled_from(["io", "cpuid", "msr", "npf", "cr", "exc", "simple", "random"]))
    if kind == "io":
        info1 = S.ioio_exitinfo1(port=draw(_port), size=draw(st.sampled_from([1, 2, 4])), is_in=draw(st.booleans()),
                                 string=draw(st.booleans()), rep=draw(st.booleans()))
        return S.IOIO, info1, draw(st.sampled_from([0x7C01, 0x7C02])), draw(_small), draw(st.integers(0, 5))
    if kind == "cpuid":
        return S.CPUID, 0, 0, draw(st.sampled_from([0, 1, 7, 0x40000000])), draw(_small)
    if kind == "msr":
        return S.MSR, draw(st.integers(0, 1)), 0, draw(st.sampled_from([0x1B, 0x174])), draw(_u64)
    if kind == "npf":
        info1 = S.npf_exitinfo1(present=draw(st.booleans()), write=draw(st.booleans()), fetch=draw(st.booleans()))
        return S.NPF, info1, draw(st.integers(0, 64)) << 12, 0, 0
    if kind == "cr":
        reason = draw(st.sampled_from([S.READ_CR0, S.READ_CR3, S.WRITE_CR3, S.WRITE_CR4, S.WRITE_CR8]))
        mov_cr = draw(st.booleans())
        return reason, S.cr_exitinfo1(gpr=draw(st.integers(0, 15)) if mov_cr else 0, mov_cr=mov_cr), 0, \
            draw(st.sampled_from([0, 0x1000])), 0
    if kind == "exc":
        return S.EXCP_BASE + draw(st.sampled_from([6, 13, 14])), draw(_small), draw(st.sampled_from([0, 0x1000])), 0, 0
    if kind == "simple":
        return draw(st.sampled_from([S.HLT, S.RDTSC, S.INVLPG, S.VMMCALL, S.SHUTDOWN])), draw(_small), 0, \
            draw(_u64), draw(_small)
    return draw(st.integers(0, 0x500)), draw(_u64), draw(_u64), draw(_u64), draw(_u64)


_RIPS = st.one_of(st.integers(0x7C00, 0x7CFF), st.integers(0x7C00, 0x7FFF), _u64)


@st.composite
def _log(draw: st.DrawFn) -> tuple[str, list[tuple[int, ...]]]:
    """A vendor and rows (vcpu, time, reason, rip, length, info1, info2, aux1, aux2): a few encodings
    and RIPs repeated (as a run repeats them), now and then a new one."""
    vendor = draw(st.sampled_from(["intel", "amd"]))
    encoding = _intel_encoding() if vendor == "intel" else _amd_encoding()
    encodings = draw(st.lists(encoding, min_size=1, max_size=6))
    rip_window = draw(_RIPS)
    rips = st.one_of(st.sampled_from([rip_window, rip_window ^ 1, rip_window & ~0xFF]), _RIPS)
    rows = []
    for i in range(draw(st.integers(0, 120))):
        e = draw(st.one_of(st.sampled_from(encodings), encoding))
        rows.append((draw(st.integers(0, 3)), 1000 * i + draw(st.integers(0, 999)), e[0], draw(rips),
                     draw(st.integers(1, 15)), *e[1:]))
    return vendor, rows


def _exit_log(vendor: str, rows: list[tuple[int, ...]]) -> ExitLog:
    log = ExitLog(HW[vendor].decode)
    for row in rows:
        log.append(*row)
    return log


# -- random filters ------------------------------------------------------------------------

_FILTERS = st.one_of(
    st.sampled_from(["io", "cpuid", "msr", "ept", "npf", "cr", "exception", "hlt", "rdtsc", "hypercall", "shutdown",
                     "invlpg", "IO_INSTRUCTION", "NPF", "MSR_WRITE", "cr 3", "cr 0 write", "write", "read", "in", "out",
                     "string", "rep", "io out", "io in string", "msr write", "msr read", "ept write", "ept fetch",
                     "exception vector=14", "io port=0x3f8", "io dir=in", "io port=0x3f8 dir=out", "cpuid leaf=0x1",
                     "cpuid leaf=0x40000000-0x40000100", "msr index=0x174 write", "ept gpa=0x200000-0x800000",
                     "leaf=0x0", "io value=0x41", "io count=3", "vcpu=1", "vcpu=0-2", "reason=30", "reason=0x7b",
                     "reason=10-40", "seq=5", "seq=3-40", "io vcpu=2 seq=10-90", "rip=0x7c3f", "rip=0x7c00-0x7c80",
                     "cpuid rip=0x7c10 vcpu=1", "hlt length=1"]),
    st.builds(lambda k, v: f"{k}={v:#x}", st.sampled_from(["port", "vcpu", "rip", "leaf", "msr", "value", "gpa"]),
              st.integers(0, 0x7FFF)),
)
_ALPHABET = "0123456789abcdefx _=-iortnlmsp#:/<>IO"


def _substrings(texts: list[str]) -> st.SearchStrategy[str]:
    """Needles: pieces of the rows' own texts (so that some match), with and without spaces, or made up."""
    made_up = st.text(_ALPHABET, min_size=1, max_size=8)
    if not texts:
        return made_up

    @st.composite
    def piece(draw: st.DrawFn) -> str:
        text = draw(st.sampled_from(texts))
        a = draw(st.integers(0, len(text) - 1))
        b = draw(st.integers(a + 1, min(len(text), a + 24)))
        return text[a:b]

    return st.one_of(piece(), made_up)


def _filters_from(log: ExitLog) -> st.SearchStrategy[str]:
    """Filters made from the log's own exits (so that they keep some rows and drop others):
    the exit's architectural name with one of its qualification values or flags, its vCPU or RIP."""
    if not len(log):
        return _FILTERS

    @st.composite
    def from_exit(draw: st.DrawFn) -> str:
        e = log[draw(st.integers(0, len(log) - 1))]
        words = [e.name] if draw(st.booleans()) else []
        values = [(k, v) for k, v in e.qualification.items() if isinstance(v, int) and not isinstance(v, bool)]
        flags = [k for k, v in e.qualification.items() if v is True and k in ("in", "out", "read", "write", "fetch",
                                                                             "string", "rep")]
        if "direction" in e.qualification:
            flags.append(e.qualification["direction"])
        choice = draw(st.sampled_from(["value", "flag", "vcpu", "rip"]))
        if choice == "value" and values:
            k, v = draw(st.sampled_from(values))
            words.append(f"{k}={v:#x}" if draw(st.booleans()) else f"{k}={v}-{v + draw(st.integers(1, 3))}")
        elif choice == "flag" and flags:
            words.append(draw(st.sampled_from(flags)))
        elif choice == "vcpu":
            words.append(f"vcpu={e.vcpu}")
        else:
            words.append(f"rip={e.rip:#x}")
        return " ".join(words)

    return from_exit()


def _reference(plan: FilterPlan, log: ExitLog, rows: ExitRows, lo: int, hi: int) -> list[int]:
    """The rows of [lo, hi) that pass, one at a time, by definition."""
    if plan.needle is not None:
        return [seq for seq in range(lo, hi) if plan.needle in rows.text(seq).lower()]
    assert plan.parsed is not None
    return [seq for seq in range(lo, hi) if plan.parsed.matches(log[seq])]


_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.data_too_large])


# -- the tests -----------------------------------------------------------------------------

@_SETTINGS
@given(data=st.data(), logged=_log())
def test_select_is_the_row_by_row_filter(data: st.DataObject, logged: tuple[str, list[tuple[int, ...]]]) -> None:
    """Any filter or substring, any range and chunk size, with the index coded up to anywhere
    (nothing, part, all) and a limit small enough to overflow."""
    vendor, rows_in = logged
    log = _exit_log(vendor, rows_in)
    n = len(log)
    index = EncodingIndex(log, limit=data.draw(st.sampled_from([1, 3, EncodingIndex.LIMIT])))
    index.extend(data.draw(st.integers(0, n)))
    rows = ExitRows(log, HW[vendor].decode, vendor, index)
    texts = [rows.text(seq).lower() for seq in range(n)]
    text = data.draw(st.one_of(_FILTERS, _substrings(texts), _filters_from(log)))
    plan = FilterPlan.compile(text)
    if plan is None:  # blank: every exit, not a plan
        return
    lo = data.draw(st.one_of(st.just(0), st.integers(0, n)))
    hi = data.draw(st.one_of(st.just(n), st.integers(lo, n)))
    chunk = data.draw(st.sampled_from([1, 7, 64, 65536]))
    got = plan.select(rows, lo, hi, chunk=chunk)
    assert got is not None and got.typecode == "Q"
    assert list(got) == _reference(plan, log, ExitRows(log, HW[vendor].decode, vendor), lo, hi), text


@_SETTINGS
@given(data=st.data(), logged=_log())
def test_codes_follow_update_aux(data: st.DataObject, logged: tuple[str, list[tuple[int, ...]]]) -> None:
    """Rows whose operands were completed after they were coded are filtered by their new values."""
    vendor, rows_in = logged
    log = _exit_log(vendor, rows_in)
    n = len(log)
    if not n:
        return
    index = EncodingIndex(log)
    index.extend(n)
    rows = ExitRows(log, HW[vendor].decode, vendor, index)
    for seq in data.draw(st.lists(st.integers(0, n - 1), max_size=5)):
        log.update_aux(seq, aux1=data.draw(st.sampled_from([0x41, 0x60, 0x40000000, 0x174])),
                       aux2=data.draw(st.one_of(st.none(), st.integers(0, 5))))
        rows.forget()
    if data.draw(st.booleans()):
        index.extend(n)
    for text in ("io value=0x41", "cpuid leaf=0x40000000", "msr index=0x174", "io count=3", "value=0x60", "0x41",
                 "leaf=0x40000000"):
        plan = FilterPlan.compile(text)
        assert plan is not None
        got = plan.select(rows, 0, n)
        assert got is not None
        assert list(got) == _reference(plan, log, ExitRows(log, HW[vendor].decode, vendor), 0, n), text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), logged=_log())
def test_a_log_without_aux_changes(data: st.DataObject, logged: tuple[str, list[tuple[int, ...]]]) -> None:
    """A trace's exits (TraceExits: rows never change, no `aux_changes`) filter the same way."""
    vendor, rows_in = logged
    names = ("vcpu", "time", "reason", "rip", "length", "info1", "info2", "aux1", "aux2")
    columns = {name: array({"vcpu": "H", "length": "B"}.get(name, "Q"), [r[i] for r in rows_in])
               for i, name in enumerate(names)}
    log = TraceExits(columns, HW[vendor].decode, {})
    n = len(log)
    index = EncodingIndex(log)
    index.extend(data.draw(st.integers(0, n)))
    rows = ExitRows(log, HW[vendor].decode, vendor, index)
    texts = [rows.text(seq).lower() for seq in range(n)]
    text = data.draw(st.one_of(_FILTERS, _substrings(texts), _filters_from(log)))
    plan = FilterPlan.compile(text)
    if plan is None:
        return
    got = plan.select(rows, 0, n, chunk=data.draw(st.sampled_from([5, 65536])))
    assert got is not None
    assert list(got) == _reference(plan, log, ExitRows(log, HW[vendor].decode, vendor), 0, n), text


def test_aux_changes_names_rows_changed_after_they_were_read() -> None:
    log = ExitLog(HW["intel"].decode)
    for i in range(3 * ExitLog.AUX_BLOCK + 10):
        log.append(0, i, X.IO_INSTRUCTION, 0x7C00, 1, X.io_qualification(port=0x60, size=1, is_in=True), 0)
    version, changed = log.aux_changes()
    assert version == 0 and changed == []
    log.update_aux(5, aux1=0x41)  # in the columns already
    log.update_aux(len(log) - 1, aux1=0x42)  # still pending: no reader has seen it
    v1, changed = log.aux_changes()
    assert v1 == 1 and changed == [range(0, ExitLog.AUX_BLOCK)]
    log.flush()
    log.update_aux(2 * ExitLog.AUX_BLOCK + 3, aux2=7)
    v2, changed = log.aux_changes(v1)
    assert v2 == 2 and changed == [range(2 * ExitLog.AUX_BLOCK, 3 * ExitLog.AUX_BLOCK)]
    assert log.aux_changes(v2) == (v2, [])
    assert log.aux_changes(0)[1] == [range(0, ExitLog.AUX_BLOCK), range(2 * ExitLog.AUX_BLOCK, 3 * ExitLog.AUX_BLOCK)]
    assert log.aux1[5] == 0x41 and log.aux1[len(log) - 1] == 0x42 and log.aux2[2 * ExitLog.AUX_BLOCK + 3] == 7


def test_the_index_codes_distinct_encodings_and_overflows() -> None:
    log = ExitLog(HW["intel"].decode)
    for i in range(50):
        log.append(0, i, X.CPUID, 0x7C00 + i % 4, 2, 0, 0, i % 5, 0)
    index = EncodingIndex(log, limit=3)
    assert index.coded == 0
    assert index.extend(20) and index.coded == 20
    codes, keys = index.coded_encodings(0, 50)
    assert len(codes) == 20  # only the coded rows
    assert keys == [(X.CPUID, 0, 0, 0, 0), (X.CPUID, 0, 0, 1, 0), (X.CPUID, 0, 0, 2, 0)]
    assert list(codes[:5]) == [0, 1, 2, 0xFFFF, 0xFFFF]
    rip_codes, rips = index.coded_rips(0, 8)
    assert list(rip_codes) == [0, 1, 2, 0xFFFF, 0, 1, 2, 0xFFFF] and rips == [0x7C00, 0x7C01, 0x7C02]
    assert not index.extend(50, cancelled=lambda: True) and index.coded == 20


# -- the pane: coding in its worker, filters in theirs -------------------------------------------

def test_the_pane_codes_rows_and_filters_them_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import vmmtui.widgets.exit_log as pane
    from vmmtui.session import Session

    monkeypatch.setattr(pane, "INDEX_DELAY", 0.01)
    monkeypatch.setattr(pane, "SYNC_LIMIT_NS", 0)  # every filter in a worker
    session = Session.open(str(GUESTS / "cpuid.img"), MachineConfig(vendor="intel"))
    log = session.machine.exits
    out = X.io_qualification(port=0x3F8, size=1, is_in=False)
    for i in range(5000):
        if i % 3:
            log.append(i % 2, i, X.IO_INSTRUCTION, 0x7C00 + i % 300, 1, out, 0, 0x20 + i % 90, 0)
        else:
            log.append(i % 2, i, X.CPUID, 0x7D00 + i % 7, 2, 0, 0, 0x40000000 + i % 3, 0)
    rows = ExitRows(log, session.machine.hw.decode, "intel")

    class One(App):
        def compose(self) -> ComposeResult:
            yield pane.ExitLogView(session)

    async def main() -> None:
        async with One().run_test(size=(120, 30)) as pilot:
            view = pilot.app.query_one(pane.ExitLogView)
            for _ in range(500):
                await pilot.pause(0.01)
                if view._encodings.coded == len(log):
                    break
            assert view._encodings.coded == len(log)
            for text in ("io port=0x3f8 value=0x41", "cpuid leaf=0x40000001 vcpu=1", "0x7c3f", "value=0x5a",
                         "0x40000002", "rip=0x7d03", "io vcpu=1 seq=100-4000", "1b dx"):
                view.set_filter(text)
                for _ in range(500):
                    await pilot.pause(0.01)
                    if not view.filtering:
                        break
                plan = FilterPlan.compile(text)
                assert plan is not None
                want = _reference(plan, log, rows, 0, len(log))
                assert view.shown == len(want) and [view.seq_at(r) for r in range(view.shown)] == want, text

    asyncio.run(main())
