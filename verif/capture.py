"""Decode a header-capture dump (``hdl/telemetry.py`` :class:`HeaderCapture`) into a table.

Pure Python: no Amaranth, no simulator. The entry layout comes from
``models/capture_format.py`` (:data:`CAPTURE_ENTRY`), the header and prefix decoding from the
golden model (``models/switch_model.py``, ``models/formats.py``).

Typical use, from a bench or a register dump over AXI4-Lite::

    order = ring_order(oldest, count, depth)               # status registers
    raw = [read_words(i) for i in order]                    # 7 words per entry
    print(format_capture_table(decode_capture(raw)))

Entries may be given as dicts (field names of :data:`CAPTURE_ENTRY`), as packed integers of
:data:`ENTRY_BITS` bits (word k = bits ``32k+31:32k``), or as sequences of
:data:`ENTRY_WORDS` 32-bit words (word 0 first, the order of the register addresses).
"""

from dataclasses import dataclass

from ..models.capture_format import (
    CAPTURE_ENTRY, ENTRY_BITS, ENTRY_WORDS, CaptureKind, unpack,
)
from ..models.formats import (
    DW0, INC_PREFIX, REQ_DW1, CPL_DW1, CPL_DW2, DropReason, Fmt, SfKind, Type, field_get,
)
from ..models.switch_model import decode_header, sf_descriptor, tlp_name

__all__ = [
    "CaptureRecord", "decode_entry", "decode_capture", "format_capture_table", "ring_order",
    "reason_name", "kind_name", "prefix_text", "bdf",
]

_M32 = 0xFFFF_FFFF


def ring_order(oldest, count, depth):
    """Physical ring indexes of the ``count`` valid entries, oldest first."""
    if not 0 <= count <= depth or not 0 <= oldest < depth:
        raise ValueError(f"oldest={oldest}, count={count} do not fit a ring of {depth}")
    return [(oldest + i) % depth for i in range(count)]


def reason_name(reason):
    """``DropReason`` name of a code, ``"-"`` for 0, ``"?<n>"`` for an unknown code."""
    if reason == 0:
        return "-"
    try:
        return DropReason(reason).name
    except ValueError:
        return f"?{reason}"


def kind_name(kind):
    """``CaptureKind`` name of a code."""
    try:
        return CaptureKind(kind).name
    except ValueError:
        return f"?{kind}"


def bdf(rid):
    """A 16-bit PCIe ID as ``bus:device.function`` (``01:00.0``)."""
    return f"{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


def prefix_text(pfx):
    """A readable prefix: ``-`` (none), the smartfabric descriptor (``HC set 0x00005``,
    ``HC group 7 xs``, ``INC g=3 fp32 sum``, ``SF none``) or the raw prefix DW."""
    if pfx == 0:
        return "-"
    d = sf_descriptor(pfx)
    if d is None:
        fmt, typ = pfx >> 29, (pfx >> 24) & 0x1F
        name = {0b01110: "VendL0", 0b01111: "VendL1"}.get(typ, f"type={typ:05b}")
        bad = "" if fmt == Fmt.PREFIX else " BAD-FMT"
        return f"pfx {name} {pfx:#010x}{bad}"
    xs = " xs" if d.xs else ""
    if d.kind == SfKind.HC_SET:
        return f"HC set {d.mask:#07x}{xs}"
    if d.kind == SfKind.HC_GROUP:
        return f"HC group {d.group}{xs}"
    if d.kind == SfKind.INC:
        group = field_get(pfx, INC_PREFIX, "group")
        etype = field_get(pfx, INC_PREFIX, "elem_type")
        op = field_get(pfx, INC_PREFIX, "op")
        try:
            from ..models.reduction import DTYPE_NAMES, OPS     # lazy: numpy
            ename = DTYPE_NAMES[etype] if etype < len(DTYPE_NAMES) else f"type{etype}"
            oname = OPS[op] if op < len(OPS) else f"op{op}"
        except ImportError:                                     # pragma: no cover
            ename, oname = f"type{etype}", f"op{op}"
        return f"INC g={group} {ename} {oname}"
    return f"SF none{xs}"


@dataclass(frozen=True)
class CaptureRecord:
    """One decoded capture entry.

    ``delta`` is the cycles since the previous record of the dump (None for the first);
    ``hdr``/``pfx`` are the raw sideband values; the properties decode them.
    """
    index: int
    timestamp: int
    delta: int | None
    port: int
    kind: int
    reason: int
    hdr: int
    pfx: int
    trig: bool = False
    gap: bool = False

    def dw(self, k):
        return (self.hdr >> (32 * k)) & _M32

    @property
    def fmt(self):
        return field_get(self.dw(0), DW0, "fmt")

    @property
    def type(self):
        return field_get(self.dw(0), DW0, "type")

    @property
    def tlp(self):
        """Conventional TLP name (``MWr``, ``MWr64``, ``MRd``, ``CplD``, ``MsgLocal``...)."""
        return tlp_name(self.fmt, self.type)

    @property
    def is_completion(self):
        return self.type in (Type.CPL, Type.CPL_LOCKED)

    @property
    def length(self):
        """Length field in DWs (0 means 1024) for TLPs with data and memory reads; else None."""
        if self.fmt >= Fmt.PREFIX:
            return None
        if self.fmt & 0b10 or self.type in (Type.MEM, Type.MEM_LOCKED):
            return field_get(self.dw(0), DW0, "length") or 1024
        return None

    @property
    def requester_id(self):
        """Requester ID: DW1[31:16] of a request or message, DW2[31:16] of a completion."""
        if self.is_completion:
            return field_get(self.dw(2), CPL_DW2, "requester_id")
        return field_get(self.dw(1), REQ_DW1, "requester_id")

    @property
    def tag(self):
        """10-bit tag: DW1[15:8] (DW2[15:8] of a completion) with DW0's Tag[9:8]."""
        d0 = self.dw(0)
        low = field_get(self.dw(2), CPL_DW2, "tag") if self.is_completion else \
            field_get(self.dw(1), REQ_DW1, "tag")
        return (field_get(d0, DW0, "tag9") << 9) | (field_get(d0, DW0, "tag8") << 8) | low

    @property
    def address(self):
        """64-bit address of a memory request or address-routed message, else None."""
        d = decode_header(self.hdr)
        return d.address if d.route == "addr" else None

    @property
    def target(self):
        """The address, or what stands for it: completer ID and status of a completion,
        target ID of an ID-routed message."""
        d = decode_header(self.hdr)
        if d.route == "addr" and d.kind != "malformed":
            return f"{d.address:#x}"
        if self.is_completion:
            status = field_get(self.dw(1), CPL_DW1, "status")
            sname = {0: "SC", 1: "UR", 2: "CRS", 4: "CA"}.get(status, f"st{status}")
            return f"{sname} from {bdf(field_get(self.dw(1), CPL_DW1, 'completer_id'))}"
        if d.route == "id":
            return f"to {bdf(self.dw(2) >> 16)}"
        return "-"

    @property
    def kind_name(self):
        return kind_name(self.kind)

    @property
    def reason_name(self):
        return reason_name(self.reason)

    @property
    def prefix(self):
        return prefix_text(self.pfx)


def _fields_of(entry):
    if isinstance(entry, dict):
        unknown = set(entry) - set(CAPTURE_ENTRY)
        if unknown:
            raise ValueError(f"unknown capture entry fields {sorted(unknown)}")
        return {name: int(entry.get(name, 0)) for name in CAPTURE_ENTRY}
    if isinstance(entry, int):
        if not 0 <= entry < 1 << ENTRY_BITS:
            raise ValueError(f"a packed entry has {ENTRY_BITS} bits, got {entry:#x}")
        return unpack(CAPTURE_ENTRY, entry)
    words = list(entry)
    if len(words) != ENTRY_WORDS or not all(0 <= int(w) <= _M32 for w in words):
        raise ValueError(f"an entry is {ENTRY_WORDS} words of 32 bits, got {words!r}")
    return unpack(CAPTURE_ENTRY, sum(int(w) << (32 * k) for k, w in enumerate(words)))


def decode_entry(entry, *, index=0, previous_ts=None, ts_width=32):
    """Decode one entry (dict, packed integer or word list) into a :class:`CaptureRecord`."""
    f = _fields_of(entry)
    ts = f["timestamp"]
    delta = None if previous_ts is None else (ts - previous_ts) % (1 << ts_width)
    return CaptureRecord(index=index, timestamp=ts, delta=delta, port=f["port"],
                         kind=f["kind"], reason=f["reason"], hdr=f["hdr"], pfx=f["pfx"],
                         trig=bool(f["trig"]), gap=bool(f["gap"]))


def decode_capture(entries, *, ts_width=32, first_index=0):
    """Decode a capture dump, oldest entry first (see :func:`ring_order`).

    Parameters
    ----------
    entries : iterable
        Dicts, packed integers or 7-word sequences (may be mixed).
    ts_width : int
        Width of the capture's timestamp counter (``HeaderCapture.ts_width``): deltas are
        computed modulo ``2^ts_width``.
    first_index : int
        ``index`` of the first record (the rest count up).
    """
    records, prev = [], None
    for i, entry in enumerate(entries):
        rec = decode_entry(entry, index=first_index + i, previous_ts=prev, ts_width=ts_width)
        records.append(rec)
        prev = rec.timestamp
    return records


_COLUMNS = (   # title, width, align, getter
    ("idx", 4, ">", lambda r: str(r.index)),
    ("timestamp", 10, ">", lambda r: str(r.timestamp)),
    ("delta", 7, ">", lambda r: "-" if r.delta is None else f"+{r.delta}"),
    ("port", 4, ">", lambda r: str(r.port)),
    ("kind", 10, "<", lambda r: r.kind_name),
    ("reason", 14, "<", lambda r: r.reason_name),
    ("tlp", 10, "<", lambda r: r.tlp),
    ("len", 4, ">", lambda r: "-" if r.length is None else str(r.length)),
    ("req_id", 7, "<", lambda r: bdf(r.requester_id)),
    ("tag", 5, ">", lambda r: f"{r.tag:#x}"),
    ("address/target", 20, "<", lambda r: r.target),
    ("prefix", 22, "<", lambda r: r.prefix),
    ("flags", 5, "<", lambda r: ("T" if r.trig else "") + ("G" if r.gap else "")),
)


def format_capture_table(records):
    """A fixed-width text table of records, one line each, with a header line.

    Columns: index, timestamp, delta (cycles since the previous line), port, kind, reason
    (``DropReason`` name), TLP name, length (DWs), requester ID (``bus:dev.fn``), tag,
    address (or completion status / target ID), prefix (Hypercast set or group, INC group,
    type and operation) and flags (``T``: captured in the trigger cycle; ``G``: matching events
    were lost just before this entry). A value wider than its column widens that line only.
    """
    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, (_, w, a, _) in zip(cells, _COLUMNS)).rstrip()
    out = [line([c[0] for c in _COLUMNS])]
    out.append(line(["-" * c[1] for c in _COLUMNS]))
    for r in records:
        out.append(line([c[3](r) for c in _COLUMNS]))
    return "\n".join(out)
