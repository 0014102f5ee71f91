"""Golden transaction-level model of the smartfabric switch core.

Written from ``docs/protocol.md`` (sections 1-8) and the field tables of
:mod:`smartfabric.models.formats` only; pure Python, no HDL or simulator imports.

The model is fed every beat *accepted* at each ingress (:meth:`SwitchModel.ingress_beat`, in
order per port; ports may interleave arbitrarily) and predicts, per (ingress, egress) flow, the
ordered list of packets the switch must deliver (:attr:`SwitchModel.expected`), the per-port
counters (:attr:`SwitchModel.counters`) and the error log behind ``err_status``/``err_count``
(:attr:`SwitchModel.errors`). A scoreboard pops delivered packets with
:meth:`SwitchModel.match_egress`, which enforces per-flow order, no corruption and no
duplicates; :meth:`SwitchModel.pending` exposes losses at the end of a test.

Multicast (Hypercast, section 8) is predicted as one copy per destination: a multicast packet
from ingress s appends its copy for egress p to ``expected[(s, p)]`` for every p of its
destination set, in ascending p. :attr:`SwitchModel.monitor_counters` predicts the
``hc_monitor`` group counters.

Timing (cut-through, stalls, arbitration between flows) is deliberately not modelled: a packet
is appended to its flow as soon as its last (possibly forced) beat is known.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from .formats import (
    CPL_DW1, CPL_DW2, DW0, INC_PREFIX, MSG_DW1, N_HC_MONITORS, REQ_DW1, SF_PREFIX,
    SF_PREFIX_HEAD, CplStatus, DropReason, Fmt, IncNoticeKind, MsgRouting, SfKind, Type,
    field_get, field_put, inc_notice, keep_for_beat, payload_beats,
)
from .inc_model import IncModel, RGroup
from .reduction import DTYPE_NAMES
from .tlp_build import mwr_hdr, rewrite_address, split_beats_payload

__all__ = [
    "Beat", "Packet", "Window", "IdRoute", "McOverlay", "HcMonitor", "MonitorSource",
    "SwitchConfig", "SwitchModel", "ErrorRecord", "Decoded", "decode_header", "tlp_name",
    "ur_completion_hdr", "SfDescriptor", "sf_descriptor", "McRoute", "COUNTER_NAMES",
    "REASON_COUNTER",
]

_MASK32 = 0xFFFF_FFFF
_MASK64 = (1 << 64) - 1

#: Counter names of docs/protocol.md section 7 that the model predicts (the timing counters
#: ``rx_stall``/``tx_stall`` are not predicted).
COUNTER_NAMES = (
    "rx_packets", "rx_beats", "rx_bytes", "tx_packets", "tx_beats", "tx_bytes", "tx_err",
    "drop_malformed", "drop_unsupported", "drop_no_route", "drop_port_disabled", "drop_length",
    "drop_hc_bad_group", "drop_hc_bad_set", "drop_hc_empty", "drop_mc_spill",
    "rx_mcast", "tx_mcast",
    "err_truncated", "err_overlong", "err_keep", "msg_local", "ur_sent",
    "drop_inc_bad_group", "drop_inc_not_member", "drop_inc_mismatch", "drop_inc_offset",
    "drop_inc_outside", "drop_parity",
)

#: Ingress counter incremented for each error reason.
REASON_COUNTER = {
    DropReason.MALFORMED: "drop_malformed",
    DropReason.UNSUPPORTED: "drop_unsupported",
    DropReason.NO_ROUTE: "drop_no_route",
    DropReason.PORT_DISABLED: "drop_port_disabled",
    DropReason.LENGTH: "drop_length",
    DropReason.HC_BAD_GROUP: "drop_hc_bad_group",
    DropReason.HC_BAD_SET: "drop_hc_bad_set",
    DropReason.HC_EMPTY: "drop_hc_empty",
    DropReason.MC_SPILL: "drop_mc_spill",
    DropReason.TRUNCATED: "err_truncated",
    DropReason.OVERLONG: "err_overlong",
    DropReason.KEEP: "err_keep",
    DropReason.MSG_LOCAL: "msg_local",
    DropReason.INC_BAD_GROUP: "drop_inc_bad_group",
    DropReason.INC_NOT_MEMBER: "drop_inc_not_member",
    DropReason.INC_MISMATCH: "drop_inc_mismatch",
    DropReason.INC_OFFSET: "drop_inc_offset",
    DropReason.INC_OUTSIDE: "drop_inc_outside",
    DropReason.PARITY: "drop_parity",
}


# --------------------------------------------------------------------------------------------
# beats and packets
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Beat:
    """One stream transfer (docs/protocol.md section 1).

    Attributes
    ----------
    data : int
        W-bit payload; TLP byte 0 of the beat in ``data[7:0]``.
    keep : int
        W/8-bit byte-valid mask, one bit per lane.
    first, last : bool
        Packet framing markers.
    hdr : int
        128-bit header sideband, header DW *k* at ``hdr[32k+31:32k]``; meaningful on first
        beats only.
    pfx : int
        32-bit prefix sideband (0 = no prefix); meaningful on first beats only.
    err : bool
        Egress only: the packet was cut short (section 5). Ignored at the ingress.
    """
    data: int
    keep: int
    first: bool
    last: bool
    hdr: int = 0
    pfx: int = 0
    err: bool = False


def _popcount(x: int) -> int:
    return bin(x).count("1")


@dataclass(eq=False)
class Packet:
    """A packet as a tuple of beats, compared the way the protocol guarantees.

    Equality (``==``) compares, beat by beat, ``data``, ``keep``, ``first``, ``last`` and
    ``err``, and ``hdr``/``pfx`` on the first beat only (egress ``hdr``/``pfx`` on later beats
    are don't-care). Packets of different beat counts are unequal.
    """
    beats: tuple[Beat, ...]

    def __post_init__(self):
        self.beats = tuple(self.beats)
        if not self.beats:
            raise ValueError("a packet has at least one beat")

    @property
    def hdr(self) -> int:
        """Header sideband of the first beat."""
        return self.beats[0].hdr

    @property
    def pfx(self) -> int:
        """Prefix sideband of the first beat."""
        return self.beats[0].pfx

    @property
    def err(self) -> bool:
        """``err`` of the last beat (the packet was cut short)."""
        return self.beats[-1].err

    def __len__(self) -> int:
        return len(self.beats)

    def first_difference(self, other: "Packet") -> str | None:
        """Describe the first protocol-visible difference from ``other``, or None if equal."""
        if len(self.beats) != len(other.beats):
            return f"beat count {len(self.beats)} != {len(other.beats)}"
        for k, (a, b) in enumerate(zip(self.beats, other.beats)):
            names = ("hdr", "pfx") if k == 0 else ()
            for name in names + ("data", "keep", "first", "last", "err"):
                va, vb = getattr(a, name), getattr(b, name)
                if name in ("first", "last", "err"):
                    va, vb = bool(va), bool(vb)
                if va != vb:
                    if isinstance(va, bool):
                        return f"beat {k} {name}: {int(va)} != {int(vb)}"
                    extra = ""
                    if name == "hdr":
                        for d in range(4):
                            da, db = (va >> 32 * d) & _MASK32, (vb >> 32 * d) & _MASK32
                            if da != db:
                                extra = f" (first differing DW{d}: {da:#010x} != {db:#010x})"
                                break
                    return f"beat {k} {name}: {va:#x} != {vb:#x}{extra}"
        return None

    def __eq__(self, other):
        if not isinstance(other, Packet):
            return NotImplemented
        return self.first_difference(other) is None

    __hash__ = None

    def describe(self) -> str:
        """One-line human-readable summary for mismatch messages."""
        d = decode_header(self.hdr)
        parts = [tlp_name(d.fmt, d.type)]
        if d.route == "addr":
            parts.append(f"addr={d.address:#x}")
        if d.fmt in (Fmt.DW3_DATA, Fmt.DW4_DATA) or d.length_field:
            parts.append(f"len={d.length_field or 1024}DW" if d.has_data
                         else f"len_field={d.length_field}")
        d0, d1, d2 = (self.hdr & _MASK32, (self.hdr >> 32) & _MASK32, (self.hdr >> 64) & _MASK32)
        if d.kind == "cpl":
            parts.append(f"req_id={field_get(d2, CPL_DW2, 'requester_id'):#06x}"
                         f" tag={_tag10(d0, field_get(d2, CPL_DW2, 'tag')):#x}"
                         f" cpl_id={field_get(d1, CPL_DW1, 'completer_id'):#06x}"
                         f" status={field_get(d1, CPL_DW1, 'status'):03b}"
                         f" bc={field_get(d1, CPL_DW1, 'byte_count')}")
        elif d.kind in ("np", "p") and d.type < Type.MSG:
            parts.append(f"req_id={field_get(d1, REQ_DW1, 'requester_id'):#06x}"
                         f" tag={_tag10(d0, field_get(d1, REQ_DW1, 'tag')):#x}")
        elif d.type & 0b11000 == Type.MSG:
            parts.append(f"code={field_get(d1, MSG_DW1, 'code'):#04x}"
                         f" req_id={field_get(d1, MSG_DW1, 'requester_id'):#06x}")
            if d.route == "id":
                parts.append(f"target_id={(d2 >> 16):#06x}")
        if field_get(d0, DW0, "td"):
            parts.append("TD")
        if self.pfx:
            parts.append(f"pfx={self.pfx:#010x}")
        keeps = ",".join(f"{b.keep:#x}" for b in self.beats[:4])
        if len(self.beats) > 4:
            keeps += f",...,{self.beats[-1].keep:#x}"
        flags = ""
        if not self.beats[0].first:
            flags += " first=0!"
        if not self.beats[-1].last:
            flags += " last=0!"
        if self.err:
            flags += " ERR"
        parts.append(f"[{len(self.beats)} beat(s) keep={keeps}{flags}]")
        parts.append("hdr=" + ".".join(f"{(self.hdr >> 32 * k) & _MASK32:08x}" for k in range(4)))
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Packet<{self.describe()}>"


def _tag10(dw0: int, tag_lo: int) -> int:
    return (field_get(dw0, DW0, "tag9") << 9) | (field_get(dw0, DW0, "tag8") << 8) | tag_lo


# --------------------------------------------------------------------------------------------
# header decoding (docs/protocol.md section 2)
# --------------------------------------------------------------------------------------------

class Decoded(NamedTuple):
    """What the switch reads from a header.

    ``kind``: ``"np"`` (non-posted request), ``"p"`` (posted), ``"cpl"`` (completion) or
    ``"malformed"``. ``route``: ``"addr"``, ``"id"``, ``"root"``, ``"local"``,
    ``"unsupported"`` or ``"malformed"``. ``payload_bytes`` is B of section 1.
    """
    fmt: int
    type: int
    kind: str
    route: str
    has_data: bool
    length_field: int
    payload_bytes: int
    address: int
    bus: int


# (type, allowed fmts) -> (kind, route); anything not listed is MALFORMED.
_TYPE_TABLE: dict[int, tuple[tuple[int, ...], str | None, str]] = {
    Type.MEM: ((0b000, 0b001, 0b010, 0b011), None, "addr"),  # kind from Fmt: MRd np, MWr p
    Type.MEM_LOCKED: ((0b000, 0b001), "np", "unsupported"),
    Type.IO: ((0b000, 0b010), "np", "unsupported"),
    Type.CFG0: ((0b000, 0b010), "np", "unsupported"),
    Type.CFG1: ((0b000, 0b010), "np", "unsupported"),
    Type.FETCH_ADD: ((0b010, 0b011), "np", "unsupported"),
    Type.SWAP: ((0b010, 0b011), "np", "unsupported"),
    Type.CAS: ((0b010, 0b011), "np", "unsupported"),
    Type.CPL: ((0b000, 0b010), "cpl", "id"),
    Type.CPL_LOCKED: ((0b000, 0b010), "cpl", "unsupported"),
    Type.MSG | MsgRouting.TO_ROOT: ((0b001, 0b011), "p", "root"),
    Type.MSG | MsgRouting.GATHER: ((0b001, 0b011), "p", "root"),
    Type.MSG | MsgRouting.BY_ADDRESS: ((0b001, 0b011), "p", "addr"),
    Type.MSG | MsgRouting.BY_ID: ((0b001, 0b011), "p", "id"),
    Type.MSG | MsgRouting.BROADCAST: ((0b001, 0b011), "p", "unsupported"),
    Type.MSG | MsgRouting.LOCAL: ((0b001, 0b011), "p", "local"),
}


def decode_header(hdr: int) -> Decoded:
    """Decode the fields the switch reads (docs/protocol.md section 2) from a sideband header.

    Parameters
    ----------
    hdr : int
        128-bit sideband header.

    Returns
    -------
    Decoded
        ``address`` is the 64-bit routing address with the low two bits cleared (DW2 for a
        3-DW header; DW2:DW3 for a 4-DW header); ``bus`` is DW2[31:24] (requester bus of a
        completion, target bus of an ID-routed message). Both are computed for every header;
        only the ones the route uses matter.
    """
    d0 = hdr & _MASK32
    d2 = (hdr >> 64) & _MASK32
    d3 = (hdr >> 96) & _MASK32
    fmt = field_get(d0, DW0, "fmt")
    typ = field_get(d0, DW0, "type")
    entry = _TYPE_TABLE.get(typ)
    if entry is None or fmt not in entry[0]:
        kind, route = "malformed", "malformed"
    else:
        kind, route = entry[1], entry[2]
        if kind is None:
            kind = "p" if fmt & 0b10 else "np"
    has_data = bool(fmt & 0b10) and fmt < Fmt.PREFIX
    length = field_get(d0, DW0, "length")
    b = (4 * (length or 1024) if has_data else 0) + (4 if field_get(d0, DW0, "td") else 0)
    if fmt & 1:
        address = ((d2 << 32) | d3) & ~3 & _MASK64
    else:
        address = d2 & ~3 & _MASK32
    return Decoded(fmt, typ, kind, route, has_data, length, b, address, d2 >> 24)


_MSG_ROUTE_NAMES = {
    MsgRouting.TO_ROOT: "ToRoot", MsgRouting.BY_ADDRESS: "ByAddr", MsgRouting.BY_ID: "ById",
    MsgRouting.BROADCAST: "Bcast", MsgRouting.LOCAL: "Local", MsgRouting.GATHER: "Gather",
}


def tlp_name(fmt: int, typ: int) -> str:
    """Conventional TLP name for a Fmt/Type pair (e.g. ``MWr64``), or the raw bits if illegal."""
    raw = f"fmt={fmt:03b}/type={typ:05b}"
    entry = _TYPE_TABLE.get(typ)
    if entry is None or fmt not in entry[0]:
        return f"MALFORMED({raw})"
    data = bool(fmt & 0b10)
    a64 = "64" if fmt & 1 else ""
    if typ == Type.MEM:
        return ("MWr" if data else "MRd") + a64
    if typ == Type.MEM_LOCKED:
        return "MRdLk" + a64
    if typ == Type.IO:
        return "IOWr" if data else "IORd"
    if typ in (Type.CFG0, Type.CFG1):
        return ("CfgWr" if data else "CfgRd") + str(typ - Type.CFG0)
    if typ in (Type.FETCH_ADD, Type.SWAP, Type.CAS):
        return {Type.FETCH_ADD: "FetchAdd", Type.SWAP: "Swap", Type.CAS: "CAS"}[typ] + a64
    if typ == Type.CPL:
        return "CplD" if data else "Cpl"
    if typ == Type.CPL_LOCKED:
        return "CplDLk" if data else "CplLk"
    return ("MsgD" if data else "Msg") + _MSG_ROUTE_NAMES[MsgRouting(typ & 7)]


def ur_completion_hdr(req_hdr: int, completer_id: int) -> int:
    """The Unsupported Request completion header for a request (docs/protocol.md section 4).

    DW0: Fmt 000, Type 01010, TC, Attr[1:0] (bits 13:12), Attr[2] (bit 18), Tag[9] (bit 23)
    and Tag[8] (bit 19) copied, Length 0, every other bit 0. DW1: Completer ID, Status UR,
    BCM 0, Byte Count 4. DW2: Requester ID and Tag[7:0] from the request's DW1, Lower
    Address 0. ``hdr[127:96] = 0``.
    """
    r0 = req_hdr & _MASK32
    r1 = (req_hdr >> 32) & _MASK32
    d0 = field_put(0, DW0, "fmt", Fmt.DW3)
    d0 = field_put(d0, DW0, "type", Type.CPL)
    for name in ("tc", "attr", "attr2", "tag9", "tag8"):
        d0 = field_put(d0, DW0, name, field_get(r0, DW0, name))
    d1 = field_put(0, CPL_DW1, "completer_id", completer_id & 0xFFFF)
    d1 = field_put(d1, CPL_DW1, "status", CplStatus.UR)
    d1 = field_put(d1, CPL_DW1, "bcm", 0)
    d1 = field_put(d1, CPL_DW1, "byte_count", 4)
    d2 = field_put(0, CPL_DW2, "requester_id", field_get(r1, REQ_DW1, "requester_id"))
    d2 = field_put(d2, CPL_DW2, "tag", field_get(r1, REQ_DW1, "tag"))
    d2 = field_put(d2, CPL_DW2, "lower_address", 0)
    return d0 | (d1 << 32) | (d2 << 64)


# --------------------------------------------------------------------------------------------
# the smartfabric descriptor (docs/protocol.md section 8.1)
# --------------------------------------------------------------------------------------------

class SfDescriptor(NamedTuple):
    """The fields of a smartfabric descriptor prefix (``pfx[31:24] == 0x8E``).

    ``mask`` is ``pfx[19:0]`` (the destination set of ``HC_SET``) and ``group`` is
    ``pfx[15:0]`` (the group id of ``HC_GROUP``); both are decoded whatever the kind, only the
    kind's own field means anything. Bit 20 is reserved and ignored.
    """
    kind: SfKind
    xs: bool
    mask: int
    group: int

    @property
    def hypercast(self) -> bool:
        """True for the kinds that name a destination set (``HC_SET``, ``HC_GROUP``)."""
        return self.kind in (SfKind.HC_SET, SfKind.HC_GROUP)


def sf_descriptor(pfx: int) -> SfDescriptor | None:
    """Decode the smartfabric descriptor carried by the prefix sideband ``pfx``.

    Returns None when ``pfx`` is not a VendPrefixL0 (``pfx[31:24] != 0x8E``: no prefix, another
    prefix type, or a prefix with a bad Fmt). A descriptor of kind ``NONE`` is returned as such;
    the switch routes its packet as if it had no prefix.
    """
    if pfx >> 24 != SF_PREFIX_HEAD:
        return None
    return SfDescriptor(kind=SfKind(field_get(pfx, SF_PREFIX, "kind")),
                        xs=bool(field_get(pfx, SF_PREFIX, "xs")),
                        mask=field_get(pfx, SF_PREFIX, "mask"),
                        group=field_get(pfx, SF_PREFIX, "group"))


def _is_mwr(d: Decoded) -> bool:
    """MWr (Type 00000 with Fmt 010 or 011): the only TLP that can be multicast."""
    return d.type == Type.MEM and d.has_data


def _write_bytes(d: Decoded) -> int:
    """L of section 8.3 check 6: the write's data bytes, 4 x Length (0 = 1024), no ECRC."""
    return 4 * (d.length_field or 1024)


def _ports_of(mask: int) -> tuple[int, ...]:
    """The set bits of ``mask``, ascending."""
    return tuple(p for p in range(mask.bit_length()) if mask >> p & 1)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

class Window(NamedTuple):
    """Address window ``i``: ``base <= A <= limit`` (64-bit, inclusive) routes to ``port``."""
    base: int
    limit: int
    port: int
    enable: bool


class IdRoute(NamedTuple):
    """ID route ``i``: ``bus_lo <= bus <= bus_hi`` (inclusive) routes to ``port``."""
    bus_lo: int
    bus_hi: int
    port: int
    enable: bool


class McOverlay(NamedTuple):
    """``mc_overlay[p]``: the address overlay of multicast-window copies to port p (8.4)."""
    base: int
    size: int


class MonitorSource(enum.IntEnum):
    """``hc_monitor[k].select.source``: what ``select.id`` names (section 8.7)."""
    GROUP_TABLE = 0      # a Hypercast group table id (HC_GROUP descriptors)
    MC_WINDOW = 1        # a PCIe multicast window group


class HcMonitor(NamedTuple):
    """``hc_monitor[k].select``: count the multicast packets of one group when ``enable``."""
    enable: bool
    source: MonitorSource
    id: int


def _default_windows() -> list:
    return [Window(0, 0, 0, False) for _ in range(16)]


def _default_id_routes() -> list:
    return [IdRoute(0, 0, 0, False) for _ in range(16)]


@dataclass
class SwitchConfig:
    """Build parameters and register state the switch core's behaviour depends on.

    Attributes
    ----------
    n_ports : int
        Port count N.
    data_width : int
        W, data bits per beat (a multiple of 8).
    max_payload : int
        Maximum payload size in bytes for the LENGTH check (compared with B, section 1).
    windows : list of (base, limit, port, enable)
        Address windows in priority order (index 0 first); default 16 disabled entries.
    id_routes : list of (bus_lo, bus_hi, port, enable)
        ID routes in priority order; default 16 disabled entries.
    root_port : int or None
        ``root_port.port`` when ``root_port.valid`` is set, else None.
    port_enable : int
        Bit p enables port p (ingress and egress). Default (None): all N ports enabled.
    completer_id : int
        ``switch_id.completer_id`` used in generated UR completions.
    n_groups : int
        Entries of the Hypercast group table (build parameter ``N_GROUPS``).
    voq_depth : int or None
        Beats per virtual output queue (build parameter): a multicast write of more beats is
        dropped as LENGTH (section 4, check 5). None: no such limit.
    hc_groups : dict of int to int
        Group table: group id -> ``hc_group[g].mask`` (an absent id reads 0). Bits at or above
        N are not stored: the model reads ``mask & ((1 << N) - 1)``.
    mc_enable, mc_base, mc_index_pos, mc_num_group, mc_exclude_source
        The PCIe multicast window (section 8.2): ``mc_ctrl.enable``, ``mc_base`` (64-bit),
        ``mc_ctrl.index_pos`` (each group's window is ``2**index_pos`` bytes; values below 12
        count as 12), ``mc_ctrl.num_group`` (groups minus 1, 0..31) and
        ``mc_ctrl.exclude_source``.
    mc_receive : list of int
        Per port p, ``mc_receive[p].groups``: bit g set = port p receives window group g.
        Default (None): all 0.
    mc_overlay : list of (base, size)
        Per port p, ``mc_overlay[p]`` (:class:`McOverlay`); ``size < 6`` = no overlay.
        Default (None): all ``(0, 0)``.
    hc_monitors : list of (enable, source, id)
        The ``N_HC_MONITORS`` ``hc_monitor[k].select`` registers (:class:`HcMonitor`).
        Default (None): all disabled.
    n_rgroups, reduce_dtypes, reduce_buffer_beats
        Build parameters of the reduction engine (docs/reduction-engine.md section 1); its
        groups are armed through :attr:`SwitchModel.inc` (:class:`models.inc_model.IncModel`).
    hc_group_parity_errors, window_parity_errors : set of int
        Group table entries and windows stored with a wrong parity bit (docs/protocol.md
        section 9): a bench that injected a parity error adds the entry written with the
        injection, and removes it when it writes the entry again (for a window: any of its
        registers) without one. The model never sees the RTL's parity bits.

    The model reads the configuration live, at each packet's first beat, so a bench may change
    it between packets (e.g. ``cfg.windows[3] = (base, limit, port, True)``,
    ``cfg.hc_groups[7] = 0b1010``, ``cfg.mc_overlay[2] = (base, size)``).
    """
    n_ports: int
    data_width: int
    max_payload: int = 256
    windows: list = field(default_factory=_default_windows)
    id_routes: list = field(default_factory=_default_id_routes)
    root_port: int | None = None
    port_enable: int | None = None
    completer_id: int = 0
    n_groups: int = 1024
    voq_depth: int | None = None
    hc_groups: dict = field(default_factory=dict)
    mc_enable: bool = False
    mc_base: int = 0
    mc_index_pos: int = 12
    mc_num_group: int = 0
    mc_exclude_source: bool = False
    mc_receive: list | None = None
    mc_overlay: list | None = None
    hc_monitors: list | None = None
    n_rgroups: int = 64
    reduce_dtypes: tuple = DTYPE_NAMES
    reduce_buffer_beats: int = 512
    hc_group_parity_errors: set = field(default_factory=set)
    window_parity_errors: set = field(default_factory=set)

    def __post_init__(self):
        if self.n_ports < 1:
            raise ValueError(f"n_ports must be >= 1, got {self.n_ports}")
        if self.data_width < 8 or self.data_width % 8:
            raise ValueError(f"data_width must be a positive multiple of 8, got {self.data_width}")
        if self.n_groups < 1:
            raise ValueError(f"n_groups must be >= 1, got {self.n_groups}")
        if self.port_enable is None:
            self.port_enable = (1 << self.n_ports) - 1
        self.windows = [Window(*w) for w in self.windows]
        self.id_routes = [IdRoute(*r) for r in self.id_routes]
        if self.mc_receive is None:
            self.mc_receive = [0] * self.n_ports
        if self.mc_overlay is None:
            self.mc_overlay = [McOverlay(0, 0)] * self.n_ports
        self.mc_overlay = [McOverlay(*o) for o in self.mc_overlay]
        if self.hc_monitors is None:
            self.hc_monitors = [HcMonitor(False, MonitorSource.GROUP_TABLE, 0)] * N_HC_MONITORS
        self.hc_monitors = [HcMonitor(bool(e), MonitorSource(s), i)
                            for e, s, i in self.hc_monitors]
        for name, table in (("mc_receive", self.mc_receive), ("mc_overlay", self.mc_overlay)):
            if len(table) != self.n_ports:
                raise ValueError(f"{name} needs one entry per port ({self.n_ports}), "
                                 f"got {len(table)}")
        if len(self.hc_monitors) != N_HC_MONITORS:
            raise ValueError(f"hc_monitors needs {N_HC_MONITORS} entries, "
                             f"got {len(self.hc_monitors)}")

    @property
    def lanes(self) -> int:
        """Byte lanes per beat, W/8."""
        return self.data_width // 8

    def port_enabled(self, port: int) -> bool:
        """Whether ``port`` is enabled in ``port_enable``."""
        return 0 <= port < self.n_ports and bool((self.port_enable >> port) & 1)

    @property
    def port_mask(self) -> int:
        """``(1 << N) - 1``: the bits of a port set that name existing ports."""
        return (1 << self.n_ports) - 1

    def match_window(self, address: int) -> Window | None:
        """The window a 64-bit address routes to (section 3): the lowest-numbered enabled
        window with ``base <= address <= limit`` whose port is below ``n_ports``; None if none
        matches. Also the *source window* of a Hypercast write (section 8.3 check 3).

        An entry whose port is ``>= n_ports`` matches nothing (it is skipped, so a
        higher-numbered valid window may still match).
        """
        for w in self.windows:
            base, limit, port, enable = w
            if enable and 0 <= port < self.n_ports and base <= address <= limit:
                return Window(*w)
        return None

    def route_address(self, address: int) -> int | None:
        """Egress for a 64-bit address: the port of :meth:`match_window`; None if no window
        matches."""
        w = self.match_window(address)
        return None if w is None else w.port

    def window_parity_error(self, address: int) -> bool:
        """Whether the routing of ``address`` is hidden by a window parity error (section 9):
        the first window, in priority order, that either matches ``address`` (as
        :meth:`match_window` says) or has a parity error, has a parity error."""
        for k, (base, limit, port, enable) in enumerate(self.windows):
            if k in self.window_parity_errors:
                return True
            if enable and 0 <= port < self.n_ports and base <= address <= limit:
                return False
        return False

    def receiver_parity_error(self, port: int) -> bool:
        """Whether the receiver window of ``port`` is hidden by a window parity error: the
        first window, in priority order, that is either ``port``'s receiver window or has a
        parity error, has a parity error (section 9)."""
        for k, (base, limit, wport, enable) in enumerate(self.windows):
            if k in self.window_parity_errors:
                return True
            if enable and wport == port:
                return False
        return False

    def receiver_window(self, port: int) -> Window | None:
        """The *receiver window* of ``port`` (section 8.3 check 5): the lowest-numbered enabled
        window whose port is ``port``, whatever its addresses; None if there is none."""
        for w in self.windows:
            if w[3] and w[2] == port:
                return Window(*w)
        return None

    def group_mask(self, group: int) -> int:
        """``hc_group[group].mask`` as the switch stores it: bits at or above N read 0."""
        return self.hc_groups.get(group, 0) & self.port_mask

    @property
    def mc_window_shift(self) -> int:
        """log2 of one multicast group's window: ``mc_index_pos``, at least 12."""
        return max(12, self.mc_index_pos)

    def mc_group(self, address: int) -> int | None:
        """The multicast window group g of a 64-bit address (section 8.2), or None when the
        window is disabled or ``address`` is outside ``[mc_base, mc_base + (num_group + 1) *
        2**index_pos)``."""
        if not self.mc_enable or address < self.mc_base:
            return None
        g = (address - self.mc_base) >> self.mc_window_shift
        return g if g <= self.mc_num_group else None

    def mc_receivers(self, group: int) -> int:
        """The port set receiving multicast window group ``group``: bit p set when bit
        ``group`` of ``mc_receive[p]`` is."""
        return sum(1 << p for p in range(self.n_ports) if self.mc_receive[p] >> group & 1)

    def mc_overlay_address(self, port: int, address: int) -> int | None:
        """The address of the multicast-window copy to ``port`` (section 8.4): with
        ``mc_overlay[port].size >= 6``, ``mc_overlay[port].base`` with its low ``size`` bits
        replaced by those of ``address``; None (the copy keeps its header) with ``size < 6``."""
        base, size = self.mc_overlay[port]
        if size < 6:
            return None
        low = (1 << size) - 1
        return ((base & ~low) | (address & low)) & _MASK64

    def route_bus(self, bus: int) -> int | None:
        """Egress for a bus number: lowest-numbered enabled ID route with
        ``bus_lo <= bus <= bus_hi`` whose port is below ``n_ports``; None if none matches."""
        for lo, hi, port, enable in self.id_routes:
            if enable and 0 <= port < self.n_ports and lo <= bus <= hi:
                return port
        return None

    def route_root(self) -> int | None:
        """The root port if valid and below ``n_ports``, else None."""
        rp = self.root_port
        if rp is None or not 0 <= rp < self.n_ports:
            return None
        return rp


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------

class ErrorRecord(NamedTuple):
    """One error as ``err_status`` would latch it: ingress port, reason, header, prefix."""
    port: int
    reason: DropReason
    hdr: int
    pfx: int


class McRoute(NamedTuple):
    """The routing decision for a multicast MWr (docs/protocol.md sections 8.3 and 8.4).

    Attributes
    ----------
    reason : DropReason
        ``NONE`` when the packet passes the checks of section 8.3, else the first one that
        fails (the packet is then dropped whole).
    copies : tuple of (int, int)
        ``(p, hdr)`` for every p of the destination set D, ascending p: the egress and the
        header of its copy. Empty when dropped.
    group : tuple of (MonitorSource, int) or None
        The group the packet counts under in the ``hc_monitor`` counters; None for a
        destination set (``HC_SET``), which names no group.
    """
    reason: DropReason
    copies: tuple = ()
    group: tuple | None = None


_SOP, _FWD, _DISCARD = "sop", "fwd", "discard"


class _IngressState:
    """Framing state of one ingress port."""
    __slots__ = ("mode", "k", "n_beats", "payload_bytes", "copies", "mcast", "beats", "hdr",
                 "pfx", "contribution")

    def __init__(self):
        self.mode = _SOP      # expecting a start of packet (after reset or a last)
        self.k = 0            # index of the next beat within the current packet
        self.n_beats = 0      # E
        self.payload_bytes = 0  # B
        self.copies = ()      # (egress, header) of every copy of the packet being forwarded
        self.mcast = False    # the packet being forwarded is multicast
        self.contribution = False   # an accepted reduction contribution (committed at its end)
        self.beats: list[Beat] = []
        self.hdr = 0
        self.pfx = 0


class SwitchModel:
    """Beat-level golden model of the switch core (docs/protocol.md sections 1-8).

    Parameters
    ----------
    config : SwitchConfig
        Parameters and register state; read live at each packet's first beat.

    Attributes
    ----------
    expected : dict[(int, int), collections.deque[Packet]]
        For every (src_port, dst_port) pair, the packets egress ``dst_port`` must deliver from
        ingress ``src_port``, in delivery order. UR completions for requests from port p are in
        ``expected[(p, p)]``, in order with p's other traffic to itself. A multicast packet
        appends one copy to ``expected[(src, p)]`` for every p of its destination set.
    counters : dict[int, dict[str, int]]
        Per port, the counters of :data:`COUNTER_NAMES`. ``tx_*`` (``tx_mcast`` included) are
        predicted from the packets appended to ``expected``; ``rx_mcast`` counts a multicast
        packet once, when its first beat passes every check.
    monitor_counters : list[dict[str, int]]
        Per ``hc_monitor[k]``, ``{"packets": ..., "copies": ...}``: multicast packets of the
        watched group forwarded, and their copies (|D| each), counted when the packet's first
        beat passes every check.
    inc : models.inc_model.IncModel
        The reduction engine: arm groups with :meth:`arm_rgroup`. Its notices are expected
        packets of source N (``expected[(N, p)]``); its results are matched as byte streams
        (:meth:`IncModel.match_result`), because the engine cuts them into packets as timing
        allows.
    errors : list[ErrorRecord]
        Every error (all reasons but MSG_LOCAL) in the order the model saw them, as
        ``(port, DropReason, hdr, pfx)``; the header/prefix are those of the offending packet's
        first beat.
    """

    def __init__(self, config: SwitchConfig):
        self.config = config
        self.reset()

    # -- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Return to the post-reset state: all ports at start of packet, nothing expected,
        counters and error log cleared."""
        n = self.config.n_ports
        self._state = [_IngressState() for _ in range(n)]
        # Source n is the reduction engine (its notices; docs/reduction-engine.md section 6).
        self.expected: dict[tuple[int, int], collections.deque] = {
            (s, d): collections.deque() for s in range(n + 1) for d in range(n)}
        self.counters: dict[int, dict[str, int]] = {
            p: dict.fromkeys(COUNTER_NAMES, 0) for p in range(n)}
        self.monitor_counters: list[dict[str, int]] = [
            {"packets": 0, "copies": 0} for _ in range(N_HC_MONITORS)]
        self.errors: list[ErrorRecord] = []
        self._err_status_from = 0
        self.engine_parity_drops = 0     # engine packets dropped at a hidden receiver window
        cfg = self.config
        self.inc = IncModel(n, cfg.data_width, cfg.max_payload, cfg.n_rgroups,
                            cfg.reduce_dtypes, cfg.reduce_buffer_beats)

    @property
    def err_count(self) -> int:
        """Number of errors seen (the register saturates at its width; this does not)."""
        return len(self.errors)

    def err_status(self) -> ErrorRecord | None:
        """The first error since the last :meth:`clear_err_status` (or reset), or None.

        When errors of several ports are found in the same clock cycle the RTL keeps the
        lowest-numbered port's; the model has no notion of cycles, so a bench that provokes
        simultaneous errors must allow for that.
        """
        if self._err_status_from < len(self.errors):
            return self.errors[self._err_status_from]
        return None

    def clear_err_status(self) -> None:
        """Model of writing 1 to ``err_status.valid``: the next error is latched afresh."""
        self._err_status_from = len(self.errors)

    def in_packet(self, port: int) -> bool:
        """True when ``port`` is inside a packet (its next beat is not a start of packet)."""
        return self._state[port].mode != _SOP

    def pending(self) -> int:
        """Number of expected packets not yet consumed by :meth:`match_egress`, plus the
        number of reduction result bytes due and not delivered."""
        return sum(len(q) for q in self.expected.values()) + self.inc.pending()

    def arm_rgroup(self, group: int, cfg: RGroup, parity_error: bool = False):
        """Model of writing ``rgroup[group].ctrl`` with enable = 1 (after the other registers
        of ``cfg``): returns the ``RGroupConfigError`` (NONE when the group is active).
        ``parity_error``: the arming consumed an injected parity error (``dbg_parity_inject``
        with target rgroup, docs/protocol.md section 9)."""
        return self.inc.arm(group, cfg, parity_error=parity_error)

    @property
    def parity_errors(self) -> int:
        """The ``parity_errors`` counter: packets dropped or rejected as PARITY, and engine
        packets dropped because their receiver window is hidden by a parity error."""
        return sum(1 for e in self.errors if e.reason == DropReason.PARITY) + \
            self.engine_parity_drops

    def drop_hidden_results(self) -> int:
        """Call with the switch drained (every result the engine can send has been sent):
        results due to a port whose receiver window is hidden by a window parity error were
        dropped at its egress, never misaddressed (docs/protocol.md section 9). Skips them
        and counts them in :attr:`parity_errors`; returns the packets dropped."""
        dropped = sum(self.inc.drop_results(p) for p in range(self.config.n_ports)
                      if self.config.receiver_parity_error(p))
        self.engine_parity_drops += dropped
        return dropped

    def abort_rgroup(self, group: int) -> None:
        """The engine's timeout aborted ``group``'s operation: expect its abort notices."""
        for port, offset, notice in self.inc.abort(group):
            self._notice(port, offset, notice)

    def describe_pending(self, limit: int = 10) -> str:
        """Readable list of (up to ``limit``) leftover expected packets."""
        lines = []
        if self.inc.pending():
            lines.append(f"{self.inc.pending()} reduction result bytes not delivered")
        for (s, d), q in self.expected.items():
            for i, p in enumerate(q):
                if len(lines) >= limit:
                    lines.append(f"... ({self.pending()} pending in total)")
                    return "\n".join(lines)
                lines.append(f"{s}->{d} #{i}: {p.describe()}")
        return "\n".join(lines)

    # -- ingress -------------------------------------------------------------------------------

    def ingress_packet(self, port: int, beats: Iterable[Beat]) -> None:
        """Feed consecutive accepted beats of one ingress (convenience loop)."""
        for b in beats:
            self.ingress_beat(port, b)

    def ingress_beat(self, port: int, beat: Beat) -> None:
        """Process one beat accepted at ingress ``port``.

        Must be called for every accepted beat, in order per port. Applies the first-beat
        checks of section 4 (with the multicast routing of section 8.3) to the beat after a
        ``last`` (or reset), the later-beat checks of section 5 to the following beats, and
        discards the remaining beats of a dropped or cut-short packet through the source's
        ``last``. A multicast packet is appended (or cut short) once per destination.
        ``beat.err`` is ignored.
        """
        cfg = self.config
        if not 0 <= port < cfg.n_ports:
            raise ValueError(f"ingress port {port} out of range 0..{cfg.n_ports - 1}")
        if not 0 <= beat.data < 1 << cfg.data_width:
            raise ValueError(f"beat data does not fit {cfg.data_width} bits")
        if not 0 <= beat.keep < 1 << cfg.lanes:
            raise ValueError(f"beat keep {beat.keep:#x} does not fit {cfg.lanes} bits")
        if not 0 <= beat.hdr < 1 << 128 or not 0 <= beat.pfx < 1 << 32:
            raise ValueError("beat hdr/pfx out of range (128/32 bits)")
        c = self.counters[port]
        c["rx_beats"] += 1
        c["rx_bytes"] += _popcount(beat.keep)
        st = self._state[port]
        if st.mode == _SOP:
            c["rx_packets"] += 1
            self._first_beat(port, st, beat)
        elif st.mode == _DISCARD:
            if beat.last:
                st.mode = _SOP
        else:
            self._later_beat(port, st, beat)

    def _first_beat(self, port: int, st: _IngressState, beat: Beat) -> None:
        cfg = self.config
        st.hdr, st.pfx = beat.hdr, beat.pfx
        # 1. ingress port disabled
        if not cfg.port_enabled(port):
            return self._drop(port, st, beat, DropReason.PORT_DISABLED)
        # 2. first flag on the start of packet
        if not beat.first:
            return self._drop(port, st, beat, DropReason.MALFORMED)
        # 3. prefix Fmt
        if beat.pfx and (beat.pfx >> 29) != Fmt.PREFIX:
            return self._drop(port, st, beat, DropReason.MALFORMED)
        # 4. Fmt/Type table, then a smartfabric descriptor the TLP cannot carry
        d = decode_header(beat.hdr)
        if d.route == "malformed":
            return self._drop(port, st, beat, DropReason.MALFORMED)
        if d.route == "unsupported":
            return self._drop(port, st, beat, DropReason.UNSUPPORTED, ur=d.kind == "np")
        desc = sf_descriptor(beat.pfx)
        if desc is not None and (desc.kind == SfKind.INC or desc.hypercast) and not _is_mwr(d):
            return self._drop(port, st, beat, DropReason.UNSUPPORTED, ur=d.kind == "np")
        contribution = desc is not None and desc.kind == SfKind.INC
        # 5. length; a multicast write must also fit a virtual output queue
        if d.has_data and d.payload_bytes > cfg.max_payload:
            return self._drop(port, st, beat, DropReason.LENGTH)
        if (cfg.voq_depth is not None and self._is_multicast(d, desc)
                and payload_beats(d.payload_bytes, cfg.data_width) > cfg.voq_depth):
            return self._drop(port, st, beat, DropReason.LENGTH)
        # 6. routing: multicast (section 8.3), else unicast
        if contribution:
            return self._contribution(port, st, beat, d)
        if d.route == "local":
            self.counters[port]["msg_local"] += 1
            st.mode = _SOP if beat.last else _DISCARD
            return None
        mc = self._multicast_route(port, beat.hdr, d, desc)
        if mc is not None:
            if mc.reason != DropReason.NONE:
                return self._drop(port, st, beat, mc.reason)   # MWr: posted, never a UR
            copies = mc.copies
        else:
            if d.route == "addr" and cfg.window_parity_error(d.address):
                return self._drop(port, st, beat, DropReason.PARITY, ur=d.kind == "np")
            if d.route == "addr":
                dst = cfg.route_address(d.address)
            elif d.route == "id":
                dst = cfg.route_bus(d.bus)
            else:  # root
                dst = cfg.route_root()
            if dst is None:
                return self._drop(port, st, beat, DropReason.NO_ROUTE, ur=d.kind == "np")
            if not cfg.port_enabled(dst):
                return self._drop(port, st, beat, DropReason.PORT_DISABLED, ur=d.kind == "np")
            copies = ((dst, beat.hdr),)
        # 7. framing of the first beat
        e = payload_beats(d.payload_bytes, cfg.data_width)
        if beat.keep != keep_for_beat(d.payload_bytes, cfg.data_width, 0):
            return self._drop(port, st, beat, DropReason.KEEP)
        if beat.last and e > 1:
            return self._drop(port, st, beat, DropReason.TRUNCATED)
        if not beat.last and e == 1:
            return self._drop(port, st, beat, DropReason.OVERLONG)
        # forward
        st.copies, st.mcast = copies, mc is not None
        st.n_beats, st.payload_bytes = e, d.payload_bytes
        st.beats = [Beat(beat.data, beat.keep, True, bool(beat.last), beat.hdr, beat.pfx, False)]
        if mc is not None:
            self._count_multicast(port, mc)
        if beat.last:
            self._deliver(port, st)
        else:
            st.mode, st.k = _FWD, 1
        return None

    def _contribution(self, port: int, st: _IngressState, beat: Beat, d: Decoded) -> None:
        """A memory write with an INC descriptor goes to the reduction engine
        (docs/reduction-engine.md sections 4-6). Once its first beat passes the ingress's
        framing checks, the engine accepts it (its data counts when its last beat is in,
        unless the ingress cuts it short) or rejects it with a notice to the sender; the
        ingress checks the later beats either way."""
        e = payload_beats(d.payload_bytes, self.config.data_width)
        if beat.keep != keep_for_beat(d.payload_bytes, self.config.data_width, 0):
            return self._drop(port, st, beat, DropReason.KEEP)
        if beat.last and e > 1:
            return self._drop(port, st, beat, DropReason.TRUNCATED)
        if not beat.last and e == 1:
            return self._drop(port, st, beat, DropReason.OVERLONG)
        reason, notify_offset = self.inc.check(port, beat.hdr, beat.pfx)
        if reason is not None:
            self._record_error(port, reason, beat.hdr, beat.pfx)
            self._notice(port, notify_offset, self.inc.rejection_notice(reason, beat.pfx))
        st.contribution = reason is None
        st.copies, st.mcast = (), False
        st.n_beats, st.payload_bytes = e, d.payload_bytes
        st.beats = [beat]
        if beat.last:
            self._deliver(port, st)
        else:
            st.mode, st.k = _FWD, 1
        return None

    def _notice(self, port: int, offset: int, notice: int) -> None:
        """Expect a one-DW engine notice at ``port``'s window offset ``offset`` (none, and a
        parity error counted, when that window is hidden by a parity error: section 9)."""
        if self.config.receiver_parity_error(port):
            self.engine_parity_drops += 1
            return
        self._append(self.config.n_ports, port, Packet((Beat(
            notice, 0xF, True, True, self._engine_hdr(port, offset, 1), 0, False),)))

    def _engine_hdr(self, port: int, offset: int, length: int) -> int:
        """Header of a packet the reduction engine sends to ``port``: an MWr at ``offset``
        into the receiver's window (offsets from 0 when it has none)."""
        window = self.config.receiver_window(port)
        base = window.base if window is not None else 0
        return mwr_hdr((base + offset) & _MASK64, length,
                       requester_id=self.config.completer_id)

    def _later_beat(self, port: int, st: _IngressState, beat: Beat) -> None:
        cfg, k = self.config, st.k
        reason = None
        if beat.first:
            reason = DropReason.MALFORMED
        elif beat.keep != keep_for_beat(st.payload_bytes, cfg.data_width, k):
            reason = DropReason.KEEP
        elif beat.last and k < st.n_beats - 1:
            reason = DropReason.TRUNCATED
        elif not beat.last and k == st.n_beats - 1:
            reason = DropReason.OVERLONG
        if reason is None:
            st.beats.append(Beat(beat.data, beat.keep, False, bool(beat.last), beat.hdr, beat.pfx,
                                 False))
            if beat.last:
                self._deliver(port, st)
            else:
                st.k += 1
            return
        # cut short: the failing beat ends the packet at the egress with err, rest discarded
        st.beats.append(Beat(beat.data, beat.keep, False, True, beat.hdr, beat.pfx, True))
        self._record_error(port, reason, st.hdr, st.pfx)
        self._deliver(port, st)
        st.mode = _SOP if beat.last else _DISCARD

    def _deliver(self, port: int, st: _IngressState) -> None:
        """Append the finished (or cut-short) packet: one copy per destination, each with its
        own header on the first beat and the same beats otherwise."""
        first, rest = st.beats[0], tuple(st.beats[1:])
        if st.contribution:
            st.contribution = False
            if not st.beats[-1].err:
                self.inc.commit(port, st.hdr, st.pfx,
                                split_beats_payload(st.beats, self.config.data_width))
        for dst, hdr in st.copies:
            beats = (dataclasses.replace(first, hdr=hdr),) + rest
            self._append(port, dst, Packet(beats), mcast=st.mcast)
        st.beats = []
        st.mode = _SOP

    def _append(self, src: int, dst: int, pkt: Packet, mcast: bool = False) -> None:
        self.expected[(src, dst)].append(pkt)
        c = self.counters[dst]
        c["tx_packets"] += 1
        c["tx_beats"] += len(pkt.beats)
        c["tx_bytes"] += sum(_popcount(b.keep) for b in pkt.beats)
        if pkt.beats[-1].err:
            c["tx_err"] += 1
        if mcast:
            c["tx_mcast"] += 1

    def _count_multicast(self, port: int, mc: McRoute) -> None:
        """``rx_mcast`` and the group monitors, for a multicast packet being forwarded."""
        self.counters[port]["rx_mcast"] += 1
        if mc.group is None:
            return
        for k, (enable, source, gid) in enumerate(self.config.hc_monitors):
            if enable and (source, gid) == mc.group:
                self.monitor_counters[k]["packets"] += 1
                self.monitor_counters[k]["copies"] += len(mc.copies)

    # -- multicast routing (section 8) ---------------------------------------------------------

    def multicast_route(self, port: int, hdr: int, pfx: int) -> McRoute | None:
        """Route a packet from ingress ``port`` as multicast (section 8), or return None when it
        is not multicast.

        A packet is multicast when it is an MWr and either carries a Hypercast descriptor
        (``HC_SET``/``HC_GROUP``, section 8.1) or carries none (no prefix, another prefix or
        kind ``NONE``) and its address is inside the enabled PCIe multicast window (8.2).
        Applies the checks of section 8.3 in order and builds the copies of section 8.4.

        Only meaningful for a packet that has passed checks 1 to 5 of section 4 (the caller's
        job); reads the configuration as it is now.
        """
        return self._multicast_route(port, hdr, decode_header(hdr), sf_descriptor(pfx))

    def _is_multicast(self, d: Decoded, desc: SfDescriptor | None) -> bool:
        """Whether the packet is a multicast write (section 8.1/8.2), good or bad."""
        if not _is_mwr(d):
            return False
        return (desc is not None and desc.hypercast) or self.config.mc_group(d.address) is not None

    def _multicast_route(self, port: int, hdr: int, d: Decoded,
                         desc: SfDescriptor | None) -> McRoute | None:
        if not _is_mwr(d):
            return None
        if desc is not None and desc.hypercast:
            return self._hypercast_route(port, hdr, d, desc)
        group = self.config.mc_group(d.address)
        if group is None:
            return None
        return self._mc_window_route(port, hdr, d, group)

    def _hypercast_route(self, port: int, hdr: int, d: Decoded, desc: SfDescriptor) -> McRoute:
        """Section 8.3 for the prefix forms (``HC_SET``, ``HC_GROUP``): copies rebased from the
        source window onto every receiver window."""
        cfg = self.config
        # 1. / 2. the descriptor's own field
        if desc.kind == SfKind.HC_GROUP:
            if desc.group >= cfg.n_groups:
                return McRoute(DropReason.HC_BAD_GROUP)
            if desc.group in cfg.hc_group_parity_errors:                # section 9
                return McRoute(DropReason.PARITY)
            members, group = cfg.group_mask(desc.group), (MonitorSource.GROUP_TABLE, desc.group)
        else:
            if desc.mask & ~cfg.port_mask:
                return McRoute(DropReason.HC_BAD_SET)
            members, group = desc.mask, None
        # 3. the source window (not known if a window parity error hides it, section 9)
        if cfg.window_parity_error(d.address):
            return McRoute(DropReason.PARITY)
        source = cfg.match_window(d.address)
        if source is None:
            return McRoute(DropReason.NO_ROUTE)
        # 4. D
        dests = self._destinations(port, members, desc.xs)
        if not dests:
            return McRoute(DropReason.HC_EMPTY)
        # 5. a receiver window for every destination (known: section 9)
        if any(cfg.receiver_parity_error(p) for p in dests):
            return McRoute(DropReason.PARITY)
        receivers = [cfg.receiver_window(p) for p in dests]
        if None in receivers:
            return McRoute(DropReason.NO_ROUTE)
        # 6. spill: the write must fit the source window and every receiver window
        offset = d.address - source.base
        end = offset + _write_bytes(d) - 1
        if any(end > w.limit - w.base for w in [source, *receivers]):
            return McRoute(DropReason.MC_SPILL)
        return self._multicast_copies(hdr, dests, [w.base + offset for w in receivers], group)

    def _mc_window_route(self, port: int, hdr: int, d: Decoded, group: int) -> McRoute:
        """Section 8.3 for a write into PCIe multicast window group ``group``."""
        cfg = self.config
        # 4. D
        dests = self._destinations(port, cfg.mc_receivers(group), cfg.mc_exclude_source)
        if not dests:
            return McRoute(DropReason.HC_EMPTY)
        # 6. spill: the last byte must be in the same group's window
        last = d.address + _write_bytes(d) - 1
        if (last - cfg.mc_base) >> cfg.mc_window_shift != group:
            return McRoute(DropReason.MC_SPILL)
        addresses = [cfg.mc_overlay_address(p, d.address) for p in dests]
        return self._multicast_copies(hdr, dests, addresses, (MonitorSource.MC_WINDOW, group))

    @staticmethod
    def _destinations(port: int, members: int, exclude_source: bool) -> tuple[int, ...]:
        """D of section 8.3 check 4: the ports of ``members``, without the ingress port when
        ``exclude_source``."""
        if exclude_source:
            members &= ~(1 << port)
        return _ports_of(members)

    def _multicast_copies(self, hdr: int, dests: tuple[int, ...], addresses: list,
                          group: tuple | None) -> McRoute:
        """Section 8.3 check 7 (every destination enabled), then the copies of section 8.4:
        the copy to ``dests[i]`` is addressed ``addresses[i]`` (None: header unchanged)."""
        if not all(self.config.port_enabled(p) for p in dests):
            return McRoute(DropReason.PORT_DISABLED)
        copies = tuple((p, hdr if a is None else rewrite_address(hdr, a))
                       for p, a in zip(dests, addresses))
        return McRoute(DropReason.NONE, copies, group)

    def _record_error(self, port: int, reason: DropReason, hdr: int, pfx: int) -> None:
        self.counters[port][REASON_COUNTER[reason]] += 1
        self.errors.append(ErrorRecord(port, DropReason(reason), hdr, pfx))

    def _drop(self, port: int, st: _IngressState, beat: Beat, reason: DropReason,
              ur: bool = False) -> None:
        """Whole-packet drop decided on the first beat (section 4)."""
        self._record_error(port, reason, beat.hdr, beat.pfx)
        if ur:
            hdr = ur_completion_hdr(beat.hdr, self.config.completer_id)
            self._append(port, port, Packet((Beat(0, 0, True, True, hdr, 0, False),)))
            self.counters[port]["ur_sent"] += 1
        st.beats = []
        st.mode = _SOP if beat.last else _DISCARD

    # -- egress scoreboard ---------------------------------------------------------------------

    def _match_result(self, port: int, packet: Packet) -> str | None:
        """Take ``packet`` as the next piece of a reduction result stream to ``port``; None
        when it is one (counted at the egress), else why not."""
        d = decode_header(packet.hdr)
        if packet.err or not _is_mwr(d) or packet.pfx:
            return "not an error-free MWr without prefix"
        if field_get(packet.hdr >> 32 & 0xFFFFFFFF, REQ_DW1, "requester_id") != \
                self.config.completer_id:
            return "its Requester ID is not the switch's"
        payload = split_beats_payload(packet.beats, self.config.data_width)
        nbytes = d.payload_bytes
        expect = mwr_hdr(d.address, nbytes // 4, requester_id=self.config.completer_id)
        if packet.hdr != expect or len(payload) != nbytes:
            return "its header or length is not that of an engine result"
        window = self.config.receiver_window(port)
        group, why = self.inc.match_result(port, d.address, nbytes, payload,
                                           window.base if window is not None else 0)
        if group is None:
            return why
        c = self.counters[port]
        c["tx_packets"] += 1
        c["tx_beats"] += len(packet.beats)
        c["tx_bytes"] += nbytes
        return None

    def match_egress(self, dst_port: int, packet: Packet) -> int:
        """Consume a packet delivered at egress ``dst_port``; return its source port.

        Compares ``packet`` with the head of ``expected[(s, dst_port)]`` for every source s
        (in port order), pops the first equal head and returns s. This enforces per-flow order,
        no corruption and no duplicates; losses remain visible through :meth:`pending`.
        If two sources' heads are identical the lowest-numbered source is taken, so benches
        should keep packets of concurrent flows distinguishable (e.g. by tag or payload).

        Raises
        ------
        AssertionError
            If no head matches: the message describes the packet, every head it was compared
            with and the first differing beat/field, and points out an order violation when
            the packet matches a later entry of some flow.
        """
        if not isinstance(packet, Packet):
            packet = Packet(tuple(packet))
        n = self.config.n_ports
        if not 0 <= dst_port < n:
            raise ValueError(f"egress port {dst_port} out of range")
        heads = []
        for s in range(n + 1):
            q = self.expected[(s, dst_port)]
            if q:
                if q[0] == packet:
                    q.popleft()
                    return s
                heads.append((s, q))
        why = self._match_result(dst_port, packet)
        if why is None:
            return n
        lines = [f"egress {dst_port}: unexpected packet {packet.describe()}",
                 f"  as a reduction result: {why}"]
        if not heads:
            lines.append("  no packet is expected at this egress")
        for s, q in heads:
            lines.append(f"  head of flow {s}->{dst_port} ({len(q)} queued): {q[0].describe()}")
            lines.append(f"    first difference (got vs expected): "
                         f"{packet.first_difference(q[0])}")
        for s in range(n + 1):
            for i, p in enumerate(self.expected[(s, dst_port)]):
                if i and p == packet:
                    lines.append(f"  ORDER: it equals entry #{i} of flow {s}->{dst_port} "
                                 f"(delivered ahead of {i} earlier packet(s))")
                    break
        raise AssertionError("\n".join(lines))
