"""Directed and randomized tests of the golden switch model against docs/protocol.md.

Pure Python and fast. Each test names the rule of docs/protocol.md it checks.
Randomized tests print their seed; ``SMARTFABRIC_SEED=<n>`` reproduces a run.
"""

import os
import random

import pytest

from smartfabric.models.formats import (
    CPL_DW1, CPL_DW2, DW0, CplStatus, DropReason, Fmt, MsgRouting, Type, field_get,
)
from smartfabric.models.switch_model import (
    COUNTER_NAMES, Beat, ErrorRecord, Packet, SwitchConfig, SwitchModel, decode_header,
    tlp_name, ur_completion_hdr,
)
from smartfabric.models.tlp_build import (
    cpl_hdr, cpld_hdr, hdr_dw, hdr_dws, hdr_from_bytes, hdr_pack, hdr_to_bytes, mrd_hdr,
    msg_broadcast_hdr, msg_by_addr_hdr, msg_by_id_hdr, msg_gather_hdr, msg_local_hdr,
    msg_to_root_hdr, mwr_hdr, packet_beats, payload_bytes_of, prefix_dw, raw_hdr,
    split_beats_payload, tlp_from_bytes, tlp_to_bytes,
)

W = 64          # 8 lanes: small packets span several beats
N = 4
VPFX = prefix_dw(0b01110, 0x123456)   # a legal vendor-defined local prefix

# Address map of the default test config
A1 = 0x0000_1000          # window 0: [0x1000, 0x1FFF]          -> port 1
A2 = 0x0000_2000          # window 1: [0x2000, 0x2FFF]          -> port 2
A64 = 0x0000_0012_3400_0000  # window 2: 64-bit, [0x12_3400_0000, 0x12_34FF_FFFF] -> port 3
BUS0, BUS3 = 0x10, 0x30   # id_route 0: bus 0x10..0x1F -> 0 ; id_route 1: 0x30..0x3F -> 3
ROOT = 0


def make(n=N, w=W, **kw):
    cfg = SwitchConfig(n_ports=n, data_width=w, **kw)
    cfg.windows[0] = (0x1000, 0x1FFF, 1, True)
    cfg.windows[1] = (0x2000, 0x2FFF, 2, True)
    cfg.windows[2] = (0x12_3400_0000, 0x12_34FF_FFFF, 3, True)
    cfg.id_routes[0] = (0x10, 0x1F, 0, True)
    cfg.id_routes[1] = (0x30, 0x3F, 3, True)
    cfg.root_port = ROOT
    return SwitchModel(cfg)


def payload(n, seed=0):
    return bytes((seed * 31 + i * 7 + 1) & 0xFF for i in range(n))


def send(m, port, hdr, data=b"", pfx=0, **kw):
    beats = packet_beats(hdr, pfx, data, m.config.data_width, **kw)
    m.ingress_packet(port, beats)
    return beats


def flows(m):
    """Non-empty expected flows as {(src, dst): [Packet, ...]}."""
    return {k: list(q) for k, q in m.expected.items() if q}


def only_flow(m):
    f = flows(m)
    assert len(f) == 1, f
    (key, pkts), = f.items()
    assert len(pkts) == 1
    return key, pkts[0]


def nonzero(m, port):
    return {k: v for k, v in m.counters[port].items() if v}


def set_first(beats, k, value):
    b = beats[k]
    beats[k] = Beat(b.data, b.keep, value, b.last, b.hdr, b.pfx)


def set_last(beats, k, value):
    b = beats[k]
    beats[k] = Beat(b.data, b.keep, b.first, value, b.hdr, b.pfx)


def set_keep(beats, k, value):
    b = beats[k]
    beats[k] = Beat(b.data, value, b.first, b.last, b.hdr, b.pfx)


# ============================================================================================
# section 1: framing helpers and the sideband header
# ============================================================================================

class TestFramingHelpers:
    def test_beats_and_keep(self):
        for n in (0, 1, 7, 8, 9, 16, 17):
            data = payload(n)
            beats = packet_beats(mwr_hdr(A1, 1), 0, data, W, td=False)
            assert len(beats) == max(1, -(-n // 8))
            assert all(b.keep == 0xFF for b in beats[:-1])
            assert beats[-1].keep == (1 << (n - 8 * (len(beats) - 1))) - 1
            assert [b.first for b in beats] == [True] + [False] * (len(beats) - 1)
            assert [b.last for b in beats] == [False] * (len(beats) - 1) + [True]
            assert split_beats_payload(beats, W) == data

    def test_no_payload_is_one_beat_keep_zero(self):
        beats = packet_beats(mrd_hdr(A1, 4), 0, b"", W)
        assert len(beats) == 1 and beats[0].keep == 0 and beats[0].data == 0

    def test_byte0_in_lane0(self):
        beats = packet_beats(mwr_hdr(A1, 1), 0, b"\x11\x22\x33\x44", W)
        assert beats[0].data & 0xFF == 0x11 and beats[0].data >> 24 == 0x44

    def test_hdr_sideband_layout(self):
        h = hdr_pack([0x0100_0001, 0x2222_22FF, 0x3333_3330])
        assert hdr_dw(h, 0) == 0x0100_0001 and hdr_dw(h, 2) == 0x3333_3330 and h >> 96 == 0
        b = hdr_to_bytes(h)
        assert b == bytes.fromhex("01000001" "222222ff" "33333330")
        assert hdr_from_bytes(b) == h
        # Fmt decides 3 vs 4 DW; trailing payload bytes are ignored
        h4 = mwr_hdr(0x1_2345_6788, 1)
        assert hdr_from_bytes(hdr_to_bytes(h4) + b"\xAA" * 4) == h4
        assert len(hdr_to_bytes(h4)) == 16

    def test_tlp_bytes_roundtrip_with_prefix(self):
        h = mwr_hdr(A2, 2, tag=0x155)
        data = payload(8)
        raw = tlp_to_bytes(h, VPFX, data)
        assert raw[:4] == VPFX.to_bytes(4, "big")
        assert tlp_from_bytes(raw) == (h, VPFX, data)

    def test_address_encoding(self):
        h3 = mrd_hdr(0xFFFF_FFFC, 1)
        assert field_get(hdr_dw(h3, 0), DW0, "fmt") == Fmt.DW3 and hdr_dw(h3, 2) == 0xFFFF_FFFC
        h4 = mrd_hdr(0x1_0000_0000, 1)
        assert field_get(hdr_dw(h4, 0), DW0, "fmt") == Fmt.DW4
        assert hdr_dw(h4, 2) == 1 and hdr_dw(h4, 3) == 0
        hf = mrd_hdr(0x1000, 1, force_4dw=True)
        assert field_get(hdr_dw(hf, 0), DW0, "fmt") == Fmt.DW4 and hdr_dws(hf)[2:] == [0, 0x1000]
        assert decode_header(h4).address == 0x1_0000_0000
        assert decode_header(hf).address == 0x1000

    def test_payload_bytes_of(self):
        assert payload_bytes_of(mwr_hdr(A1, 3)) == 12
        assert payload_bytes_of(mwr_hdr(A1, 3, td=True)) == 16
        assert payload_bytes_of(mrd_hdr(A1, 3)) == 0
        assert payload_bytes_of(mrd_hdr(A1, 3, td=True)) == 4
        assert payload_bytes_of(mwr_hdr(A1, 0)) == 4096
        assert decode_header(mwr_hdr(A1, 1024)).payload_bytes == 4096


def test_builders_match_cocotbext_pcie():
    """Our header builders agree with an independent standard encoder (cocotbext-pcie)."""
    tlp_mod = pytest.importorskip("cocotbext.pcie.core.tlp")
    Tlp, TlpType = tlp_mod.Tlp, tlp_mod.TlpType
    PcieId = pytest.importorskip("cocotbext.pcie.core.utils").PcieId
    cases = [
        (TlpType.MEM_READ, 0x1234_5678, 4, mrd_hdr),
        (TlpType.MEM_READ_64, 0x12_3456_7890, 4, mrd_hdr),
        (TlpType.MEM_WRITE, 0x2000, 2, mwr_hdr),
        (TlpType.MEM_WRITE_64, 0xFFFF_0000_0000_0000, 2, mwr_hdr),
    ]
    for ftype, addr, length, fn in cases:
        t = Tlp()
        t.fmt_type = ftype
        t.address, t.length, t.tag, t.tc, t.attr = addr, length, 0x2A5, 5, 0b101
        t.requester_id = PcieId.from_int(0xBEEF)
        t.first_be, t.last_be = 0xF, 0xF
        if t.has_data():
            t.data = bytearray(payload(4 * length))
        ours = fn(addr, length, tag=0x2A5, tc=5, attr=0b101, requester_id=0xBEEF, last_be=0xF)
        assert hdr_from_bytes(bytes(t.pack())) == ours, ftype
        h, p, data = tlp_from_bytes(bytes(t.pack()))
        assert (h, p, data) == (ours, 0, bytes(t.data))
    t = Tlp()
    t.fmt_type = TlpType.CPL_DATA
    t.requester_id, t.completer_id = PcieId.from_int(0x3108), PcieId.from_int(0x0100)
    t.tag = 0x3FF
    t.length, t.byte_count, t.lower_address, t.status = 2, 8, 0x44, 0
    ours = cpld_hdr(0x3108, 0x3FF, 2, completer_id=0x0100, byte_count=8, lower_address=0x44)
    assert hdr_from_bytes(bytes(t.pack_header())) == ours


# ============================================================================================
# section 2: the type table, every row (and every illegal Fmt/Type)
# ============================================================================================

# The doc's table, restated independently: type -> (legal fmts, outcome)
#   outcome: "addr" / "id" / "root" (forwarded), "unsup" (+UR if non-posted), "local"
DOC_TABLE = {
    0b00000: ((0, 1, 2, 3), "addr"),
    0b00001: ((0, 1), "unsup_np"),
    0b00010: ((0, 2), "unsup_np"),
    0b00100: ((0, 2), "unsup_np"),
    0b00101: ((0, 2), "unsup_np"),
    0b01100: ((2, 3), "unsup_np"),
    0b01101: ((2, 3), "unsup_np"),
    0b01110: ((2, 3), "unsup_np"),
    0b01010: ((0, 2), "id"),
    0b01011: ((0, 2), "unsup_p"),
    0b10000: ((1, 3), "root"),
    0b10101: ((1, 3), "root"),
    0b10001: ((1, 3), "addr"),
    0b10010: ((1, 3), "id"),
    0b10011: ((1, 3), "unsup_p"),
    0b10100: ((1, 3), "local"),
}


@pytest.mark.parametrize("fmt", range(8))
@pytest.mark.parametrize("typ", range(32))
def test_type_table(fmt, typ):
    """Section 2 type decoding: every (Fmt, Type) pair gives the documented action."""
    m = make()
    # DW2/DW3 chosen so that every routing method has a match:
    #   3-DW address 0x1000 -> port 1 ; 4-DW address 0x12_3400_0000 -> port 3
    #   bus DW2[31:24] = 0x12 is not routed, so give bus-routed kinds their own DW2 below.
    legal, outcome = DOC_TABLE.get(typ, ((), "malformed"))
    if fmt not in legal:
        outcome = "malformed"
    if outcome == "id":
        dw2, dw3 = (BUS3 << 24) | 0x0500, 0
        want_dst = 3
    elif fmt & 1:
        dw2, dw3 = 0x12, 0x3400_0000
        want_dst = 3
    else:
        dw2, dw3 = 0x1000, 0
        want_dst = 1
    if outcome == "root":
        want_dst = ROOT
    data = payload(4) if fmt in (2, 3) else b""
    h = raw_hdr(fmt, typ, length=1, dw1=0xABCD_5A0F, dw2=dw2, dw3=dw3, tag=0x300, tc=2)
    beats = send(m, 2, h, data, td=False)
    c = m.counters[2]
    assert c["rx_packets"] == 1
    if outcome in ("addr", "id", "root"):
        assert flows(m) == {(2, want_dst): [Packet(beats)]}
        assert m.errors == []
    elif outcome == "local":
        assert flows(m) == {} and m.errors == [] and c["msg_local"] == 1
    elif outcome.startswith("unsup"):
        assert m.errors == [ErrorRecord(2, DropReason.UNSUPPORTED, h, 0)]
        assert c["drop_unsupported"] == 1
        if outcome == "unsup_np":
            assert c["ur_sent"] == 1 and list(flows(m)) == [(2, 2)]
            assert m.expected[(2, 2)][0].hdr == ur_completion_hdr(h, 0)
        else:
            assert c["ur_sent"] == 0 and flows(m) == {}
    else:
        assert m.errors == [ErrorRecord(2, DropReason.MALFORMED, h, 0)]
        assert c["drop_malformed"] == 1 and flows(m) == {} and c["ur_sent"] == 0


def test_tlp_names():
    assert tlp_name(0, 0) == "MRd" and tlp_name(3, 0) == "MWr64"
    assert tlp_name(2, 0b01010) == "CplD" and tlp_name(1, 0b10010) == "MsgById"
    assert tlp_name(0, 0b10010).startswith("MALFORMED")
    assert tlp_name(5, 0).startswith("MALFORMED")


class TestRequests:
    @pytest.mark.parametrize("addr,dst", [(A1, 1), (A2 + 0xFFC, 2), (A64, 3), (A64 + 0xFF_FFFC, 3)])
    def test_mrd(self, addr, dst):
        m = make()
        h = mrd_hdr(addr, 16, requester_id=0x1100, tag=7)
        beats = send(m, 0, h)
        assert flows(m) == {(0, dst): [Packet(beats)]}

    @pytest.mark.parametrize("addr,dst", [(A1, 1), (A2, 2), (A64 + 0x40, 3)])
    def test_mwr(self, addr, dst):
        m = make()
        h = mwr_hdr(addr, 5, tag=9)
        beats = send(m, 0, h, payload(20), pfx=VPFX)
        assert len(beats) == 3
        assert flows(m) == {(0, dst): [Packet(beats)]}
        assert m.expected[(0, dst)][0].pfx == VPFX

    def test_mwr_forced_4dw_below_4g_routes_on_full_address(self):
        m = make()
        beats = send(m, 0, mwr_hdr(A1, 1, force_4dw=True), payload(4))
        assert flows(m) == {(0, 1): [Packet(beats)]}

    def test_4dw_upper_bits_matter(self):
        """A 4-DW address whose low 32 bits hit a 32-bit window does not route there."""
        m = make()
        send(m, 0, mwr_hdr((5 << 32) | A1, 1), payload(4))
        assert flows(m) == {} and m.errors[0].reason == DropReason.NO_ROUTE

    def test_peer_to_self(self):
        m = make()
        beats = send(m, 1, mwr_hdr(A1, 1), payload(4))
        assert flows(m) == {(1, 1): [Packet(beats)]}

    def test_unchecked_fields_forwarded_unchanged(self):
        """EP, TH, AT, BE, unused hdr[127:96] of a 3-DW header: forwarded as they are."""
        m = make()
        h = mwr_hdr(A1, 1, ep=True, th=True, at=2, first_be=0x3, last_be=0x0)
        h |= 0xDEAD_BEEF << 96
        beats = send(m, 0, h, payload(4))
        assert only_flow(m) == ((0, 1), Packet(beats))
        assert m.expected[(0, 1)][0].hdr >> 96 == 0xDEAD_BEEF


class TestCompletions:
    def test_cpl_by_requester_bus(self):
        m = make()
        b1 = send(m, 1, cpl_hdr((BUS3 << 8) | 0x08, 0x12, completer_id=0x0100))
        b2 = send(m, 1, cpld_hdr((BUS0 + 0xF) << 8, 0x13, 3), payload(12))
        assert flows(m) == {(1, 3): [Packet(b1)], (1, 0): [Packet(b2)]}

    def test_cpl_completer_id_not_used(self):
        """Only DW2[31:24] routes; the completer ID (DW1) does not."""
        m = make()
        send(m, 1, cpl_hdr(0x2000, 1, completer_id=BUS3 << 8))
        assert flows(m) == {} and m.errors[0].reason == DropReason.NO_ROUTE
        assert m.counters[1]["ur_sent"] == 0


class TestMessages:
    def test_to_root_and_gather(self):
        m = make()
        b1 = send(m, 2, msg_to_root_hdr(code=0x20))
        b2 = send(m, 2, msg_gather_hdr(code=0x19, length=1), payload(4))
        assert flows(m) == {(2, ROOT): [Packet(b1), Packet(b2)]}

    def test_by_address_64(self):
        m = make()
        b1 = send(m, 0, msg_by_addr_hdr(A64 + 0x100))
        b2 = send(m, 0, msg_by_addr_hdr(A2))
        assert flows(m) == {(0, 3): [Packet(b1)], (0, 2): [Packet(b2)]}

    def test_by_id_target_bus(self):
        m = make()
        b = send(m, 1, msg_by_id_hdr((BUS3 + 1) << 8 | 0x10, requester_id=BUS0 << 8))
        assert flows(m) == {(1, 3): [Packet(b)]}

    def test_broadcast_unsupported_no_ur(self):
        m = make()
        h = msg_broadcast_hdr(code=0x19)
        send(m, 1, h)
        assert flows(m) == {} and m.errors == [(1, DropReason.UNSUPPORTED, h, 0)]
        assert nonzero(m, 1) == {"rx_packets": 1, "rx_beats": 1, "drop_unsupported": 1}

    def test_local_consumed(self):
        m = make()
        send(m, 1, msg_local_hdr(code=0x50, length=2), payload(8))
        assert flows(m) == {} and m.errors == [] and m.err_count == 0
        assert nonzero(m, 1) == {"rx_packets": 1, "rx_beats": 1, "rx_bytes": 8, "msg_local": 1}

    def test_local_with_bad_framing_still_consumed(self):
        """Check 6 (consume) comes before check 7 (framing)."""
        m = make()
        beats = packet_beats(msg_local_hdr(length=4), 0, payload(16), W)
        set_keep(beats, 0, 0x0F)
        m.ingress_packet(1, beats + packet_beats(mwr_hdr(A1, 1), 0, payload(4), W))
        assert m.counters[1]["msg_local"] == 1 and m.errors == []
        assert len(m.expected[(1, 1)]) == 1

    def test_message_3dw_malformed(self):
        m = make()
        h = raw_hdr(Fmt.DW3, Type.MSG | MsgRouting.BY_ID, dw2=BUS3 << 24)
        send(m, 1, h)
        assert m.errors == [(1, DropReason.MALFORMED, h, 0)]


# ============================================================================================
# section 3: routing tables
# ============================================================================================

class TestWindows:
    def cfg(self, *windows, n=4):
        cfg = SwitchConfig(n, W)
        for i, w in enumerate(windows):
            if w is not None:
                cfg.windows[i] = w
        return SwitchModel(cfg)

    def route(self, m, addr):
        m.reset()
        send(m, 0, mrd_hdr(addr, 1, tag=1))
        if m.errors:
            return None
        (_, dst), = flows(m)
        return dst

    def test_lowest_index_wins(self):
        m = self.cfg((0x1000, 0x1FFF, 1, True), (0x0000, 0xFFFF, 2, True))
        assert self.route(m, 0x1800) == 1
        assert self.route(m, 0x2000) == 2

    def test_higher_index_overlap_does_not_win(self):
        m = self.cfg((0x0000, 0xFFFF, 2, True), (0x1000, 0x1FFF, 1, True))
        assert self.route(m, 0x1800) == 2

    def test_disabled_window_skipped(self):
        m = self.cfg((0x1000, 0x1FFF, 1, False), (0x0000, 0xFFFF, 2, True))
        assert self.route(m, 0x1800) == 2

    def test_disabled_window_alone_no_route(self):
        m = self.cfg((0x1000, 0x1FFF, 1, False))
        assert self.route(m, 0x1800) is None
        assert m.errors[0].reason == DropReason.NO_ROUTE

    def test_inclusive_bounds(self):
        m = self.cfg((0x1000, 0x1FFC, 3, True))
        assert self.route(m, 0x1000) == 3
        assert self.route(m, 0x1FFC) == 3
        assert self.route(m, 0x0FFC) is None
        assert self.route(m, 0x2000) is None

    def test_low_two_bits_ignored(self):
        """Address low bits (PH field) are not part of A."""
        m = self.cfg((0x1000, 0x1000, 3, True))
        assert self.route(m, 0x1000) == 3
        m.reset()
        send(m, 0, mrd_hdr(0x1000, 1, ph=3))
        assert list(flows(m)) == [(0, 3)]
        m.reset()
        send(m, 0, mrd_hdr(0x1000, 1, ph=3, force_4dw=True))
        assert list(flows(m)) == [(0, 3)]

    def test_64bit_windows_above_4g(self):
        m = self.cfg((0x1_0000_0000, 0x1_0000_FFFF, 1, True),
                     (0xFFFF_FFFF_0000_0000, 0xFFFF_FFFF_FFFF_FFFF, 2, True),
                     (0x0, 0xFFFF_FFFF, 3, True))
        assert self.route(m, 0x1_0000_0000) == 1
        assert self.route(m, 0x1_0000_FFFC) == 1
        assert self.route(m, 0x1_0001_0000) is None
        assert self.route(m, 0x0000_0000) == 3          # same low 32 bits, 3-DW: upper zero
        assert self.route(m, 0xFFFF_FFFF_FFFF_FFFC) == 2
        assert self.route(m, 0xFFFF_FFFC) == 3

    def test_window_straddling_4g(self):
        m = self.cfg((0xFFFF_F000, 0x1_0000_0FFF, 2, True))
        assert self.route(m, 0xFFFF_FFFC) == 2
        assert self.route(m, 0x1_0000_0000) == 2

    def test_port_beyond_n_matches_nothing(self):
        """Interpretation: an entry with port >= n_ports is skipped like a disabled one."""
        m = self.cfg((0x1000, 0x1FFF, 4, True), (0x0000, 0xFFFF, 2, True), n=4)
        assert self.route(m, 0x1800) == 2
        m = self.cfg((0x1000, 0x1FFF, 7, True), n=4)
        assert self.route(m, 0x1800) is None
        assert m.errors[0].reason == DropReason.NO_ROUTE
        assert m.counters[0]["ur_sent"] == 1

    def test_only_start_address_decides(self):
        m = self.cfg((0x1000, 0x1FFF, 1, True), (0x2000, 0x2FFF, 2, True))
        m.reset()
        send(m, 0, mwr_hdr(0x1FFC, 4), payload(16))      # runs past the limit
        assert list(flows(m)) == [(0, 1)]

    def test_window_more_than_16_entries(self):
        cfg = SwitchConfig(4, W, windows=[(0, 0, 0, False)] * 31 + [(0x1000, 0x1FFF, 2, True)])
        m = SwitchModel(cfg)
        send(m, 0, mwr_hdr(0x1000, 1), payload(4))
        assert list(flows(m)) == [(0, 2)]


class TestIdRoutes:
    def model(self, *routes, n=4):
        cfg = SwitchConfig(n, W)
        for i, r in enumerate(routes):
            cfg.id_routes[i] = r
        return SwitchModel(cfg)

    def route(self, m, bus):
        m.reset()
        send(m, 0, cpl_hdr(bus << 8 | 0x01, 5))
        if m.errors:
            return None
        (_, dst), = flows(m)
        return dst

    def test_priority_inclusive_disabled(self):
        m = self.model((0x10, 0x1F, 1, True), (0x00, 0xFF, 2, True), (0x20, 0x20, 3, False))
        assert self.route(m, 0x10) == 1
        assert self.route(m, 0x1F) == 1
        assert self.route(m, 0x0F) == 2
        assert self.route(m, 0x20) == 2
        assert self.route(m, 0xFF) == 2

    def test_no_route_no_ur_for_completion(self):
        m = self.model((0x10, 0x1F, 1, True))
        assert self.route(m, 0x20) is None
        assert m.counters[0]["drop_no_route"] == 1 and m.counters[0]["ur_sent"] == 0
        assert flows(m) == {}

    def test_port_beyond_n(self):
        m = self.model((0x10, 0x1F, 9, True), (0x10, 0x10, 3, True), n=4)
        assert self.route(m, 0x10) == 3
        assert self.route(m, 0x11) is None

    def test_msg_by_id_uses_target_bus(self):
        m = self.model((0x40, 0x40, 2, True))
        send(m, 1, msg_by_id_hdr(0x4000, requester_id=0x9900))
        assert list(flows(m)) == [(1, 2)]


class TestRootPort:
    @pytest.mark.parametrize("root,dst", [(0, 0), (3, 3), (None, None), (4, None), (31, None)])
    def test_root(self, root, dst):
        cfg = SwitchConfig(4, W, root_port=root)
        m = SwitchModel(cfg)
        h = msg_to_root_hdr(code=0x30)
        beats = send(m, 1, h)
        if dst is None:
            assert flows(m) == {} and m.errors == [(1, DropReason.NO_ROUTE, h, 0)]
            assert m.counters[1]["ur_sent"] == 0
        else:
            assert flows(m) == {(1, dst): [Packet(beats)]}


# ============================================================================================
# section 4: first-beat checks, whole drops, UR completions
# ============================================================================================

class TestFirstBeatChecks:
    def test_ingress_disabled(self):
        m = make()
        m.config.port_enable = 0b1101
        h = mrd_hdr(A2, 1)
        send(m, 1, h)
        h2 = mwr_hdr(A2, 4)
        send(m, 1, h2, payload(16))
        assert flows(m) == {}, "no UR for an ingress-disabled request"
        assert m.counters[1]["drop_port_disabled"] == 2 and m.counters[1]["ur_sent"] == 0
        assert [e.reason for e in m.errors] == [DropReason.PORT_DISABLED] * 2
        assert m.counters[1]["rx_packets"] == 2 and m.counters[1]["rx_beats"] == 3

    def test_ingress_disabled_precedes_first_flag(self):
        m = make(port_enable=0b1110)
        beats = packet_beats(raw_hdr(0b111, 0b11111), 0, b"", W)
        set_first(beats, 0, False)
        m.ingress_packet(0, beats)
        assert m.errors[0].reason == DropReason.PORT_DISABLED

    def test_first_flag_missing(self):
        m = make()
        beats = packet_beats(mwr_hdr(A1, 4), 0, payload(16), W)
        set_first(beats, 0, False)
        m.ingress_packet(0, beats)
        nxt = send(m, 0, mwr_hdr(A1, 1), payload(4))
        assert flows(m) == {(0, 1): [Packet(nxt)]}
        assert m.errors == [(0, DropReason.MALFORMED, beats[0].hdr, 0)]
        assert m.counters[0]["drop_malformed"] == 1 and m.counters[0]["rx_packets"] == 2

    def test_first_flag_missing_on_mrd_gives_no_ur(self):
        m = make()
        beats = packet_beats(mrd_hdr(0x9000, 1), 0, b"", W)
        set_first(beats, 0, False)
        m.ingress_packet(0, beats)
        assert flows(m) == {} and m.errors[0].reason == DropReason.MALFORMED

    @pytest.mark.parametrize("pfx_fmt", [0b000, 0b001, 0b011, 0b101, 0b111])
    def test_prefix_fmt(self, pfx_fmt):
        m = make()
        pfx = prefix_dw(0b01110, 1, fmt=pfx_fmt)
        h = mrd_hdr(0x9000, 1)       # would be NO_ROUTE + UR: MALFORMED comes first, no UR
        send(m, 0, h, pfx=pfx)
        assert m.errors == [(0, DropReason.MALFORMED, h, pfx)] and flows(m) == {}

    def test_any_prefix_with_fmt_100_forwarded(self):
        m = make()
        pfxs = [prefix_dw(0, 0), prefix_dw(0b10000, 0xFFFFFF), prefix_dw(0b01111, 0xABCDEF)]
        for pfx in pfxs:
            send(m, 0, mwr_hdr(A1, 1), payload(4), pfx=pfx)
        assert [p.pfx for p in m.expected[(0, 1)]] == pfxs

    def test_prefix_in_header_slot(self):
        m = make()
        h = raw_hdr(Fmt.PREFIX, 0b01110)
        send(m, 0, h)
        assert m.errors[0].reason == DropReason.MALFORMED

    def test_malformed_precedes_length(self):
        m = make()
        h = raw_hdr(0b110, 0, length=0)
        send(m, 0, h, payload(4096))
        assert [e.reason for e in m.errors] == [DropReason.MALFORMED]

    def test_unsupported_precedes_length(self):
        m = make()
        h = raw_hdr(Fmt.DW3_DATA, Type.IO, length=200, dw2=0x1000)
        send(m, 0, h, payload(800))
        assert [e.reason for e in m.errors] == [DropReason.UNSUPPORTED]
        assert m.counters[0]["ur_sent"] == 1, "IOWr is non-posted"

    def test_length_precedes_routing(self):
        m = make()
        h = mwr_hdr(0x9000, 128)     # unroutable and too long
        send(m, 0, h, payload(512))
        assert [e.reason for e in m.errors] == [DropReason.LENGTH]
        assert m.counters[0]["drop_length"] == 1 and m.counters[0]["drop_no_route"] == 0

    def test_no_route_precedes_egress_disabled_and_framing(self):
        m = make(port_enable=0b1011)
        beats = packet_beats(mrd_hdr(0x9000, 1), 0, b"", W)
        set_keep(beats, 0, 0xFF)
        m.ingress_packet(0, beats)
        assert [e.reason for e in m.errors] == [DropReason.NO_ROUTE]
        assert m.counters[0]["ur_sent"] == 1

    def test_egress_disabled_precedes_framing(self):
        m = make(port_enable=0b1011)
        beats = packet_beats(mrd_hdr(A2, 1), 0, b"", W)
        set_last(beats, 0, False)
        m.ingress_packet(0, beats + [Beat(0, 0, False, True)])
        assert [e.reason for e in m.errors] == [DropReason.PORT_DISABLED]
        assert m.counters[0]["drop_port_disabled"] == 1 and m.counters[0]["ur_sent"] == 1


class TestLength:
    def test_at_limit_ok_above_drops(self):
        m = make(max_payload=256)
        b = send(m, 0, mwr_hdr(A1, 64), payload(256))
        h = mwr_hdr(A1, 65)
        send(m, 0, h, payload(260))
        assert flows(m) == {(0, 1): [Packet(b)]}
        assert m.errors == [(0, DropReason.LENGTH, h, 0)]
        assert m.counters[0]["drop_length"] == 1 and m.counters[0]["ur_sent"] == 0
        assert m.counters[0]["rx_beats"] == 32 + 33

    def test_td_adds_4_bytes_to_b(self):
        """B includes the ECRC DW (section 1), so 64 DW + TD = 260 B > 256."""
        m = make(max_payload=256)
        h = mwr_hdr(A1, 64, td=True)
        send(m, 0, h, payload(256))
        assert [e.reason for e in m.errors] == [DropReason.LENGTH]
        b = send(m, 0, mwr_hdr(A1, 63, td=True), payload(252))
        assert flows(m) == {(0, 1): [Packet(b)]}

    def test_length_zero_is_1024_dw(self):
        m = make(max_payload=4096)
        h = mwr_hdr(A1, 0)
        assert field_get(hdr_dw(h, 0), DW0, "length") == 0
        b = send(m, 0, h, payload(4096))
        assert len(b) == 4096 // 8
        assert flows(m) == {(0, 1): [Packet(b)]}
        m2 = make(max_payload=4092)
        send(m2, 0, h, payload(4096))
        assert [e.reason for e in m2.errors] == [DropReason.LENGTH]

    def test_length_zero_1024_dw_w512(self):
        m = make(w=512, max_payload=4096)
        b = send(m, 0, mwr_hdr(A1, 0, td=True), payload(4096))
        assert len(b) == 65 and b[-1].keep == 0xF
        assert m.errors == [(0, DropReason.LENGTH, b[0].hdr, 0)]     # 4100 > 4096

    def test_no_length_check_without_data(self):
        m = make(max_payload=128)
        b = send(m, 0, mrd_hdr(A1, 0))           # 1024 DW read, no payload
        assert flows(m) == {(0, 1): [Packet(b)]}

    def test_cpld_and_msgd_checked(self):
        m = make(max_payload=128)
        send(m, 0, cpld_hdr(BUS3 << 8, 1, 33), payload(132))
        send(m, 0, msg_to_root_hdr(length=33), payload(132))
        send(m, 0, msg_local_hdr(length=33), payload(132))
        assert [e.reason for e in m.errors] == [DropReason.LENGTH] * 3
        assert m.counters[0]["msg_local"] == 0


class TestNoRouteAndEgressDisabled:
    def test_no_route_mrd_gets_ur_mwr_does_not(self):
        m = make()
        send(m, 2, mwr_hdr(0x9000, 1), payload(4))
        send(m, 2, mrd_hdr(0x9000, 1, tag=3))
        assert [e.reason for e in m.errors] == [DropReason.NO_ROUTE] * 2
        assert m.counters[2]["drop_no_route"] == 2 and m.counters[2]["ur_sent"] == 1
        assert list(flows(m)) == [(2, 2)]

    def test_egress_disabled(self):
        m = make(port_enable=0b1011)    # port 2 disabled
        send(m, 0, mwr_hdr(A2, 1), payload(4))
        send(m, 0, mrd_hdr(A2 + 8, 1))
        send(m, 0, cpl_hdr(BUS3 << 8, 1))            # to 3: enabled
        assert [e.reason for e in m.errors] == [DropReason.PORT_DISABLED] * 2
        assert m.counters[0]["drop_port_disabled"] == 2 and m.counters[0]["ur_sent"] == 1
        assert sorted(flows(m)) == [(0, 0), (0, 3)]

    def test_config_is_read_live(self):
        m = make()
        send(m, 0, mwr_hdr(A2, 1), payload(4))
        m.config.port_enable &= ~(1 << 2)
        send(m, 0, mwr_hdr(A2, 1), payload(4))
        m.config.windows[1] = (0x2000, 0x2FFF, 3, True)
        m.config.port_enable |= 1 << 2
        send(m, 0, mwr_hdr(A2, 1), payload(4))
        assert sorted(flows(m)) == [(0, 2), (0, 3)]
        assert m.counters[0]["drop_port_disabled"] == 1


class TestUrCompletion:
    def test_bit_for_bit(self):
        m = make(completer_id=0xC0DE)
        req = mrd_hdr(0x9000, 7, requester_id=0xBEEF, tag=0x2A5, tc=5, attr=0b111, td=True,
                      ep=True, th=True, at=2, first_be=0xA, last_be=0x5, ph=1)
        req |= 0x7777_7777 << 96        # junk in the unused DW3
        send(m, 3, req, pfx=VPFX)
        (key, cpl), = [(k, v[0]) for k, v in flows(m).items()]
        assert key == (3, 3)
        assert len(cpl.beats) == 1
        b = cpl.beats[0]
        assert (b.data, b.keep, b.first, b.last, b.err, b.pfx) == (0, 0, True, True, False, 0)
        d0, d1, d2, d3 = hdr_dws(cpl.hdr)
        want0 = {"fmt": 0, "type": 0b01010, "tc": 5, "tag9": 1, "tag8": 0, "attr2": 1,
                 "attr": 0b11, "ln": 0, "th": 0, "td": 0, "ep": 0, "at": 0, "length": 0}
        assert {k: field_get(d0, DW0, k) for k in DW0} == want0
        assert {k: field_get(d1, CPL_DW1, k) for k in CPL_DW1} == {
            "byte_count": 4, "bcm": 0, "status": CplStatus.UR, "completer_id": 0xC0DE}
        assert {k: field_get(d2, CPL_DW2, k) for k in CPL_DW2} == {
            "lower_address": 0, "tag": 0xA5, "requester_id": 0xBEEF}
        assert d3 == 0
        assert d0 == 0x0AD4_3000 and d1 == 0xC0DE_2004 and d2 == 0xBEEF_A500
        assert m.counters[3]["ur_sent"] == 1
        assert m.counters[3]["tx_packets"] == 1 and m.counters[3]["tx_beats"] == 1
        assert m.counters[3]["tx_bytes"] == 0
        assert cpl == Packet([Beat(0, 0, True, True, ur_completion_hdr(req, 0xC0DE), 0)])

    def test_other_tag_attr_bits(self):
        req = mrd_hdr(0x9000, 1, requester_id=0x0102, tag=0x1FF, tc=7, attr=0b011)
        d0, d1, d2, d3 = hdr_dws(ur_completion_hdr(req, 0))
        assert (field_get(d0, DW0, "tag9"), field_get(d0, DW0, "tag8")) == (0, 1)
        assert field_get(d0, DW0, "attr") == 3 and field_get(d0, DW0, "attr2") == 0
        assert field_get(d0, DW0, "tc") == 7
        assert field_get(d2, CPL_DW2, "tag") == 0xFF
        assert field_get(d2, CPL_DW2, "requester_id") == 0x0102

    @pytest.mark.parametrize("hdr", [
        raw_hdr(Fmt.DW3, Type.MEM_LOCKED, length=1, dw1=0x1234_5600),
        raw_hdr(Fmt.DW4, Type.MEM_LOCKED, length=1, dw1=0x1234_5600),
        raw_hdr(Fmt.DW3, Type.IO, length=1, dw1=0x1234_5600),
        raw_hdr(Fmt.DW3_DATA, Type.IO, length=1, dw1=0x1234_5600),
        raw_hdr(Fmt.DW3, Type.CFG0, length=1, dw1=0x1234_5600),
        raw_hdr(Fmt.DW3_DATA, Type.CFG1, length=1, dw1=0x1234_5600),
        raw_hdr(Fmt.DW3_DATA, Type.FETCH_ADD, length=1, dw1=0x1234_5600),
        raw_hdr(Fmt.DW4_DATA, Type.SWAP, length=2, dw1=0x1234_5600),
        raw_hdr(Fmt.DW3_DATA, Type.CAS, length=2, dw1=0x1234_5600),
    ])
    def test_unsupported_non_posted_get_ur(self, hdr):
        m = make()
        n = payload_bytes_of(hdr)
        send(m, 1, hdr, payload(n))
        assert m.errors == [(1, DropReason.UNSUPPORTED, hdr, 0)]
        assert list(flows(m)) == [(1, 1)]
        assert m.expected[(1, 1)][0].hdr == ur_completion_hdr(hdr, 0)
        d2 = hdr_dw(m.expected[(1, 1)][0].hdr, 2)
        assert field_get(d2, CPL_DW2, "requester_id") == 0x1234
        assert field_get(d2, CPL_DW2, "tag") == 0x56

    def test_no_ur_cases(self):
        """Posted, completions, MALFORMED, LENGTH, ingress-disabled, framing-failed: no UR."""
        m = make(port_enable=0b0111)         # port 3 disabled
        send(m, 0, mwr_hdr(0x9000, 1), payload(4))                 # posted NO_ROUTE
        send(m, 0, msg_by_addr_hdr(0x9000))                        # posted msg NO_ROUTE
        send(m, 0, cpl_hdr(0x5000, 1))                             # completion NO_ROUTE
        send(m, 0, cpl_hdr(0x0000, 1, locked=True))                # CplLk UNSUPPORTED
        send(m, 0, raw_hdr(Fmt.DW3, 0b00011, length=1))            # unknown type: MALFORMED
        send(m, 0, mrd_hdr(A1, 1), pfx=0x1)                        # bad prefix: MALFORMED
        send(m, 0, mwr_hdr(A1, 100), payload(400))                 # LENGTH
        send(m, 3, mrd_hdr(0x9000, 1))                             # ingress disabled
        bad = packet_beats(mrd_hdr(A1, 1), 0, b"", W)
        set_keep(bad, 0, 1)
        m.ingress_packet(0, bad)                                   # framing: KEEP
        bad = packet_beats(mrd_hdr(A1, 1), 0, b"", W)
        set_last(bad, 0, False)
        m.ingress_packet(0, bad + [Beat(0, 0, False, True)])       # framing: OVERLONG
        assert flows(m) == {}
        assert sum(m.counters[p]["ur_sent"] for p in range(N)) == 0
        assert len(m.errors) == 10

    def test_ur_ordered_with_port_traffic_to_itself(self):
        m = make()
        a = send(m, 1, mwr_hdr(A1, 1, tag=1), payload(4))
        send(m, 1, mrd_hdr(0x9000, 1, tag=2))
        c = send(m, 1, mwr_hdr(A1, 2, tag=3), payload(8))
        q = list(m.expected[(1, 1)])
        assert q[0] == Packet(a) and q[2] == Packet(c)
        assert field_get(hdr_dw(q[1].hdr, 1), CPL_DW1, "status") == CplStatus.UR
        with pytest.raises(AssertionError):
            m.match_egress(1, Packet(c))
        assert m.match_egress(1, Packet(a)) == 1
        assert m.match_egress(1, q[1]) == 1
        assert m.match_egress(1, Packet(c)) == 1
        assert m.pending() == 0


# ============================================================================================
# framing: TD, beat-0 framing (whole drop), later beats (cut short)
# ============================================================================================

class TestTd:
    def test_ecrc_dw_in_framing(self):
        m = make()
        h = mwr_hdr(A1, 2, td=True)
        b = send(m, 0, h, payload(8))
        assert [x.keep for x in b] == [0xFF, 0x0F]
        assert flows(m) == {(0, 1): [Packet(b)]}

    def test_read_with_td_has_one_ecrc_dw(self):
        m = make()
        b = send(m, 0, mrd_hdr(A1, 8, td=True))
        assert [x.keep for x in b] == [0x0F]
        assert flows(m) == {(0, 1): [Packet(b)]}

    def test_missing_ecrc(self):
        m = make()
        h = mwr_hdr(A1, 2, td=True)
        send(m, 0, h, payload(8), td=False)    # one full beat, last: keep pattern is right
        # beat 0: keep 0xFF expected, last set while E == 2 -> TRUNCATED (whole drop)
        assert m.errors == [(0, DropReason.TRUNCATED, h, 0)]
        m.reset()
        send(m, 0, mrd_hdr(A1, 1, td=True), b"", td=False)     # keep 0, expected 0xF
        assert [e.reason for e in m.errors] == [DropReason.KEEP]


class TestBeat0Framing:
    def test_keep(self):
        m = make()
        beats = packet_beats(mwr_hdr(A1, 1), 0, payload(4), W)
        set_keep(beats, 0, 0xFF)
        m.ingress_packet(0, beats)
        assert flows(m) == {} and m.counters[0]["err_keep"] == 1
        assert m.errors == [(0, DropReason.KEEP, beats[0].hdr, 0)]

    def test_keep_noncontiguous_on_full_beat(self):
        m = make()
        beats = packet_beats(mwr_hdr(A1, 4), 0, payload(16), W)
        set_keep(beats, 0, 0xFE)
        m.ingress_packet(0, beats)
        nxt = send(m, 0, mwr_hdr(A2, 1), payload(4))
        assert flows(m) == {(0, 2): [Packet(nxt)]}
        assert m.counters[0]["err_keep"] == 1 and m.counters[0]["rx_packets"] == 2

    def test_truncated(self):
        m = make()
        beats = packet_beats(mwr_hdr(A1, 4), 0, payload(16), W)[:1]
        set_last(beats, 0, True)
        m.ingress_packet(0, beats)
        nxt = send(m, 0, mwr_hdr(A1, 1), payload(4))
        assert flows(m) == {(0, 1): [Packet(nxt)]}
        assert m.counters[0]["err_truncated"] == 1

    def test_overlong_discards_through_last(self):
        m = make()
        beats = packet_beats(mwr_hdr(A1, 2), 0, payload(8), W)
        set_last(beats, 0, False)
        junk = [Beat(1, 0xFF, True, False, 0xFFFF, 0), Beat(2, 0xFF, False, False),
                Beat(3, 0x1, True, True)]
        m.ingress_packet(0, beats + junk)
        assert not m.in_packet(0)
        nxt = send(m, 0, mwr_hdr(A1, 1), payload(4))
        assert flows(m) == {(0, 1): [Packet(nxt)]}
        c = m.counters[0]
        assert c["err_overlong"] == 1 and c["rx_packets"] == 2 and c["rx_beats"] == 5
        assert c["rx_bytes"] == 8 + 8 + 8 + 1 + 4
        assert m.errors == [(0, DropReason.OVERLONG, beats[0].hdr, 0)]

    def test_keep_checked_before_truncated(self):
        m = make()
        beats = packet_beats(mwr_hdr(A1, 4), 0, payload(16), W)[:1]
        set_last(beats, 0, True)
        set_keep(beats, 0, 0x0F)
        m.ingress_packet(0, beats)
        assert [e.reason for e in m.errors] == [DropReason.KEEP]


class TestCutShort:
    """Section 5: error on beat k >= 1."""

    def run(self, mutate, n_dw=6, tail=(), w=W):
        m = make(w=w)
        h = mwr_hdr(A1, n_dw, tag=0x42)
        beats = packet_beats(h, VPFX, payload(4 * n_dw), w)
        mutate(beats)
        m.ingress_packet(0, list(beats) + list(tail))
        nxt = send(m, 0, mwr_hdr(A1, 1, tag=0x43), payload(4, 9))
        return m, h, beats, nxt

    def check_cut(self, m, h, beats, k, reason, nxt, counter):
        got = list(m.expected[(0, 1)])
        assert len(got) == 2 and got[1] == Packet(nxt)
        cut = got[0]
        assert len(cut.beats) == k + 1
        for i in range(k):
            g, r = cut.beats[i], beats[i]
            assert (g.data, g.keep, g.first, g.last, g.err) == (r.data, r.keep, i == 0, False,
                                                                False)
        fb = cut.beats[k]
        assert (fb.data, fb.keep) == (beats[k].data, beats[k].keep), "data/keep as received"
        assert fb.last and fb.err and not fb.first
        assert not any(b.err for b in cut.beats[:k])
        assert cut.hdr == h and cut.pfx == VPFX
        assert m.errors == [(0, reason, h, VPFX)]
        c0, c1 = m.counters[0], m.counters[1]
        assert c0[counter] == 1
        assert c1["tx_err"] == 1 and c1["tx_packets"] == 2
        assert c1["tx_beats"] == k + 2
        assert not m.in_packet(0)

    @pytest.mark.parametrize("k", [1, 2])
    def test_malformed_first_flag(self, k):
        def mut(b):
            set_first(b, k, True)
            set_last(b, 2, False)           # the source's last comes in the tail
        tail = [Beat(0xAA, 0xFF, False, False), Beat(0xBB, 0x0F, True, True)]
        m, h, beats, nxt = self.run(mut, tail=tail)
        self.check_cut(m, h, beats, k, DropReason.MALFORMED, nxt, "drop_malformed")
        assert m.counters[0]["rx_packets"] == 2     # the tail belongs to the cut packet

    def test_malformed_first_flag_on_last_beat(self):
        m, h, beats, nxt = self.run(lambda b: set_first(b, 2, True))
        self.check_cut(m, h, beats, 2, DropReason.MALFORMED, nxt, "drop_malformed")

    def test_malformed_precedes_keep(self):
        def mut(b):
            set_first(b, 1, True)
            set_keep(b, 1, 0x3)
        m, h, beats, nxt = self.run(mut)
        self.check_cut(m, h, beats, 1, DropReason.MALFORMED, nxt, "drop_malformed")

    @pytest.mark.parametrize("k,keep", [(1, 0x7F), (1, 0xF0), (2, 0x0F), (2, 0x00)])
    def test_keep(self, k, keep):
        m, h, beats, nxt = self.run(lambda b: set_keep(b, k, keep))
        self.check_cut(m, h, beats, k, DropReason.KEEP, nxt, "err_keep")

    def test_keep_precedes_truncated(self):
        def mut(b):
            set_keep(b, 1, 0x0F)
            set_last(b, 1, True)
            del b[2:]
        m, h, beats, nxt = self.run(mut)
        self.check_cut(m, h, beats, 1, DropReason.KEEP, nxt, "err_keep")

    def test_truncated(self):
        def mut(b):
            set_last(b, 1, True)
            del b[2:]
        m, h, beats, nxt = self.run(mut)
        self.check_cut(m, h, beats, 1, DropReason.TRUNCATED, nxt, "err_truncated")

    def test_overlong(self):
        tail = [Beat(0x55, 0x0, False, False), Beat(0x66, 0xFF, True, False),
                Beat(0x77, 0x1, False, True)]
        m, h, beats, nxt = self.run(lambda b: set_last(b, 2, False), tail=tail)
        self.check_cut(m, h, beats, 2, DropReason.OVERLONG, nxt, "err_overlong")
        assert m.counters[0]["rx_beats"] == 3 + 3 + 1

    def test_cut_at_wide_width(self):
        m, h, beats, nxt = self.run(lambda b: set_keep(b, 1, 0xFFFF), n_dw=40, w=256)
        self.check_cut(m, h, beats, 1, DropReason.KEEP, nxt, "err_keep")

    def test_egress_cut_packet_bytes_counted(self):
        m, h, beats, nxt = self.run(lambda b: set_keep(b, 1, 0x01))
        assert m.counters[1]["tx_bytes"] == 8 + 1 + 4
        assert m.counters[0]["rx_bytes"] == 8 + 1 + 8 + 4


def test_interleaved_ports_keep_separate_framing():
    m = make()
    a = packet_beats(mwr_hdr(A1, 6, tag=1), 0, payload(24, 1), W)
    b = packet_beats(mwr_hdr(A2, 6, tag=2), 0, payload(24, 2), W)
    for x, y in zip(a, b):
        m.ingress_beat(0, x)
        m.ingress_beat(3, y)
    assert flows(m) == {(0, 1): [Packet(a)], (3, 2): [Packet(b)]}


# ============================================================================================
# section 7: counters and error status
# ============================================================================================

class TestCounters:
    def test_all_names_present(self):
        m = make()
        assert set(m.counters[0]) == set(COUNTER_NAMES)
        assert "rx_stall" not in COUNTER_NAMES and "tx_stall" not in COUNTER_NAMES

    def test_rx_tx(self):
        m = make()
        send(m, 0, mwr_hdr(A1, 3), payload(12))         # 2 beats, 12 B -> port 1
        send(m, 0, mrd_hdr(A2, 3))                      # 1 beat, 0 B -> port 2
        send(m, 2, mwr_hdr(0x9000, 1), payload(4))      # dropped
        assert nonzero(m, 0) == {"rx_packets": 2, "rx_beats": 3, "rx_bytes": 12}
        assert nonzero(m, 1) == {"tx_packets": 1, "tx_beats": 2, "tx_bytes": 12}
        assert nonzero(m, 2) == {"rx_packets": 1, "rx_beats": 1, "rx_bytes": 4,
                                 "tx_packets": 1, "tx_beats": 1, "drop_no_route": 1}

    def test_err_status_and_count(self):
        m = make()
        assert m.err_status() is None and m.err_count == 0
        h1 = mwr_hdr(0x9000, 1)
        send(m, 2, h1, payload(4), pfx=VPFX)
        send(m, 1, msg_local_hdr())                  # not an error
        h2 = raw_hdr(7, 0)
        send(m, 0, h2)
        assert m.err_status() == (2, DropReason.NO_ROUTE, h1, VPFX)
        assert m.err_count == 2
        m.clear_err_status()
        assert m.err_status() is None
        send(m, 3, h2)
        assert m.err_status() == (3, DropReason.MALFORMED, h2, 0)
        assert m.err_count == 3

    def test_reset(self):
        m = make()
        beats = packet_beats(mwr_hdr(A1, 4), 0, payload(16), W)
        m.ingress_beat(0, beats[0])
        assert m.in_packet(0)
        m.reset()
        assert not m.in_packet(0) and m.pending() == 0
        assert all(v == 0 for c in m.counters.values() for v in c.values())


# ============================================================================================
# Packet equality and the scoreboard
# ============================================================================================

class TestPacketEquality:
    def base(self):
        return packet_beats(mwr_hdr(A1, 3, tag=5), VPFX, payload(12), W)

    def test_hdr_pfx_only_on_first_beat(self):
        b = self.base()
        c = list(b)
        c[1] = Beat(c[1].data, c[1].keep, False, True, hdr=0x1234, pfx=0x9)
        assert Packet(b) == Packet(c)

    @pytest.mark.parametrize("field,value", [
        ("hdr", 1), ("pfx", 0), ("data", 1), ("keep", 0x7F), ("first", False), ("last", True),
        ("err", True)])
    def test_each_field_on_first_beat(self, field, value):
        b = self.base()
        kw = {f: getattr(b[0], f) for f in ("data", "keep", "first", "last", "hdr", "pfx", "err")}
        kw[field] = value
        c = [Beat(**kw)] + b[1:]
        assert Packet(b) != Packet(c)
        assert field in Packet(c).first_difference(Packet(b))

    @pytest.mark.parametrize("field,value", [
        ("data", 1), ("keep", 0x7), ("first", True), ("last", False), ("err", True)])
    def test_each_field_on_later_beat(self, field, value):
        b = self.base()
        kw = {f: getattr(b[1], f) for f in ("data", "keep", "first", "last", "hdr", "pfx", "err")}
        kw[field] = value
        c = b[:1] + [Beat(**kw)]
        assert Packet(b) != Packet(c)
        assert Packet(c).first_difference(Packet(b)).startswith(f"beat 1 {field}")

    def test_beat_count(self):
        b = self.base()
        assert Packet(b) != Packet(b[:1])
        assert "beat count" in Packet(b).first_difference(Packet(b[:1]))

    def test_describe(self):
        s = Packet(self.base()).describe()
        assert "MWr" in s and "0x1000" in s and "len=3DW" in s and "2 beat" in s
        s = Packet(packet_beats(cpl_hdr(0x3100, 0x2FF), 0, b"", W)).describe()
        assert "Cpl" in s and "req_id=0x3100" in s and "tag=0x2ff" in s
        s = Packet(packet_beats(raw_hdr(5, 31), 0, b"", W)).describe()
        assert "MALFORMED" in s


class TestScoreboard:
    def setup_two_flows(self):
        m = make()
        a1 = send(m, 0, mwr_hdr(A1, 1, tag=1), payload(4, 1))
        a2 = send(m, 0, mwr_hdr(A1, 1, tag=2), payload(4, 2))
        b1 = send(m, 2, mwr_hdr(A1, 1, tag=3), payload(4, 3))
        return m, Packet(a1), Packet(a2), Packet(b1)

    def test_in_order_and_cross_flow_interleave(self):
        m, a1, a2, b1 = self.setup_two_flows()
        assert m.pending() == 3
        assert m.match_egress(1, b1) == 2
        assert m.match_egress(1, a1) == 0
        assert m.match_egress(1, a2) == 0
        assert m.pending() == 0

    def test_swapped_pair_fails(self):
        m, a1, a2, b1 = self.setup_two_flows()
        with pytest.raises(AssertionError) as ei:
            m.match_egress(1, a2)
        msg = str(ei.value)
        assert "ORDER" in msg and "head of flow 0->1" in msg and "head of flow 2->1" in msg
        assert m.pending() == 3, "a failed match pops nothing"

    def test_corruption_detected(self):
        m, a1, a2, b1 = self.setup_two_flows()
        b = a1.beats[0]
        bad = Packet([Beat(b.data ^ 0x100, b.keep, b.first, b.last, b.hdr, b.pfx)])
        with pytest.raises(AssertionError, match=r"beat 0 data"):
            m.match_egress(1, bad)
        bad = Packet([Beat(b.data, b.keep, b.first, b.last, b.hdr ^ (1 << 70), b.pfx)])
        with pytest.raises(AssertionError, match=r"DW2"):
            m.match_egress(1, bad)
        bad = Packet([Beat(b.data, b.keep, b.first, b.last, b.hdr, b.pfx, err=True)])
        with pytest.raises(AssertionError, match=r"beat 0 err"):
            m.match_egress(1, bad)

    def test_duplicate_detected(self):
        m, a1, a2, b1 = self.setup_two_flows()
        m.match_egress(1, a1)
        with pytest.raises(AssertionError):
            m.match_egress(1, a1)

    def test_wrong_egress_detected(self):
        m, a1, a2, b1 = self.setup_two_flows()
        with pytest.raises(AssertionError, match="no packet is expected"):
            m.match_egress(2, a1)

    def test_loss_visible_in_pending(self):
        m, a1, a2, b1 = self.setup_two_flows()
        m.match_egress(1, a1)
        m.match_egress(1, b1)
        assert m.pending() == 1
        assert "0->1 #0" in m.describe_pending()

    def test_accepts_beat_sequence(self):
        m, a1, a2, b1 = self.setup_two_flows()
        assert m.match_egress(1, list(b1.beats)) == 2


# ============================================================================================
# randomized consistency
# ============================================================================================

def _seed():
    env = os.environ.get("SMARTFABRIC_SEED")
    seed = int(env, 0) if env else random.randrange(1 << 32)
    print(f"SMARTFABRIC_SEED={seed}")
    return seed


def _random_config(rng, n):
    w = rng.choice((64, 128, 256, 512))
    cfg = SwitchConfig(n, w, max_payload=rng.choice((128, 256, 512)), root_port=rng.randrange(n),
                       completer_id=rng.randrange(1 << 16))
    for p in range(n):
        cfg.windows[2 * p] = ((p + 1) << 24, ((p + 1) << 24) + 0xFF_FFFF, p, True)
        cfg.windows[2 * p + 1] = ((p + 1) << 40, ((p + 1) << 40) + 0xFFFF_FFFF, p, True)
        cfg.id_routes[p] = (8 * p, 8 * p + 7, p, True)
    return cfg


def _legal_packet(rng, cfg, seq, dst):
    """A random legal packet to ``dst`` (unique via seq). Returns (hdr, pfx, payload)."""
    kind = rng.choice(("mwr", "mwr64", "mrd", "mrd64", "cpl", "cpld", "msg_id", "msg_addr",
                       "msg_root", "msgd_addr"))
    maxdw = cfg.max_payload // 4
    td = rng.random() < 0.2
    n = rng.randint(1, maxdw - (1 if td else 0))
    rid = seq & 0xFFFF
    tag = (seq >> 4) & 0x3FF
    pfx = prefix_dw(0b01110, seq & 0xFFFFFF) if rng.random() < 0.3 else 0
    off = 4 * rng.randrange(1 << 20)
    a32 = ((dst + 1) << 24) + off
    a64 = ((dst + 1) << 40) + 4 * rng.randrange(1 << 30)
    data = bytes(rng.randrange(256) for _ in range(4 * n))
    kw = dict(tc=rng.randrange(8), attr=rng.randrange(8), td=td)
    if kind == "mwr":
        return mwr_hdr(a32, n, requester_id=rid, tag=tag, **kw), pfx, data
    if kind == "mwr64":
        return mwr_hdr(a64, n, requester_id=rid, tag=tag, **kw), pfx, data
    if kind == "mrd":
        return mrd_hdr(a32, n, requester_id=rid, tag=tag, **kw), pfx, b""
    if kind == "mrd64":
        return mrd_hdr(a64, n, requester_id=rid, tag=tag, **kw), pfx, b""
    bus = 8 * dst + rng.randrange(8)
    if kind == "cpl":
        return cpl_hdr(bus << 8 | (seq & 0xFF), tag, completer_id=rid, **kw), pfx, b""
    if kind == "cpld":
        return cpld_hdr(bus << 8 | (seq & 0xFF), tag, n, completer_id=rid, **kw), pfx, data
    if kind == "msg_id":
        return msg_by_id_hdr(bus << 8, requester_id=rid, dw3=seq, **kw), pfx, b""
    if kind == "msg_addr":
        return msg_by_addr_hdr(rng.choice((a32, a64)), requester_id=rid, **kw), pfx, b""
    if kind == "msgd_addr":
        return msg_by_addr_hdr(a64, length=n, requester_id=rid, **kw), pfx, data
    # to root: the destination is fixed by the config (the caller takes it from there)
    return msg_to_root_hdr(requester_id=rid, dw3=seq, **kw), pfx, b""


def _feed_interleaved(rng, m, streams):
    """Feed per-port beat lists, interleaving ports at random beat granularity."""
    its = {p: list(bs) for p, bs in streams.items() if bs}
    pos = dict.fromkeys(its, 0)
    while its:
        p = rng.choice(list(its))
        for _ in range(rng.randint(1, 4)):
            m.ingress_beat(p, its[p][pos[p]])
            pos[p] += 1
            if pos[p] == len(its[p]):
                del its[p]
                break


def _random_legal_packets(rng, cfg, n):
    """Yield ``(src, dst, hdr, beats)`` of random legal packets from every port (lazily, so a
    caller may draw from ``rng`` between packets)."""
    seq = 0
    for s in range(n):
        for _ in range(rng.randint(0, 40)):
            seq += 1
            dst = rng.randrange(n)
            h, pfx, data = _legal_packet(rng, cfg, seq, dst)
            if decode_header(h).route == "root":
                dst = cfg.root_port
            yield s, dst, h, packet_beats(h, pfx, data, cfg.data_width)


def test_random_legal_traffic_conservation():
    seed = _seed()
    rng = random.Random(seed)
    for _round in range(6):
        n = rng.randint(2, 8)
        cfg = _random_config(rng, n)
        m = SwitchModel(cfg)
        sent = {(s, d): [] for s in range(n) for d in range(n)}
        streams = {p: [] for p in range(n)}
        for s, dst, _, beats in _random_legal_packets(rng, cfg, n):
            sent[(s, dst)].append(Packet(beats))
            streams[s] += beats
        _feed_interleaved(rng, m, streams)
        # every legal packet exactly once, in the right flow, in order
        assert m.errors == [], (seed, m.errors[:3])
        for key, pkts in sent.items():
            assert list(m.expected[key]) == pkts, (seed, key)
        # drain through the scoreboard in a random cross-flow interleaving
        heads = {k: list(v) for k, v in sent.items() if v}
        while heads:
            (s, d) = rng.choice(list(heads))
            pkt = heads[(s, d)].pop(0)
            if not heads[(s, d)]:
                del heads[(s, d)]
            assert m.match_egress(d, pkt) == s
        assert m.pending() == 0
        # counters add up
        tot = {k: sum(m.counters[p][k] for p in range(n)) for k in COUNTER_NAMES}
        for a, b in (("rx_packets", "tx_packets"), ("rx_beats", "tx_beats"),
                     ("rx_bytes", "tx_bytes")):
            assert tot[a] == tot[b], (seed, a, tot)
        for p in range(n):
            assert m.counters[p]["rx_beats"] == len(streams[p])
            assert m.counters[p]["rx_packets"] == sum(len(sent[(p, d)]) for d in range(n))
            assert m.counters[p]["tx_packets"] == sum(len(sent[(s, p)]) for s in range(n))
        for k in COUNTER_NAMES:
            if not k.startswith(("rx_", "tx_p", "tx_b")):
                assert tot[k] == 0, (seed, k)


def _corrupt(rng, cfg, beats, hdr):
    """Make a packet illegal in one random way. Returns the mutated beat list, or None when
    the chosen corruption does not apply to this packet (it is then sent legal)."""
    b = list(beats)
    e = len(b)
    d = decode_header(hdr)
    lanes = cfg.data_width // 8
    choice = rng.choice(("keep", "truncate", "overlong", "first", "nofirst", "type", "pfx",
                         "noroute", "length"))

    def with_hdr(h):
        b[0] = Beat(b[0].data, b[0].keep, b[0].first, b[0].last, h, b[0].pfx)

    if choice == "keep":
        k = rng.randrange(e)
        set_keep(b, k, b[k].keep ^ (1 << rng.randrange(lanes)))
    elif choice == "truncate":
        if e == 1:
            return None
        k = rng.randrange(e - 1)
        del b[k + 1:]
        set_last(b, k, True)
    elif choice == "overlong":
        set_last(b, e - 1, False)
        extra = rng.randint(1, 3)
        b += [Beat(rng.randrange(256), rng.randrange(1 << lanes), rng.random() < 0.3,
                   i == extra - 1) for i in range(extra)]
    elif choice == "first":
        if e == 1:
            return None
        set_first(b, rng.randrange(1, e), True)
    elif choice == "nofirst":
        set_first(b, 0, False)
    elif choice == "type":
        with_hdr((hdr & ~(0x1F << 24)) | (rng.choice((0b00011, 0b10110, 0b11111)) << 24))
    elif choice == "pfx":
        b[0] = Beat(b[0].data, b[0].keep, True, b[0].last, hdr, 0x0100_0000)
    elif choice == "noroute":
        if d.route == "root":
            return None
        if d.route == "id":
            with_hdr((hdr & ~(0xFF << 88)) | (0xFF << 88))       # bus 0xFF: no ID route
        elif d.fmt & 1:
            with_hdr((hdr & ((1 << 64) - 1)) | (0x100 << 96))     # A = 0x100: no window
        else:
            with_hdr((hdr & ((1 << 64) - 1)) | (0x100 << 64))
    else:  # length field above max_payload (payload left as is)
        if not d.has_data:
            return None
        with_hdr((hdr & ~0x3FF) | (cfg.max_payload // 4 + 1))
    return b


def test_random_mixed_traffic_conservation():
    """Legal packets mixed with corrupted ones: legal ones still delivered exactly once,
    corrupted ones never delivered intact, and every accepted packet is accounted for."""
    seed = _seed()
    rng = random.Random(seed ^ 0x5EED)
    for _round in range(6):
        n = rng.randint(2, 8)
        cfg = _random_config(rng, n)
        m = SwitchModel(cfg)
        legal = {(s, d): [] for s in range(n) for d in range(n)}
        corrupted = []
        streams = {p: [] for p in range(n)}
        for s, dst, h, beats in _random_legal_packets(rng, cfg, n):
            if rng.random() < 0.3:
                bad = _corrupt(rng, cfg, beats, h)
                if bad is not None:
                    corrupted.append(Packet(bad))
                    streams[s] += bad
                    continue
            legal[(s, dst)].append(Packet(beats))
            streams[s] += beats
        _feed_interleaved(rng, m, streams)
        def is_ur(p):
            return (decode_header(p.hdr).type == Type.CPL
                    and field_get(hdr_dw(p.hdr, 1), CPL_DW1, "status") == CplStatus.UR)

        for key, pkts in legal.items():
            got = [p for p in m.expected[key] if not p.err and not is_ur(p)]
            assert got == pkts, (seed, key)
        delivered = [p for q in m.expected.values() for p in q]
        for bad in corrupted:
            assert bad not in delivered, (seed, bad.describe())
        for p in range(n):
            c = m.counters[p]
            from_p = sum(len(m.expected[(p, d)]) for d in range(n)) - c["ur_sent"]
            cut = sum(1 for d in range(n) for x in m.expected[(p, d)] if x.err)
            errs = sum(1 for e in m.errors if e.port == p)
            assert c["rx_packets"] == from_p + (errs - cut) + c["msg_local"], (seed, p)
            assert errs == sum(c[k] for k in COUNTER_NAMES if k.startswith(("drop_", "err_")))
            assert c["rx_beats"] == len(streams[p])
        assert sum(m.counters[p]["tx_err"] for p in range(n)) == sum(
            1 for p in delivered if p.err)
        assert sum(m.counters[p]["tx_packets"] for p in range(n)) == len(delivered)


class TestParity:
    """docs/protocol.md section 9: PARITY drops decided by the window rule (the lowest-numbered
    window that matches or fails its check decides), UR for non-posted requests, and the
    Hypercast group table and receiver windows."""

    def test_window_rule(self):
        m = make()
        m.config.window_parity_errors.add(1)
        send(m, 0, mwr_hdr(A1, 1, requester_id=0x0100), payload(4))        # window 0: routed
        assert flows(m) and only_flow(m)[0] == (0, 1)
        m.expected[(0, 1)].clear()
        send(m, 0, mwr_hdr(A2, 1, requester_id=0x0100), payload(4))        # window 1 itself
        send(m, 0, mwr_hdr(A64, 1, requester_id=0x0100), payload(4))       # hidden by 1
        send(m, 0, mwr_hdr(0x9000, 1, requester_id=0x0100), payload(4))    # no match at all
        assert not flows(m)
        assert m.counters[0]["drop_parity"] == 3 and m.counters[0]["drop_no_route"] == 0
        assert [e.reason for e in m.errors] == [DropReason.PARITY] * 3
        assert m.parity_errors == 3
        send(m, 0, msg_by_id_hdr(BUS3 << 8, requester_id=0x0100))          # ID routing: fine
        assert only_flow(m)[0] == (0, 3)

    def test_read_gets_ur_and_rewrite_clears(self):
        m = make()
        m.config.window_parity_errors.add(0)
        hdr = mrd_hdr(A2, 1, requester_id=0x0100, tag=7)
        send(m, 2, hdr)
        (key, pkt) = only_flow(m)
        assert key == (2, 2) and pkt.hdr == ur_completion_hdr(hdr, m.config.completer_id)
        assert m.counters[2]["ur_sent"] == 1 and m.counters[2]["drop_parity"] == 1
        m.expected[(2, 2)].clear()
        m.config.window_parity_errors.discard(0)
        send(m, 2, hdr)
        assert only_flow(m)[0] == (2, 2) and only_flow(m)[1].hdr == hdr

    def test_no_window_parity_error_without_any(self):
        m = make()
        assert not m.config.window_parity_error(0x9000)
        assert not m.config.receiver_parity_error(1)
        m.config.window_parity_errors.add(15)
        assert m.config.window_parity_error(0x9000)          # nothing matched: any error
        assert not m.config.window_parity_error(A1)
        assert not m.config.receiver_parity_error(3)         # window 2 comes first
        assert m.config.receiver_parity_error(0)             # port 0 has no window
