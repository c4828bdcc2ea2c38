"""The local APIC as a guest programs it: registers, priorities, the timer, the ICR."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.devices.lapic import APIC_VERSION, Ipi, LocalApic, divisor

# Register offsets, spelled out as the SDM's address map gives them.
ID, VERSION, TPR, PPR, EOI, LDR, DFR, SVR = 0x20, 0x30, 0x80, 0xA0, 0xB0, 0xD0, 0xE0, 0xF0
ISR, TMR, IRR, ESR, ICR_LOW, ICR_HIGH = 0x100, 0x180, 0x200, 0x280, 0x300, 0x310
LVT_TIMER, LVT_LINT0, LVT_ERROR = 0x320, 0x350, 0x370
LVTS = (0x320, 0x330, 0x340, 0x350, 0x360, 0x370)
INITIAL, CURRENT, DIVIDE = 0x380, 0x390, 0x3E0
DIVIDE_BY_1 = 0b1011
MASKED, PERIODIC = 1 << 16, 1 << 17


def wr(apic: LocalApic, offset: int, value: int) -> None:
    apic.write(offset, 4, value)


def rd(apic: LocalApic, offset: int) -> int:
    return apic.read(offset, 4)


def enabled_apic(apic_id: int = 0) -> LocalApic:
    apic = LocalApic(apic_id)
    wr(apic, SVR, 0x1FF)
    return apic


def in_service(apic: LocalApic, vector: int) -> None:
    """Put `vector` in service the way the CPU does: request, then INTA."""
    apic.accept(vector)
    assert apic.acknowledge() == vector


# -- registers ---------------------------------------------------------------------


def test_power_up_values():
    apic = LocalApic(3)
    assert rd(apic, ID) == 0x0300_0000
    assert rd(apic, VERSION) == APIC_VERSION == 0x0005_0014
    assert rd(apic, TPR) == rd(apic, PPR) == rd(apic, LDR) == rd(apic, ESR) == 0
    assert rd(apic, DFR) == 0xFFFF_FFFF
    assert rd(apic, SVR) == 0xFF and not apic.enabled
    assert [rd(apic, lvt) for lvt in LVTS] == [0x0001_0000] * 6
    assert rd(apic, INITIAL) == rd(apic, CURRENT) == rd(apic, DIVIDE) == 0
    assert apic.next_deadline() is None and apic.pending() is None


def test_register_writes_keep_their_defined_bits():
    apic = LocalApic(1)
    wr(apic, TPR, 0xFFFF_FF45)
    wr(apic, SVR, 0xFFFF_FFFF)
    wr(apic, LDR, 0x12FF_FFFF)
    wr(apic, DFR, 0x0000_0000)
    wr(apic, DIVIDE, 0xFFFF_FFFF)
    wr(apic, LVT_LINT0, 0xFFFF_FFFF)  # delivery status and remote IRR are read-only
    wr(apic, LVT_TIMER, 0xFFFF_FFFF)  # no TSC-deadline mode
    assert rd(apic, TPR) == 0x45
    assert rd(apic, SVR) == 0x3FF and apic.enabled
    assert rd(apic, LDR) == 0x1200_0000
    assert rd(apic, DFR) == 0x0FFF_FFFF
    assert rd(apic, DIVIDE) == 0xB
    assert rd(apic, LVT_LINT0) == 0x0001_A7FF
    assert rd(apic, LVT_TIMER) == 0x0003_00FF


def test_read_only_registers_ignore_writes():
    apic = enabled_apic(2)
    for offset in (ID, VERSION, PPR, ISR, TMR, IRR, CURRENT):
        wr(apic, offset, 0xFFFF_FFFF)
    assert rd(apic, ID) == 0x0200_0000 and rd(apic, VERSION) == APIC_VERSION
    assert rd(apic, PPR) == rd(apic, ISR) == rd(apic, IRR) == rd(apic, CURRENT) == 0


def test_partial_and_unknown_accesses():
    apic = LocalApic(0x12)
    assert apic.read(ID + 3, 1) == 0x12
    assert apic.read(ID + 2, 2) == 0x1200
    assert apic.read(ID, 2) == 0
    assert apic.read(ID + 4, 4) == 0  # beyond the 32-bit register
    assert apic.read(ID, 8) == 0x1200_0000
    assert rd(apic, 0x90) == rd(apic, 0xC0) == rd(apic, 0x400) == rd(apic, EOI) == 0
    apic.write(TPR, 1, 0x20)  # only aligned 4-byte writes count
    apic.write(TPR + 4, 4, 0x20)
    apic.write(TPR, 8, 0x20)
    assert rd(apic, TPR) == 0


# -- priorities, acceptance, EOI ---------------------------------------------------


@pytest.mark.parametrize(
    ("tpr", "isr_vector", "ppr"),
    [
        (0x00, None, 0x00),
        (0x35, None, 0x35),
        (0x20, 0x51, 0x50),  # the in-service class wins, low nibble cleared
        (0x45, 0x51, 0x50),
        (0x5A, 0x51, 0x5A),  # same class: TPR (TPR[7:4] >= ISRV[7:4])
        (0x50, 0x5F, 0x50),
        (0x6F, 0x51, 0x6F),
    ],
)
def test_ppr(tpr, isr_vector, ppr):
    apic = enabled_apic()
    if isr_vector is not None:
        in_service(apic, isr_vector)
    wr(apic, TPR, tpr)
    assert rd(apic, PPR) == ppr


def test_priority_classes_order_acknowledge_and_eoi():
    apic = enabled_apic()
    apic.accept(0x31)
    apic.accept(0x52)
    assert rd(apic, IRR + 0x10) == 1 << (0x31 - 32)
    assert rd(apic, IRR + 0x20) == 1 << (0x52 - 64)
    assert apic.pending() == 0x52
    assert apic.acknowledge() == 0x52
    assert rd(apic, ISR + 0x20) == 1 << (0x52 - 64) and rd(apic, IRR + 0x20) == 0
    assert apic.pending() is None  # class 3 is not above the in-service class 5
    apic.accept(0x55)
    assert apic.pending() is None  # nor is class 5 itself
    apic.accept(0x61)
    assert apic.pending() == 0x61  # class 6 nests
    assert apic.acknowledge() == 0x61
    wr(apic, EOI, 0)  # retires 0x61, the highest in service
    assert rd(apic, ISR + 0x30) == 0 and rd(apic, ISR + 0x20) == 1 << (0x52 - 64)
    assert apic.pending() is None
    wr(apic, EOI, 0)
    assert apic.pending() == 0x55
    in_service(apic, 0x55)
    wr(apic, EOI, 0)
    assert apic.pending() == 0x31
    in_service(apic, 0x31)
    wr(apic, EOI, 0)
    assert apic.isr == apic.irr == 0
    wr(apic, EOI, 0)  # an EOI with nothing in service changes nothing
    assert apic.isr == 0


def test_tpr_masks_classes_at_or_below_it():
    apic = enabled_apic()
    apic.accept(0x41)
    wr(apic, TPR, 0x40)
    assert apic.pending() is None
    wr(apic, TPR, 0x4F)
    assert apic.pending() is None
    wr(apic, TPR, 0x3F)
    assert apic.pending() == 0x41


def test_software_disabled_apic_holds_requests_and_masks_lvts():
    apic = LocalApic(0)
    apic.accept(0x40)
    assert apic.pending() is None and rd(apic, IRR + 0x20) == 1
    wr(apic, SVR, 0x1FF)
    assert apic.pending() == 0x40
    wr(apic, LVT_TIMER, 0x30)
    assert rd(apic, LVT_TIMER) == 0x30
    wr(apic, SVR, 0xFF)  # disabling masks every LVT entry ...
    assert apic.pending() is None
    assert all(rd(apic, lvt) & MASKED for lvt in LVTS)
    wr(apic, LVT_TIMER, 0x30)  # ... and keeps them masked
    assert rd(apic, LVT_TIMER) == MASKED | 0x30


def test_illegal_vector_is_logged_in_the_esr_at_the_next_write():
    apic = enabled_apic()
    apic.accept(5)
    assert apic.irr == 0 and apic.pending() is None
    assert rd(apic, ESR) == 0  # errors show after a write to the ESR
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0x40
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0


def test_error_raises_the_lvt_error_vector_when_unmasked():
    apic = enabled_apic()
    apic.accept(15)
    assert apic.pending() is None
    wr(apic, LVT_ERROR, 0xE3)
    apic.accept(0)
    assert apic.pending() == 0xE3


@given(st.sets(st.integers(16, 255), min_size=1))
def test_acknowledge_then_eoi_takes_vectors_highest_first(vectors):
    apic = enabled_apic()
    for vector in vectors:
        apic.accept(vector)
    taken = []
    while apic.pending() is not None:
        taken.append(apic.acknowledge())
        wr(apic, EOI, 0)
    assert taken == sorted(vectors, reverse=True)


def test_reset_keeps_the_id_and_the_time():
    apic = enabled_apic(4)
    wr(apic, TPR, 0x20)
    in_service(apic, 0x40)
    wr(apic, LVT_TIMER, 0x30)
    wr(apic, INITIAL, 100)
    apic.advance(50)
    apic.reset()
    assert rd(apic, ID) == 0x0400_0000 and apic.now == 50
    assert rd(apic, TPR) == rd(apic, ISR + 0x20) == rd(apic, INITIAL) == 0
    assert rd(apic, SVR) == 0xFF and rd(apic, LVT_TIMER) == MASKED
    assert apic.next_deadline() is None


# -- the timer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "factor"),
    [(0b0000, 2), (0b0001, 4), (0b0010, 8), (0b0011, 16), (0b1000, 32), (0b1001, 64), (0b1010, 128), (0b1011, 1)],
)
def test_divide_configuration(config, factor):
    assert divisor(config) == factor
    assert divisor(config | 0b0100) == factor  # bit 2 is not part of the code
    apic = enabled_apic()
    apic.advance(1000)
    wr(apic, DIVIDE, config)
    wr(apic, LVT_TIMER, 0x30)
    wr(apic, INITIAL, 7)
    assert apic.next_deadline() == 1000 + 7 * factor


def test_one_shot_fires_once_at_initial_times_divisor():
    apic = enabled_apic()
    wr(apic, DIVIDE, 0b0001)  # by 4
    wr(apic, LVT_TIMER, 0x30)
    wr(apic, INITIAL, 250)
    assert apic.next_deadline() == 1000
    apic.advance(999)
    assert apic.pending() is None and apic.timer_expirations == 0
    apic.advance(1000)
    assert apic.pending() == 0x30 and apic.timer_expirations == 1
    assert apic.next_deadline() is None
    apic.advance(10_000)
    assert apic.timer_expirations == 1 and rd(apic, CURRENT) == 0
    assert rd(apic, INITIAL) == 250


def test_periodic_fires_at_exact_multiples():
    apic = enabled_apic()
    wr(apic, DIVIDE, 0b0011)  # by 16
    wr(apic, LVT_TIMER, PERIODIC | 0x31)
    apic.advance(5)
    wr(apic, INITIAL, 10)  # period 160 ns from t = 5
    apic.advance(164)
    assert apic.timer_expirations == 0
    apic.advance(165)
    assert apic.timer_expirations == 1 and apic.next_deadline() == 325
    assert apic.acknowledge() == 0x31
    wr(apic, EOI, 0)
    apic.advance(1005)  # four more deadlines passed: 325, 485, 645, 805, 965 -> t = 1005
    assert apic.timer_expirations == 6 and apic.next_deadline() == 1125
    assert apic.pending() == 0x31  # expirations between two looks coalesce in one IRR bit


def test_current_count():
    apic = enabled_apic()
    wr(apic, DIVIDE, 0b0000)  # by 2
    wr(apic, LVT_TIMER, 0x30)
    apic.advance(50)
    wr(apic, INITIAL, 100)
    expected = {50: 100, 51: 100, 52: 99, 53: 99, 150: 50, 249: 1, 250: 0, 400: 0}
    for now, count in expected.items():
        apic.advance(now)
        assert rd(apic, CURRENT) == count, now
    wr(apic, LVT_TIMER, PERIODIC | 0x30)
    wr(apic, INITIAL, 100)  # restart at t = 400
    for now, count in {400: 100, 402: 99, 599: 1, 600: 100, 602: 99, 1000: 100}.items():
        apic.advance(now)
        assert rd(apic, CURRENT) == count, now


def test_writing_zero_stops_the_timer():
    apic = enabled_apic()
    wr(apic, LVT_TIMER, PERIODIC | 0x30)
    wr(apic, INITIAL, 100)
    apic.advance(10)
    wr(apic, INITIAL, 0)
    assert apic.next_deadline() is None and rd(apic, CURRENT) == 0
    apic.advance(10_000)
    assert apic.timer_expirations == 0 and apic.pending() is None


def test_masked_timer_counts_but_requests_nothing():
    apic = enabled_apic()
    wr(apic, DIVIDE, DIVIDE_BY_1)
    wr(apic, LVT_TIMER, MASKED | PERIODIC | 0x30)
    wr(apic, INITIAL, 100)
    assert apic.next_deadline() is None
    apic.advance(50)
    assert rd(apic, CURRENT) == 50
    apic.advance(250)
    assert apic.timer_expirations == 2 and apic.irr == 0 and apic.pending() is None
    wr(apic, LVT_TIMER, PERIODIC | 0x30)  # unmasked: the phase was kept
    assert apic.next_deadline() == 300
    apic.advance(300)
    assert apic.pending() == 0x30 and apic.timer_expirations == 3


def test_masked_one_shot_has_no_deadline_after_unmasking_once_expired():
    apic = enabled_apic()
    wr(apic, DIVIDE, DIVIDE_BY_1)
    wr(apic, LVT_TIMER, MASKED | 0x30)
    wr(apic, INITIAL, 10)
    apic.advance(20)
    wr(apic, LVT_TIMER, 0x30)
    assert apic.next_deadline() is None and apic.irr == 0


def test_timer_with_illegal_vector_logs_an_error():
    apic = enabled_apic()
    wr(apic, DIVIDE, DIVIDE_BY_1)
    wr(apic, LVT_TIMER, 0x08)
    wr(apic, INITIAL, 10)
    apic.advance(10)
    wr(apic, ESR, 0)
    assert apic.irr == 0 and rd(apic, ESR) == 0x40


def test_divide_change_keeps_the_count_left():
    apic = enabled_apic()
    wr(apic, DIVIDE, DIVIDE_BY_1)
    wr(apic, LVT_TIMER, PERIODIC | 0x30)
    wr(apic, INITIAL, 100)
    apic.advance(40)
    wr(apic, DIVIDE, 0b0000)  # by 2 from now on
    assert rd(apic, CURRENT) == 60
    assert apic.next_deadline() == 40 + 60 * 2
    apic.advance(160)
    assert apic.timer_expirations == 1 and apic.next_deadline() == 160 + 200


def test_mode_change_while_counting_applies_at_expiry():
    apic = enabled_apic()
    wr(apic, DIVIDE, DIVIDE_BY_1)
    wr(apic, LVT_TIMER, PERIODIC | 0x30)
    wr(apic, INITIAL, 100)
    apic.advance(150)
    wr(apic, LVT_TIMER, 0x30)  # to one-shot: the running count finishes, then stops
    assert apic.next_deadline() == 200
    apic.advance(1000)
    assert apic.timer_expirations == 2 and apic.next_deadline() is None
    wr(apic, INITIAL, 100)  # one-shot from t = 1000, switched to periodic half way
    apic.advance(1050)
    wr(apic, LVT_TIMER, PERIODIC | 0x30)
    apic.advance(1100)
    assert apic.timer_expirations == 3 and apic.next_deadline() == 1200


def test_time_may_not_go_back():
    apic = LocalApic(0)
    apic.advance(10)
    with pytest.raises(ValueError):
        apic.advance(9)


@given(
    initial=st.integers(1, 1000),
    config=st.sampled_from([0b0000, 0b0001, 0b0010, 0b0011, 0b1000, 0b1001, 0b1010, 0b1011]),
    start=st.integers(0, 10_000),
    steps=st.lists(st.integers(0, 50_000), max_size=30),
)
def test_periodic_timer_fires_once_per_elapsed_period(initial, config, start, steps):
    apic = enabled_apic()
    wr(apic, DIVIDE, config)
    wr(apic, LVT_TIMER, PERIODIC | 0x40)
    apic.advance(start)
    wr(apic, INITIAL, initial)
    period = initial * divisor(config)
    now = start
    for step in steps:
        now += step
        apic.advance(now)
        elapsed = now - start
        assert apic.timer_expirations == elapsed // period
        assert apic.next_deadline() == start + (elapsed // period + 1) * period
        assert rd(apic, CURRENT) == initial - (elapsed // divisor(config)) % initial


# -- the ICR -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("high", "low", "ipi"),
    [
        (0, 0x000C_4500, Ipi(source=1, mode="init", vector=0, destination=0, shorthand=3, level=1, trigger=0)),
        (0, 0x000C_8500, Ipi(1, "init-deassert", vector=0, destination=0, shorthand=3, level=0, trigger=1)),
        (0, 0x000C_4601, Ipi(source=1, mode="startup", vector=1, destination=0, shorthand=3, level=1, trigger=0)),
        (0x0200_0000, 0x0000_4041, Ipi(1, "fixed", vector=0x41, destination=2, shorthand=0, level=1, trigger=0)),
        (0xFF00_0000, 0x0000_4150, Ipi(source=1, mode="lowest", vector=0x50, destination=0xFF, shorthand=0, level=1, trigger=0)),
        (0, 0x0004_4060, Ipi(source=1, mode="fixed", vector=0x60, destination=0, shorthand=1, level=1, trigger=0)),
        (0x0300_0000, 0x0000_4400, Ipi(source=1, mode="nmi", vector=0, destination=3, shorthand=0, level=1, trigger=0)),
        (0, 0x0008_4200, Ipi(source=1, mode="smi", vector=0, destination=0, shorthand=2, level=1, trigger=0)),
    ],
)
def test_icr_write_sends_the_ipi(high, low, ipi):
    sent: list[Ipi] = []
    apic = LocalApic(1, sent.append)
    wr(apic, ICR_HIGH, high)
    assert sent == []  # the high word alone sends nothing
    wr(apic, ICR_LOW, low)
    assert sent == [ipi]
    assert rd(apic, ICR_LOW) == low and rd(apic, ICR_HIGH) == high


def test_delivery_status_reads_idle():
    sent: list[Ipi] = []
    apic = LocalApic(0, sent.append)
    wr(apic, ICR_HIGH, 0x01FF_FFFF)
    wr(apic, ICR_LOW, 0xFFFF_F5FF)  # INIT, physical, every other bit set
    assert rd(apic, ICR_LOW) & (1 << 12) == 0
    assert rd(apic, ICR_LOW) == 0x000C_C5FF
    assert rd(apic, ICR_HIGH) == 0x0100_0000
    assert sent == [Ipi(0, "init", 0xFF, 1, 3, 1, 1)]


def test_icr_commands_that_are_not_sent():
    sent: list[Ipi] = []
    apic = enabled_apic()
    apic.send_ipi = sent.append
    wr(apic, ICR_HIGH, 0x0200_0000)
    wr(apic, ICR_LOW, 0x0000_4300)  # reserved delivery mode
    wr(apic, ICR_LOW, 0x0000_4F00)  # reserved delivery mode, logical
    wr(apic, ICR_LOW, 0x0000_4841)  # logical destination, no shorthand
    assert sent == []
    wr(apic, ICR_LOW, 0x0000_400F)  # fixed with an illegal vector
    assert sent == []
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0x20
    wr(apic, ICR_LOW, 0x0004_4841)  # logical, but to self: the shorthand decides
    assert sent == [Ipi(0, "fixed", 0x41, 2, 1, 1, 0)]


def test_icr_without_a_receiver_is_dropped():
    apic = LocalApic(0)
    wr(apic, ICR_LOW, 0x000C_4500)
    assert rd(apic, ICR_LOW) == 0x000C_4500
