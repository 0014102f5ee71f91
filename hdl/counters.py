"""A bank of 64-bit event counters kept in block RAM."""

from amaranth.hdl import Module, Signal, Mux, Array
from amaranth.lib import wiring, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["CounterBank"]


class CounterBank(wiring.Component):
    """``len(increment_widths)`` 64-bit counters, each of which may count every cycle.

    A register file of 64-bit counters costs each counter 64 flip-flops, a 64-bit adder and
    its share of a wide read multiplexer; on an FPGA that is about 130 LUT4 sites per
    counter. Here the 64-bit totals live in a memory (``depth`` x 64, block RAM) and each
    counter has only a narrow flip-flop *pre-counter* that adds its increments. A flusher
    visits the counters in turn, one per cycle: it reads the total, adds the pre-counter
    and writes the total back, while the pre-counter restarts from the increment of that
    cycle. A software read takes the flusher's slot in the cycle it is made, so it returns
    an exact total with a fixed latency.

    Parameters
    ----------
    increment_widths : sequence of int
        Width of each counter's per-cycle increment (>= 1; an entry of 0 is a hole: an index
        that never counts and always reads 0). The pre-counter of counter *k* is as wide as the
        most it can gather between two visits of the flusher.

    Members
    -------
    inc : In(data.ArrayLayout(max(increment_widths), depth))
        ``inc[k]`` is added to counter *k* in every cycle; only its low
        ``increment_widths[k]`` bits are used.
    read_en : In(1)
        Read counter ``read_index`` this cycle. At most one read in any two consecutive
        cycles (the register block reads at most one word every four).
    read_index : In(range(depth))
        An index at or above ``depth`` reads nothing (``read_data`` keeps its value).
    read_data : Out(64)
        The total of counter ``read_index``: every increment presented in the cycles before
        the one of ``read_en``. Valid :attr:`READ_LATENCY` cycles after that cycle, and held
        until the next read's data replaces it.

    Reset clears every counter (valid bits in flip-flops: the memory needs no sweep).
    """

    #: Cycles from ``read_en`` to ``read_data``: the memory read, a register, the add.
    READ_LATENCY = 3
    #: Bits of every total.
    COUNT_WIDTH = 64

    def __init__(self, increment_widths):
        widths = list(increment_widths)
        if len(widths) < 3:
            raise ValueError(f"a counter bank needs at least 3 counters, not {len(widths)}")
        for w in widths:
            if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 32:
                raise ValueError(f"increment widths must be integers from 0 to 32, not {w!r}")
        self.increment_widths = widths
        self.depth = len(widths)
        super().__init__({
            "inc": In(data.ArrayLayout(max(max(widths), 1), self.depth)),
            "read_en": In(1),
            "read_index": In(range(self.depth)),
            "read_data": Out(self.COUNT_WIDTH),
        })

    def pre_counter_width(self, k):
        """Bits of counter ``k``'s pre-counter. A counter is visited at least once every
        ``2 * depth`` cycles (every other cycle may be a read, which takes the slot), and
        gathers at most ``2 * depth + 1`` increments of at most ``2^w - 1`` each."""
        w = self.increment_widths[k]
        return (((1 << w) - 1) * (2 * self.depth + 1)).bit_length() if w else 0

    def elaborate(self, platform):
        m = Module()
        depth, width = self.depth, self.COUNT_WIDTH
        m.submodules.memory = memory = Memory(shape=width, depth=depth, init=[])
        rd = memory.read_port(domain="sync")
        wr = memory.write_port()

        pre = [Signal(max(self.pre_counter_width(k), 1), name=f"pre{k}") for k in range(depth)]
        valid = Signal(depth)       # bit k: the memory holds counter k's total since reset

        # ---- stage 0: choose the slot, read its total, hand over its pre-counter ----
        turn = Signal(range(depth))     # the flusher's next counter
        slot = Signal(range(depth))
        reading = Signal()
        m.d.comb += [reading.eq(self.read_en & (self.read_index < depth)),
                     slot.eq(Mux(reading, self.read_index, turn))]
        with m.If(~reading):
            m.d.sync += turn.eq(Mux(turn == depth - 1, 0, turn + 1))
        m.d.comb += [rd.addr.eq(slot), rd.en.eq(1)]
        for k, count in enumerate(pre):
            w = self.increment_widths[k]
            inc = self.inc[k][:w] if w else 0
            m.d.sync += count.eq(Mux(slot == k, 0, count) + inc)
        pre_width = max(len(s) for s in pre)
        s1_idx = Signal(range(depth))
        s1_pre = Signal(pre_width)
        s1_read = Signal()
        m.d.sync += [s1_idx.eq(slot), s1_pre.eq(Array(pre)[slot]), s1_read.eq(reading)]

        # ---- stage 1: the total read (or forwarded: a write of the last two cycles to the
        # same counter has not reached the memory's read yet), registered ----
        s2_idx = Signal(range(depth))
        s2_pre = Signal(pre_width)
        s2_read = Signal()
        s2_total = Signal(width)
        s2_sum = Signal(width)
        last_idx = Signal(range(depth))     # the write made in the cycle before
        last_sum = Signal(width)
        last_valid = Signal()
        base = Signal(width)
        # Stage 2 writes in every cycle (there is always a slot), so its index is always live.
        with m.If(s2_idx == s1_idx):
            m.d.comb += base.eq(s2_sum)
        with m.Elif(last_valid & (last_idx == s1_idx)):
            m.d.comb += base.eq(last_sum)
        with m.Elif(valid.bit_select(s1_idx, 1)):
            m.d.comb += base.eq(rd.data)
        m.d.sync += [s2_idx.eq(s1_idx), s2_pre.eq(s1_pre), s2_read.eq(s1_read),
                     s2_total.eq(base)]

        # ---- stage 2: add, write back ----
        m.d.comb += [s2_sum.eq(s2_total + s2_pre),
                     wr.addr.eq(s2_idx), wr.data.eq(s2_sum), wr.en.eq(1)]
        m.d.sync += [last_idx.eq(s2_idx), last_sum.eq(s2_sum), last_valid.eq(1),
                     valid.eq(valid | (1 << s2_idx))]
        with m.If(s2_read):
            m.d.sync += self.read_data.eq(s2_sum)
        return m
