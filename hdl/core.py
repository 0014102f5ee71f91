"""Switch datapath: ingress ports, virtual output queues, iSLIP allocator, crossbar, egress."""

from amaranth.hdl import Module, Signal, Mux, Cat, C
from amaranth.lib import wiring, stream, data
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .params import SwitchParams
from .tlp import IngressBeat, EgressBeat, hdr_address, with_address
from .ingress import (IngressPort, IngressEvents, Rewrite, STAMP_BITS,
                      routing_config_members, group_table_members,
                      source_window_members)
from .allocator import IslipAllocator
from .reduce_engine import ResultBeat
from .bits import one_hot_select

__all__ = ["SwitchCore", "EgressEvents", "EgressMeta", "Overlay"]


class Overlay(data.Struct):
    """A port's multicast address overlay (``mc_overlay[p]``, applied together)."""
    base: 64
    size: 6


class EgressEvents(data.Struct):
    """What one egress did in a cycle (registered), for counters."""
    tx_beat: 1
    tx_packet: 1
    tx_err: 1
    tx_stall: 1
    tx_bytes: 7
    tx_mcast: 1


class EgressMeta(data.Struct):
    """Where the beat at the head of an egress came from (valid with ``egress[q].valid``;
    meaningful on first beats): for telemetry, not part of the stream."""
    stamp: STAMP_BITS    # ``now`` when its first beat was accepted at its ingress
    ur: 1                # a UR completion the switch generated
    engine: 1            # a packet of the reduction engine (not stamped)


class SwitchCore(wiring.Component):
    """Input-queued cut-through crossbar switch for PCIe TLP streams.

    Each ingress has one virtual output queue (VOQ) per egress, so a packet waiting for a
    busy egress never blocks packets behind it for other egresses (until its own VOQ is full).
    Each VOQ is a separate memory with its own read port, so the crossbar connects VOQ[i][o]
    to egress o and an ingress can feed several egresses in the same cycle; the allocator is
    iSLIP's grant phase, a round-robin arbiter per free egress over the ingresses with a packet
    for it. A grant holds for the whole packet (packets never interleave on an egress) and the
    first beat crosses in the same cycle as the grant, so back-to-back packets leave with no
    gap.

    Latency: a beat accepted on ``ingress[p]`` at clock edge *t* can be valid on an egress
    after edge *t+3* (two ingress stages, VOQ, egress buffer); that is the zero-load latency.

    Members
    -------
    ingress : In(stream.Signature(IngressBeat)).array(N)
    egress : Out(stream.Signature(EgressBeat)).array(N)
        Stream rules hold on both: ``valid`` never depends on ``ready``, payload stable until
        transferred. No ingress ``ready`` depends combinationally on any egress ``ready``.
    contrib : Out(stream.Signature(EgressBeat)).array(N)
        Lane p of the reduction engine: the contributions (memory writes with an INC
        descriptor) received on ingress p, whole and in order, through a queue of
        ``voq_depth`` beats; a contribution cut short at the ingress ends with ``err``.
    inject : In(stream.Signature(ResultBeat))
        The reduction engine's packets (results and notices), written into the engine's
        queue towards every egress in ``dests``. The engine is the (N+1)-th source of the
        allocator and shares each egress with the ingresses by round robin. With ``rebase``
        set the header address is an offset into each receiver's window (like a Hypercast
        copy); the copy to a receiver whose window is hidden by a window parity error
        (``ReceiverWindow.parity_error`` when the packet's first beat is taken) is not
        queued: it is dropped whole, never sent with a wrong address
        (``docs/protocol.md`` section 9).
    engine_parity_drops : Out(N)
        Bit o: a rebased engine packet's copy to egress o was dropped for a receiver-window
        parity error (one cycle after its first beat was taken; one bit per dropped copy).
    ingress_events, egress_events : Out(...).array(N)
        Per-port events for the counters, one cycle after the fact.
    now : In(STAMP_BITS)
        The latency timer (``docs/telemetry.md`` section 1): each ingress stamps a packet's
        first beat with ``now`` of the cycle it is accepted, and the stamp travels with the
        beat through the VOQ and the egress buffer (data bits only: no cycle and no handshake
        path is added).
    egress_meta : Out(EgressMeta).array(N)
        The stamp and origin of the beat on ``egress[q]`` (combinational from the egress
        buffer's head, like the beat).
    port_enable, completer_id, root_port, root_valid, windows, window_parity, id_routes, mc,
    mc_receive, overlays : In
        Configuration (from the register block; the windows and their parity from a
        ``hdl.window_table.WindowTable``).
    receiver_windows : In(ReceiverWindow).array(N)
        Each port's receiver window, derived from ``windows`` and one cycle behind them
        (``WindowTable.receiver_windows``): read by the ingress ports' spill checks and by
        the copy addressing of each egress.
    group_addr, group_en, group_data : array(N)
        One read port of the Hypercast group table per ingress.
    source_index, source_window : array(N)
        One read port of the window table in use per ingress (``WindowTable.source_window``).

    Multicast (``docs/protocol.md`` section 8): an ingress writes a beat into the VOQs of all
    its destinations in the same cycle, so the payload crosses the ingress once and each
    destination drains its own copy. A multicast packet's first beat waits until every
    destination VOQ has room for the whole packet (multicast packets longer than the VOQ are
    dropped at the ingress, LENGTH), so its later beats never wait and no egress is ever held
    by a half-written copy: no deadlock between multicast packets. An egress that stops
    draining holds its copies back by at most the VOQ depth before the source ingress waits.
    Each copy's address is written into its header as it leaves its egress: the receiver window
    (rebasing) or the overlay (multicast windows) of that egress, one adder per egress.
    """

    def __init__(self, params: SwitchParams):
        self.params = params
        n, w = params.n_ports, params.data_width
        super().__init__({
            "ingress": In(stream.Signature(IngressBeat(w))).array(n),
            "egress": Out(stream.Signature(EgressBeat(w))).array(n),
            "contrib": Out(stream.Signature(EgressBeat(w))).array(n),
            "inject": In(stream.Signature(ResultBeat(w, n))),
            "ingress_events": Out(IngressEvents).array(n),
            "egress_events": Out(EgressEvents).array(n),
            "now": In(STAMP_BITS),
            "egress_meta": Out(EgressMeta).array(n),
            "engine_parity_drops": Out(n),
            **routing_config_members(params),
            "overlays": In(data.ArrayLayout(Overlay, n)),
            **{name: member.array(n) for name, member in group_table_members(params).items()},
            **{name: member.array(n) for name, member in source_window_members(params).items()},
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.n_ports
        beat_layout = EgressBeat(p.data_width)
        queued_layout = data.StructLayout({"beat": beat_layout, "mcast": 1, "rewrite": Rewrite,
                                           "stamp": STAMP_BITS, "ur": 1})
        queued_width = queued_layout.size
        # the egress buffer also knows which source the beat came from
        buffered_layout = data.StructLayout({"queued": queued_layout, "engine": 1})

        # ---- per-egress copy addressing: the receiver windows (inputs, from the window
        # table) and the overlays, registered from the configuration (one cycle) ----
        receiver_windows = self.receiver_windows
        overlay_base = [Signal(64, name=f"overlay_base{o}") for o in range(n)]
        overlay_mask = [Signal(64, name=f"overlay_mask{o}") for o in range(n)]
        overlay_on = Signal(n)
        for o in range(n):
            ov = self.overlays[o]
            m.d.sync += [overlay_base[o].eq(ov.base),
                         overlay_mask[o].eq((C(1, 65) << ov.size) - 1),
                         overlay_on[o].eq(ov.size >= 6)]

        # ---- ingress ports and their VOQs ----
        voq = [[None] * n for _ in range(n)]
        self.queues = {}    # name -> SyncFIFO, for the formal harness (verif/formal.py)
        for i in range(n):
            port = m.submodules[f"ingress{i}"] = IngressPort(p, i)
            wiring.connect(m, wiring.flipped(self.ingress[i]), port.i)
            m.d.comb += [self.ingress_events[i].eq(port.events), port.now.eq(self.now)]
            for name in routing_config_members(p):
                dst = getattr(port, name)
                src = getattr(self, name)
                if isinstance(dst, list):       # a table: one member per entry
                    m.d.comb += [d.eq(s) for d, s in zip(dst, src, strict=True)]
                else:
                    m.d.comb += dst.eq(src)
            m.d.comb += [self.group_addr[i].eq(port.group_addr),
                         self.group_en[i].eq(port.group_en),
                         port.group_data.eq(self.group_data[i]),
                         self.source_index[i].eq(port.source_index),
                         port.source_window.eq(self.source_window[i])]
            wr = port.o.payload
            w_rdy = Signal(n, name=f"voq_w_rdy{i}")
            lane = m.submodules[f"contrib_queue{i}"] = SyncFIFO(width=len(wr.beat.as_value()),
                                                              depth=p.voq_depth)
            self.queues[f"contrib_queue{i}"] = lane
            m.d.comb += [
                lane.w_data.eq(wr.beat),
                lane.w_en.eq(port.o.valid & port.o.ready & wr.engine),
                self.contrib[i].valid.eq(lane.r_rdy),
                self.contrib[i].payload.eq(lane.r_data),
                lane.r_en.eq(self.contrib[i].ready),
            ]
            queued = Signal(queued_layout, name=f"voq_w_data{i}")
            m.d.comb += [queued.beat.eq(wr.beat), queued.mcast.eq(wr.mcast),
                         queued.rewrite.eq(wr.rewrite), queued.stamp.eq(wr.stamp),
                         queued.ur.eq(wr.ur)]
            for o in range(n):
                q = voq[i][o] = m.submodules[f"voq{i}_{o}"] = SyncFIFO(width=queued_width,
                                                                         depth=p.voq_depth)
                self.queues[f"voq{i}_{o}"] = q
                m.d.comb += [
                    q.w_data.eq(queued),
                    q.w_en.eq(port.o.valid & port.o.ready & wr.dests[o]),
                    w_rdy[o].eq(Mux(wr.beat.first & wr.mcast,
                                    p.voq_depth - q.level >= wr.beats, q.w_rdy)),
                ]
            # A beat is written into every destination's VOQ in the same cycle. A multicast
            # packet starts only when each destination VOQ has room for all of it, so it is
            # never held up halfway: an egress granted to it always finishes it. (Otherwise
            # two multicast packets, each half-written and holding an egress the other one
            # needs, could wait for each other forever.)
            m.d.comb += port.o.ready.eq(((wr.dests & ~w_rdy) == 0) & (~wr.engine | lane.w_rdy))

        # ---- the reduction engine's queues: source N ----
        inj = self.inject.payload
        inj_rdy = Signal(n)
        # Copies of a rebased packet to receivers whose window fails its parity check are
        # dropped: decided on the first beat and held for the rest of the packet.
        hidden = Signal(n)
        m.d.comb += hidden.eq(Mux(inj.rebase,
                                  Cat(receiver_windows[o].parity_error for o in range(n)), 0))
        held_drops = Signal(n)
        inj_drops = Signal(n)
        inj_dests = Signal(n)
        m.d.comb += [inj_drops.eq(Mux(inj.beat.first, inj.dests & hidden, held_drops)),
                     inj_dests.eq(inj.dests & ~inj_drops)]
        m.d.sync += self.engine_parity_drops.eq(0)
        with m.If(self.inject.valid & self.inject.ready & inj.beat.first):
            m.d.sync += [held_drops.eq(inj.dests & hidden),
                         self.engine_parity_drops.eq(inj.dests & hidden)]
        voq.append([None] * n)
        for o in range(n):
            q = voq[n][o] = m.submodules[f"voq_engine_{o}"] = SyncFIFO(width=queued_width,
                                                                        depth=p.voq_depth)
            self.queues[f"voq_engine_{o}"] = q
            queued = Signal(queued_layout, name=f"voq_engine_w_data{o}")
            m.d.comb += [
                queued.beat.eq(inj.beat),
                queued.rewrite.eq(Mux(inj.rebase, Rewrite.REBASE, Rewrite.NONE)),
                q.w_data.eq(queued),
                q.w_en.eq(self.inject.valid & self.inject.ready & inj_dests[o]),
                inj_rdy[o].eq(q.w_rdy),
            ]
        # Beat by beat: the engine's packets need no whole-packet room, because a packet
        # from an ingress, once started, never waits for an egress the engine holds.
        m.d.comb += self.inject.ready.eq((inj_dests & ~inj_rdy) == 0)

        # ---- egress buffers: two entries, so "can take a beat" is a register ----
        out_fifo = []
        for o in range(n):
            f = m.submodules[f"egress_buffer{o}"] = SyncFIFO(width=buffered_layout.size, depth=2)
            out_fifo.append(f)
            eg = self.egress[o]
            buffered = Signal(buffered_layout, name=f"egress_buffered{o}")
            head_out = buffered.queued
            # A multicast copy's address is written as it leaves (docs/protocol.md section
            # 8.4): the receiver window (rebasing an offset) or the overlay of this egress.
            hdr = head_out.beat.hdr
            address = hdr_address(hdr)
            copy_address = Mux(head_out.rewrite == Rewrite.REBASE,
                               Mux(receiver_windows[o].valid, receiver_windows[o].base, 0)
                               + address,
                               (overlay_base[o] & ~overlay_mask[o]) | (address & overlay_mask[o]))
            readdress = head_out.beat.first & (
                (head_out.rewrite == Rewrite.REBASE) |
                ((head_out.rewrite == Rewrite.OVERLAY) & overlay_on[o]))
            m.d.comb += [
                buffered.eq(f.r_data),
                self.egress_meta[o].stamp.eq(head_out.stamp),
                self.egress_meta[o].ur.eq(head_out.ur),
                self.egress_meta[o].engine.eq(buffered.engine),
                eg.valid.eq(f.r_rdy),
                eg.payload.eq(head_out.beat),
                eg.payload.hdr.eq(Mux(readdress, with_address(hdr, copy_address[:64]), hdr)),
                f.r_en.eq(eg.ready),
            ]
            ev = Signal(EgressEvents, name=f"egress_event{o}")
            done = eg.valid & eg.ready
            m.d.comb += [
                ev.tx_beat.eq(done),
                ev.tx_packet.eq(done & eg.payload.last),
                ev.tx_err.eq(done & eg.payload.last & eg.payload.err),
                ev.tx_stall.eq(eg.valid & ~eg.ready),
                ev.tx_bytes.eq(Mux(done, sum(eg.payload.keep), 0)),
                ev.tx_mcast.eq(done & eg.payload.last & head_out.mcast),
            ]
            m.d.sync += self.egress_events[o].eq(ev)

        # ---- allocation ----
        out_busy = Signal(n)
        out_owner = [Signal(range(n + 1), name=f"out_owner{o}") for o in range(n)]
        can_load = Signal(n)
        for o in range(n):
            m.d.comb += can_load[o].eq(out_fifo[o].level < 2)

        # Every VOQ is its own memory, so an ingress may feed several egresses in one cycle:
        # no accept phase, no per-ingress busy state (see IslipAllocator).
        sources = n + 1
        alloc = m.submodules.allocator = IslipAllocator(n, n_in=sources, exclusive_ingress=False)
        for i in range(sources):
            for o in range(n):
                m.d.comb += alloc.requests[i][o].eq(
                    ~out_busy[o] & can_load[o] & voq[i][o].r_rdy)

        # ---- crossbar: egress o reads VOQ[i][o] of its selected ingress ----
        for o in range(n):
            select = Signal(sources, name=f"xbar_select{o}")   # one-hot source
            for i in range(sources):
                m.d.comb += select[i].eq(Mux(out_busy[o], out_owner[o] == i,
                                             alloc.matches[i][o]))
            head = Signal(queued_layout, name=f"xbar_head{o}")
            head_valid = Signal(name=f"xbar_head_valid{o}")
            m.d.comb += [
                head.eq(one_hot_select(select, [voq[i][o].r_data for i in range(sources)])),
                head_valid.eq((select & Cat(voq[i][o].r_rdy for i in range(sources))).any()),
            ]
            move = Signal(name=f"xbar_move{o}")
            m.d.comb += move.eq(head_valid & can_load[o])
            m.d.comb += [
                out_fifo[o].w_data.eq(Cat(head, select[n])),   # buffered_layout
                out_fifo[o].w_en.eq(move),
            ]
            for i in range(sources):
                m.d.comb += voq[i][o].r_en.eq(move & select[i])

            # Connection state: held from the first to the last beat of a packet.
            matched = Signal(name=f"matched{o}")
            m.d.comb += matched.eq(Cat(alloc.matches[i][o] for i in range(sources)).any())
            with m.If(out_busy[o]):
                with m.If(move & head.beat.last):
                    m.d.sync += out_busy[o].eq(0)
            with m.Elif(matched & ~head.beat.last):
                m.d.sync += out_busy[o].eq(1)
                for i in range(sources):
                    with m.If(alloc.matches[i][o]):
                        m.d.sync += out_owner[o].eq(i)
        return m
