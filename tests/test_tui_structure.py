"""The VMCS / VMCB pane in a running Textual app (pilot), on the cpuid guest."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console
from rich.style import Style
from textual.app import App, ComposeResult
from textual.widgets import Collapsible, Input, Static

from engine.config import MachineConfig
from vmmtui.session import Session
from vmmtui.views.structure import structure_view
from vmmtui.widgets.structure import StructurePane

GUEST = "guests/cpuid.img"


class PaneApp(App):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        yield StructurePane(id="structure")


def _session(vendor: str) -> Session:
    return Session.open(GUEST, MachineConfig(vendor=vendor))


def _break_on_first_cpuid(session: Session) -> None:
    session.machine.exit_breaks.append(lambda e: e.name == "CPUID")
    stop = session.machine.run()
    session.mark_stop(stop)


def _group_sizes(session: Session, containing: str = "") -> dict[str, int]:
    """How many fields each group has (whose name contains `containing`), from the engine."""
    sizes: dict[str, int] = {}
    for group, name, _where, _value in session.machine.hw.structure_fields(session.vcpu):
        if containing in name:
            sizes[group] = sizes.get(group, 0) + 1
    return sizes


def _render(renderable, width: int = 150) -> Console:
    console = Console(file=io.StringIO(), width=width, record=True, color_system="truecolor")
    console.print(renderable)
    return console


def _pane_text(pane: StructurePane) -> str:
    """What the pane holds: title line, then each visible section's title and rows."""
    parts = [_render(pane.query_one("#structure-title", Static).content).export_text()]
    for section in pane.query(Collapsible):
        if not section.display:
            continue
        parts.append(section.title)
        parts.append(_render(section.query_one(".structure-group", Static).content).export_text())
    return "\n".join(parts)


def _lines(text: str) -> dict[str, str]:
    """Table lines by their field name, without the change marker."""
    out = {}
    for line in text.splitlines():
        line = line[1:] if line.startswith("*") else line
        words = line.split()
        if words:
            out.setdefault(words[0], line)
    return out


def _row_style(pane: StructurePane, name: str) -> Style:
    """The style Rich gives the segment holding field `name` in the pane."""
    for section in pane.query(Collapsible):
        content = section.query_one(".structure-group", Static).content
        console = _render(content)
        for line in console.render_lines(content, console.options.update(width=150)):
            for segment in line:
                if segment.text.strip() == name:
                    return segment.style or Style()
    raise AssertionError(f"{name} is not in the pane")


def _marked(pane: StructurePane) -> set[str]:
    """Field names whose row carries the change marker."""
    marked = set()
    for line in _pane_text(pane).splitlines():
        if line.startswith("*"):
            marked.add(line[1:].split()[0])
    return marked


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_pane_shows_the_structure_at_the_first_cpuid_exit(vendor):
    session = _session(vendor)

    async def run() -> None:
        app = PaneApp(session)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one(StructurePane)
            _break_on_first_cpuid(session)
            pane.refresh_from(session)
            await pilot.pause()
            text = _pane_text(pane)
            lines = _lines(text)
            if vendor == "intel":
                assert pane.border_title == "VMCS"
                assert text.startswith("VMCS (vCPU 0, launched)")
                assert lines["VM_EXIT_REASON"].split()[1:] == ["0x4402", "0x0000000a", "10", "CPUID"]
                assert lines["GUEST_RIP"].split()[1:] == ["0x681e", "0x7e09"]
                assert lines["EXIT_QUALIFICATION"].split()[1:] == ["0x6400", "0x0"]
                assert "ENABLE_EPT UNRESTRICTED_GUEST" in lines["SECONDARY_VM_EXEC_CONTROL"]
                assert lines["GUEST_CS_AR_BYTES"].split()[2:] == \
                    ["0x0000009b", "code", "exec/read", "accessed;", "S", "DPL=0", "P"]
                n = _group_sizes(session)
                assert [s.title for s in pane.query(Collapsible)] == [
                    f"control fields ({n['control']})", f"VM-exit information fields ({n['exit-information']})",
                    f"guest-state area ({n['guest-state']})", f"host-state area ({n['host-state']})"]
            else:
                assert pane.border_title == "VMCB"
                vmcb = session.machine.hw.structure(0)
                assert text.startswith(f"VMCB at HPA {vmcb.hpa:#x} (vCPU 0)")
                assert lines["EXITCODE"].split()[1:] == ["0x070", "0x72", "CPUID"]
                assert lines["RIP"].split()[1:] == ["0x578", "0x7e09"]
                assert lines["NEXT_RIP"].split()[1:] == ["0x0c8", "0x7e0b"]
                assert lines["EFER"].split()[1:] == ["0x4d0", "0x1000", "SVME"]
                assert lines["INTERCEPT_MISC2"].split()[1:] == ["0x010", "0x00000003", "VMRUN", "VMMCALL"]
                n = _group_sizes(session)
                assert [s.title for s in pane.query(Collapsible)] == [
                    f"control area ({n['control']})", f"state-save area ({n['state-save']})"]
            # The changed fields carry the marker (first stop: against the state at open).
            assert _marked(pane) == session.changed_fields()

    asyncio.run(run())


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_typing_in_the_filter_keeps_only_matching_fields(vendor):
    session = _session(vendor)

    async def run() -> None:
        app = PaneApp(session)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one(StructurePane)
            _break_on_first_cpuid(session)
            pane.refresh_from(session)
            await pilot.pause()
            await pilot.click("#structure-filter")
            await pilot.press("e", "x", "i", "t")
            await pilot.pause()
            assert app.query_one("#structure-filter", Input).value == "exit"
            assert pane.filter_text == "exit"
            names = [line.replace("*", " ").split()[0] for line in _pane_text(pane).splitlines()[1:]
                     if line.strip() and not line.lstrip().startswith(("field", "control", "VM-exit", "guest",
                                                                         "host", "state"))]
            assert names, "the filter left nothing"
            assert all("EXIT" in name for name in names), names
            expected = {name for name in session.fields if "EXIT" in name}
            assert set(names) == expected
            visible = [s.title for s in pane.query(Collapsible) if s.display]
            n = _group_sizes(session)
            m = _group_sizes(session, "EXIT")
            if vendor == "intel":
                assert visible == [f"control fields ({m['control']} of {n['control']})",
                                   f"VM-exit information fields ({m['exit-information']} of {n['exit-information']})"]
            else:
                assert visible == [f"control area ({m['control']} of {n['control']})"]
            assert "filter 'exit'" in _pane_text(pane).splitlines()[0]
            # escape clears the filter, every section comes back
            await pilot.press("escape")
            await pilot.pause()
            assert pane.filter_text == ""
            assert app.query_one("#structure-filter", Input).value == ""
            assert all(s.display for s in pane.query(Collapsible))

    asyncio.run(run())


def test_filter_on_the_decoding_and_no_match():
    session = _session("intel")

    async def run() -> None:
        app = PaneApp(session)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one(StructurePane)
            _break_on_first_cpuid(session)
            pane.refresh_from(session)
            pane.set_filter("=cpuid")
            await pilot.pause()
            assert app.query_one("#structure-filter", Input).value == "=cpuid"
            n = _group_sizes(session)
            assert [s.title for s in pane.query(Collapsible) if s.display] == [
                f"VM-exit information fields (1 of {n['exit-information']})"]
            pane.set_filter("no-such-field")
            await pilot.pause()
            assert not any(s.display for s in pane.query(Collapsible))
            assert "no field matches 'no-such-field'" in _pane_text(pane)

    asyncio.run(run())


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_after_the_next_exit_the_changed_fields_are_highlighted(vendor):
    session = _session(vendor)

    async def run() -> None:
        app = PaneApp(session)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one(StructurePane)
            _break_on_first_cpuid(session)
            pane.refresh_from(session)
            await pilot.pause()
            stop = session.machine.run_to_exit()  # the next exit: IN from the UART's line status port
            session.mark_stop(stop)
            pane.refresh_from(session)
            await pilot.pause()
            text = _pane_text(pane)
            lines = _lines(text)
            bold_yellow = Style(bold=True, color="yellow")
            if vendor == "intel":
                changed = {"VM_EXIT_REASON", "EXIT_QUALIFICATION", "VM_EXIT_INSTRUCTION_LEN", "GUEST_RIP",
                           "GUEST_RSP", "GUEST_RFLAGS"}
                assert lines["VM_EXIT_REASON"].split()[1:] == ["0x4402", "0x0000001e", "30", "IO_INSTRUCTION"]
                assert lines["EXIT_QUALIFICATION"].split()[1:] == \
                    ["0x6400", "0x3fd0008", "port", "0x3fd", "in", "1", "byte", "dx"]
                unchanged = ["GUEST_CR0", "CPU_BASED_VM_EXEC_CONTROL", "GUEST_CS_AR_BYTES"]
                zero = "VM_EXIT_INTR_INFO"
            else:
                changed = {"EXITCODE", "EXITINFO1", "EXITINFO2", "NEXT_RIP", "RIP", "RSP", "RFLAGS", "RAX"}
                assert lines["EXITCODE"].split()[1:] == ["0x070", "0x7b", "IOIO"]
                assert lines["EXITINFO1"].split()[1:] == \
                    ["0x078", "0x3fd0091", "port", "0x3fd", "in", "1", "byte", "a16"]
                assert lines["EXITINFO2"].split()[1:] == ["0x080", "0x7c8d", "next", "RIP", "0x7c8d"]
                unchanged = ["CR0", "INTERCEPT_MISC1", "CS_ATTRIB"]
                zero = "EXITINTINFO"
            assert session.changed_fields() == changed
            assert _marked(pane) == changed
            assert "6 changed" in text.splitlines()[0] if vendor == "intel" else "8 changed" in text.splitlines()[0]
            for name in changed:
                assert _row_style(pane, name) == bold_yellow, name
            for name in unchanged:
                style = _row_style(pane, name)
                assert not style.bold and style.color is None, name
            assert _row_style(pane, zero).dim

    asyncio.run(run())


def test_an_error_in_the_view_shows_inside_the_pane():
    session = _session("intel")

    async def run() -> None:
        app = PaneApp(session)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one(StructurePane)
            pane.refresh_from(session)
            await pilot.pause()

            def broken(vcpu):
                raise RuntimeError("VMCS unreadable")

            session.machine.hw.structure_fields = broken
            pane.refresh_from(session)
            await pilot.pause()
            assert pane.has_class("-error")
            error = _render(pane.query_one("#structure-error", Static).content).export_text()
            assert "VMCS cannot be shown: RuntimeError: VMCS unreadable" in error
            assert not pane.query_one("#structure-body").display
            del session.machine.hw.structure_fields
            pane.refresh_from(session)
            await pilot.pause()
            assert not pane.has_class("-error")

    asyncio.run(run())


def test_sections_collapse():
    session = _session("amd")

    async def run() -> None:
        app = PaneApp(session)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one(StructurePane)
            pane.refresh_from(session)
            await pilot.pause()
            control = pane.section("control")
            assert control is not None and not control.collapsed
            await pilot.click(".structure-section-control CollapsibleTitle")
            await pilot.pause()
            assert control.collapsed
            # A new stop keeps the user's choice.
            _break_on_first_cpuid(session)
            pane.refresh_from(session)
            await pilot.pause()
            assert pane.section("control") is control and control.collapsed

    asyncio.run(run())


def test_script_view_prints_the_same_rows():
    session = _session("intel")
    _break_on_first_cpuid(session)
    text = _render(structure_view(session), width=150).export_text()
    lines = _lines(text)
    assert text.splitlines()[0].startswith("VMCS (vCPU 0, launched)")
    assert lines["VM_EXIT_REASON"].split()[1:] == ["0x4402", "0x0000000a", "10", "CPUID"]
    assert lines["GUEST_RIP"].split()[1:] == ["0x681e", "0x7e09"]
    for header in ("control fields", "VM-exit information fields", "guest-state area", "host-state area"):
        assert header in text
    filtered = _render(structure_view(session, "guest rip"), width=150).export_text()
    assert [line.lstrip("*").split()[0] for line in filtered.splitlines()[2:] if line.strip()] == \
        ["guest-state", "GUEST_RIP"]
    assert filtered.splitlines()[-1].startswith("*")  # GUEST_RIP changed since the open


def test_filtering_draws_from_the_stop_without_reading_the_machine():
    session = _session("intel")

    async def run() -> None:
        app = PaneApp(session)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one(StructurePane)
            _break_on_first_cpuid(session)
            pane.refresh_from(session)
            await pilot.pause()

            def running(vcpu):
                raise AssertionError("the pane read the machine while filtering")

            session.machine.hw.structure_fields = running
            session.machine.hw.structure = running
            # "/" from inside the pane (here: a section title) goes to the filter
            pane.query_one(".structure-section-guest-state CollapsibleTitle").focus()
            await pilot.pause()
            await pilot.press("slash")
            assert app.query_one("#structure-filter", Input).has_focus
            assert app.query_one("#structure-filter", Input).value == ""
            await pilot.press("r", "i", "p")
            await pilot.pause()
            assert not pane.has_class("-error")
            lines = _lines(_pane_text(pane))
            assert lines["GUEST_RIP"].split()[1:] == ["0x681e", "0x7e09"]
            assert "HOST_RIP" in lines

    asyncio.run(run())


def test_a_session_of_the_other_vendor_rebuilds_the_sections():
    intel_session, amd_session = _session("intel"), _session("amd")

    async def run() -> None:
        app = PaneApp(intel_session)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one(StructurePane)
            pane.set_filter("rip")
            pane.refresh_from(intel_session)
            await pilot.pause()
            assert pane.border_title == "VMCS"
            pane.refresh_from(amd_session)
            await pilot.pause()
            assert pane.border_title == "VMCB"
            assert [s.title for s in pane.query(Collapsible)] == [
                f"control area (1 of {_group_sizes(amd_session)['control']})",
                f"state-save area (1 of {_group_sizes(amd_session)['state-save']})"]
            assert set(_lines(_pane_text(pane))) >= {"NEXT_RIP", "RIP"}

    asyncio.run(run())


def test_a_pane_refreshed_before_it_is_mounted_draws_when_mounted():
    session = _session("amd")
    _break_on_first_cpuid(session)

    class EarlyApp(App):
        def compose(self) -> ComposeResult:
            pane = StructurePane()
            pane.set_filter("exitcode")
            pane.refresh_from(session)
            yield pane

    async def run() -> None:
        app = EarlyApp()
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            pane = app.query_one(StructurePane)
            assert app.query_one("#structure-filter", Input).value == "exitcode"
            assert _lines(_pane_text(pane))["EXITCODE"].split()[1:] == ["0x070", "0x72", "CPUID"]

    asyncio.run(run())


def test_an_error_before_the_pane_is_mounted_shows_once_it_is():
    session = _session("intel")

    def broken(vcpu):
        raise RuntimeError("no VMCS yet")

    session.machine.hw.structure_fields = broken

    class EarlyApp(App):
        def compose(self) -> ComposeResult:
            pane = StructurePane()
            pane.refresh_from(session)
            yield pane

    async def run() -> None:
        app = EarlyApp()
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            pane = app.query_one(StructurePane)
            assert pane.has_class("-error")
            error = _render(pane.query_one("#structure-error", Static).content).export_text()
            assert "cannot be shown: RuntimeError: no VMCS yet" in error

    asyncio.run(run())
