"""Directed and randomized tests of the golden model's multicast (docs/protocol.md section 8).

Pure Python and fast. Each test names the rule of docs/protocol.md it checks; expected values
are worked out by hand from the text (expected copies are built with the header builders of
``tlp_build``, never with the model's own rewrite). Randomized tests print their seed;
``SMARTFABRIC_SEED=<n>`` reproduces a run.

The framing helpers (``send``, ``flows``, ``payload``, ``set_*``, the seed and the beat
interleaver) are shared with ``test_switch_model``.
"""

import dataclasses
import random
from typing import NamedTuple

import pytest

from smartfabric.models.formats import (
    CPL_DW1, DW0, N_HC_MONITORS, CplStatus, DropReason, Fmt, IncNoticeKind, SfKind, field_get,
    inc_notice, inc_prefix, sf_prefix,
)
from smartfabric.models.switch_model import (
    COUNTER_NAMES, REASON_COUNTER, Beat, ErrorRecord, McRoute, Packet, SfDescriptor,
    SwitchConfig, SwitchModel, sf_descriptor,
)
from smartfabric.models.tlp_build import (
    cpld_hdr, hdr_dw, hdr_dws, hdr_pack, mrd_hdr, msg_by_addr_hdr, msg_local_hdr,
    msg_to_root_hdr, mwr_hdr, packet_beats, prefix_dw, raw_hdr, rewrite_address,
)

from test_switch_model import (
    _feed_interleaved, _seed, flows, payload, send, set_first, set_keep, set_last,
)

W = 64                   # 8 lanes: small packets span several beats
N = 8
N_GROUPS = 16            # group table size of the directed tests
WSIZE = 0x1_0000         # every window of hc_model() is 64 KiB


def WB(p):
    """Base of port p's window in hc_model(): window p = [WB(p), WB(p) + WSIZE - 1] -> p."""
    return 0x10_0000 * (p + 1)


def hc_model(n=N, w=W, **kw):
    """A model whose port p owns window p (``WB(p)``, 64 KiB) and a 16-entry group table."""
    kw.setdefault("n_groups", N_GROUPS)
    windows = [(WB(p), WB(p) + WSIZE - 1, p, True) for p in range(n)]
    windows += [(0, 0, 0, False)] * max(0, 16 - n)
    return SwitchModel(SwitchConfig(n, w, windows=windows, **kw))


def hc_set(*ports, xs=False):
    """HC_SET descriptor naming ``ports``."""
    return sf_prefix(SfKind.HC_SET, mask=sum(1 << p for p in ports), xs=xs)


def hc_group(g, xs=False):
    """HC_GROUP descriptor for group ``g``."""
    return sf_prefix(SfKind.HC_GROUP, group=g, xs=xs)


def sf_body(kind, low, xs=False, bit20=False):
    """A descriptor with a raw body: ``kind`` in 23:22, xs, bit 20 and ``low`` in 19:0."""
    return prefix_dw(0b01110, (kind << 22) | (int(xs) << 21) | (int(bit20) << 20) | low)


def copy_of(beats, hdr):
    """The copy of 8.4: ``beats`` with the header of the first beat replaced by ``hdr``."""
    return Packet([dataclasses.replace(beats[0], hdr=hdr)] + list(beats[1:]))


def reasons(m):
    return [e.reason for e in m.errors]


def nonzero(m, port):
    return {k: v for k, v in m.counters[port].items() if v}


# PCIe multicast window of the section-8.2 tests: 4 groups of 4 KiB from MCB; window 8 covers
# the region and its surroundings as a unicast window to port 7, to show which one wins.
MCB = 0x4000_0000
MC_COVER = (MCB - 0x1_0000, MCB + 0x1_FFFF, 7, True)


def mc_model(receive=None, n=N, **kw):
    """hc_model() with the multicast window enabled: base MCB, 4 KiB per group, 4 groups.

    ``receive``: {port: group mask} for ``mc_receive`` (default: group g -> port g + 1)."""
    if receive is None:
        receive = {g + 1: 1 << g for g in range(4)}
    kw = {"mc_enable": True, "mc_base": MCB, "mc_index_pos": 12, "mc_num_group": 3,
          "mc_receive": [receive.get(p, 0) for p in range(n)], **kw}
    m = hc_model(n, **kw)
    m.config.windows[8] = MC_COVER
    return m


# ============================================================================================
# section 8.1: the smartfabric descriptor
# ============================================================================================

class TestDescriptor:
    def test_fields(self):
        """8.1: kind 23:22, xs 21, bit 20 ignored, mask 19:0, group 15:0."""
        d = sf_descriptor(sf_body(SfKind.HC_SET, 0xABCDE, xs=True, bit20=True))
        assert d == SfDescriptor(SfKind.HC_SET, True, 0xABCDE, 0xBCDE)
        assert d.hypercast
        assert sf_descriptor(0x8E80_0000).kind == SfKind.HC_GROUP
        assert not sf_descriptor(0x8EC0_0000).hypercast             # INC
        assert not sf_descriptor(0x8E00_0000).hypercast             # NONE
        assert sf_descriptor(0) is None
        assert sf_descriptor(0x8F40_0001) is None                   # VendPrefixL1
        assert sf_descriptor(0x0E40_0001) is None                   # Fmt 000

    def test_kind_none_routed_as_plain(self):
        """8.1 kind 00: routed as if there were no prefix, whatever the rest of the body;
        the prefix is forwarded unchanged."""
        m = hc_model()
        pfx = sf_body(SfKind.NONE, 0xFFFFF, xs=True)
        beats = send(m, 3, mwr_hdr(WB(3) + 0x10, 2), payload(8), pfx=pfx)
        assert flows(m) == {(3, 3): [Packet(beats)]}
        assert m.counters[3]["rx_mcast"] == 0 and m.counters[3]["tx_mcast"] == 0

    @pytest.mark.parametrize("type_", [0b01111, 0b10000, 0b00000, 0b01100])
    def test_other_prefix_types_mean_nothing(self, type_):
        """Section 1: only VendPrefixL0 (type 01110) carries the descriptor."""
        m = hc_model()
        pfx = prefix_dw(type_, (SfKind.HC_SET << 22) | 0b110)
        beats = send(m, 0, mwr_hdr(WB(4), 1), payload(4), pfx=pfx)
        assert flows(m) == {(0, 4): [Packet(beats)]}

    @pytest.mark.parametrize("hdr,data,ur", [
        (mrd_hdr(WB(1), 2, requester_id=0x0102, tag=0x33), 0, True),
        (mrd_hdr(0x5_0000_0000, 2, tag=0x34), 0, True),             # unroutable MRd64 too
        (cpld_hdr(0x0100, 5, 1), 4, False),
        (msg_by_addr_hdr(WB(1), length=1), 4, False),
        (msg_to_root_hdr(), 0, False),
        (msg_local_hdr(), 0, False),                                 # not consumed
        (raw_hdr(Fmt.DW3, 0b00010, length=1, dw1=0x0102_3300), 0, True),  # IORd: type first
    ])
    @pytest.mark.parametrize("pfx", [hc_set(1, 2), hc_group(3)])
    def test_hypercast_on_non_mwr_unsupported(self, hdr, data, ur, pfx):
        """Section 4 check 4 / 8.1: HC_SET/HC_GROUP on anything but MWr -> UNSUPPORTED, a
        non-posted request gets its UR completion."""
        m = hc_model(root_port=2, completer_id=0xC0DE)
        m.config.hc_groups[3] = 0b110
        send(m, 5, hdr, payload(data), pfx=pfx)
        assert m.errors == [ErrorRecord(5, DropReason.UNSUPPORTED, hdr, pfx)]
        c = m.counters[5]
        assert c["drop_unsupported"] == 1 and c["msg_local"] == 0 and c["rx_mcast"] == 0
        if ur:
            assert list(flows(m)) == [(5, 5)] and c["ur_sent"] == 1
            cpl = m.expected[(5, 5)][0]
            assert field_get(hdr_dw(cpl.hdr, 1), CPL_DW1, "status") == CplStatus.UR
            assert hdr_dw(cpl.hdr, 2) >> 8 == hdr_dw(hdr, 1) >> 8    # requester ID, tag
        else:
            assert flows(m) == {} and c["ur_sent"] == 0

    @pytest.mark.parametrize("hdr,data,ur", [
        (mrd_hdr(WB(1), 1, requester_id=0x0A0B, tag=7), 0, True),
        (msg_local_hdr(), 0, False),
    ])
    def test_inc_on_non_mwr_unsupported(self, hdr, data, ur):
        """8.1: an INC descriptor on anything but an MWr is UNSUPPORTED; UR for non-posted."""
        m = hc_model()
        pfx = sf_body(SfKind.INC, 0)
        send(m, 2, hdr, payload(data), pfx=pfx)
        assert reasons(m) == [DropReason.UNSUPPORTED]
        assert m.counters[2]["ur_sent"] == int(ur)
        assert list(flows(m)) == ([(2, 2)] if ur else [])

    @pytest.mark.parametrize("length", [1, 5])
    def test_inc_mwr_goes_to_the_engine(self, length):
        """An MWr with an INC descriptor is a contribution (docs/reduction-engine.md): with no
        reduction group armed the engine rejects it (INC_BAD_GROUP) and sends the sender a
        one-DW notice at offset 0 of its window, from source N (the engine)."""
        m = hc_model()
        pfx = inc_prefix(5, "fp32", "sum")
        send(m, 2, mwr_hdr(0x7000_0000, length), payload(4 * length), pfx=pfx)
        assert reasons(m) == [DropReason.INC_BAD_GROUP]
        assert m.counters[2]["drop_inc_bad_group"] == 1
        (key, pkts), = flows(m).items()
        assert key == (N, 2) and len(pkts) == 1
        beat, = pkts[0].beats
        assert beat.hdr == mwr_hdr(WB(2), 1) and beat.pfx == 0 and beat.keep == 0xF
        assert beat.data == inc_notice(DropReason.INC_BAD_GROUP, 5, IncNoticeKind.REJECTED)

    def test_malformed_precedes_descriptor(self):
        """Section 4 check 4: the Fmt/Type table before the descriptor."""
        m = hc_model()
        h = raw_hdr(0b101, 0, length=1)
        send(m, 0, h, pfx=sf_body(SfKind.INC, 0))
        assert reasons(m) == [DropReason.MALFORMED]

    def test_bad_prefix_fmt_is_malformed(self):
        """Section 4 check 3: a descriptor-like prefix with Fmt 000 is MALFORMED, no UR."""
        m = hc_model()
        send(m, 0, mrd_hdr(WB(1), 1), pfx=prefix_dw(0b01110, SfKind.HC_SET << 22, fmt=0))
        assert reasons(m) == [DropReason.MALFORMED] and flows(m) == {}

    def test_descriptor_check_precedes_length(self):
        """Section 4: check 4 (descriptor) before check 5 (LENGTH)."""
        m = hc_model()
        send(m, 0, cpld_hdr(0x0100, 1, 100), payload(400), pfx=sf_body(SfKind.INC, 0))
        send(m, 0, cpld_hdr(0x0100, 1, 100), payload(400), pfx=hc_set(1))
        assert reasons(m) == [DropReason.UNSUPPORTED] * 2

    def test_length_precedes_multicast_checks(self):
        """Section 4: check 5 (LENGTH) before the routing of section 8.3."""
        m = hc_model()
        send(m, 0, mwr_hdr(WB(1), 65), payload(260), pfx=hc_group(N_GROUPS))
        assert reasons(m) == [DropReason.LENGTH]


# ============================================================================================
# section 8.1: the group table and the HC_SET limit
# ============================================================================================

class TestGroupTable:
    def test_copies_to_the_entry(self):
        """8.3 check 4: D = the group table entry."""
        m = hc_model()
        m.config.hc_groups[9] = 0b1001_0010
        h = mwr_hdr(WB(0) + 0x80, 1, tag=4)
        beats = send(m, 0, h, payload(4), pfx=hc_group(9))
        assert flows(m) == {(0, p): [copy_of(beats, mwr_hdr(WB(p) + 0x80, 1, tag=4))]
                            for p in (1, 4, 7)}

    def test_bits_at_or_above_n_not_stored(self):
        """8.1: bits at or above N read as 0."""
        m = hc_model(n=4)
        m.config.hc_groups[5] = 0xFFFF_FFF2        # stored as 0b0010
        m.config.hc_groups[6] = 0xFFFF_FFF0        # stored as 0: empty
        beats = send(m, 0, mwr_hdr(WB(3), 1), payload(4), pfx=hc_group(5))
        send(m, 0, mwr_hdr(WB(3), 1), payload(4), pfx=hc_group(6))
        assert flows(m) == {(0, 1): [copy_of(beats, mwr_hdr(WB(1), 1))]}
        assert m.config.group_mask(5) == 0b0010 and m.config.group_mask(6) == 0
        assert reasons(m) == [DropReason.HC_EMPTY]

    def test_absent_entry_reads_zero(self):
        """8.5 HC_EMPTY: an unprogrammed group."""
        m = hc_model()
        send(m, 1, mwr_hdr(WB(1), 1), payload(4), pfx=hc_group(2))
        assert reasons(m) == [DropReason.HC_EMPTY]

    def test_ports_20_and_up_through_the_group_table(self):
        """8.1 limit of HC_SET: with N = 32, ports 20..31 are reached through a group."""
        m = hc_model(n=32)
        m.config.hc_groups[3] = (1 << 31) | (1 << 20) | 1
        beats = send(m, 5, mwr_hdr(WB(5), 1), payload(4), pfx=hc_group(3))
        assert flows(m) == {(5, p): [copy_of(beats, mwr_hdr(WB(p), 1))] for p in (0, 20, 31)}

    @pytest.mark.parametrize("n,ok", [(24, True), (20, True), (19, False)])
    def test_set_names_ports_0_to_19(self, n, ok):
        """8.1/8.3 check 2: set bit 19 names port 19, a bad set only when N <= 19."""
        m = hc_model(n=n)
        beats = send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set(19))
        if ok:
            assert flows(m) == {(0, 19): [copy_of(beats, mwr_hdr(WB(19), 1))]}
        else:
            assert reasons(m) == [DropReason.HC_BAD_SET] and flows(m) == {}

    def test_table_read_live(self):
        """8.6: each packet reads its entry when its first beat is accepted."""
        m = hc_model()
        m.config.hc_groups[1] = 0b10
        a = send(m, 0, mwr_hdr(WB(0), 1, tag=1), payload(4), pfx=hc_group(1))
        m.config.hc_groups[1] = 0b100
        b = send(m, 0, mwr_hdr(WB(0), 1, tag=2), payload(4), pfx=hc_group(1))
        assert flows(m) == {(0, 1): [copy_of(a, mwr_hdr(WB(1), 1, tag=1))],
                            (0, 2): [copy_of(b, mwr_hdr(WB(2), 1, tag=2))]}


# ============================================================================================
# section 8.2: the PCIe multicast window
# ============================================================================================

class TestMcWindow:
    @pytest.mark.parametrize("offset,group", [
        (0x0000, 0), (0x0FFC, 0), (0x1000, 1), (0x2FFC, 2), (0x3FFC, 3),
        (0x4000, None), (-4, None), (0x1_0000, None)])
    def test_group_of_address(self, offset, group):
        """8.2: mc_base <= A < mc_base + (num_group + 1) * 2^index_pos is group
        (A - mc_base) >> index_pos; elsewhere the address windows route it."""
        m = mc_model()          # group g -> port g + 1, window 8 covers the area -> port 7
        h = mwr_hdr(MCB + offset, 1)
        beats = send(m, 0, h, payload(4))
        dst = 7 if group is None else group + 1
        assert flows(m) == {(0, dst): [Packet(beats)]}
        assert m.counters[0]["rx_mcast"] == int(group is not None)

    def test_disabled_window_is_unicast(self):
        """8.2: mc_ctrl.enable = 0 -> no multicast."""
        m = mc_model(mc_enable=False)
        beats = send(m, 0, mwr_hdr(MCB + 0x1000, 1), payload(4))
        assert flows(m) == {(0, 7): [Packet(beats)]}

    @pytest.mark.parametrize("index_pos", [0, 6, 11, 12])
    def test_index_pos_below_12_counts_as_12(self, index_pos):
        """8.2: index_pos smaller than 12 counts as 12."""
        m = mc_model(mc_index_pos=index_pos)
        send(m, 0, mwr_hdr(MCB + 0x2040, 1), payload(4))      # group 2 with 4 KiB groups
        assert list(flows(m)) == [(0, 3)]

    def test_large_index_pos(self):
        """8.2: index_pos 16 -> 64 KiB per group; num_group 1 -> 2 groups."""
        m = mc_model(mc_index_pos=16, mc_num_group=1, receive={4: 0b01, 5: 0b10})
        m.config.windows[8] = (MCB, MCB + 0xF_FFFF, 7, True)
        for offset in (0xFFFC, 0x1_0000, 0x1_FFFC, 0x2_0000):
            send(m, 0, mwr_hdr(MCB + offset, 1), payload(4))
        assert {k: len(v) for k, v in flows(m).items()} == {(0, 4): 1, (0, 5): 2, (0, 7): 1}

    def test_32_groups(self):
        """8.2: num_group 31 = 32 groups; mc_receive bit 31 receives group 31."""
        m = mc_model(mc_num_group=31, receive={6: 1 << 31})
        m.config.windows[8] = (MCB, MCB + 0x7_FFFF, 7, True)
        send(m, 0, mwr_hdr(MCB + 31 * 0x1000, 1), payload(4))
        send(m, 0, mwr_hdr(MCB + 32 * 0x1000, 1), payload(4))
        assert {k: len(v) for k, v in flows(m).items()} == {(0, 6): 1, (0, 7): 1}

    def test_mc_window_checked_before_address_windows(self):
        """8.2: an MWr in the MC window is multicast even where an address window matches."""
        m = mc_model()
        m.config.windows[0] = (MCB, MCB + 0xFFFF, 0, True)      # index 0: highest priority
        send(m, 2, mwr_hdr(MCB + 0x1000, 1), payload(4))
        assert list(flows(m)) == [(2, 2)]                       # group 1 -> port 2

    @pytest.mark.parametrize("hdr,data", [
        (mrd_hdr(MCB + 0x1000, 1), 0),
        (mrd_hdr(MCB + 0x1000, 1, force_4dw=True), 0),
        (msg_by_addr_hdr(MCB + 0x1000), 0),
        (msg_by_addr_hdr(MCB + 0x1000, length=1), 4),
    ])
    def test_only_mwr_is_multicast(self, hdr, data):
        """8.2: other TLPs are routed by the address windows wherever their address points."""
        m = mc_model()
        beats = send(m, 0, hdr, payload(data))
        assert flows(m) == {(0, 7): [Packet(beats)]}

    def test_mrd_in_mc_window_without_address_window(self):
        m = mc_model()
        m.config.windows[8] = (0, 0, 0, False)
        send(m, 0, mrd_hdr(MCB + 0x1000, 1))
        send(m, 0, mwr_hdr(MCB + 0x1000, 1), payload(4))
        assert reasons(m) == [DropReason.NO_ROUTE]
        assert m.counters[0]["ur_sent"] == 1 and sorted(flows(m)) == [(0, 0), (0, 2)]

    @pytest.mark.parametrize("pfx", [0, sf_body(SfKind.NONE, 0xFFFFF, xs=True),
                                     prefix_dw(0b01111, SfKind.HC_SET << 22 | 1)])
    def test_no_descriptor_forms_use_the_window(self, pfx):
        """8.2: no prefix, another prefix or kind 00 -> MC window; prefix forwarded
        unchanged; a kind-00 xs bit does not exclude the source."""
        m = mc_model(receive={1: 0b10, 3: 0b10})
        beats = send(m, 1, mwr_hdr(MCB + 0x1100, 2), payload(8), pfx=pfx)
        assert flows(m) == {(1, 1): [Packet(beats)], (1, 3): [Packet(beats)]}
        assert all(p.pfx == pfx for q in flows(m).values() for p in q)

    def test_descriptor_inside_mc_window_uses_descriptor(self):
        """8.2: an MWr with a Hypercast descriptor is never a window write."""
        m = mc_model()
        m.config.windows[8] = (MCB, MCB + 0xFFFF, 7, True)
        h = mwr_hdr(MCB + 0x1040, 1)
        beats = send(m, 0, h, payload(4), pfx=hc_set(5))
        assert flows(m) == {(0, 5): [copy_of(beats, mwr_hdr(WB(5) + 0x1040, 1))]}

    def test_64bit_mc_base(self):
        """8.2: mc_base is 64-bit; 4-DW MWr."""
        base = 0x12_0000_0000
        m = mc_model(mc_base=base, receive={4: 0b1000})
        mc = send(m, 0, mwr_hdr(base + 0x3000, 1), payload(4))
        uni = send(m, 0, mwr_hdr(MCB + 0x3000, 1), payload(4))    # the old window: unicast
        assert flows(m) == {(0, 4): [Packet(mc)], (0, 7): [Packet(uni)]}


# ============================================================================================
# section 8.3: the destination set and the routing checks, each in its order
# ============================================================================================

class TestRoutingChecks:
    # -- check 1 ---------------------------------------------------------------------------

    def test_1_bad_group(self):
        """Check 1: group id >= n_groups -> HC_BAD_GROUP; n_groups - 1 is fine."""
        m = hc_model()
        m.config.hc_groups[N_GROUPS - 1] = 0b10
        h = mwr_hdr(WB(0), 1)
        send(m, 0, h, payload(4), pfx=hc_group(N_GROUPS))
        send(m, 0, h, payload(4), pfx=hc_group(N_GROUPS - 1))
        assert m.errors == [ErrorRecord(0, DropReason.HC_BAD_GROUP, h, hc_group(N_GROUPS))]
        assert list(flows(m)) == [(0, 1)]
        assert m.counters[0]["drop_hc_bad_group"] == 1 and m.counters[0]["ur_sent"] == 0

    def test_1_group_bits_19_16_ignored(self):
        """8.1: HC_GROUP uses pfx[15:0]; bits 19:16 are ignored."""
        m = hc_model()
        m.config.hc_groups[N_GROUPS - 1] = 0b10
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=sf_body(SfKind.HC_GROUP, 0xF_000F))
        assert list(flows(m)) == [(0, 1)]

    def test_1_precedes_3(self):
        m = hc_model()
        send(m, 0, mwr_hdr(0x9_0000, 1), payload(4), pfx=hc_group(1000))
        assert reasons(m) == [DropReason.HC_BAD_GROUP]

    # -- check 2 ---------------------------------------------------------------------------

    def test_2_bad_set(self):
        """Check 2: a set bit at position N or above -> HC_BAD_SET."""
        m = hc_model(n=8)
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set(1, 8))
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set(1, 7))
        assert reasons(m) == [DropReason.HC_BAD_SET]
        assert sorted(flows(m)) == [(0, 1), (0, 7)]
        assert m.counters[0]["drop_hc_bad_set"] == 1

    def test_2_precedes_3(self):
        m = hc_model(n=8)
        send(m, 0, mwr_hdr(0x9_0000, 1), payload(4), pfx=hc_set(19))
        assert reasons(m) == [DropReason.HC_BAD_SET]

    # -- check 3 ---------------------------------------------------------------------------

    @pytest.mark.parametrize("pfx", [hc_set(1), hc_group(1)])
    def test_3_no_source_window(self, pfx):
        """Check 3: the address has no unicast window -> NO_ROUTE (posted: no UR)."""
        m = hc_model()
        m.config.hc_groups[1] = 0b10
        send(m, 0, mwr_hdr(0x9_0000, 1), payload(4), pfx=pfx)
        assert reasons(m) == [DropReason.NO_ROUTE] and flows(m) == {}
        assert m.counters[0]["ur_sent"] == 0 and m.counters[0]["drop_no_route"] == 1

    def test_3_precedes_4(self):
        m = hc_model()
        send(m, 0, mwr_hdr(0x9_0000, 1), payload(4), pfx=hc_set())
        assert reasons(m) == [DropReason.NO_ROUTE]

    def test_3_source_window_search_skips_bad_port_and_disabled(self):
        """Check 3 / section 3: entries with a port >= N, or disabled, are skipped: the offset
        is taken in the next matching window (window 5, not the wider windows 0 and 1)."""
        m = hc_model()
        m.config.windows[0] = (WB(5) - 0x100, WB(5) + 0xFFFF, 9, True)
        m.config.windows[1] = (WB(5) - 0x200, WB(5) + 0xFFFF, 2, False)
        beats = send(m, 3, mwr_hdr(WB(5) + 0x40, 1), payload(4), pfx=hc_set(4))
        assert flows(m) == {(3, 4): [copy_of(beats, mwr_hdr(WB(4) + 0x40, 1))]}

    def test_3_source_window_port_need_not_be_in_d(self):
        m = hc_model()
        m.config.port_enable = 0xFF & ~(1 << 5)        # the source window's port is disabled
        beats = send(m, 3, mwr_hdr(WB(5) + 0x40, 1), payload(4), pfx=hc_set(4))
        assert flows(m) == {(3, 4): [copy_of(beats, mwr_hdr(WB(4) + 0x40, 1))]}

    # -- check 4 ---------------------------------------------------------------------------

    def test_4_empty_set(self):
        m = hc_model()
        h = mwr_hdr(WB(0), 1)
        send(m, 0, h, payload(4), pfx=hc_set())
        assert m.errors == [ErrorRecord(0, DropReason.HC_EMPTY, h, hc_set())]
        assert m.counters[0]["drop_hc_empty"] == 1

    @pytest.mark.parametrize("pfx", [hc_set(2, xs=True), hc_group(4, xs=True)])
    def test_4_xs_only_the_source_is_empty(self, pfx):
        """Check 4: xs removes the ingress port; nothing left -> HC_EMPTY."""
        m = hc_model()
        m.config.hc_groups[4] = 0b100
        send(m, 2, mwr_hdr(WB(0), 1), payload(4), pfx=pfx)
        assert reasons(m) == [DropReason.HC_EMPTY]

    @pytest.mark.parametrize("xs", [False, True])
    def test_4_xs(self, xs):
        """Check 4: without xs the source receives its own copy; with xs it does not."""
        m = hc_model()
        m.config.hc_groups[4] = 0b1100
        m.config.mc_exclude_source = True          # has no effect on the prefix forms
        send(m, 2, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set(2, 3, xs=xs))
        send(m, 2, mwr_hdr(WB(0), 1), payload(4), pfx=hc_group(4, xs=xs))
        want = {(2, 3): 2} if xs else {(2, 2): 2, (2, 3): 2}
        assert {k: len(v) for k, v in flows(m).items()} == want

    @pytest.mark.parametrize("exclude", [False, True])
    def test_4_mc_exclude_source(self, exclude):
        """Check 4: the MC window form uses mc_ctrl.exclude_source (a prefix xs bit does
        not count)."""
        m = mc_model(receive={2: 0b10, 3: 0b10}, mc_exclude_source=exclude)
        send(m, 2, mwr_hdr(MCB + 0x1000, 1), payload(4), pfx=sf_body(SfKind.NONE, 0, xs=True))
        want = [(2, 3)] if exclude else [(2, 2), (2, 3)]
        assert sorted(flows(m)) == want

    def test_4_mc_no_receiver_and_only_source(self):
        """8.5 HC_EMPTY: no receiver; only the excluded source."""
        m = mc_model(receive={2: 0b10}, mc_exclude_source=True)
        send(m, 0, mwr_hdr(MCB + 0x3000, 1), payload(4))          # group 3: nobody
        send(m, 2, mwr_hdr(MCB + 0x1000, 1), payload(4))          # group 1: only port 2
        assert reasons(m) == [DropReason.HC_EMPTY] * 2 and flows(m) == {}

    def test_4_precedes_6(self):
        """An empty D is HC_EMPTY even when the write would spill."""
        m = hc_model()
        send(m, 7, mwr_hdr(WB(0) + 0xFFFC, 2), payload(8), pfx=hc_set(7, xs=True))
        mc = mc_model(receive={7: 0b1}, mc_exclude_source=True)
        send(mc, 7, mwr_hdr(MCB + 0xFFC, 2), payload(8))
        assert reasons(m) == reasons(mc) == [DropReason.HC_EMPTY]

    # -- check 5 ---------------------------------------------------------------------------

    def test_5_receiver_without_window(self):
        """Check 5: a destination without a (enabled) window -> NO_ROUTE, nothing delivered."""
        m = hc_model()
        m.config.windows[6] = m.config.windows[6]._replace(enable=False)
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set(1, 6))
        assert reasons(m) == [DropReason.NO_ROUTE] and flows(m) == {}
        assert m.counters[0]["ur_sent"] == 0

    def test_5_precedes_6_and_7(self):
        m = hc_model()
        m.config.windows[6] = m.config.windows[6]._replace(enable=False)
        m.config.port_enable = 0b1101_1111
        send(m, 0, mwr_hdr(WB(0) + 0xFFFC, 2), payload(8), pfx=hc_set(5, 6))
        assert reasons(m) == [DropReason.NO_ROUTE]

    def test_5_receiver_window_is_the_lowest_numbered_of_the_port(self):
        """Check 5: the receiver window of p is p's lowest-numbered enabled window, even when
        the source window is another window of p."""
        m = hc_model()
        m.config.windows[10] = (0x9000_0000, 0x9000_FFFF, 1, True)
        m.config.windows[11] = (0xA000_0000, 0xA000_FFFF, 2, True)
        m.config.windows[2] = m.config.windows[2]._replace(enable=False)
        beats = send(m, 0, mwr_hdr(0x9000_0040, 1), payload(4), pfx=hc_set(1, 2))
        assert flows(m) == {(0, 1): [copy_of(beats, mwr_hdr(WB(1) + 0x40, 1))],
                            (0, 2): [copy_of(beats, mwr_hdr(0xA000_0040, 1))]}

    # -- check 6 ---------------------------------------------------------------------------

    @pytest.mark.parametrize("offset,length,spill", [
        (0xFFF0, 4, False), (0xFFF0, 5, True), (0xFFFC, 1, False), (0x0, 64, False),
        (0xFF04, 63, False), (0xFF04, 64, True)])
    def test_6_source_window_spill(self, offset, length, spill):
        """Check 6: offset + L - 1 > limit - base of the source window -> MC_SPILL."""
        m = hc_model()
        h = mwr_hdr(WB(5) + offset, length)
        beats = send(m, 0, h, payload(4 * length), pfx=hc_set(1))
        if spill:
            assert m.errors == [ErrorRecord(0, DropReason.MC_SPILL, h, hc_set(1))]
            assert flows(m) == {} and m.counters[0]["drop_mc_spill"] == 1
        else:
            assert flows(m) == {(0, 1): [copy_of(beats, mwr_hdr(WB(1) + offset, length))]}

    @pytest.mark.parametrize("offset,length,spill", [
        (0x7F0, 4, False), (0x7F0, 5, True), (0x800, 1, True)])
    def test_6_receiver_window_spill(self, offset, length, spill):
        """Check 6: the write must also fit every receiver window in D (port 3: 2 KiB)."""
        m = hc_model()
        m.config.windows[3] = (WB(3), WB(3) + 0x7FF, 3, True)
        send(m, 0, mwr_hdr(WB(5) + offset, length), payload(4 * length), pfx=hc_set(1, 3))
        assert reasons(m) == ([DropReason.MC_SPILL] if spill else [])
        assert sorted(flows(m)) == ([] if spill else [(0, 1), (0, 3)])

    def test_6_length_zero_is_1024_dw(self):
        """Check 6: L = 4 x Length with Length 0 = 1024 DW."""
        m = hc_model(max_payload=4096)
        send(m, 0, mwr_hdr(WB(5) + 0xF000, 0), payload(4096), pfx=hc_set(1))
        send(m, 0, mwr_hdr(WB(5) + 0xF004, 0), payload(4096), pfx=hc_set(1))
        assert reasons(m) == [DropReason.MC_SPILL] and list(flows(m)) == [(0, 1)]

    def test_6_ecrc_not_counted(self):
        """Check 6: L has no ECRC: a 4-DW write with TD ending at the limit fits."""
        m = hc_model()
        send(m, 0, mwr_hdr(WB(5) + 0xFFF0, 4, td=True), payload(16), pfx=hc_set(1))
        assert reasons(m) == [] and list(flows(m)) == [(0, 1)]

    def test_6_receiver_window_with_limit_below_base(self):
        """Interpretation (literal): limit - base is negative, so every write spills."""
        m = hc_model()
        m.config.windows[3] = (WB(3), WB(3) - 4, 3, True)
        send(m, 0, mwr_hdr(WB(5), 1), payload(4), pfx=hc_set(3))
        assert reasons(m) == [DropReason.MC_SPILL]

    @pytest.mark.parametrize("offset,length,spill", [
        (0x1FF0, 4, False), (0x1FF0, 5, True), (0x1000, 64, False), (0x3FFC, 1, False),
        (0x3FFC, 2, True)])
    def test_6_mc_spill(self, offset, length, spill):
        """Check 6, MC window: the last byte must be in the group's window."""
        m = mc_model(receive={2: 0b1111})
        send(m, 0, mwr_hdr(MCB + offset, length), payload(4 * length))
        assert reasons(m) == ([DropReason.MC_SPILL] if spill else [])
        assert list(flows(m)) == ([] if spill else [(0, 2)])

    def test_6_precedes_7(self):
        m = hc_model(port_enable=0b1111_1101)
        send(m, 0, mwr_hdr(WB(5) + 0xFFFC, 2), payload(8), pfx=hc_set(1))
        mc = mc_model(port_enable=0b1111_1101, receive={1: 0b1})
        send(mc, 0, mwr_hdr(MCB + 0xFFC, 2), payload(8))
        assert reasons(m) == reasons(mc) == [DropReason.MC_SPILL]

    # -- check 7 ---------------------------------------------------------------------------

    def test_7_disabled_destination_drops_whole(self):
        """Check 7 / 8.5: a set naming a disabled port -> PORT_DISABLED, no partial
        delivery, no UR."""
        m = hc_model(port_enable=0b1011_1111)
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set(1, 6))
        mc = mc_model(port_enable=0b1011_1111, receive={1: 0b1, 6: 0b1})
        send(mc, 0, mwr_hdr(MCB, 1), payload(4))
        for model in (m, mc):
            assert reasons(model) == [DropReason.PORT_DISABLED] and flows(model) == {}
            assert model.counters[0]["drop_port_disabled"] == 1
            assert model.counters[0]["ur_sent"] == 0

    def test_7_disabled_port_outside_d_does_not_matter(self):
        m = hc_model(port_enable=0b1011_1111)
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set(1))
        assert list(flows(m)) == [(0, 1)]

    def test_ingress_disabled_precedes_everything(self):
        """Section 4 check 1 comes before any multicast check."""
        m = hc_model(port_enable=0b1111_1110)
        send(m, 0, mwr_hdr(0x9_0000, 1), payload(4), pfx=hc_group(999))
        assert reasons(m) == [DropReason.PORT_DISABLED]

    # -- then framing (section 4 check 7) --------------------------------------------------

    def test_7_precedes_framing(self):
        m = hc_model(port_enable=0b1011_1111)
        beats = packet_beats(mwr_hdr(WB(0), 1), hc_set(6), payload(4), W)
        set_keep(beats, 0, 0xFF)
        m.ingress_packet(0, beats)
        assert reasons(m) == [DropReason.PORT_DISABLED]

    @pytest.mark.parametrize("mutate,reason", [
        (lambda b: set_keep(b, 0, 0x0F), DropReason.KEEP),
        (lambda b: set_last(b, 0, True), DropReason.TRUNCATED),
    ])
    def test_framing_after_multicast_checks(self, mutate, reason):
        """8.3: then the framing checks of section 4 apply: whole drop, no copy, not
        counted as multicast."""
        m = hc_model()
        m.config.hc_groups[1] = 0b110
        m.config.hc_monitors[0] = (True, 0, 1)
        beats = packet_beats(mwr_hdr(WB(0), 4), hc_group(1), payload(16), W)
        mutate(beats)
        m.ingress_packet(0, beats[:1] if beats[0].last else beats)
        assert reasons(m) == [reason] and flows(m) == {}
        assert m.counters[0]["rx_mcast"] == 0 and m.monitor_counters[0]["packets"] == 0

    def test_empty_precedes_framing(self):
        m = hc_model()
        beats = packet_beats(mwr_hdr(WB(0), 1), hc_set(), payload(4), W)
        set_keep(beats, 0, 0xFF)
        m.ingress_packet(0, beats)
        assert reasons(m) == [DropReason.HC_EMPTY]


# ============================================================================================
# section 8.4: the copies
# ============================================================================================

class TestCopies:
    KW = dict(requester_id=0xBEEF, tag=0x2A5, tc=3, attr=0b101)

    def test_rebase_onto_every_receiver_window(self):
        """8.4: the copy to p is addressed at the base of p's receiver window + the offset
        into the source window (here port 5's, which is not in D)."""
        m = hc_model()
        h = mwr_hdr(WB(5) + 0x1230, 5, **self.KW)
        beats = send(m, 2, h, payload(20), pfx=hc_set(1, 3, 6))
        assert len(beats) == 3
        assert flows(m) == {(2, p): [copy_of(beats, mwr_hdr(WB(p) + 0x1230, 5, **self.KW))]
                            for p in (1, 3, 6)}
        assert all(q[0].pfx == hc_set(1, 3, 6) for q in flows(m).values())

    def test_3dw_to_4dw(self):
        """8.4: A' >= 2^32 -> 4-DW header (Fmt 011, DW2 = A'[63:32], DW3 = A'[31:2])."""
        m = hc_model()
        m.config.windows[3] = (0x7_0000_0000, 0x7_0000_FFFF, 3, True)
        beats = send(m, 2, mwr_hdr(WB(5) + 0x1230, 1, **self.KW), payload(4), pfx=hc_set(1, 3))
        c1, c3 = m.expected[(2, 1)][0], m.expected[(2, 3)][0]
        assert c1 == copy_of(beats, mwr_hdr(WB(1) + 0x1230, 1, **self.KW))
        assert c3 == copy_of(beats, mwr_hdr(0x7_0000_1230, 1, **self.KW))
        assert field_get(hdr_dw(c3.hdr, 0), DW0, "fmt") == 0b011
        assert hdr_dws(c3.hdr)[2:] == [0x7, 0x0000_1230]

    def test_4dw_to_3dw(self):
        """8.4: A' < 2^32 -> 3-DW header (Fmt 010), hdr[127:96] = 0."""
        m = hc_model()
        m.config.windows[5] = (0x9_0000_0000, 0x9_0000_FFFF, 5, True)
        beats = send(m, 2, mwr_hdr(0x9_0000_1230, 1, **self.KW), payload(4), pfx=hc_set(1))
        c1 = m.expected[(2, 1)][0]
        assert c1 == copy_of(beats, mwr_hdr(WB(1) + 0x1230, 1, **self.KW))
        assert field_get(hdr_dw(c1.hdr, 0), DW0, "fmt") == 0b010 and c1.hdr >> 96 == 0

    def test_forced_4dw_below_4g_becomes_3dw(self):
        m = hc_model()
        beats = send(m, 2, mwr_hdr(WB(5) + 0x40, 1, force_4dw=True), payload(4), pfx=hc_set(5))
        assert flows(m) == {(2, 5): [copy_of(beats, mwr_hdr(WB(5) + 0x40, 1))]}

    @pytest.mark.parametrize("src_addr", [WB(5) + 0x40, 0x9_0000_0040])
    def test_address_low_bits_kept(self, src_addr):
        """8.4: the new address DW keeps the original address DW's bits 1:0 (PH)."""
        m = hc_model()
        m.config.windows[5] = (src_addr - 0x40, src_addr + 0xFFBF, 5, True)
        m.config.windows[3] = (0x7_0000_0000, 0x7_0000_FFFF, 3, True)
        beats = send(m, 2, mwr_hdr(src_addr, 1, ph=2), payload(4), pfx=hc_set(1, 3))
        assert flows(m) == {(2, 1): [copy_of(beats, mwr_hdr(WB(1) + 0x40, 1, ph=2))],
                            (2, 3): [copy_of(beats, mwr_hdr(0x7_0000_0040, 1, ph=2))]}

    def test_unused_dw3_of_a_3dw_copy_is_zero(self):
        """8.4: a 3-DW copy has hdr[127:96] = 0, whatever the original carried there."""
        m = hc_model()
        h = mwr_hdr(WB(5) + 0x40, 1) | (0xDEAD_BEEF << 96)
        beats = send(m, 2, h, payload(4), pfx=hc_set(1))
        assert flows(m) == {(2, 1): [copy_of(beats, mwr_hdr(WB(1) + 0x40, 1))]}

    def test_other_header_bits_copied(self):
        """8.4: DW0 (but Fmt) and DW1 are copied: TC, Attr, TD, EP, TH, AT, Tag, Requester
        ID, byte enables; payload (with its ECRC DW) and keep unchanged."""
        kw = dict(requester_id=0x1234, tag=0x3FF, tc=7, attr=0b111, td=True, ep=True, th=True,
                  at=2, first_be=0x3, last_be=0xC)
        m = hc_model()
        m.config.windows[3] = (0x7_0000_0000, 0x7_0000_FFFF, 3, True)
        beats = send(m, 0, mwr_hdr(WB(5) + 0x80, 3, **kw), payload(12), pfx=hc_set(1, 3))
        assert len(beats) == 2 and beats[1].keep == 0xFF        # 12 B + ECRC
        assert flows(m) == {(0, 1): [copy_of(beats, mwr_hdr(WB(1) + 0x80, 3, **kw))],
                            (0, 3): [copy_of(beats, mwr_hdr(0x7_0000_0080, 3, **kw))]}

    def test_mc_overlay(self):
        """8.4: size >= 6: A' = overlay base with its low `size` bits replaced by A's."""
        m = mc_model(receive={1: 0b10, 2: 0b10, 4: 0b10, 5: 0b10})
        m.config.mc_overlay[1] = (0xABCD_0FFF, 12)            # -> 0xABCD_0238
        m.config.mc_overlay[2] = (0x12_3456_7000, 6)          # -> 0x12_3456_7038 (4-DW)
        m.config.mc_overlay[4] = (0x5555_0000, 5)             # size < 6: unchanged
        m.config.mc_overlay[5] = (0x7777_0000, 32)            # -> A itself, 3-DW
        h = mwr_hdr(MCB + 0x1238, 4, **self.KW)
        beats = send(m, 0, h, payload(16))
        assert flows(m) == {
            (0, 1): [copy_of(beats, mwr_hdr(0xABCD_0238, 4, **self.KW))],
            (0, 2): [copy_of(beats, mwr_hdr(0x12_3456_7038, 4, **self.KW))],
            (0, 4): [Packet(beats)],
            (0, 5): [Packet(beats)]}

    @pytest.mark.parametrize("size", [0, 1, 5])
    def test_mc_overlay_below_6_keeps_the_header(self, size):
        """8.4: size < 6 -> the copy is the packet unchanged, header included (a 4-DW header
        below 4 GiB stays 4-DW, junk in an unused DW3 stays)."""
        m = mc_model(receive={1: 0b10})
        m.config.mc_overlay[1] = (0xFFFF_0000_0000, size)
        h4 = mwr_hdr(MCB + 0x1000, 1, force_4dw=True, ph=1)
        h3 = mwr_hdr(MCB + 0x1004, 1) | (0x1234_5678 << 96)
        b4 = send(m, 0, h4, payload(4))
        b3 = send(m, 0, h3, payload(4))
        assert flows(m) == {(0, 1): [Packet(b4), Packet(b3)]}

    def test_mc_overlay_4dw_to_3dw(self):
        m = mc_model(mc_base=0x12_0000_0000, receive={1: 0b1})
        m.config.mc_overlay[1] = (0x8000_0000, 12)
        beats = send(m, 0, mwr_hdr(0x12_0000_0FF0, 1, ph=3), payload(4))
        assert flows(m) == {(0, 1): [copy_of(beats, mwr_hdr(0x8000_0FF0, 1, ph=3))]}

    def test_copies_in_flow_order(self):
        """8.4 / section 6: a copy is ordered with the other packets from its ingress to its
        egress."""
        m = hc_model()
        a = send(m, 0, mwr_hdr(WB(1), 1, tag=1), payload(4))
        b = send(m, 0, mwr_hdr(WB(0), 1, tag=2), payload(4), pfx=hc_set(1, 2))
        c = send(m, 0, mwr_hdr(WB(2), 1, tag=3), payload(4))
        assert flows(m) == {
            (0, 1): [Packet(a), copy_of(b, mwr_hdr(WB(1), 1, tag=2))],
            (0, 2): [copy_of(b, mwr_hdr(WB(2), 1, tag=2)), Packet(c)]}
        assert m.match_egress(2, copy_of(b, mwr_hdr(WB(2), 1, tag=2))) == 0
        with pytest.raises(AssertionError, match="ORDER"):
            m.match_egress(1, copy_of(b, mwr_hdr(WB(1), 1, tag=2)))

    def test_multicast_route_api(self):
        m = hc_model()
        h = mwr_hdr(WB(5) + 0x40, 1)
        assert m.multicast_route(0, h, hc_set(2, 1)) == McRoute(
            DropReason.NONE, ((1, mwr_hdr(WB(1) + 0x40, 1)), (2, mwr_hdr(WB(2) + 0x40, 1))))
        assert m.multicast_route(0, h, hc_set()) == McRoute(DropReason.HC_EMPTY)
        assert m.multicast_route(0, h, 0) is None
        assert m.multicast_route(0, mrd_hdr(WB(5), 1), hc_set(1)) is None


def test_rewrite_address_helper():
    """tlp_build.rewrite_address against hand-built DWs (section 8.4)."""
    d0_3 = 0x4070_A001            # Fmt 010, TC 7, TD, Attr, Length 1
    d1 = 0xBEEF_A50F
    h3 = hdr_pack([d0_3, d1, 0x0000_1002, 0xDEAD_BEEF])       # PH = 2, junk in DW3
    assert rewrite_address(h3, 0x2345_6789) == hdr_pack([d0_3, d1, 0x2345_678A])
    assert rewrite_address(h3, 0x1_2345_6788) == hdr_pack([0x6070_A001, d1, 0x1, 0x2345_678A])
    h4 = hdr_pack([0x6070_A001, d1, 0x1, 0x2345_6789])       # 4-DW, PH = 1
    assert rewrite_address(h4, 0xFFFF_FFFC) == hdr_pack([d0_3, d1, 0xFFFF_FFFD])
    assert rewrite_address(h4, 0xFFFF_0000_0000_0000) == hdr_pack(
        [0x6070_A001, d1, 0xFFFF_0000, 0x1])
    with pytest.raises(ValueError):
        rewrite_address(h3, 1 << 64)


# ============================================================================================
# sections 5 and 8.3: multicast packets cut short
# ============================================================================================

class TestCutShort:
    @pytest.mark.parametrize("mutate,k,reason,counter", [
        (lambda b: set_keep(b, 1, 0x0F), 1, DropReason.KEEP, "err_keep"),
        (lambda b: set_first(b, 2, True), 2, DropReason.MALFORMED, "drop_malformed"),
        (lambda b: (set_last(b, 1, True), b.pop()), 1, DropReason.TRUNCATED, "err_truncated"),
    ])
    def test_every_copy_cut_on_the_same_beat(self, mutate, k, reason, counter):
        """8.3: a multicast packet cut short is cut short at every destination, each copy
        ending with err on the same beat; the source's further beats are discarded."""
        m = hc_model()
        m.config.hc_groups[3] = 0b0101_0010                   # {1, 4, 6}
        m.config.hc_monitors[2] = (True, 0, 3)
        h = mwr_hdr(WB(2) + 0x100, 6, tag=0x42)
        beats = packet_beats(h, hc_group(3), payload(24), W)
        assert len(beats) == 3
        mutate(beats)
        m.ingress_packet(0, beats)
        nxt = send(m, 0, mwr_hdr(WB(1), 1, tag=0x43), payload(4))
        bad = beats[k]
        for p in (1, 4, 6):
            cut = list(m.expected[(0, p)])[0]
            want = [dataclasses.replace(beats[0], hdr=mwr_hdr(WB(p) + 0x100, 6, tag=0x42))]
            want += [Beat(b.data, b.keep, False, False) for b in beats[1:k]]
            want += [Beat(bad.data, bad.keep, False, True, err=True)]
            assert cut == Packet(want)
            c = m.counters[p]
            assert c["tx_err"] == 1 and c["tx_mcast"] == 1
            assert c["tx_beats"] == k + 1 + (p == 1)         # + the next packet, to port 1
        assert list(m.expected[(0, 1)])[1] == Packet(nxt)
        assert m.errors == [ErrorRecord(0, reason, h, hc_group(3))]
        c0 = m.counters[0]
        assert c0[counter] == 1 and c0["rx_mcast"] == 1 and c0["rx_packets"] == 2
        assert m.monitor_counters[2] == {"packets": 1, "copies": 3}
        assert not m.in_packet(0)

    def test_overlong_mc_window(self):
        """Section 5 check 4 on a window multicast: both copies end on the beat that should
        have been the last, with err; the tail is discarded."""
        m = mc_model(receive={3: 0b1, 5: 0b1})
        beats = packet_beats(mwr_hdr(MCB + 0x100, 4), 0, payload(16), W)
        set_last(beats, 1, False)
        tail = [Beat(0x11, 0xFF, False, False), Beat(0x22, 0x3, False, True)]
        m.ingress_packet(0, beats + tail)
        b1 = beats[1]
        want = Packet([beats[0], Beat(b1.data, b1.keep, False, True, err=True)])
        assert flows(m) == {(0, 3): [want], (0, 5): [want]}
        c = m.counters[0]
        assert c["err_overlong"] == 1 and c["rx_beats"] == 4 and c["rx_mcast"] == 1
        assert m.counters[3]["tx_err"] == m.counters[5]["tx_err"] == 1


# ============================================================================================
# section 7 and 8.7: counters and group monitors
# ============================================================================================

class TestCounters:
    def test_names(self):
        """Section 7: the multicast counters exist and every new reason has its counter."""
        for name in ("rx_mcast", "tx_mcast", "drop_hc_bad_group", "drop_hc_bad_set",
                     "drop_hc_empty", "drop_mc_spill"):
            assert name in COUNTER_NAMES
        assert REASON_COUNTER[DropReason.HC_BAD_GROUP] == "drop_hc_bad_group"
        assert REASON_COUNTER[DropReason.HC_BAD_SET] == "drop_hc_bad_set"
        assert REASON_COUNTER[DropReason.HC_EMPTY] == "drop_hc_empty"
        assert REASON_COUNTER[DropReason.MC_SPILL] == "drop_mc_spill"
        assert set(hc_model().counters[0]) == set(COUNTER_NAMES)

    def test_rx_tx_mcast(self):
        """Section 7: rx_mcast once per multicast packet at its ingress, tx_mcast per copy at
        each egress (also in tx_packets/beats/bytes); drops by reason at the ingress."""
        m = mc_model(receive={2: 0b10, 6: 0b10})
        m.config.hc_groups[5] = 0b10_0100                              # {2, 5}
        send(m, 0, mwr_hdr(WB(0), 2), payload(8), pfx=hc_set(1, 2, 3))     # 1 beat, 8 B
        send(m, 0, mwr_hdr(WB(0), 3), payload(12), pfx=hc_group(5))        # 2 beats, 12 B
        send(m, 4, mwr_hdr(MCB + 0x1000, 1), payload(4))                   # 1 beat, 4 B
        send(m, 0, mwr_hdr(WB(3), 2), payload(8))                          # unicast -> 3
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set())            # HC_EMPTY
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_group(N_GROUPS))  # HC_BAD_GROUP
        assert nonzero(m, 0) == {"rx_packets": 5, "rx_beats": 6, "rx_bytes": 36, "rx_mcast": 2,
                                 "drop_hc_empty": 1, "drop_hc_bad_group": 1}
        assert nonzero(m, 1) == {"tx_packets": 1, "tx_beats": 1, "tx_bytes": 8, "tx_mcast": 1}
        assert nonzero(m, 2) == {"tx_packets": 3, "tx_beats": 4, "tx_bytes": 24,
                                 "tx_mcast": 3}
        assert nonzero(m, 3) == {"tx_packets": 2, "tx_beats": 2, "tx_bytes": 16,
                                 "tx_mcast": 1}
        assert nonzero(m, 4) == {"rx_packets": 1, "rx_beats": 1, "rx_bytes": 4, "rx_mcast": 1}
        assert nonzero(m, 5) == {"tx_packets": 1, "tx_beats": 2, "tx_bytes": 12,
                                 "tx_mcast": 1}
        assert nonzero(m, 6) == {"tx_packets": 1, "tx_beats": 1, "tx_bytes": 4, "tx_mcast": 1}
        assert nonzero(m, 7) == {}

    @pytest.mark.parametrize("reason,code,counter,pfx,addr,length", [
        (DropReason.HC_BAD_GROUP, 10, "drop_hc_bad_group", hc_group(N_GROUPS), WB(0), 1),
        (DropReason.HC_BAD_SET, 11, "drop_hc_bad_set", hc_set(9), WB(0), 1),
        (DropReason.HC_EMPTY, 12, "drop_hc_empty", hc_set(), WB(0), 1),
        (DropReason.MC_SPILL, 13, "drop_mc_spill", hc_set(1), WB(0) + 0xFFFC, 2),
    ])
    def test_drop_reason_counter_and_err_status(self, reason, code, counter, pfx, addr,
                                                length):
        """Sections 7 and 8.5: reason code, counter, err_status with header and prefix."""
        m = hc_model()
        h = mwr_hdr(addr, length)
        send(m, 3, h, payload(4 * length), pfx=pfx)
        assert int(reason) == code
        assert m.err_status() == (3, reason, h, pfx) and m.err_count == 1
        assert nonzero(m, 3) == {"rx_packets": 1, "rx_beats": 1, "rx_bytes": 4 * length,
                                 counter: 1}


class TestMonitors:
    def test_group_table_and_window_groups(self):
        """8.7: source 0 watches a group table id, source 1 an MC window group; packets at
        the ingress, copies = |D| per packet; a destination set counts in no monitor."""
        m = mc_model(receive={1: 0b10, 2: 0b10, 3: 0b100})
        m.config.mc_num_group = 7                           # window groups 0..7
        m.config.windows[8] = (MCB, MCB + 0xF_FFFF, 7, True)
        m.config.hc_groups[1] = 0b1110_0000                 # {5, 6, 7}
        m.config.hc_groups[2] = 0b1
        m.config.hc_monitors = [(True, 0, 1), (True, 1, 1), (False, 0, 1), (True, 0, 1)]
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_group(1))           # k0, k3: +3
        send(m, 5, mwr_hdr(WB(0), 1), payload(4), pfx=hc_group(1, xs=True))  # k0, k3: +2
        send(m, 0, mwr_hdr(MCB + 0x1000, 1), payload(4))                     # k1: +2
        send(m, 0, mwr_hdr(MCB + 0x2000, 1), payload(4))                     # window group 2
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_group(2))           # group 2
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_set(5, 6, 7))       # no group
        send(m, 0, mwr_hdr(MCB + 0x5000, 1), payload(4))                     # group 5: empty
        assert m.monitor_counters == [{"packets": 2, "copies": 5}, {"packets": 1, "copies": 2},
                                      {"packets": 0, "copies": 0}, {"packets": 2, "copies": 5}]
        assert len(m.monitor_counters) == N_HC_MONITORS

    def test_dropped_packets_not_counted(self):
        m = hc_model(port_enable=0b0111_1111)
        m.config.hc_groups[1] = 0b1000_0010
        m.config.hc_monitors[0] = (True, 0, 1)
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_group(1))           # port 7 off
        send(m, 0, mwr_hdr(WB(0) + 0xFFFC, 2), payload(8), pfx=hc_group(1))  # spill
        assert m.monitor_counters[0] == {"packets": 0, "copies": 0}

    def test_monitor_select_read_live_and_reset(self):
        m = hc_model()
        m.config.hc_groups[4] = 0b110
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_group(4))
        m.config.hc_monitors[1] = (True, 0, 4)
        send(m, 0, mwr_hdr(WB(0), 1), payload(4), pfx=hc_group(4))
        assert m.monitor_counters[1] == {"packets": 1, "copies": 2}
        m.reset()
        assert m.monitor_counters[1] == {"packets": 0, "copies": 0}


def test_config_validation():
    with pytest.raises(ValueError, match="mc_receive"):
        SwitchConfig(4, W, mc_receive=[0, 0])
    with pytest.raises(ValueError, match="hc_monitors"):
        SwitchConfig(4, W, hc_monitors=[(True, 0, 0)])
    with pytest.raises(ValueError, match="n_groups"):
        SwitchConfig(4, W, n_groups=0)
    cfg = SwitchConfig(4, W)
    assert cfg.mc_receive == [0] * 4 and [tuple(o) for o in cfg.mc_overlay] == [(0, 0)] * 4
    assert [tuple(k) for k in cfg.hc_monitors] == [(False, 0, 0)] * N_HC_MONITORS
    assert (cfg.n_groups, cfg.mc_enable, cfg.mc_index_pos) == (1024, False, 12)


# ============================================================================================
# randomized: multicast conservation
# ============================================================================================

def _random_mc_config(rng, n):
    """A random configuration where port p owns exactly one window, of size ``sizes[p]``,
    at a random table index; groups, the MC window, overlays and monitors random."""
    w = rng.choice((64, 128, 256, 512))
    sizes = [rng.choice((0x1000, 0x4000, 0x1_0000)) for _ in range(n)]
    bases = [((p + 1) << 32) if rng.random() < 0.3 else ((p + 1) << 24) for p in range(n)]
    order = list(range(max(16, n)))
    rng.shuffle(order)
    windows = [(0, 0, 0, False)] * max(16, n)
    for p in range(n):
        windows[order[p]] = (bases[p], bases[p] + sizes[p] - 1, p, True)
    n_groups = rng.choice((4, 64, 1024))
    hc_groups = {g: rng.getrandbits(32) for g in rng.sample(range(n_groups), min(n_groups, 6))}
    cfg = SwitchConfig(
        n, w, windows=windows, n_groups=n_groups, hc_groups=hc_groups, mc_enable=True,
        mc_base=rng.choice((0xC000_0000, 0xF0_0000_0000)), mc_index_pos=rng.randrange(18),
        mc_num_group=rng.randrange(32), mc_exclude_source=rng.random() < 0.5,
        mc_receive=[rng.getrandbits(32) if rng.random() < 0.7 else 0 for _ in range(n)],
        mc_overlay=[(rng.getrandbits(64), rng.choice((0, 5, 6, 12, 20, 40)))
                    for _ in range(n)],
        hc_monitors=[(rng.random() < 0.8, rng.randrange(2), rng.randrange(4))
                     for _ in range(N_HC_MONITORS)])
    return cfg, bases, sizes


class _Plan(NamedTuple):
    """A random MWr and its fate, worked out from section 8 by construction."""
    hdr: int
    pfx: int
    data: bytes
    multicast: bool                  # section 8 routes it (whatever the outcome)
    outcome: object                  # DropReason, or {egress: header of its copy}
    group: tuple | None              # (select.source, select.id) a monitor counts it under


def _random_mc_packet(rng, cfg, bases, sizes, src, seq):
    """A random MWr from ``src``: unicast, or multicast in one of the three forms, legal or
    dropped for one of the multicast reasons (no model involved)."""
    n = cfg.n_ports
    length = rng.randint(1, 16)
    L = 4 * length
    kw = dict(requester_id=seq, tag=seq & 0x3FF, tc=rng.randrange(8), td=rng.random() < 0.2,
              ph=rng.randrange(4))
    data = bytes(rng.randrange(256) for _ in range(L))
    spill = length > 1 and rng.random() < 0.1       # overrun the source (or group) window
    bad = False
    form = rng.choice(("unicast", "set", "group", "mc", "mc"))
    if form == "mc":
        z = 1 << max(12, cfg.mc_index_pos)
        g = rng.randrange(cfg.mc_num_group + 1)
        off = z - 4 * rng.randint(1, length - 1) if spill else 4 * rng.randrange((z - L) // 4 + 1)
        addr = cfg.mc_base + g * z + off
        pfx = rng.choice((0, sf_body(SfKind.NONE, rng.getrandbits(20), xs=True),
                          prefix_dw(0b01111, rng.getrandbits(24))))
        dests = {p for p in range(n) if cfg.mc_receive[p] >> g & 1}
        if cfg.mc_exclude_source:
            dests.discard(src)
        group = (1, g)
    else:
        w = rng.randrange(n)                        # the source window: port w's
        xs = rng.random() < 0.5
        if form == "set":
            mask = rng.getrandbits(min(n, 20))
            bad = n < 20 and rng.random() < 0.1
            if bad:
                mask |= 1 << rng.randrange(n, 20)
            pfx, group = sf_prefix(SfKind.HC_SET, mask=mask, xs=xs), None
            dests = {p for p in range(n) if mask >> p & 1}
        elif form == "group":
            g = rng.choice(list(cfg.hc_groups) + [rng.randrange(cfg.n_groups + 3)])
            bad = g >= cfg.n_groups
            pfx, group = sf_prefix(SfKind.HC_GROUP, group=g, xs=xs), (0, g)
            dests = {p for p in range(n) if cfg.hc_groups.get(g, 0) >> p & 1}
        else:
            pfx, group, dests, xs, spill = 0, None, {w}, False, False
        if xs:
            dests.discard(src)
        room = min(sizes[p] for p in dests | {w})     # the smallest window involved
        off = (sizes[w] - 4 * rng.randint(1, length - 1) if spill
               else 4 * rng.randrange((room - L) // 4 + 1))
        addr = bases[w] + off
    hdr = mwr_hdr(addr, length, **kw)
    multicast = form != "unicast"
    if bad:
        reason = DropReason.HC_BAD_SET if form == "set" else DropReason.HC_BAD_GROUP
        return _Plan(hdr, pfx, data, multicast, reason, group)
    if not dests:
        return _Plan(hdr, pfx, data, multicast, DropReason.HC_EMPTY, group)
    if spill:
        return _Plan(hdr, pfx, data, multicast, DropReason.MC_SPILL, group)
    if form == "unicast":
        return _Plan(hdr, pfx, data, False, {w: hdr}, None)
    copies = {}
    for p in sorted(dests):
        if form == "mc":                            # the overlay, or the header unchanged
            base, size = cfg.mc_overlay[p]
            low = (1 << size) - 1
            copies[p] = hdr if size < 6 else mwr_hdr((base & ~low) | (addr & low), length, **kw)
        else:                                       # rebased onto p's (only) window
            copies[p] = mwr_hdr(bases[p] + off, length, **kw)
    return _Plan(hdr, pfx, data, True, copies, group)


def _cut_short(rng, beats):
    """Corrupt the keep of a random later beat and end the packet there: the switch cuts it
    short on that beat (section 5). Returns the beats as the egress delivers them."""
    k = rng.randrange(1, len(beats))
    set_keep(beats, k, beats[k].keep ^ 1)
    set_last(beats, k, True)
    del beats[k + 1:]
    return beats[:-1] + [dataclasses.replace(beats[-1], err=True)]


def test_random_multicast_conservation():
    """Random configurations and traffic: every forwarded multicast packet produces exactly
    |D| copies (one per destination, with the header section 8.4 gives, in flow order, cut
    short on the same beat as its source), every drop has the predicted reason, and the
    counters (rx/tx, rx_mcast/tx_mcast, drops, monitors) balance."""
    seed = _seed()
    rng = random.Random(seed ^ 0x4C57)
    for _round in range(6):
        n = rng.randint(2, 32)
        cfg, bases, sizes = _random_mc_config(rng, n)
        m = SwitchModel(cfg)
        streams = {p: [] for p in range(n)}
        want_flows = {(s, d): [] for s in range(n) for d in range(n)}
        want_errors = {p: [] for p in range(n)}
        want_monitor = [{"packets": 0, "copies": 0} for _ in range(N_HC_MONITORS)]
        rx_mcast, tx_mcast, d_sizes = [0] * n, [0] * n, []
        seq = 0
        for src in range(n):
            for _ in range(rng.randint(0, 20)):
                seq += 1
                plan = _random_mc_packet(rng, cfg, bases, sizes, src, seq)
                beats = packet_beats(plan.hdr, plan.pfx, plan.data, cfg.data_width)
                if isinstance(plan.outcome, DropReason):
                    want_errors[src].append(plan.outcome)
                    streams[src] += beats
                    continue
                delivered = beats
                if len(beats) > 1 and rng.random() < 0.15:
                    delivered = _cut_short(rng, beats)
                    want_errors[src].append(DropReason.KEEP)
                streams[src] += beats
                for p, h in plan.outcome.items():
                    want_flows[(src, p)].append(copy_of(delivered, h))
                if plan.multicast:
                    rx_mcast[src] += 1
                    d_sizes.append(len(plan.outcome))
                    for p in plan.outcome:
                        tx_mcast[p] += 1
                    for k, (enable, source, gid) in enumerate(cfg.hc_monitors):
                        if enable and plan.group == (source, gid):
                            want_monitor[k]["packets"] += 1
                            want_monitor[k]["copies"] += len(plan.outcome)
        _feed_interleaved(rng, m, streams)

        # every packet's copies, exactly |D| of them, in their flows, in order
        for flow, pkts in want_flows.items():
            assert list(m.expected[flow]) == pkts, (seed, flow)
        for p in range(n):
            assert [e.reason for e in m.errors if e.port == p] == want_errors[p], (seed, p)
            c = m.counters[p]
            assert (c["rx_mcast"], c["tx_mcast"]) == (rx_mcast[p], tx_mcast[p]), (seed, p)
            assert c["tx_packets"] == sum(len(want_flows[(s, p)]) for s in range(n))
            assert c["rx_beats"] == len(streams[p])
            for reason, name in REASON_COUNTER.items():
                assert c[name] == want_errors[p].count(reason), (seed, p, name)
        assert m.monitor_counters == want_monitor, seed
        # balance: copies out = sum of |D|; packets in = unicast + multicast + whole drops
        tot = {k: sum(m.counters[p][k] for p in range(n)) for k in COUNTER_NAMES}
        assert tot["tx_mcast"] == sum(d_sizes) and tot["rx_mcast"] == len(d_sizes), seed
        whole_drops = sum(tot[name] for r, name in REASON_COUNTER.items()
                          if r != DropReason.KEEP)          # KEEP here = cut short, forwarded
        assert tot["rx_packets"] == (tot["tx_packets"] - tot["tx_mcast"]) + tot["rx_mcast"] \
            + whole_drops, seed
        assert tot["tx_err"] == sum(x.err for q in want_flows.values() for x in q), seed
        # drain through the scoreboard in a random cross-flow interleaving
        heads = {k: list(v) for k, v in want_flows.items() if v}
        while heads:
            (s, d) = rng.choice(list(heads))
            assert m.match_egress(d, heads[(s, d)].pop(0)) == s
            if not heads[(s, d)]:
                del heads[(s, d)]
        assert m.pending() == 0


@pytest.mark.parametrize("form", ["set", "group", "window"])
def test_multicast_longer_than_voq_is_length(form):
    """Section 4 check 5: a multicast write of more beats than the VOQ depth -> LENGTH (whole
    drop, before routing); exactly the VOQ depth is delivered; unicast is not limited."""
    depth = 4                                   # 4 beats of 8 bytes: 32 bytes of payload
    m = hc_model(voq_depth=depth, mc_enable=True, mc_base=0x4000_0000,
                 mc_receive=[1] * N, hc_groups={3: 0b0110})
    pfx, addr = {"set": (hc_set(1, 2), WB(0)), "group": (hc_group(3), WB(0)),
                 "window": (0, 0x4000_0000)}[form]
    send(m, 0, mwr_hdr(addr, 9), payload(36), pfx=pfx)         # 5 beats
    assert reasons(m) == [DropReason.LENGTH] and not flows(m)
    send(m, 0, mwr_hdr(addr, 8), payload(32), pfx=pfx)         # 4 beats
    assert reasons(m) == [DropReason.LENGTH] and flows(m)
    assert m.counters[0]["drop_length"] == 1 and m.counters[0]["rx_mcast"] == 1
    send(m, 0, mwr_hdr(WB(1), 64), payload(256))               # unicast, 32 beats
    assert m.counters[1]["tx_packets"] >= 1 and reasons(m) == [DropReason.LENGTH]


class TestParity:
    """docs/protocol.md section 9 on the Hypercast checks of section 8.3."""

    def _write(self, m, src, window, pfx, dw=2):
        addr = WB(window) + 0x100
        return m.ingress_packet(src, packet_beats(
            mwr_hdr(addr, dw, requester_id=src << 8), pfx, bytes(4 * dw), W))

    def test_group_entry(self):
        m = hc_model(hc_groups={3: 0b0110, 4: 0b0110})
        m.config.hc_group_parity_errors.add(3)
        self._write(m, 0, 0, hc_group(3))
        self._write(m, 0, 0, hc_group(4))
        assert reasons(m) == [DropReason.PARITY]
        assert sorted(k for k, q in m.expected.items() if q) == [(0, 1), (0, 2)]
        assert m.counters[0]["drop_parity"] == 1
        self._write(m, 0, 0, hc_group(99))                  # bad id: checked first
        assert reasons(m)[-1] == DropReason.HC_BAD_GROUP

    def test_source_and_receiver_windows(self):
        m = hc_model()
        m.config.window_parity_errors.add(2)
        self._write(m, 0, 3, hc_set(1))          # source window 3 hidden by window 2
        self._write(m, 0, 1, hc_set(2))          # receiver window of port 2 is window 2
        self._write(m, 0, 1, hc_set(4))          # receiver of 4 is window 4: hidden by 2
        self._write(m, 0, 1, hc_set(0, 1))       # windows 0 and 1 come first: delivered
        assert reasons(m) == [DropReason.PARITY] * 3
        assert sorted(k for k, q in m.expected.items() if q) == [(0, 0), (0, 1)]
