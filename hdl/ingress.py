"""Ingress port: TLP decode, checks, routing lookup and the write into the virtual output queues."""

from amaranth.hdl import Module, Signal, Const, Mux, Cat, C
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..models import formats as F
from ..models.formats import DropReason as R
from .tlp import IngressBeat, EgressBeat, hdr_dw, hdr_field
from .params import SwitchParams

__all__ = ["WindowEntry", "IdRouteEntry", "IngressPort", "IngressEvents",
           "routing_config_members"]


class WindowEntry(data.Struct):
    """One address window: ``base <= A <= limit`` routes to ``port``."""
    base: 64
    limit: 64
    port: 5
    enable: 1


class IdRouteEntry(data.Struct):
    """One ID route: ``bus_lo <= B <= bus_hi`` routes to ``port``."""
    bus_lo: 8
    bus_hi: 8
    port: 5
    enable: 1


class IngressEvents(data.Struct):
    """What one ingress did in a cycle, registered (one cycle after the beat), for counters."""
    rx_beat: 1
    rx_packet: 1
    rx_stall: 1
    rx_bytes: 7          # popcount(keep), at most 64 lanes
    reason: 4            # DropReason of a packet decided this cycle, 0 = none
    ur: 1                # an Unsupported Request completion was queued
    hdr: 128             # header and prefix of the packet ``reason`` refers to
    pfx: 32


def routing_config_members(params):
    """Signature members carrying the routing configuration (from the register block):
    ``port_enable``, ``completer_id``, ``root_port``, ``root_valid``, ``windows``,
    ``id_routes``."""
    return {
        "port_enable": In(params.n_ports),
        "completer_id": In(16),
        "root_port": In(5),
        "root_valid": In(1),
        "windows": In(data.ArrayLayout(WindowEntry, params.n_windows)),
        "id_routes": In(data.ArrayLayout(IdRouteEntry, params.n_id_routes)),
    }


def _address(m, hdr):
    """64-bit target address of a memory request or address-routed message header (3-DW
    headers: upper half zero; the two low bits are reserved and read as zero)."""
    dw0, dw2, dw3 = hdr_dw(hdr, 0), hdr_dw(hdr, 2), hdr_dw(hdr, 3)
    is_4dw = hdr_field(dw0, F.DW0, "fmt")[0]
    address = Signal(64)
    m.d.comb += address.eq(Mux(is_4dw, Cat(C(0, 2), dw3[2:], dw2),
                               Cat(C(0, 2), dw2[2:], C(0, 32))))
    return address


def _popcount(v):
    total = C(0, 7)
    for bit in v:
        total = total + bit
    return total[:7]


class IngressPort(wiring.Component):
    """Decodes, checks and routes the packets of one ingress port (``docs/protocol.md``).

    Members
    -------
    i : In(stream.Signature(IngressBeat))
        The port's ingress stream. ``i.ready`` depends only on registers of this block and of
        the virtual output queues (never on any egress ``ready``).
    o : Out(stream.Signature({beat: EgressBeat, dest: port}))
        Beats to write into virtual output queue ``dest`` of this ingress. Two register stages
        (address/ID comparisons, then the verdict): a beat accepted on ``i`` at edge *t* is
        valid on ``o`` after edge *t+1* at the earliest. Beats of a
        packet are never reordered; a dropped packet produces no beat, a packet answered with
        an Unsupported Request produces the one-beat completion instead, addressed to this port.
    events : Out(IngressEvents)
        Counter and error events, one cycle after the beat they describe.
    port_enable, completer_id, root_port, root_valid, windows, id_routes : In
        Configuration from the register block; sampled on each packet's first beat.

    Bad input is handled as ``docs/protocol.md`` sections 4 and 5 say: whole drops for
    first-beat failures, cut short with ``err`` for later-beat failures; never a hang.
    """

    def __init__(self, params: SwitchParams, port: int):
        self.params = params
        self.port = port
        n = params.n_ports
        super().__init__({
            "i": In(stream.Signature(IngressBeat(params.data_width))),
            "o": Out(stream.Signature(data.StructLayout({
                "beat": EgressBeat(params.data_width), "dest": range(n)}))),
            "events": Out(IngressEvents),
            **routing_config_members(params),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.n_ports
        lanes = p.lanes
        lane_bits = lanes.bit_length() - 1
        # ---- stage 1: register the beat, with the 64-bit window and ID-route comparisons
        # already made (they are the long carry chains; the verdict needs only their bits) ----
        beat = Signal(IngressBeat(p.data_width))
        staged = Signal()
        window_match = Signal(p.n_windows)
        id_match = Signal(p.n_id_routes)
        advance = Signal()     # stage 2 takes the staged beat this cycle
        m.d.comb += [
            advance.eq(staged & (~self.o.valid | self.o.ready)),
            self.i.ready.eq(~staged | advance),
        ]
        incoming = self.i.payload.hdr
        in_address = _address(m, incoming)
        in_bus = hdr_dw(incoming, 2)[24:32]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [beat.eq(self.i.payload), staged.eq(1)]
            for k, w in enumerate(self.windows):
                m.d.sync += window_match[k].eq(w.enable & (w.base <= in_address) &
                                               (in_address <= w.limit) & (w.port < n))
            for k, r in enumerate(self.id_routes):
                m.d.sync += id_match[k].eq(r.enable & (r.bus_lo <= in_bus) &
                                           (in_bus <= r.bus_hi) & (r.port < n))
        with m.Elif(advance):
            m.d.sync += staged.eq(0)

        # ---- stage 2: decode, verdict, write towards the VOQs ----
        hdr = beat.hdr
        dw0, dw1, dw2, dw3 = (hdr_dw(hdr, k) for k in range(4))

        # ---- header decode (meaningful on a packet's first beat) ----
        fmt = hdr_field(dw0, F.DW0, "fmt")
        typ = hdr_field(dw0, F.DW0, "type")
        td = hdr_field(dw0, F.DW0, "td")
        length = hdr_field(dw0, F.DW0, "length")
        has_data, is_4dw, fmt_hi = fmt[1], fmt[0], fmt[2]

        t_mem = typ == F.Type.MEM
        t_memlk = typ == F.Type.MEM_LOCKED
        t_io = typ == F.Type.IO
        t_cfg = (typ == F.Type.CFG0) | (typ == F.Type.CFG1)
        t_cpl = typ == F.Type.CPL
        t_cpllk = typ == F.Type.CPL_LOCKED
        t_atomic = (typ == F.Type.FETCH_ADD) | (typ == F.Type.SWAP) | (typ == F.Type.CAS)
        t_msg = typ[3:5] == 0b10
        msg_r = typ[0:3]

        valid_type = ~fmt_hi & (
            t_mem |
            (t_memlk & ~has_data) |
            ((t_io | t_cfg | t_cpl | t_cpllk) & ~is_4dw) |
            (t_atomic & has_data) |
            (t_msg & is_4dw & (msg_r != 0b110) & (msg_r != 0b111)))
        non_posted = (t_mem & ~has_data) | t_memlk | t_io | t_cfg | t_atomic
        unsupported = t_memlk | t_io | t_cfg | t_cpllk | t_atomic | \
            (t_msg & (msg_r == F.MsgRouting.BROADCAST))
        route_addr = t_mem | (t_msg & (msg_r == F.MsgRouting.BY_ADDRESS))
        route_id = t_cpl | (t_msg & (msg_r == F.MsgRouting.BY_ID))
        route_root = t_msg & ((msg_r == F.MsgRouting.TO_ROOT) | (msg_r == F.MsgRouting.GATHER))
        route_local = t_msg & (msg_r == F.MsgRouting.LOCAL)

        len_dw = Mux(length == 0, 1024, length)
        payload_bytes = Signal(13)
        m.d.comb += payload_bytes.eq(Mux(has_data, len_dw << 2, 0) + Mux(td, 4, 0))
        too_long = has_data & (payload_bytes > p.max_payload)
        n_beats = Signal(range(4100 // 8 + 2))
        m.d.comb += n_beats.eq(Mux(payload_bytes == 0, 1,
                                   (payload_bytes + (lanes - 1)) >> lane_bits))
        rem = payload_bytes[:lane_bits]
        last_keep = Signal(lanes)
        for j in range(lanes):
            partial_covers = (rem > j) if j < lanes - 1 else 0  # rem never exceeds lanes-1
            m.d.comb += last_keep[j].eq((payload_bytes != 0) & ((rem == 0) | partial_covers))

        # ---- routing lookup: the lowest-numbered matching entry wins (it is assigned last) ----
        win_hit = Signal()
        win_port = Signal(5)
        for k in reversed(range(p.n_windows)):
            with m.If(window_match[k]):
                m.d.comb += [win_hit.eq(1), win_port.eq(self.windows[k].port)]
        id_hit = Signal()
        id_port = Signal(5)
        for k in reversed(range(p.n_id_routes)):
            with m.If(id_match[k]):
                m.d.comb += [id_hit.eq(1), id_port.eq(self.id_routes[k].port)]
        root_hit = self.root_valid & (self.root_port < n)

        routed = Signal()
        dest = Signal(5)
        with m.If(route_addr):
            m.d.comb += [routed.eq(win_hit), dest.eq(win_port)]
        with m.Elif(route_id):
            m.d.comb += [routed.eq(id_hit), dest.eq(id_port)]
        with m.Elif(route_root):
            m.d.comb += [routed.eq(root_hit), dest.eq(self.root_port)]
        dest_enabled = (self.port_enable >> dest)[0]

        # ---- first-beat verdict, in the documented order ----
        class Action:
            FORWARD, DROP, UR, CONSUME = range(4)
        action = Signal(2)
        reason = Signal(4)
        all_keep = Const((1 << lanes) - 1, lanes)
        beat0_keep_ok = beat.keep == Mux(n_beats == 1, last_keep, all_keep)

        def verdict(act, why):
            return [action.eq(act), reason.eq(why)]
        with m.If(~self.port_enable[self.port]):
            m.d.comb += verdict(Action.DROP, R.PORT_DISABLED)
        with m.Elif(~beat.first):
            m.d.comb += verdict(Action.DROP, R.MALFORMED)
        with m.Elif((beat.pfx != 0) & (beat.pfx[29:32] != F.Fmt.PREFIX)):
            m.d.comb += verdict(Action.DROP, R.MALFORMED)
        with m.Elif(~valid_type):
            m.d.comb += verdict(Action.DROP, R.MALFORMED)
        with m.Elif(unsupported):
            m.d.comb += verdict(Mux(non_posted, Action.UR, Action.DROP), R.UNSUPPORTED)
        with m.Elif(too_long):
            m.d.comb += verdict(Action.DROP, R.LENGTH)
        with m.Elif(route_local):
            m.d.comb += verdict(Action.CONSUME, R.MSG_LOCAL)
        with m.Elif(~routed):
            m.d.comb += verdict(Mux(non_posted, Action.UR, Action.DROP), R.NO_ROUTE)
        with m.Elif(~dest_enabled):
            m.d.comb += verdict(Mux(non_posted, Action.UR, Action.DROP), R.PORT_DISABLED)
        with m.Elif(~beat0_keep_ok):
            m.d.comb += verdict(Action.DROP, R.KEEP)
        with m.Elif(beat.last & (n_beats != 1)):
            m.d.comb += verdict(Action.DROP, R.TRUNCATED)
        with m.Elif(~beat.last & (n_beats == 1)):
            m.d.comb += verdict(Action.DROP, R.OVERLONG)
        with m.Else():
            m.d.comb += verdict(Action.FORWARD, R.NONE)

        # The Unsupported Request completion (docs/protocol.md section 4).
        ur_hdr = Signal(128)
        ur_dw0 = Cat(C(0, 10), C(0, 2), hdr_field(dw0, F.DW0, "attr"), C(0, 4),
                     hdr_field(dw0, F.DW0, "attr2"), hdr_field(dw0, F.DW0, "tag8"),
                     hdr_field(dw0, F.DW0, "tc"), hdr_field(dw0, F.DW0, "tag9"),
                     C(F.Type.CPL, 5), C(F.Fmt.DW3, 3))
        ur_dw1 = Cat(C(4, 12), C(0, 1), C(F.CplStatus.UR, 3), self.completer_id)
        ur_dw2 = Cat(C(0, 7), C(0, 1), hdr_field(dw1, F.REQ_DW1, "tag"),
                     hdr_field(dw1, F.REQ_DW1, "requester_id"))
        m.d.comb += ur_hdr.eq(Cat(ur_dw0, ur_dw1, ur_dw2, C(0, 32)))

        # ---- packet state ----
        in_packet = Signal()      # a start beat has been seen and its last has not
        discarding = Signal()     # rest of the packet is thrown away
        beat_index = Signal(range(p.max_beats + 1))
        pkt_beats = Signal.like(n_beats)
        pkt_last_keep = Signal(lanes)
        pkt_dest = Signal(range(n))
        pkt_hdr = Signal(128)
        pkt_pfx = Signal(32)

        later_reason = Signal(4)
        is_final = beat_index == pkt_beats - 1
        expect_keep = Mux(is_final, pkt_last_keep, all_keep)
        with m.If(beat.first):
            m.d.comb += later_reason.eq(R.MALFORMED)
        with m.Elif(beat.keep != expect_keep):
            m.d.comb += later_reason.eq(R.KEEP)
        with m.Elif(beat.last & ~is_final):
            m.d.comb += later_reason.eq(R.TRUNCATED)
        with m.Elif(~beat.last & is_final):
            m.d.comb += later_reason.eq(R.OVERLONG)

        # ---- output register towards the VOQs ----
        accept = advance
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        out = self.o.payload
        ev = Signal(IngressEvents)
        m.d.sync += self.events.eq(ev)
        m.d.comb += [
            ev.rx_stall.eq(self.i.valid & ~self.i.ready),
            ev.rx_beat.eq(accept),
            ev.rx_bytes.eq(Mux(accept, _popcount(beat.keep), 0)),
        ]

        with m.If(accept):
            with m.If(~in_packet):
                m.d.comb += [ev.rx_packet.eq(1), ev.reason.eq(reason),
                             ev.hdr.eq(beat.hdr), ev.pfx.eq(beat.pfx)]
                m.d.sync += [pkt_hdr.eq(beat.hdr), pkt_pfx.eq(beat.pfx),
                             pkt_beats.eq(n_beats), pkt_last_keep.eq(last_keep),
                             pkt_dest.eq(dest), beat_index.eq(1)]
                m.d.sync += [in_packet.eq(~beat.last),
                             discarding.eq(action != Action.FORWARD)]
                with m.Switch(action):
                    with m.Case(Action.FORWARD):
                        m.d.sync += [self.o.valid.eq(1), out.dest.eq(dest),
                                     out.beat.eq(Cat(beat.as_value(), C(0, 1)))]
                    with m.Case(Action.UR):
                        m.d.comb += ev.ur.eq(1)
                        m.d.sync += [self.o.valid.eq(1), out.dest.eq(self.port),
                                     out.beat.eq(0),
                                     out.beat.first.eq(1), out.beat.last.eq(1),
                                     out.beat.hdr.eq(ur_hdr)]
            with m.Elif(discarding):
                m.d.sync += in_packet.eq(~beat.last)
            with m.Else():
                m.d.comb += [ev.reason.eq(later_reason), ev.hdr.eq(pkt_hdr), ev.pfx.eq(pkt_pfx)]
                m.d.sync += [self.o.valid.eq(1), out.dest.eq(pkt_dest),
                             out.beat.eq(Cat(beat.as_value(), C(0, 1))),
                             out.beat.first.eq(0),
                             beat_index.eq(beat_index + 1)]
                with m.If(later_reason != R.NONE):
                    m.d.sync += [out.beat.last.eq(1), out.beat.err.eq(1),
                                 in_packet.eq(~beat.last), discarding.eq(1)]
                with m.Else():
                    m.d.sync += in_packet.eq(~beat.last)
        return m
