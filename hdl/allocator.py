"""Round-robin arbitration and the iSLIP switch allocator."""

from amaranth.hdl import Module, Signal, Mux, Cat
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

__all__ = ["round_robin_pick", "IslipAllocator"]


def round_robin_pick(m, requests, mask):
    """One-hot pick of the first request at or above the positions set in ``mask`` (a
    thermometer code of the round-robin pointer), wrapping to the lowest request.

    Returns ``(grant, any)``. Pure combinational; lowest-set-bit by the ``x & -x`` carry trick,
    so it maps onto FPGA carry chains.
    """
    n = len(requests)
    masked = Signal(n)
    select = Signal(n)
    grant = Signal(n)
    m.d.comb += [
        masked.eq(requests & mask),
        select.eq(Mux(masked.any(), masked, requests)),
        grant.eq(select & (~select + 1)[:n]),
    ]
    return grant, requests.any()


def _mask_above(grant, n):
    """Thermometer mask of the positions strictly above a one-hot ``grant``."""
    return (~((grant << 1) - 1))[:n]


class IslipAllocator(wiring.Component):
    """Single-iteration iSLIP allocator for an ``n_in`` x N crossbar (McKeown, 1999).

    Each free egress grants one requesting ingress by round robin; each ingress accepts one of
    the grants it received by round robin. Round-robin pointers move one past the partner only
    when a grant is accepted, which desynchronises the egress pointers under load and gives
    near 100% throughput with full request matrices, with no starvation: a requester waiting
    at an egress is granted within N accepted grants of that egress.

    With ``exclusive_ingress=False`` the accept phase is left out: every grant is a match, so
    an ingress may be matched to several egresses in one cycle. That is the right allocator
    when each (ingress, egress) queue is its own memory with its own read port (as the
    switch's virtual output queues are): nothing stops one ingress from feeding several
    egresses at once, and dropping the artificial one-read-per-ingress limit removes the
    matching inefficiency of input queueing (the egress pointers then move on every grant).

    Parameters
    ----------
    n : int
        Egresses N (and ingresses, unless ``n_in`` is given).
    n_in : int
        Ingresses (requesters); the switch has one more than it has egresses, its reduction
        engine's result source.

    Members
    -------
    requests : In(ArrayLayout(N, n_in))
        ``requests[i]`` has bit ``o`` set when ingress ``i`` has a packet for egress ``o`` and
        both are free. Callers clear rows/columns of busy ports.
    matches : Out(ArrayLayout(N, n_in))
        ``matches[i]`` has the egresses matched to ingress ``i`` this cycle: one-hot or zero
        when ``exclusive_ingress``, any subset otherwise. Combinational from ``requests`` (zero
        latency); at most one match per egress, always.
    """

    def __init__(self, n, *, n_in=None, exclusive_ingress=True):
        self.n = n
        self.n_in = n if n_in is None else n_in
        self.exclusive_ingress = exclusive_ingress
        super().__init__({
            "requests": In(data.ArrayLayout(n, self.n_in)),
            "matches": Out(data.ArrayLayout(n, self.n_in)),
        })

    def elaborate(self, platform):
        m = Module()
        n, n_in = self.n, self.n_in
        grant_masks = [Signal(n_in, init=(1 << n_in) - 1, name=f"grant_mask{o}")
                       for o in range(n)]
        accept_masks = [Signal(n, init=(1 << n) - 1, name=f"accept_mask{i}")
                        for i in range(n_in)]

        # Grant phase: egress o picks among the ingresses that request it.
        grants_to = []   # grants_to[o]: one-hot over ingresses
        for o in range(n):
            column = Signal(n_in, name=f"column{o}")
            m.d.comb += column.eq(Cat(self.requests[i][o] for i in range(n_in)))
            grant, _ = round_robin_pick(m, column, grant_masks[o])
            grants_to.append(grant)

        # Accept phase: ingress i picks among the egresses that granted it.
        for i in range(n_in):
            offers = Signal(n, name=f"offers{i}")
            m.d.comb += offers.eq(Cat(grants_to[o][i] for o in range(n)))
            if not self.exclusive_ingress:
                m.d.comb += self.matches[i].eq(offers)
                continue
            accept, any_accept = round_robin_pick(m, offers, accept_masks[i])
            m.d.comb += self.matches[i].eq(accept)
            with m.If(any_accept):
                m.d.sync += accept_masks[i].eq(_mask_above(accept, n))

        for o in range(n):
            accepted = Signal(n_in, name=f"accepted{o}")
            m.d.comb += accepted.eq(Cat(self.matches[i][o] for i in range(n_in)))
            with m.If(accepted.any()):
                m.d.sync += grant_masks[o].eq(_mask_above(accepted, n_in))
        return m

