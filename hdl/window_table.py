"""The address windows the switch routes by, and every port's receiver window."""

from amaranth.hdl import Array, Cat, Module, Signal, signed
from amaranth.lib import wiring, memory
from amaranth.lib.wiring import In, Out

from .params import SwitchParams
from .ingress import WindowEntry, ReceiverWindow, source_window_members

__all__ = ["WindowTable"]


class WindowTable(wiring.Component):
    """The switch's copy of the address-window table, replaced as a whole, and the receiver
    window of every port derived from it by a scan.

    The register block holds the windows as software writes them (``windows``,
    ``window_parity``). The switch routes by :attr:`live`, a copy taken once the receiver
    windows of the new table are known, so a write reaches the routing, the spill checks
    and the rebasing together (``docs/protocol.md`` section 8.6; the register block holds a
    window write's response until then, ``hdl.regblock.RegisterBlock.write_applied``).

    A port's receiver window (``docs/protocol.md`` section 8.3) is its lowest-numbered
    enabled window. The scan reads one window per cycle, from the highest-numbered to window
    0, and each window overrides what the higher-numbered ones set for its port: one
    multiplexer over the table and one subtraction in all, where a priority search for every
    port at once takes one multiplexer and one subtraction per port (about 19,000 LUT4 sites
    at 8 ports x 16 windows).

    Members
    -------
    windows : In(WindowEntry).array(n_windows)
    window_parity : In(n_windows)
        The table as the register block holds it; bit k of ``window_parity``: window k fails
        its parity check.
    changed : In(1)
        A window holds a new value in this cycle: the scan starts again from the top.
    applied : Out(1)
        High in the cycle before :attr:`live` shows the table scanned since the last
        ``changed`` (combinational from registers, never high in a cycle of ``changed``).
    live : Out(WindowEntry).array(n_windows)
    live_parity : Out(n_windows)
        The table in use: ``windows`` and ``window_parity`` as they were in the cycle of
        ``applied``.
    receiver_windows : Out(ReceiverWindow).array(n_ports)
        Derived from :attr:`live`, one cycle after it (the lag the ingress expects: it reads
        them in the cycle after a header's window comparisons). Port o's entry is the lowest-
        numbered window k with ``enable`` and ``port == o`` (``valid``; ``base`` and ``span =
        limit - base``; all 0 when the port has none), and ``parity_error`` is whether the
        lowest-numbered window that is port o's or fails its parity check fails it.
    source_index : In(range(n_windows)).array(n_ports)
    source_window : Out(WindowEntry).array(n_ports)
        One read port per ingress (``hdl.ingress.source_window_members``): ``source_window[r]``
        is ``live[source_index[r]]`` in the same cycle (combinational from the index). One
        exception: from a reset until the first ``applied`` after it, :attr:`live` is all 0
        (no window enabled, so an ingress never reads it) and ``source_window`` may show the
        table from before the reset.

        They are read from a distributed RAM (a 16 x 4 RAM per 4 bits on an ECP5) with one
        copy per reader, where a selection from :attr:`live` costs a multiplexer of 133 bits
        per reader. The RAM has two banks: the scan writes each window it reads into the bank
        not in use, and the banks swap in the cycle :attr:`live` takes the new table over.

    Timing: with ``changed`` high in cycle *c* and not again, ``applied`` is high in cycle
    *c* + ``n_windows`` + 1, :attr:`live` shows the new table from cycle *c* + ``n_windows`` + 2
    and ``receiver_windows`` from *c* + ``n_windows`` + 3. After reset the table is scanned as
    if ``changed`` had been high in the cycle before.
    """

    def __init__(self, params: SwitchParams):
        self.params = params
        super().__init__({
            "windows": In(WindowEntry).array(params.n_windows),
            "window_parity": In(params.n_windows),
            "changed": In(1),
            "applied": Out(1),
            "live": Out(WindowEntry).array(params.n_windows),
            "live_parity": Out(params.n_windows),
            "receiver_windows": Out(ReceiverWindow).array(params.n_ports),
            **{name: member.flip().array(params.n_ports)
               for name, member in source_window_members(params).items()},
        })

    def serve(self, m, core):
        """Adds to ``m`` the connections by which ``core`` (a ``hdl.core.SwitchCore``) routes by
        this table: the table in use and its parity, the receiver windows and one read port
        per ingress."""
        p = self.params
        m.d.comb += core.window_parity.eq(self.live_parity)
        m.d.comb += [core.windows[k].eq(self.live[k]) for k in range(p.n_windows)]
        for o in range(p.n_ports):
            m.d.comb += [core.receiver_windows[o].eq(self.receiver_windows[o]),
                         self.source_index[o].eq(core.source_index[o]),
                         core.source_window[o].eq(self.source_window[o])]

    def elaborate(self, platform):
        m = Module()
        n_windows, n = self.params.n_windows, self.params.n_ports
        top = n_windows - 1

        # Stage 1: read window k (k counts down to 0).
        k = Signal(range(n_windows), init=top)
        scanning = Signal(init=1)
        cur = Signal(WindowEntry)
        cur_k = Signal.like(k)
        cur_parity = Signal()
        cur_valid = Signal()
        cur_first = Signal()        # window top: the first of a scan
        cur_last = Signal()         # window 0: the last
        with m.If(self.changed):
            m.d.sync += [k.eq(top), scanning.eq(1), cur_valid.eq(0)]
        with m.Elif(scanning):
            m.d.sync += [cur.eq(Array(w.as_value() for w in self.windows)[k]),
                         cur_parity.eq(self.window_parity.bit_select(k, 1)), cur_k.eq(k),
                         cur_valid.eq(1), cur_first.eq(k == top), cur_last.eq(k == 0),
                         k.eq(k - 1), scanning.eq(k != 0)]
        with m.Else():
            m.d.sync += cur_valid.eq(0)

        # Stage 2: window cur overrides what the higher-numbered windows set for its port.
        # The first window of a scan starts every port afresh.
        span = Signal(signed(65))
        m.d.comb += span.eq(cur.limit - cur.base)
        scanned = [Signal(ReceiverWindow, name=f"scanned{o}") for o in range(n)]
        for o, rx in enumerate(scanned):
            mine = cur.enable & (cur.port == o)
            with m.If(cur_valid & (cur_first | mine | cur_parity)):
                m.d.sync += rx.parity_error.eq(cur_parity)
            with m.If(cur_valid & mine):
                m.d.sync += [rx.valid.eq(1), rx.base.eq(cur.base), rx.span.eq(span)]
            with m.Elif(cur_valid & cur_first):
                m.d.sync += [rx.valid.eq(0), rx.base.eq(0), rx.span.eq(0)]

        # Publish: the table at the edge after the last window's read, the receiver windows
        # one edge later (when the last window is in them).
        publish_rx = Signal()
        m.d.comb += self.applied.eq(cur_valid & cur_last & ~self.changed)
        m.d.sync += publish_rx.eq(self.applied)
        with m.If(self.applied):
            m.d.sync += [live.eq(w) for live, w in zip(self.live, self.windows)]
            m.d.sync += self.live_parity.eq(self.window_parity)
        with m.If(publish_rx):
            m.d.sync += [out.eq(rx) for out, rx in zip(self.receiver_windows, scanned)]

        # The source windows: bank ``in_use`` holds live; the scan fills the other one, and
        # they swap as live is published.
        in_use = Signal()
        ram = m.submodules.source_ram = memory.Memory(shape=WindowEntry,
                                                       depth=2 << len(k), init=[])
        write = ram.write_port()
        m.d.comb += [write.addr.eq(Cat(cur_k, ~in_use)), write.data.eq(cur),
                     write.en.eq(cur_valid)]
        with m.If(self.applied):
            m.d.sync += in_use.eq(~in_use)
        for index, entry in zip(self.source_index, self.source_window):
            read = ram.read_port(domain="comb")
            m.d.comb += [read.addr.eq(Cat(index, in_use)), entry.eq(read.data)]
        return m
