"""A bank of 64-bit event counters kept in block RAM."""

from amaranth.hdl import Module, Signal, Const, Mux, Array
from amaranth.lib import wiring, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["CounterBank"]


class CounterBank(wiring.Component):
    """``len(increment_widths)`` 64-bit counters, each of which may count every cycle.

    A register file of 64-bit counters costs each counter 64 flip-flops, a 64-bit adder and
    its share of a wide read multiplexer; on an FPGA that is about 130 LUT4 sites per
    counter. Here the 64-bit totals live in a memory (``depth`` entries of the total and a
    pre-counter value, block RAM) and each
    counter has only a narrow flip-flop *pre-counter* that adds its increments and wraps. A
    flusher visits the counters in turn, one per cycle: it reads the total and the
    pre-counter's value at the previous visit, adds what the pre-counter gathered since
    (the difference, modulo its width) and writes both back. A software read takes the
    flusher's slot in the cycle it is made, so it returns an exact total with a fixed
    latency.

    Parameters
    ----------
    increment_widths : sequence of int
        Width of each counter's per-cycle increment (>= 1; an entry of 0 is a hole: an index
        that never counts and always reads 0). The pre-counter of counter *k* is as wide as the
        most it can gather between two visits of the flusher (:meth:`pre_counter_width`).

    Members
    -------
    inc : In(max(increment_widths)).array(depth)
        ``inc[k]`` is added to counter *k* in every cycle; only its low
        ``increment_widths[k]`` bits are used.
    read_en : In(1)
        Read counter ``read_index`` this cycle. At most one read in any two consecutive
        cycles (the register block takes at most one read every two).
    read_index : In(range(depth))
        An index at or above ``depth`` reads nothing (``read_data`` keeps its value).
    read_data : Out(64)
        The total of counter ``read_index``: every increment presented in the cycles before
        the one of ``read_en``. Valid :attr:`READ_LATENCY` cycles after that cycle, and held
        until the next read's data replaces it.

    Reset clears every counter (valid bits in flip-flops: the memory needs no sweep).
    """

    #: Cycles from ``read_en`` to ``read_data``: the memory read, its register, the add.
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
            # One port per counter, not one wide array: an event simulator (Icarus) then
            # re-evaluates only the pre-counters whose increment changed.
            "inc": In(max(max(widths), 1)).array(self.depth),
            "read_en": In(1),
            "read_index": In(range(self.depth)),
            "read_data": Out(self.COUNT_WIDTH),
        })

    def pre_counter_width(self, k):
        """Bits of counter ``k``'s pre-counter. A counter is visited at least once every
        ``2 * depth`` cycles (every other cycle may be a read, which takes the slot); a visit
        adds the increments since the last visit whose write it can read back, at most 2
        cycles older, so at most ``2 * depth + 3`` increments of at most ``2^w - 1`` each,
        which must stay below ``2^bits`` for the difference to be exact."""
        w = self.increment_widths[k]
        return (((1 << w) - 1) * (2 * self.depth + 3)).bit_length() if w else 0

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        widths = [self.pre_counter_width(k) for k in range(depth)]
        pre_width = max(max(widths), 1)
        # A memory entry: the total as of the last visit, and the pre-counter's value then.
        entry = data.StructLayout({"total": self.COUNT_WIDTH, "seen": pre_width})
        m.submodules.memory = memory = Memory(shape=entry, depth=depth, init=[])
        rd = memory.read_port(domain="sync")
        wr = memory.write_port()

        # Pre-counters run free (they wrap): a visit adds what they gathered since the last
        # one, (now - seen) mod 2^width, so they need no clear multiplexer.
        pre = [Signal(max(w, 1), name=f"pre{k}") for k, w in enumerate(widths)]
        for k, count in enumerate(pre):
            if widths[k]:
                m.d.sync += count.eq(count + self.inc[k][:self.increment_widths[k]])
        masks = Array(Const((1 << w) - 1, pre_width) for w in widths)
        valid = Signal(depth)       # bit k: the memory holds counter k's entry since reset

        # ---- stage 0: choose the slot, read its entry, take its pre-counter ----
        turn = Signal(range(depth))     # the flusher's next counter
        slot = Signal(range(depth))
        reading = Signal()
        m.d.comb += [reading.eq(self.read_en & (self.read_index < depth)),
                     slot.eq(Mux(reading, self.read_index, turn))]
        with m.If(~reading):
            m.d.sync += turn.eq(Mux(turn == depth - 1, 0, turn + 1))
        m.d.comb += [rd.addr.eq(slot), rd.en.eq(1)]
        s1_idx = Signal(range(depth))
        s1_now = Signal(pre_width)
        s1_mask = Signal(pre_width)
        s1_read = Signal()
        m.d.sync += [s1_idx.eq(slot), s1_now.eq(Array(pre)[slot]), s1_mask.eq(masks[slot]),
                     s1_read.eq(reading)]

        # ---- stage 1: the entry read, registered. A write of the last two cycles to the same
        # counter has not reached this read; the entry read is then an older visit's, which
        # is as good: the difference from its `seen` covers the longer span (the
        # pre-counter width allows for it). So nothing is forwarded. A counter's valid bit
        # is set only once its first write can be read back. ----
        s2_idx = Signal(range(depth))
        s2_now = Signal(pre_width)
        s2_mask = Signal(pre_width)
        s2_read = Signal()
        s2_old = Signal(entry)
        s2_new = Signal(entry)
        m.d.sync += [s2_idx.eq(s1_idx), s2_now.eq(s1_now), s2_mask.eq(s1_mask),
                     s2_read.eq(s1_read),
                     s2_old.eq(Mux(valid.bit_select(s1_idx, 1), rd.data, 0))]

        # ---- stage 2: add what the pre-counter gathered, write back ----
        m.d.comb += [s2_new.total.eq(s2_old.total + ((s2_now - s2_old.seen) & s2_mask)),
                     s2_new.seen.eq(s2_now),
                     wr.addr.eq(s2_idx), wr.data.eq(s2_new), wr.en.eq(1)]
        written = Signal(range(depth))      # the write of the cycle before: readable now
        written_valid = Signal()
        m.d.sync += [written.eq(s2_idx), written_valid.eq(1)]
        with m.If(written_valid):
            m.d.sync += valid.eq(valid | (1 << written))
        with m.If(s2_read):
            m.d.sync += self.read_data.eq(s2_new.total)
        return m
