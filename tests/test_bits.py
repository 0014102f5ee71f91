"""The bit-vector helpers of hdl/bits.py, exhaustively over 5-bit inputs in Amaranth's
simulator, against plain Python."""

from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from smartfabric.hdl.bits import first_index, first_one_hot, one_hot_select, popcount

N = 5
VALUES = [0x3, 0x1C, 0x0, 0x1F, 0x15]      # one 5-bit value per select bit


def test_helpers_exhaustively():
    bits = Signal(N)
    low_one_hot, low_index, selected, ones = Signal(N), Signal(3), Signal(N), Signal(7)
    m = Module()
    m.d.comb += [low_one_hot.eq(sum(b << k for k, b in enumerate(first_one_hot(list(bits))))),
                 low_index.eq(first_index(list(bits))),
                 selected.eq(one_hot_select(bits, VALUES)),
                 ones.eq(popcount(bits))]
    seen = []

    async def bench(ctx):
        for v in range(1 << N):
            ctx.set(bits, v)
            lowest = (v & -v).bit_length() - 1 if v else None
            assert ctx.get(low_one_hot) == (v & -v), v
            assert ctx.get(low_index) == (lowest or 0), v
            assert ctx.get(ones) == bin(v).count("1"), v
            if bin(v).count("1") <= 1:      # a one-hot select (or none): that value, or 0
                assert ctx.get(selected) == (VALUES[lowest] if v else 0), v
            else:                           # the AND-OR: the OR of the selected values
                want = 0
                for k in range(N):
                    if v >> k & 1:
                        want |= VALUES[k]
                assert ctx.get(selected) == want, v
            seen.append(v)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == list(range(1 << N))
