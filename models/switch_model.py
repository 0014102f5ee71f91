"""Golden transaction-level model of the smartfabric switch core.

Written from ``docs/protocol.md`` (sections 1-7) and the field tables of
:mod:`smartfabric.models.formats` only; pure Python, no HDL or simulator imports.

The model is fed every beat *accepted* at each ingress (:meth:`SwitchModel.ingress_beat`, in
order per port; ports may interleave arbitrarily) and predicts, per (ingress, egress) flow, the
ordered list of packets the switch must deliver (:attr:`SwitchModel.expected`), the per-port
counters (:attr:`SwitchModel.counters`) and the error log behind ``err_status``/``err_count``
(:attr:`SwitchModel.errors`). A scoreboard pops delivered packets with
:meth:`SwitchModel.match_egress`, which enforces per-flow order, no corruption and no
duplicates; :meth:`SwitchModel.pending` exposes losses at the end of a test.

Timing (cut-through, stalls, arbitration between flows) is deliberately not modelled: a packet
is appended to its flow as soon as its last (possibly forced) beat is known.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from .formats import (
    CPL_DW1, CPL_DW2, DW0, MSG_DW1, REQ_DW1, CplStatus, DropReason, Fmt, MsgRouting, Type,
    field_get, field_put, keep_for_beat, payload_beats,
)

__all__ = [
    "Beat", "Packet", "Window", "IdRoute", "SwitchConfig", "SwitchModel", "ErrorRecord",
    "Decoded", "decode_header", "tlp_name", "ur_completion_hdr", "COUNTER_NAMES",
    "REASON_COUNTER",
]

_MASK32 = 0xFFFF_FFFF
_MASK64 = (1 << 64) - 1

#: Counter names of docs/protocol.md section 7 that the model predicts (the timing counters
#: ``rx_stall``/``tx_stall`` are not predicted).
COUNTER_NAMES = (
    "rx_packets", "rx_beats", "rx_bytes", "tx_packets", "tx_beats", "tx_bytes", "tx_err",
    "drop_malformed", "drop_unsupported", "drop_no_route", "drop_port_disabled", "drop_length",
    "err_truncated", "err_overlong", "err_keep", "msg_local", "ur_sent",
)

#: Ingress counter incremented for each error reason.
REASON_COUNTER = {
    DropReason.MALFORMED: "drop_malformed",
    DropReason.UNSUPPORTED: "drop_unsupported",
    DropReason.NO_ROUTE: "drop_no_route",
    DropReason.PORT_DISABLED: "drop_port_disabled",
    DropReason.LENGTH: "drop_length",
    DropReason.TRUNCATED: "err_truncated",
    DropReason.OVERLONG: "err_overlong",
    DropReason.KEEP: "err_keep",
    DropReason.MSG_LOCAL: "msg_local",
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

    The model reads the configuration live, at each packet's first beat, so a bench may change
    it between packets (e.g. ``cfg.windows[3] = (base, limit, port, True)``).
    """
    n_ports: int
    data_width: int
    max_payload: int = 256
    windows: list = field(default_factory=_default_windows)
    id_routes: list = field(default_factory=_default_id_routes)
    root_port: int | None = None
    port_enable: int | None = None
    completer_id: int = 0

    def __post_init__(self):
        if self.n_ports < 1:
            raise ValueError(f"n_ports must be >= 1, got {self.n_ports}")
        if self.data_width < 8 or self.data_width % 8:
            raise ValueError(f"data_width must be a positive multiple of 8, got {self.data_width}")
        if self.port_enable is None:
            self.port_enable = (1 << self.n_ports) - 1
        self.windows = [Window(*w) for w in self.windows]
        self.id_routes = [IdRoute(*r) for r in self.id_routes]

    @property
    def lanes(self) -> int:
        """Byte lanes per beat, W/8."""
        return self.data_width // 8

    def port_enabled(self, port: int) -> bool:
        """Whether ``port`` is enabled in ``port_enable``."""
        return 0 <= port < self.n_ports and bool((self.port_enable >> port) & 1)

    def route_address(self, address: int) -> int | None:
        """Egress for a 64-bit address: lowest-numbered enabled window with
        ``base <= address <= limit`` whose port is below ``n_ports``; None if none matches.

        An entry whose port is ``>= n_ports`` matches nothing (it is skipped, so a
        higher-numbered valid window may still match).
        """
        for base, limit, port, enable in self.windows:
            if enable and 0 <= port < self.n_ports and base <= address <= limit:
                return port
        return None

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


_SOP, _FWD, _DISCARD = "sop", "fwd", "discard"


class _IngressState:
    """Framing state of one ingress port."""
    __slots__ = ("mode", "k", "n_beats", "payload_bytes", "dst", "beats", "hdr", "pfx")

    def __init__(self):
        self.mode = _SOP      # expecting a start of packet (after reset or a last)
        self.k = 0            # index of the next beat within the current packet
        self.n_beats = 0      # E
        self.payload_bytes = 0  # B
        self.dst = None
        self.beats: list[Beat] = []
        self.hdr = 0
        self.pfx = 0


class SwitchModel:
    """Beat-level golden model of the switch core (docs/protocol.md sections 1-7).

    Parameters
    ----------
    config : SwitchConfig
        Parameters and register state; read live at each packet's first beat.

    Attributes
    ----------
    expected : dict[(int, int), collections.deque[Packet]]
        For every (src_port, dst_port) pair, the packets egress ``dst_port`` must deliver from
        ingress ``src_port``, in delivery order. UR completions for requests from port p are in
        ``expected[(p, p)]``, in order with p's other traffic to itself.
    counters : dict[int, dict[str, int]]
        Per port, the counters of :data:`COUNTER_NAMES`. ``tx_*`` are predicted from the
        packets appended to ``expected``.
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
        self.expected: dict[tuple[int, int], collections.deque] = {
            (s, d): collections.deque() for s in range(n) for d in range(n)}
        self.counters: dict[int, dict[str, int]] = {
            p: dict.fromkeys(COUNTER_NAMES, 0) for p in range(n)}
        self.errors: list[ErrorRecord] = []
        self._err_status_from = 0

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
        """Number of expected packets not yet consumed by :meth:`match_egress`."""
        return sum(len(q) for q in self.expected.values())

    def describe_pending(self, limit: int = 10) -> str:
        """Readable list of (up to ``limit``) leftover expected packets."""
        lines = []
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
        checks of section 4 to the beat after a ``last`` (or reset), the later-beat checks of
        section 5 to the following beats, and discards the remaining beats of a dropped or
        cut-short packet through the source's ``last``. ``beat.err`` is ignored.
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
        # 4. Fmt/Type table
        d = decode_header(beat.hdr)
        if d.route == "malformed":
            return self._drop(port, st, beat, DropReason.MALFORMED)
        if d.route == "unsupported":
            return self._drop(port, st, beat, DropReason.UNSUPPORTED, ur=d.kind == "np")
        # 5. length
        if d.has_data and d.payload_bytes > cfg.max_payload:
            return self._drop(port, st, beat, DropReason.LENGTH)
        # 6. routing
        if d.route == "local":
            self.counters[port]["msg_local"] += 1
            st.mode = _SOP if beat.last else _DISCARD
            return None
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
        # 7. framing of the first beat
        e = payload_beats(d.payload_bytes, cfg.data_width)
        if beat.keep != keep_for_beat(d.payload_bytes, cfg.data_width, 0):
            return self._drop(port, st, beat, DropReason.KEEP)
        if beat.last and e > 1:
            return self._drop(port, st, beat, DropReason.TRUNCATED)
        if not beat.last and e == 1:
            return self._drop(port, st, beat, DropReason.OVERLONG)
        # forward
        st.dst, st.n_beats, st.payload_bytes = dst, e, d.payload_bytes
        st.beats = [Beat(beat.data, beat.keep, True, bool(beat.last), beat.hdr, beat.pfx, False)]
        if beat.last:
            self._deliver(port, st)
        else:
            st.mode, st.k = _FWD, 1
        return None

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
        self._append(port, st.dst, Packet(tuple(st.beats)))
        st.beats = []
        st.mode = _SOP

    def _append(self, src: int, dst: int, pkt: Packet) -> None:
        self.expected[(src, dst)].append(pkt)
        c = self.counters[dst]
        c["tx_packets"] += 1
        c["tx_beats"] += len(pkt.beats)
        c["tx_bytes"] += sum(_popcount(b.keep) for b in pkt.beats)
        if pkt.beats[-1].err:
            c["tx_err"] += 1

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
        for s in range(n):
            q = self.expected[(s, dst_port)]
            if q:
                if q[0] == packet:
                    q.popleft()
                    return s
                heads.append((s, q))
        lines = [f"egress {dst_port}: unexpected packet {packet.describe()}"]
        if not heads:
            lines.append("  no packet is expected at this egress")
        for s, q in heads:
            lines.append(f"  head of flow {s}->{dst_port} ({len(q)} queued): {q[0].describe()}")
            lines.append(f"    first difference (got vs expected): "
                         f"{packet.first_difference(q[0])}")
        for s in range(n):
            for i, p in enumerate(self.expected[(s, dst_port)]):
                if i and p == packet:
                    lines.append(f"  ORDER: it equals entry #{i} of flow {s}->{dst_port} "
                                 f"(delivered ahead of {i} earlier packet(s))")
                    break
        raise AssertionError("\n".join(lines))
