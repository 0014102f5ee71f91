# amaranth: UnusedElaboratable=no
"""Block-level tests of the block-RAM counter bank (hdl/counters.py) in Amaranth's simulator."""

import random

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from smartfabric.hdl.counters import CounterBank


def _run_bank(widths, cycles, draw_inc, draw_read, reset_at=()):
    """Drive ``cycles`` cycles: ``draw_inc(cycle, k)`` is counter k's increment,
    ``draw_read(cycle, last_read_cycle)`` the index to read or None; the domain's reset is
    high in the cycles of ``reset_at`` (no reads near them). Returns
    ``[(cycle, index, expected, got)]`` for every read, where expected is the sum of the
    increments of the cycles before the read's (since the last reset)."""
    dut = CounterBank(widths)
    top = Module()
    top.domains.sync = sync = ClockDomain()
    top.submodules.dut = dut
    reads = []

    async def bench(ctx):
        totals = [0] * len(widths)
        pending = []          # (cycle data is due, cycle, index, expected)
        last_read = -10
        for cycle in range(cycles + CounterBank.READ_LATENCY + 1):
            driving = cycle < cycles
            ctx.set(sync.rst, cycle in reset_at)
            near_reset = any(-CounterBank.READ_LATENCY <= cycle - r <= 1 for r in reset_at)
            index = draw_read(cycle, last_read) if driving and not near_reset else None
            ctx.set(dut.read_en, index is not None)
            if index is not None:
                ctx.set(dut.read_index, index)
                pending.append((cycle + CounterBank.READ_LATENCY, cycle, index, totals[index]))
                last_read = cycle
            incs = [draw_inc(cycle, k) if driving and widths[k] else 0
                    for k in range(len(widths))]
            for k, v in enumerate(incs):
                ctx.set(dut.inc[k], v)
                totals[k] = 0 if cycle in reset_at else totals[k] + v
            while pending and pending[0][0] == cycle:
                _, at, k, want = pending.pop(0)
                reads.append((at, k, want, ctx.get(dut.read_data)))
            await ctx.tick()
        assert not pending

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return reads


def _check(reads):
    assert reads, "no reads were made"
    bad = [r for r in reads if r[2] != r[3]]
    assert not bad, f"{len(bad)} of {len(reads)} reads wrong; first (cycle, index, want, got): " \
                    f"{bad[:5]}"


def test_random_increments_and_reads(seed):
    """Random increments of up to each counter's width on every counter, random reads of
    random counters with gaps of 1 to 6 cycles (so reads often land on a counter the flusher
    or a previous read touched one or two cycles before, whose write they cannot see yet)."""
    rng = random.Random(seed)
    widths = [1, 3, 0, 8, 2, 1, 7]
    reads = _run_bank(
        widths, 3000,
        lambda c, k: rng.randrange(1 << widths[k]) if rng.random() < 0.7 else 0,
        lambda c, last: rng.randrange(len(widths)) if c - last >= rng.randint(2, 6) else None)
    _check(reads)
    assert any(k == 2 for _, k, _, _ in reads)      # the hole reads 0


def test_back_to_back_reads_of_one_counter(seed):
    """Reads every other cycle of the same counter, which takes every other flusher slot: the
    write of the read before has not reached the memory when the next one reads it."""
    rng = random.Random(seed)
    widths = [4, 4, 4, 4]
    reads = _run_bank(widths, 400, lambda c, k: rng.randrange(16),
                      lambda c, last: (c // 50) % 4 if c - last >= 2 else None)
    _check(reads)


def test_saturated_increments_with_reads_every_other_cycle(seed):
    """The worst case for the pre-counters: every counter adds its largest increment in every
    cycle while reads take every other slot, so the flusher visits each counter only every
    2 * depth cycles, and a read lands 1 or 2 cycles after a visit to the same counter
    (it cannot see that visit's write yet, so it adds over the longer span). Every counter
    is read, mostly counter 3. Right totals mean no pre-counter wrapped twice between the
    visits a total is built from. Totals pass 2^32: the carry into the high word too."""
    rng = random.Random(seed)
    widths = [8, 1, 32, 5]
    top = [(1 << w) - 1 for w in widths]
    reads = _run_bank(widths, 3000, lambda c, k: top[k],
                      lambda c, last: (3 if rng.random() < 0.6 else rng.randrange(3))
                      if c - last >= 2 else None)
    _check(reads)
    assert {k for _, k, _, _ in reads} == {0, 1, 2, 3}
    assert max(want for _, k, want, _ in reads if k == 2) > 1 << 32
    dut = CounterBank(widths)
    assert dut.pre_counter_width(2) > 32


def test_first_visits_after_reset_ignore_stale_memory():
    """After a reset the memory still holds the old totals. A counter's first visit writes
    its entry two cycles later; a read of it in between, or right after (counter 0 read 2
    cycles after the flusher's visit, counter 2 likewise), must not take the stale entry."""
    widths = [4, 4, 4, 4, 4]
    schedule = {103: 0, 106: 2, 110: 1}
    reads = _run_bank(widths, 130, lambda c, k: 15,
                      lambda c, last: schedule.get(c) if c > 100 else (c // 3) % 5
                      if c % 3 == 0 else None,
                      reset_at=(100,))
    _check(reads)
    assert [(c, k) for c, k, *_ in reads if c > 100] == [(103, 0), (106, 2), (110, 1)]


def test_reads_right_after_reset_see_zero():
    """Every counter reads 0 before anything is counted: the memory's contents are never
    trusted before a counter is first written (valid bits)."""
    widths = [2, 2, 2, 2, 2]
    reads = _run_bank(widths, 12, lambda c, k: 0, lambda c, last: c % 5 if c % 2 == 0 else None)
    _check(reads)
    assert all(got == 0 for *_, got in reads)


def test_reset_clears_every_counter(seed):
    """After a reset mid-run every counter restarts from 0, although the memory still holds
    the old totals (reset does not reach block RAM)."""
    rng = random.Random(seed)
    widths = [3, 3, 3, 3, 3, 3]
    reads = _run_bank(widths, 900, lambda c, k: rng.randrange(8),
                      lambda c, last: rng.randrange(6) if c - last >= 3 else None,
                      reset_at=(300, 301, 650))
    _check(reads)
    assert any(300 < c < 320 for c, *_ in reads)


@pytest.mark.parametrize("widths,why", [([1, 1], "at least 3"), ([1, 2, 33], "0 to 32"),
                                        ([1, -1, 2], "0 to 32")])
def test_bad_parameters(widths, why):
    with pytest.raises(ValueError, match=why):
        CounterBank(widths)
