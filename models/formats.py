"""Wire formats of smartfabric: the one definition shared by RTL, golden model and benches.

Pure Python (no Amaranth import), so the golden model can use it without touching the HDL.
The RTL builds its ``data.Struct`` layouts from these tables (``hdl/tlp.py``).

Conventions (``docs/protocol.md`` has the full text):

* The TLP header travels on a sideband ``hdr`` of 128 bits beside the first beat of a packet:
  header DW *k* (the big-endian 32-bit value of header bytes ``4k..4k+3``, exactly as the PCIe
  specification draws it) sits at ``hdr[32k+31:32k]``. A 3-DW header leaves ``hdr[127:96]`` unused.
* An optional TLP prefix DW travels on ``pfx`` (32 bits); ``pfx == 0`` means "no prefix".
* Payload bytes in TLP order fill the beat's byte lanes from lane 0 (``data[7:0]``) upward;
  ``keep`` has one bit per byte lane. Every full beat has all lanes valid; the last beat has the
  low ``remaining`` lanes valid. A TLP without payload is one beat with ``keep == 0``.
"""

__all__ = [
    "Fmt", "Type", "CplStatus", "MsgRouting", "DropReason", "DROP_REASONS",
    "DW0", "REQ_DW1", "CPL_DW1", "CPL_DW2", "MSG_DW1",
    "field_get", "field_put", "payload_beats", "keep_for_beat",
    "BEAT_FIELDS", "HDR_BITS", "PFX_BITS", "SUPPORTED_PORTS", "SUPPORTED_WIDTHS",
    "SF_PREFIX_TYPE", "SF_PREFIX_HEAD", "SF_PREFIX", "HC_SET_PORTS", "SfKind", "sf_prefix",
    "N_HC_MONITORS", "MC_MAX_GROUPS",
    "INC_PREFIX", "inc_prefix", "INC_NOTICE", "IncNoticeKind", "inc_notice", "Collective",
    "RGroupConfigError", "ParityTarget",
]

import enum

HDR_BITS = 128
PFX_BITS = 32
SUPPORTED_PORTS = range(2, 33)
SUPPORTED_WIDTHS = (64, 128, 256, 512)
N_HC_MONITORS = 4        # hc_monitor[k] group counters
MC_MAX_GROUPS = 32       # PCIe multicast window groups (mc_receive masks are 32 bits)


class Fmt(enum.IntEnum):
    """DW0[31:29]: header size and whether a payload follows."""
    DW3 = 0b000
    DW4 = 0b001
    DW3_DATA = 0b010
    DW4_DATA = 0b011
    PREFIX = 0b100


class Type(enum.IntEnum):
    """DW0[28:24] type codes the switch recognises. Messages are ``0b10rrr``."""
    MEM = 0b00000         # MRd (no data) / MWr (data)
    MEM_LOCKED = 0b00001  # MRdLk: unsupported, non-posted
    IO = 0b00010          # IORd/IOWr: unsupported, non-posted
    CFG0 = 0b00100        # unsupported, non-posted
    CFG1 = 0b00101        # unsupported, non-posted
    CPL = 0b01010         # Cpl / CplD
    CPL_LOCKED = 0b01011  # CplLk / CplDLk: unsupported, dropped
    FETCH_ADD = 0b01100   # AtomicOps: unsupported, non-posted
    SWAP = 0b01101
    CAS = 0b01110
    MSG = 0b10000         # low three bits are the message routing subfield


class MsgRouting(enum.IntEnum):
    """Message routing subfield r[2:0] (type = 0b10rrr)."""
    TO_ROOT = 0b000
    BY_ADDRESS = 0b001
    BY_ID = 0b010
    BROADCAST = 0b011
    LOCAL = 0b100
    GATHER = 0b101


class CplStatus(enum.IntEnum):
    SC = 0b000
    UR = 0b001
    CRS = 0b010
    CA = 0b100


class DropReason(enum.IntEnum):
    """Why the switch dropped (or cut short) a packet. Index = counter / status code.

    Header-level reasons drop the packet whole before any beat is forwarded; beat-level reasons
    (TRUNCATED, OVERLONG, KEEP) are found after cut-through forwarding may have begun, so the
    packet is ended at its egress with ``err`` set on its last beat (whole drop if found on the
    first beat).
    """
    NONE = 0
    MALFORMED = 1        # reserved Fmt, unknown type, prefix in header slot, bad prefix, 3DW Msg
    UNSUPPORTED = 2      # known but unsupported type (IO, Cfg, AtomicOp, locked, broadcast Msg)
    NO_ROUTE = 3         # no address window / no ID route / no root port matches
    PORT_DISABLED = 4    # ingress or target egress disabled
    LENGTH = 5           # payload length above max payload size
    TRUNCATED = 6        # last marker before the length field's end
    OVERLONG = 7         # no last marker where the length field ends
    KEEP = 8             # byte-valid pattern not the one the length implies
    MSG_LOCAL = 9        # Local-terminate message consumed by the switch (not an error)
    HC_BAD_GROUP = 10    # Hypercast group id at or above the group table size
    HC_BAD_SET = 11      # Hypercast destination-set bit at or above the port count
    HC_EMPTY = 12        # multicast destination set empty
    MC_SPILL = 13        # multicast write leaves its window
    # In-network reduction contributions, rejected by the reduction engine
    # (docs/reduction-engine.md section 5); dropped whole, the sender gets a notice.
    INC_BAD_GROUP = 14   # INC group id at or above n_rgroups, or the group not active
    INC_NOT_MEMBER = 15  # the sending port is not a member of the group
    INC_MISMATCH = 16    # element type or operation in the descriptor differ from the group's
    INC_OFFSET = 17      # offset not the member's next expected one (duplicate, gap, reorder)
    INC_OUTSIDE = 18     # write outside [0, size) of the group, below its base, byte enables
                         # not all ones, or longer than the maximum payload
    # Parity protection of the configuration tables (docs/protocol.md section 9): the
    # packet's routing read a Hypercast group table entry, an address window or a reduction
    # group snapshot whose parity is wrong. Dropped whole (a non-posted request gets a UR; a
    # contribution is rejected by the engine with a notice), never routed on the bad entry.
    PARITY = 19


DROP_REASONS = [r for r in DropReason if r != DropReason.NONE]


class ParityTarget(enum.IntEnum):
    """``dbg_parity_inject.target``: the table the next armed parity error goes into
    (docs/protocol.md section 9)."""
    HC_GROUP = 0         # the next software write of an hc_group[g] entry
    WINDOW = 1           # the next software write of any register of a window[k]
    RGROUP = 2           # the next successful arming of a reduction group (its snapshots)
    NONE = 3             # arms nothing


# Field tables: name -> (lsb, width) inside one 32-bit header DW value.
DW0 = {
    "length": (0, 10), "at": (10, 2), "attr": (12, 2), "ep": (14, 1), "td": (15, 1),
    "th": (16, 1), "ln": (17, 1), "attr2": (18, 1), "tag8": (19, 1), "tc": (20, 3),
    "tag9": (23, 1), "type": (24, 5), "fmt": (29, 3),
}
REQ_DW1 = {"first_be": (0, 4), "last_be": (4, 4), "tag": (8, 8), "requester_id": (16, 16)}
CPL_DW1 = {"byte_count": (0, 12), "bcm": (12, 1), "status": (13, 3), "completer_id": (16, 16)}
CPL_DW2 = {"lower_address": (0, 7), "tag": (8, 8), "requester_id": (16, 16)}
MSG_DW1 = {"code": (0, 8), "tag": (8, 8), "requester_id": (16, 16)}
# The prefix DW uses DW0's fmt/type positions; the vendor-defined local prefix type is 0b0111x.
PREFIX_DW = {"body": (0, 24), "type": (24, 5), "fmt": (29, 3)}
VENDOR_LOCAL_PREFIX_TYPES = (0b01110, 0b01111)

# The smartfabric descriptor: a VendPrefixL0 (Fmt 100, Type 01110) whose body says what the
# switch's engines do with the packet (docs/protocol.md section 8.1).
SF_PREFIX_TYPE = 0b01110
SF_PREFIX_HEAD = (Fmt.PREFIX << 5) | SF_PREFIX_TYPE     # pfx[31:24] = 0x8E
SF_PREFIX = {"mask": (0, 20), "group": (0, 16), "xs": (21, 1), "kind": (22, 2)}
HC_SET_PORTS = 20                                       # ports a destination set can name


class SfKind(enum.IntEnum):
    """``pfx[23:22]`` of a smartfabric descriptor."""
    NONE = 0b00          # no engine: routed as a plain packet
    HC_SET = 0b01        # Hypercast to the destination set in pfx[19:0]
    HC_GROUP = 0b10      # Hypercast to group table entry pfx[15:0]
    INC = 0b11           # in-network compute: a reduction contribution (docs/reduction-engine.md;
                         # the switch ingress drops it as UNSUPPORTED until the engine is wired in)


# Body of an INC descriptor (kind = SfKind.INC): a contribution to reduction group ``group``.
# ``elem_type`` and ``op`` are indices into the golden model's ``DTYPE_NAMES`` and ``OPS``
# (models/reduction.py; the RTL's ElemType / ReduceOp enums use the same numbering). They must
# match the group's configuration (else INC_MISMATCH). ``reserved`` is sent as 0 and ignored.
INC_PREFIX = {"group": (0, 8), "elem_type": (8, 4), "op": (12, 3), "reserved": (15, 7),
              "kind": (22, 2)}


def inc_prefix(group, elem_type, op):
    """The prefix DW of an in-network-compute contribution (docs/reduction-engine.md).

    ``elem_type`` and ``op`` are integers (indices into ``models.reduction.DTYPE_NAMES`` /
    ``OPS``) or the model's names (``"fp32"``, ``"sum"``).
    """
    if isinstance(elem_type, str) or isinstance(op, str):
        from .reduction import DTYPE_NAMES, OPS       # lazy: keeps this module numpy-free
        if isinstance(elem_type, str):
            if elem_type not in DTYPE_NAMES:
                raise ValueError(f"unknown element type {elem_type!r}")
            elem_type = DTYPE_NAMES.index(elem_type)
        if isinstance(op, str):
            if op not in OPS:
                raise ValueError(f"unknown operation {op!r}")
            op = OPS.index(op)
    for name, value in (("group", group), ("elem_type", elem_type), ("op", op)):
        width = INC_PREFIX[name][1]
        if not isinstance(value, int) or not 0 <= value < 1 << width:
            raise ValueError(f"INC descriptor {name} must be an integer in 0..{(1 << width) - 1}, "
                             f"not {value!r}")
    body = field_put(0, INC_PREFIX, "kind", SfKind.INC)
    body = field_put(body, INC_PREFIX, "group", group)
    body = field_put(body, INC_PREFIX, "elem_type", elem_type)
    body = field_put(body, INC_PREFIX, "op", op)
    return (SF_PREFIX_HEAD << 24) | body


class IncNoticeKind(enum.IntEnum):
    """``kind`` byte of a reduction-engine notice."""
    REJECTED = 1         # one contribution was dropped; ``reason`` says why
    ABORTED = 2          # the group's operation timed out and was aborted (``reason`` = 0)


# The one-DW payload of a notice MWr the reduction engine sends to a member
# (docs/reduction-engine.md section 6): the DW value, byte 0 (data[7:0]) = reason.
INC_NOTICE = {"reason": (0, 8), "group": (8, 8), "kind": (16, 8), "zero": (24, 8)}


def inc_notice(reason, group, kind):
    """The 32-bit payload value of a notice (the first payload DW, little-endian bytes)."""
    dw = field_put(0, INC_NOTICE, "reason", int(reason))
    dw = field_put(dw, INC_NOTICE, "group", int(group))
    return field_put(dw, INC_NOTICE, "kind", int(kind))


class Collective(enum.IntEnum):
    """``rgroup[g].ctrl.collective``: where a reduction group's results go
    (docs/reduction-engine.md section 8)."""
    ALLREDUCE = 0        # every member
    REDUCESCATTER = 1    # chunk i (models.reduction.reduce_scatter_chunks) to the i-th member
    REDUCE = 2           # the root port


class RGroupConfigError(enum.IntEnum):
    """``rgroup[g].status.cause``: why arming a reduction group failed, in the order the
    checks are made (docs/reduction-engine.md section 2)."""
    NONE = 0
    NO_MEMBERS = 1       # members == 0
    COLLECTIVE = 2       # collective encoding 3
    ROOT = 3             # REDUCE whose root is not a member (or not a port)
    TYPE_OP = 4          # type not built, or an operation the type does not have
    SIZE = 5             # size 0 or not a multiple of 4 (hence of the element size)
    ALIGN = 6            # base, result_offset or notify_offset not DW aligned
    BUFFER = 7           # buf_beats not a power of two, below the minimum, or ring outside
    CHUNK = 8            # REDUCESCATTER chunk boundary not a multiple of W/8 bytes


def sf_prefix(kind, *, mask=0, group=0, xs=False):
    """The prefix DW of a smartfabric descriptor."""
    body = field_put(0, SF_PREFIX, "kind", kind)
    body = field_put(body, SF_PREFIX, "xs", int(bool(xs)))
    if kind == SfKind.HC_SET:
        if not 0 <= mask < 1 << HC_SET_PORTS:
            raise ValueError(f"a destination set names ports 0..{HC_SET_PORTS - 1}")
        body = field_put(body, SF_PREFIX, "mask", mask)
    elif kind == SfKind.HC_GROUP:
        if not 0 <= group < 1 << 16:
            raise ValueError("a group id has 16 bits")
        body = field_put(body, SF_PREFIX, "group", group)
    return (SF_PREFIX_HEAD << 24) | body


def field_get(dw, table, name):
    lsb, width = table[name]
    return (dw >> lsb) & ((1 << width) - 1)


def field_put(dw, table, name, value):
    lsb, width = table[name]
    mask = ((1 << width) - 1) << lsb
    return (dw & ~mask) | ((value << lsb) & mask)


def payload_beats(payload_bytes, data_width):
    """Beats a TLP with ``payload_bytes`` of payload occupies (at least one)."""
    lanes = data_width // 8
    return max(1, -(-payload_bytes // lanes))


def keep_for_beat(payload_bytes, data_width, beat):
    """The byte-valid pattern the switch expects on beat ``beat`` of such a TLP."""
    lanes = data_width // 8
    remaining = payload_bytes - beat * lanes
    n = max(0, min(lanes, remaining))
    return (1 << n) - 1


# Beat layout (ingress and egress): name -> width, given W. The egress adds "err".
def BEAT_FIELDS(data_width):
    return {"data": data_width, "keep": data_width // 8, "first": 1, "last": 1,
            "hdr": HDR_BITS, "pfx": PFX_BITS}
