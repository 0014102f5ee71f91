"""Ingress port: TLP decode, checks, routing lookup and the write into the virtual output queues."""

from amaranth.hdl import Module, Signal, Const, Mux, Cat, C, signed
from amaranth.lib import wiring, stream, data, enum
from amaranth.lib.wiring import In, Out

from ..models import formats as F
from ..models.formats import DropReason as R
from .tlp import IngressBeat, EgressBeat, hdr_dw, hdr_field, hdr_address, with_address
from .params import SwitchParams

__all__ = ["WindowEntry", "IdRouteEntry", "McWindow", "ReceiverWindow", "Rewrite",
           "IngressPort", "IngressEvents", "VoqWrite", "routing_config_members"]


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


class McWindow(data.Struct):
    """The PCIe multicast window (``mc_base``/``mc_ctrl``, applied together)."""
    base: 64
    index_pos: 6
    num_group: 5
    enable: 1
    exclude_source: 1


class ReceiverWindow(data.Struct):
    """Where Hypercast copies to one port are rebased: the lowest-numbered enabled window of
    that port (``valid``), its ``base`` and ``span = limit - base`` (signed: negative when the
    window is empty). ``parity_error``: a window numbered at or below that one (any window,
    when the port has none) fails its parity check, so the receiver window is not known
    (``docs/protocol.md`` section 9)."""
    base: 64
    span: signed(65)
    valid: 1
    parity_error: 1


class Rewrite(enum.Enum, shape=2):
    """How the core writes each copy's address (``docs/protocol.md`` section 8.4)."""
    NONE = 0       # the copy is the packet
    REBASE = 1     # the header carries an offset; A' = receiver window base + offset
    OVERLAY = 2    # A' = the receiver's overlay applied to the header's address (when enabled)


def VoqWrite(params):
    """What an ingress writes towards its virtual output queues: a beat, the egress set, and
    (first beats of multicast packets) how to address each copy."""
    return data.StructLayout({
        "beat": EgressBeat(params.data_width),
        "dests": params.n_ports,       # one bit per egress
        "engine": 1,                   # the packet is a contribution for the reduction engine
        "mcast": 1,                    # the packet is a multicast packet (counted per copy)
        "rewrite": Rewrite,
        "beats": range(params.max_beats + 1),   # (first beats) the packet's length in beats
    })


class IngressEvents(data.Struct):
    """What one ingress did in a cycle, registered (one cycle after the beat), for counters."""
    rx_beat: 1
    rx_packet: 1
    rx_stall: 1
    rx_bytes: 7          # popcount(keep), at most 64 lanes
    reason: 5            # DropReason of a packet decided this cycle, 0 = none
    ur: 1                # an Unsupported Request completion was queued
    hdr: 128             # header and prefix of the packet ``reason`` refers to
    pfx: 32
    mcast: 1             # a multicast packet was forwarded
    group_source: 2      # its group: 0 none (destination set), 1 group table, 2 MC window
    group: 16
    copies: 6            # |D|


def routing_config_members(params):
    """Signature members carrying the routing configuration (from the register block):
    ``port_enable``, ``completer_id``, ``root_port``, ``root_valid``, ``windows``,
    ``window_parity`` (bit k: window k fails its parity check), ``id_routes``, ``mc``
    (multicast window), ``mc_receive`` (per-port group masks) and ``receiver_windows`` (per
    port, derived from ``windows``)."""
    n = params.n_ports
    return {
        "port_enable": In(n),
        "completer_id": In(16),
        "root_port": In(5),
        "root_valid": In(1),
        "windows": In(data.ArrayLayout(WindowEntry, params.n_windows)),
        "window_parity": In(params.n_windows),
        "id_routes": In(data.ArrayLayout(IdRouteEntry, params.n_id_routes)),
        "mc": In(McWindow),
        "mc_receive": In(data.ArrayLayout(32, n)),
        "receiver_windows": In(data.ArrayLayout(ReceiverWindow, n)),
    }


def group_table_members(params):
    """One synchronous read port of the Hypercast group table (``lib.memory`` read port
    signals, seen from the reader): ``group_data`` is the entry's mask (N bits) and its
    parity bit above it (``hdl.regblock.parity_error``)."""
    return {
        "group_addr": Out(range(params.n_groups)),
        "group_en": Out(1),
        "group_data": In(params.n_ports + 1),
    }


def _address(m, hdr):
    address = Signal(64)
    m.d.comb += address.eq(hdr_address(hdr))
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
    o : Out(stream.Signature(VoqWrite))
        Beats to write into the virtual output queue of every egress in ``dests`` at once (one
        bit for a unicast packet, the set D for a multicast one; ``docs/protocol.md`` section
        8), or (``engine``, ``dests`` = 0) into this port's lane of the reduction engine: a
        memory write with an INC descriptor is a contribution, checked by the engine. On a multicast packet's first beat, ``rewrite`` says how the core addresses each
        copy; for ``REBASE`` the header's address is already the offset into the source window. Two register stages (address/ID/multicast-window comparisons and
        the group table read, then the verdict): a beat accepted on ``i`` at edge *t* is valid
        on ``o`` after edge *t+1* at the earliest. Beats of a packet are never reordered; a
        dropped packet produces no beat, a packet answered with an Unsupported Request produces
        the one-beat completion instead, addressed to this port.
    events : Out(IngressEvents)
        Counter and error events, one cycle after the beat they describe.
    port_enable, completer_id, root_port, root_valid, windows, window_parity, id_routes, mc,
    mc_receive, receiver_windows : In
        Configuration. The window and ID-route comparisons, ``window_parity``, the multicast
        window and the group table entry use the values of the cycle a packet's first beat is
        accepted; the rest the values of the next cycle. A packet whose routing depends on a
        group table entry or a window that fails its parity check is dropped as PARITY (a
        non-posted request answered with UR), never routed (``docs/protocol.md`` section 9).
    group_addr, group_en, group_data
        A read port of the group table, enabled with each accepted beat.

    Bad input is handled as ``docs/protocol.md`` sections 4 and 5 say: whole drops for
    first-beat failures, cut short with ``err`` for later-beat failures; never a hang.
    """

    def __init__(self, params: SwitchParams, port: int):
        self.params = params
        self.port = port
        n = params.n_ports
        super().__init__({
            "i": In(stream.Signature(IngressBeat(params.data_width))),
            "o": Out(stream.Signature(VoqWrite(params))),
            "events": Out(IngressEvents),
            **routing_config_members(params),
            **group_table_members(params),
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
        window_perr = Signal(p.n_windows)      # window_parity when the beat was accepted
        id_match = Signal(p.n_id_routes)
        advance = Signal()     # stage 2 takes the staged beat this cycle
        m.d.comb += [
            advance.eq(staged & (~self.o.valid | self.o.ready)),
            self.i.ready.eq(~staged | advance),
        ]
        incoming = self.i.payload.hdr
        in_address = _address(m, incoming)
        in_bus = hdr_dw(incoming, 2)[24:32]
        # The multicast window (docs/protocol.md section 8.2): hit, group and spill.
        mc = self.mc
        in_dw0 = hdr_dw(incoming, 0)
        in_len = hdr_field(in_dw0, F.DW0, "length")
        in_data_bytes = Mux(in_len == 0, 1024, in_len) << 2
        index_pos = Mux(mc.index_pos < 12, 12, mc.index_pos)
        mc_offset = (in_address - mc.base)[:64]
        mc_index = mc_offset >> index_pos
        mc_end_index = (mc_offset + in_data_bytes - 1) >> index_pos
        mc_hit = Signal()
        mc_group = Signal(5)
        mc_spill = Signal()
        # The group table entry named by the prefix, read as the beat is accepted.
        m.d.comb += [self.group_addr.eq(self.i.payload.pfx[:len(self.group_addr)]),
                     self.group_en.eq(self.i.valid & self.i.ready)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [beat.eq(self.i.payload), staged.eq(1),
                         window_perr.eq(self.window_parity)]
            m.d.sync += [mc_hit.eq(mc.enable & (in_address >= mc.base) &
                                   (mc_index <= mc.num_group)),
                         mc_group.eq(mc_index[:5]),
                         mc_spill.eq(mc_end_index != mc_index)]
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
        win_base = Signal(64)
        win_limit = Signal(64)
        for k in reversed(range(p.n_windows)):
            with m.If(window_match[k]):
                m.d.comb += [win_hit.eq(1), win_port.eq(self.windows[k].port),
                             win_base.eq(self.windows[k].base),
                             win_limit.eq(self.windows[k].limit)]
        # Parity (docs/protocol.md section 9): the window that decides is the lowest-numbered
        # one that matches or fails its parity check; when it is the latter, the match is not
        # known (a higher-priority window may have hidden the true one).
        win_parity = Signal()
        for k in reversed(range(p.n_windows)):
            with m.If(window_match[k] | window_perr[k]):
                m.d.comb += win_parity.eq(window_perr[k])
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

        # ---- multicast (docs/protocol.md section 8) ----
        pfx = beat.pfx
        sf_prefix = pfx[24:32] == F.SF_PREFIX_HEAD
        kind = hdr_field(pfx, F.SF_PREFIX, "kind")
        xs = hdr_field(pfx, F.SF_PREFIX, "xs")
        hc_set = sf_prefix & (kind == F.SfKind.HC_SET)
        hc_group = sf_prefix & (kind == F.SfKind.HC_GROUP)
        is_hc = hc_set | hc_group
        is_mwr = t_mem & has_data
        is_inc = sf_prefix & (kind == F.SfKind.INC)
        to_engine = is_inc & is_mwr        # a contribution (docs/reduction-engine.md)
        sf_unsupported = (is_hc | is_inc) & ~is_mwr
        mc_case = ~is_hc & is_mwr & mc_hit
        self_bit = Const(1 << self.port, n)

        group_id = hdr_field(pfx, F.SF_PREFIX, "group")
        set_mask = hdr_field(pfx, F.SF_PREFIX, "mask")
        bad_group = hc_group & (group_id >= p.n_groups)
        bad_set = hc_set & ((set_mask >> n) != 0) if n < F.HC_SET_PORTS else C(0)
        group_parity = hc_group & self.group_data.xor()    # hdl.regblock.parity_error
        hc_dest = Signal(n)
        m.d.comb += hc_dest.eq(Mux(hc_set, set_mask[:min(n, F.HC_SET_PORTS)],
                                   self.group_data[:n])
                               & ~Mux(xs, self_bit, 0))
        mc_dest = Signal(n)
        m.d.comb += mc_dest.eq(Cat(self.mc_receive[o].bit_select(mc_group, 1) for o in range(n))
                               & ~Mux(self.mc.exclude_source, self_bit, 0))

        # Rebasing: the offset into the source window, the last byte's offset, the spills.
        address = _address(m, hdr)
        rebase_offset = Signal(64)
        last_offset = Signal(66)
        m.d.comb += [rebase_offset.eq(address - win_base),
                     last_offset.eq(rebase_offset + (len_dw << 2) - 1)]
        receivers = self.receiver_windows
        no_receiver = (hc_dest & ~Cat(r.valid for r in receivers)) != 0
        receiver_parity = (hc_dest & Cat(r.parity_error for r in receivers)) != 0
        receiver_spill = Cat(hc_dest[o] & (Cat(last_offset, C(0, 1)).as_signed() >
                                           receivers[o].span) for o in range(n)).any()
        hc_spill = (last_offset > (win_limit - win_base)) | receiver_spill

        # ---- step 6 of the first-beat checks: routing, multicast or not ----
        class Action:
            FORWARD, DROP, UR, CONSUME = range(4)
        route_action = Signal(2)
        route_reason = Signal(5)

        def route_fail(act, why):
            return [route_action.eq(act), route_reason.eq(why)]
        np_action = Mux(non_posted, Action.UR, Action.DROP)
        multicast = Signal()
        m.d.comb += multicast.eq(is_hc | mc_case)
        dests = Signal(n)
        m.d.comb += dests.eq(Mux(is_hc, hc_dest, Mux(mc_case, mc_dest, (C(1, n) << dest)[:n])))
        # docs/protocol.md section 8.3; the prefix forms have three checks of their own.
        with m.If(to_engine):
            pass    # the engine checks a contribution against its group
        with m.Elif(is_hc & bad_group):
            m.d.comb += route_fail(Action.DROP, R.HC_BAD_GROUP)
        with m.Elif(is_hc & bad_set):
            m.d.comb += route_fail(Action.DROP, R.HC_BAD_SET)
        with m.Elif(group_parity | (is_hc & win_parity)):
            m.d.comb += route_fail(Action.DROP, R.PARITY)
        with m.Elif(is_hc & ~win_hit):
            m.d.comb += route_fail(Action.DROP, R.NO_ROUTE)
        with m.Elif(multicast & (dests == 0)):
            m.d.comb += route_fail(Action.DROP, R.HC_EMPTY)
        with m.Elif(is_hc & receiver_parity):
            m.d.comb += route_fail(Action.DROP, R.PARITY)
        with m.Elif(is_hc & no_receiver):
            m.d.comb += route_fail(Action.DROP, R.NO_ROUTE)
        with m.Elif(multicast & Mux(is_hc, hc_spill, mc_spill)):
            m.d.comb += route_fail(Action.DROP, R.MC_SPILL)
        with m.Elif(multicast & ((dests & ~self.port_enable) != 0)):
            m.d.comb += route_fail(Action.DROP, R.PORT_DISABLED)
        with m.Elif(~multicast & route_local):
            m.d.comb += route_fail(Action.CONSUME, R.MSG_LOCAL)
        with m.Elif(~multicast & route_addr & win_parity):
            m.d.comb += route_fail(np_action, R.PARITY)
        with m.Elif(~multicast & ~routed):
            m.d.comb += route_fail(np_action, R.NO_ROUTE)
        with m.Elif(~multicast & ~dest_enabled):
            m.d.comb += route_fail(np_action, R.PORT_DISABLED)

        # ---- first-beat verdict, in the documented order ----
        action = Signal(2)
        reason = Signal(5)
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
        with m.Elif(unsupported | sf_unsupported):
            m.d.comb += verdict(np_action, R.UNSUPPORTED)
        with m.Elif(too_long | (multicast & (n_beats > p.voq_depth))):
            m.d.comb += verdict(Action.DROP, R.LENGTH)
        with m.Elif(route_reason != R.NONE):
            m.d.comb += verdict(route_action, route_reason)
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
        pkt_dests = Signal(n)
        pkt_mcast = Signal()
        pkt_engine = Signal()
        pkt_hdr = Signal(128)
        pkt_pfx = Signal(32)

        later_reason = Signal(5)
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
                             pkt_dests.eq(Mux(to_engine, 0, dests)), pkt_mcast.eq(multicast),
                             pkt_engine.eq(to_engine),
                             beat_index.eq(1)]
                m.d.sync += [in_packet.eq(~beat.last),
                             discarding.eq(action != Action.FORWARD)]
                with m.Switch(action):
                    with m.Case(Action.FORWARD):
                        m.d.sync += [self.o.valid.eq(1),
                                     out.dests.eq(Mux(to_engine, 0, dests)),
                                     out.engine.eq(to_engine),
                                     out.beat.eq(Cat(beat.as_value(), C(0, 1))),
                                     out.mcast.eq(multicast),
                                     out.rewrite.eq(Mux(is_hc, Rewrite.REBASE,
                                                        Mux(mc_case, Rewrite.OVERLAY,
                                                            Rewrite.NONE))),
                                     out.beat.hdr.eq(Mux(is_hc,
                                                         with_address(hdr, rebase_offset), hdr)),
                                     out.beats.eq(n_beats)]
                        with m.If(multicast):
                            m.d.comb += [ev.mcast.eq(1), ev.copies.eq(_popcount(dests)),
                                         ev.group_source.eq(Mux(hc_group, 1,
                                                                Mux(mc_case, 2, 0))),
                                         ev.group.eq(Mux(hc_group, group_id, mc_group))]
                    with m.Case(Action.UR):
                        m.d.comb += ev.ur.eq(1)
                        m.d.sync += [self.o.valid.eq(1), out.dests.eq(self_bit),
                                     out.engine.eq(0),
                                     out.mcast.eq(0), out.rewrite.eq(Rewrite.NONE),
                                     out.beat.eq(0),
                                     out.beat.first.eq(1), out.beat.last.eq(1),
                                     out.beat.hdr.eq(ur_hdr)]
            with m.Elif(discarding):
                m.d.sync += in_packet.eq(~beat.last)
            with m.Else():
                m.d.comb += [ev.reason.eq(later_reason), ev.hdr.eq(pkt_hdr), ev.pfx.eq(pkt_pfx)]
                m.d.sync += [self.o.valid.eq(1), out.dests.eq(pkt_dests),
                             out.engine.eq(pkt_engine),
                             out.mcast.eq(pkt_mcast), out.rewrite.eq(Rewrite.NONE),
                             out.beat.eq(Cat(beat.as_value(), C(0, 1))),
                             out.beat.first.eq(0),
                             beat_index.eq(beat_index + 1)]
                with m.If(later_reason != R.NONE):
                    m.d.sync += [out.beat.last.eq(1), out.beat.err.eq(1),
                                 in_packet.eq(~beat.last), discarding.eq(1)]
                with m.Else():
                    m.d.sync += in_packet.eq(~beat.last)
        return m
