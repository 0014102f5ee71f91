"""Bus-functional models of the switch's ports, driven from one per-cycle loop.

One coroutine serves every port so a cycle costs one wake-up, not 2N: at each rising edge it
samples last cycle's handshakes (values seen right after the edge are the pre-edge ones),
hands completed transfers to callbacks, then drives the next beats and ``ready``s (a
``valid`` or ``ready`` is written only when it changes).
"""

import random
from collections import deque

from cocotb.triggers import Event, RisingEdge

from ..models.switch_model import Beat, Packet

__all__ = ["FabricPorts"]

_INGRESS_FIELDS = ("data", "keep", "first", "last", "hdr", "pfx")
_EGRESS_FIELDS = ("data", "keep", "first", "last", "hdr", "pfx", "err")


class FabricPorts:
    """Drives every ingress and receives from every egress of a ``smartfabric_switch``.

    Parameters
    ----------
    dut : cocotb handle of the top level
    n_ports : int
    rng : random.Random
        Source of valid gaps and ready backpressure (seeded by the test).
    gap_prob : float or list of float
        Per ingress: chance of a cycle with ``valid`` low before each beat.
    ready_prob : float or list of float
        Per egress: chance that ``ready`` is high in a cycle.

    Callbacks: ``on_cycle(cycle)`` at each rising edge before anything else (so it sees the
    edge's handshakes before the beats are handed on); ``on_ingress(port, beat)`` for every
    beat the switch accepted; ``on_egress(port, packet)`` for every packet delivered (when its
    last beat arrives).
    Counters of stalled cycles (``rx_stall``/``tx_stall``) are kept as the switch defines them.

    :meth:`reset` asserts the switch's ``rst`` from this same loop, so the bus models and the
    switch forget their state at the same edge (``on_reset()`` callbacks run at its release).
    """

    def __init__(self, dut, n_ports, rng, gap_prob=0.0, ready_prob=1.0):
        self.dut = dut
        self.n = n_ports
        self.rng = rng
        self.gap_prob = self._per_port(gap_prob)
        self.ready_prob = self._per_port(ready_prob)
        self.queues = [deque() for _ in range(n_ports)]
        self.on_cycle = []
        self.on_ingress = []
        self.on_egress = []
        self.on_reset = []
        self.rx_stall = [0] * n_ports
        self.tx_stall = [0] * n_ports
        self.cycle = 0
        self.blocked = set()        # egresses whose ready is forced low
        self.held = set()           # ingresses that start no new packet (valid low at a start)
        self.stalled = set()        # ingresses whose valid is forced low, even mid-packet
        self._s = [{f: getattr(dut, f"s{p}_{f}") for f in _INGRESS_FIELDS + ("valid", "ready")}
                   for p in range(n_ports)]
        self._m = [{f: getattr(dut, f"m{p}_{f}") for f in _EGRESS_FIELDS + ("valid", "ready")}
                   for p in range(n_ports)]
        self._current = [None] * n_ports
        self._ready = [False] * n_ports
        self._valid = [False] * n_ports     # the ingress valid last driven
        self._partial = [[] for _ in range(n_ports)]
        self._task = None
        self._reset_request = 0
        self._reset_done = None
        for p in range(n_ports):
            self._s[p]["valid"].value = 0
            self._m[p]["ready"].value = 0

    def _per_port(self, v):
        return list(v) if isinstance(v, (list, tuple)) else [v] * self.n

    def set_gap(self, prob):
        self.gap_prob = self._per_port(prob)

    def set_ready(self, prob):
        self.ready_prob = self._per_port(prob)

    def send(self, port, beats):
        self.queues[port].extend(beats)

    def in_packet(self, port):
        """The switch has taken part of a packet from this ingress: the beat on offer, or
        else the next one queued, is not a first beat."""
        cur = self._current[port]
        if cur is not None:
            return not cur.first
        q = self.queues[port]
        return bool(q and not q[0].first)

    def idle(self):
        """No beat waiting or in flight at any ingress, no partial packet at any egress."""
        return (all(not q for q in self.queues) and all(c is None for c in self._current)
                and all(not p for p in self._partial))

    async def reset(self, cycles):
        """Assert ``rst`` for ``cycles`` clock edges at the next edge, mid-packet or not: every
        beat queued or on offer and every partially received packet is forgotten, ``valid``
        drops with ``rst``, the stall counters restart from 0 (as the switch's do). Returns
        once ``rst`` is low again."""
        if cycles < 1:
            raise ValueError("a reset lasts at least one clock edge")
        self._reset_done = Event()
        self._reset_request = cycles
        await self._reset_done.wait()

    async def _hold_reset(self, cycles):
        clk = self.dut.clk
        self.dut.rst.value = 1
        for p in range(self.n):
            self.queues[p].clear()
            self._current[p] = None
            self._partial[p].clear()
            self._s[p]["valid"].value = 0
            self._valid[p] = False
        for _ in range(cycles):
            await RisingEdge(clk)
            self.cycle += 1
        self.dut.rst.value = 0
        self.rx_stall = [0] * self.n
        self.tx_stall = [0] * self.n
        for cb in self.on_reset:
            cb()
        self._reset_done.set()

    async def run(self):
        clk = self.dut.clk
        n = self.n
        rng = self.rng
        while True:
            await RisingEdge(clk)
            self.cycle += 1
            if self._reset_request:
                cycles, self._reset_request = self._reset_request, 0
                await self._hold_reset(cycles)
                continue
            for cb in self.on_cycle:
                cb(self.cycle)
            for p in range(n):
                s = self._s[p]
                cur = self._current[p]
                if cur is not None:
                    if s["ready"].value:
                        for cb in self.on_ingress:
                            cb(p, cur)
                        cur = self._current[p] = None
                    else:
                        self.rx_stall[p] += 1
                if cur is None:
                    q = self.queues[p]
                    if (q and p not in self.stalled and not (p in self.held and q[0].first)
                            and rng.random() >= self.gap_prob[p]):
                        cur = self._current[p] = q.popleft()
                        s["data"].value = cur.data
                        s["keep"].value = cur.keep
                        s["first"].value = int(cur.first)
                        s["last"].value = int(cur.last)
                        s["hdr"].value = cur.hdr
                        s["pfx"].value = cur.pfx
                        if not self._valid[p]:
                            s["valid"].value = 1
                            self._valid[p] = True
                    elif self._valid[p]:
                        s["valid"].value = 0
                        self._valid[p] = False
            for p in range(n):
                mh = self._m[p]
                if mh["valid"].value:
                    if self._ready[p]:
                        beat = Beat(data=mh["data"].value.to_unsigned(),
                                    keep=mh["keep"].value.to_unsigned(),
                                    first=bool(mh["first"].value), last=bool(mh["last"].value),
                                    hdr=mh["hdr"].value.to_unsigned(),
                                    pfx=mh["pfx"].value.to_unsigned(),
                                    err=bool(mh["err"].value))
                        part = self._partial[p]
                        part.append(beat)
                        if beat.last:
                            pkt = Packet(tuple(part))
                            part.clear()
                            for cb in self.on_egress:
                                cb(p, pkt)
                    else:
                        self.tx_stall[p] += 1
                ready = p not in self.blocked and (self.ready_prob[p] >= 1.0
                                                   or rng.random() < self.ready_prob[p])
                if ready != self._ready[p]:
                    mh["ready"].value = int(ready)
                    self._ready[p] = ready
