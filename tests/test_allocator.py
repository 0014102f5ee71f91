"""Block-level tests of the iSLIP allocator (Amaranth simulator)."""

import random

import pytest
from amaranth.sim import Simulator

from smartfabric.hdl.allocator import IslipAllocator


def simulate(n, requests_per_cycle, **kwargs):
    """Drive a request matrix each cycle; return the match matrices seen."""
    dut = IslipAllocator(n, **kwargs)
    seen = []

    async def tb(ctx):
        for reqs in requests_per_cycle:
            for i in range(dut.n_in):
                ctx.set(dut.requests[i], reqs[i])
            seen.append([ctx.get(dut.matches[i]) for i in range(dut.n_in)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return seen


@pytest.mark.parametrize("n", [2, 5, 8])
def test_matches_are_legal_and_maximal_enough(n, seed):
    """Matches are one-hot per ingress, at most one per egress, only where requested; with a
    full request matrix the pointers desynchronise and every port is matched every cycle."""
    rng = random.Random(seed)
    cycles = [[rng.getrandbits(n) for _ in range(n)] for _ in range(200)]
    full = [[(1 << n) - 1] * n for _ in range(3 * n)]
    seen = simulate(n, cycles + full)
    for reqs, matches in zip(cycles + full, seen):
        used = 0
        for i in range(n):
            m = matches[i]
            assert m & (m - 1) == 0, f"ingress {i} matched to several egresses: {m:#x}"
            assert m & ~reqs[i] == 0, f"ingress {i} matched without a request"
            assert used & m == 0, f"egress {m:#x} matched twice"
            used |= m
        if any(reqs):
            assert used, "requests pending but nothing matched"
    # After desynchronisation under full load: a perfect matching every cycle.
    for matches in seen[-n:]:
        assert sum(bin(m).count("1") for m in matches) == n


@pytest.mark.parametrize("n,n_in", [(3, 3), (8, 8), (4, 5)])
@pytest.mark.parametrize("exclusive", [True, False])
def test_no_starvation(n, n_in, exclusive, seed):
    """Every ingress asking for the same egress forever is served within n_in matches of it
    (also with one more ingress than egresses, as the switch has)."""
    rng = random.Random(seed)
    target = rng.randrange(n)
    seen = simulate(n, [[1 << target] * n_in for _ in range(4 * n_in)], n_in=n_in,
                    exclusive_ingress=exclusive)
    winners = [next(i for i in range(n_in) if m[i]) for m in seen]
    for start in range(len(winners) - n_in):
        assert set(winners[start:start + n_in]) == set(range(n_in)), winners


@pytest.mark.parametrize("n,n_in", [(3, 3), (8, 8), (4, 5)])
def test_non_exclusive_ingress(n, n_in, seed):
    """Without the accept phase every egress grants one requester by round robin; an ingress
    may win several egresses in a cycle."""
    rng = random.Random(seed)
    cycles = [[rng.getrandbits(n) for _ in range(n_in)] for _ in range(200)]
    dut_cycles = simulate(n, cycles, n_in=n_in, exclusive_ingress=False)
    for reqs, matches in zip(cycles, dut_cycles):
        for o in range(n):
            winners = [i for i in range(n_in) if matches[i] >> o & 1]
            requesters = [i for i in range(n_in) if reqs[i] >> o & 1]
            assert len(winners) == (1 if requesters else 0), (o, winners, requesters)
            assert set(winners) <= set(requesters)
