"""The 8259A pair and the 8254 channel 0 as a guest programs them."""

from engine.devices.pic8259 import PicPair
from engine.devices.pit8254 import Pit8254


def _init_pair(pics: PicPair) -> None:
    """The classic remap: master to 0x20, slave to 0x28 (ICW1 0x11, ICW2, ICW3, ICW4 0x01)."""
    for pic, base, cascade in ((pics.master, 0x20, 0x04), (pics.slave, 0x28, 0x02)):
        pic.write(0, 1, 0x11)
        pic.write(1, 1, base)
        pic.write(1, 1, cascade)
        pic.write(1, 1, 0x01)


def test_remap_mask_acknowledge_and_eoi():
    pics = PicPair()
    _init_pair(pics)
    assert pics.master.vector_base == 0x20 and pics.slave.vector_base == 0x28
    pics.master.write(1, 1, 0xFE)  # only IRQ 0
    pics.raise_irq(1)
    assert not pics.has_interrupt()
    pics.raise_irq(0)
    assert pics.has_interrupt() and pics.acknowledge() == 0x20
    assert not pics.has_interrupt()  # IRQ 0 in service
    pics.raise_irq(0)
    assert not pics.has_interrupt()
    pics.master.write(0, 1, 0x20)  # non-specific EOI
    assert pics.has_interrupt() and pics.acknowledge() == 0x20
    pics.master.write(0, 1, 0x0B)  # OCW3: read ISR
    assert pics.master.read(0, 1) == 0x01
    pics.master.write(0, 1, 0x0A)  # OCW3: read IRR
    assert pics.master.read(0, 1) == 0x02  # IRQ 1 still requested (masked)
    assert pics.master.read(1, 1) == 0xFE


def test_slave_interrupt_through_the_cascade():
    pics = PicPair()
    _init_pair(pics)
    pics.master.write(1, 1, 0xFB)  # IRQ 2 (the cascade) unmasked
    pics.slave.write(1, 1, 0x00)
    pics.raise_irq(12)
    assert pics.has_interrupt() and pics.acknowledge() == 0x28 + 4


def test_pit_rate_generator_edges():
    pit = Pit8254()
    pit.write(3, 1, 0x34)  # channel 0, lo/hi, mode 2
    pit.write(0, 1, 0x9C)
    pit.write(0, 1, 0x2E)  # 11932: ~100 Hz
    assert pit.reload == 11932
    assert pit.advance(11931) == 0
    assert pit.advance(1) == 1
    assert pit.advance(11932 * 10) == 10
    pit.write(3, 1, 0x00)  # latch
    assert pit.read(0, 1) | pit.read(0, 1) << 8 == pit.count


def test_pit_one_shot_mode_0():
    pit = Pit8254()
    pit.write(3, 1, 0x30)
    pit.write(0, 1, 0x10)
    pit.write(0, 1, 0x00)
    assert pit.advance(100) == 1 and pit.advance(1000) == 0
