"""Telemetry wire formats of smartfabric: the one definition shared by RTL, software and benches.

Pure Python (no Amaranth import, nothing from ``hdl/``). The RTL (``hdl/telemetry.py``) builds
its ``data`` layouts from these tables; the bench helper (``verif/capture.py``) decodes capture
dumps with them; the register map exposes them word by word (``docs/telemetry.md``).

Every table maps a field name to ``(lsb, width)`` inside one packed integer whose 32-bit word
*k* is bits ``32k+31:32k`` (word 0 at the lowest address when read over AXI4-Lite).

* :data:`CAPTURE_KEY` — what the capture filter compares: ``(key & mask) == (match & mask)``.
* :data:`CAPTURE_ENTRY` — one entry of the capture ring as software reads it.
* :data:`LINK_STATUS` — the proposed per-port ``link_status`` register.
* :data:`GROUP_STATS` — the per-group reduction statistics, in counter-table order.

Also the reference (golden) functions of the latency histogram (:func:`elapsed_cycles`,
:func:`latency_bucket`) and a cycle-level reference model of the capture
(:class:`HeaderCaptureModel`), for block tests and switch-level benches.
"""

import enum

from .formats import DW0, REQ_DW1

__all__ = [
    "CaptureKind", "ERROR_KINDS", "DEFAULT_TRIGGER_KINDS", "PORT_BITS", "KIND_BITS",
    "REASON_BITS", "CAPTURE_KEY", "CAPTURE_KEY_SUBFIELDS", "KEY_BITS", "KEY_WORDS",
    "CAPTURE_ENTRY", "ENTRY_BITS", "ENTRY_WORDS", "ENTRY_TS_BITS",
    "LINK_STATUS", "GROUP_STATS",
    "pack", "unpack", "capture_filter", "capture_key_of", "key_matches",
    "elapsed_cycles", "latency_bucket", "bucket_bounds", "HeaderCaptureModel",
]

PORT_BITS = 5        # up to 32 ports (formats.SUPPORTED_PORTS)
KIND_BITS = 3        # CaptureKind
REASON_BITS = 5      # DropReason codes 0..31


class CaptureKind(enum.IntEnum):
    """What happened to the header of a capture event (``kind``, 3 bits).

    The integrator chooses the sources; these are the codes software sees.
    """
    INGRESS = 0      # header accepted at an ingress (its first beat transferred), reason 0
    EGRESS = 1       # header delivered at an egress (its first beat transferred), reason 0
    DROP = 2         # packet dropped whole at an ingress; reason = DropReason (not MSG_LOCAL)
    CUT = 3          # packet cut short (err on its last beat); reason TRUNCATED/OVERLONG/KEEP/...
    CONSUMED = 4     # packet consumed by the switch, not an error (MSG_LOCAL)
    UR = 5           # a switch-generated UR completion delivered at an egress (its own header)
    INC_REJECT = 6   # reduction contribution rejected; reason = DropReason.INC_*
    OTHER = 7        # free for the integrator


#: Kinds that are errors: the capture's default trigger set.
ERROR_KINDS = (CaptureKind.DROP, CaptureKind.CUT, CaptureKind.INC_REJECT)
#: ``trigger_kinds`` value (bit k: kind k triggers) that triggers on every error kind.
DEFAULT_TRIGGER_KINDS = sum(1 << k for k in ERROR_KINDS)

# ----------------------------------------------------------------------------------------------
# Capture key: match and mask registers hold this layout (6 words).
# ----------------------------------------------------------------------------------------------
#: ``addr_lo`` is the low address DW whatever the header size: DW3 for a 4-DW header (Fmt bit 0
#: set), DW2 for a 3-DW one. ``dw2`` is the header's DW2 as is (address high DW of a 4-DW
#: request, requester ID / tag of a completion). Word 5 (``reason``, ``kind``, ``port``) has
#: the same bit positions as the meta word of :data:`CAPTURE_ENTRY`. Bits not named here are
#: padding: the RTL ignores them in ``mask``.
CAPTURE_KEY = {
    "dw0": (0, 32), "dw1": (32, 32), "dw2": (64, 32), "addr_lo": (96, 32), "pfx": (128, 32),
    "reason": (160, REASON_BITS), "kind": (168, KIND_BITS), "port": (176, PORT_BITS),
}
#: Named sub-fields of key DWs (tables of ``models.formats``): ``dw0.type``, ``dw1.tag``...
CAPTURE_KEY_SUBFIELDS = {"dw0": DW0, "dw1": REQ_DW1}
KEY_WORDS = 6
KEY_BITS = 32 * KEY_WORDS

# ----------------------------------------------------------------------------------------------
# Capture entry, as read from the ring (7 words): timestamp, meta, hdr DW0..DW3, pfx.
# ----------------------------------------------------------------------------------------------
#: ``trig``: the entry was captured in the cycle the trigger fired. ``gap``: at least one
#: matching event was lost (``missed``) between the previous entry and this one.
CAPTURE_ENTRY = {
    "timestamp": (0, 32),
    "reason": (32, REASON_BITS), "kind": (40, KIND_BITS), "port": (48, PORT_BITS),
    "trig": (56, 1), "gap": (57, 1),
    "hdr": (64, 128),
    "pfx": (192, 32),
}
ENTRY_WORDS = 7
ENTRY_BITS = 32 * ENTRY_WORDS
ENTRY_TS_BITS = CAPTURE_ENTRY["timestamp"][1]   # the largest supported ts_width

# ----------------------------------------------------------------------------------------------
# Per-port link status register (32 bits).
# ----------------------------------------------------------------------------------------------
#: ``enabled``: port_enable; ``rx_active``/``tx_active``: a beat crossed the ingress/egress in
#: the last 2^k cycles; ``tx_stuck``: the egress has held valid without ready for more than
#: ``stuck_threshold`` cycles and still does; ``tx_stuck_seen``, ``error_seen``: sticky (cleared
#: by software); ``last_error``: DropReason of the latest error (0: none since clear);
#: ``stall_cycles``: length of the current egress stall run (saturating).
LINK_STATUS = {
    "enabled": (0, 1), "rx_active": (1, 1), "tx_active": (2, 1), "tx_stuck": (3, 1),
    "tx_stuck_seen": (4, 1), "error_seen": (5, 1),
    "last_error": (8, REASON_BITS),
    "stall_cycles": (16, 16),
}

#: Per reduction group statistics, one counter table each, in this order.
GROUP_STATS = ("completed", "aborted", "nan", "infinity", "saturation")


# ----------------------------------------------------------------------------------------------
# Packing helpers
# ----------------------------------------------------------------------------------------------

def _locate(table, name, subfields=None):
    """``(lsb, width)`` of ``name`` in ``table``, or of a sub-field (``"dw0.type"``, or just
    ``"type"`` when the name is unique among the sub-field tables)."""
    if name in table:
        return table[name]
    subfields = subfields or {}
    if "." in name:
        outer, inner = name.split(".", 1)
        if outer in subfields and inner in subfields[outer]:
            lsb, width = subfields[outer][inner]
            return table[outer][0] + lsb, width
    else:
        found = [(outer, sub[name]) for outer, sub in subfields.items() if name in sub]
        if len(found) == 1:
            outer, (lsb, width) = found[0]
            return table[outer][0] + lsb, width
    raise KeyError(f"no field {name!r} (known: {sorted(table)} and sub-fields of "
                   f"{sorted(subfields)})")


def pack(table, fields, subfields=None):
    """Pack ``{name: value}`` into an integer laid out by ``table``.

    Raises ``ValueError`` when a value does not fit its field.
    """
    value = 0
    for name, v in fields.items():
        lsb, width = _locate(table, name, subfields)
        v = int(v)
        if not 0 <= v < 1 << width:
            raise ValueError(f"{name}={v:#x} does not fit in {width} bits")
        value = (value & ~(((1 << width) - 1) << lsb)) | (v << lsb)
    return value


def unpack(table, value):
    """``{name: value}`` of every field of ``table`` in the packed integer ``value``."""
    return {name: (value >> lsb) & ((1 << width) - 1) for name, (lsb, width) in table.items()}


def capture_filter(**fields):
    """``(match, mask)`` integers (``KEY_BITS`` wide) selecting events whose key fields equal
    the given values; every other bit is a don't-care.

    Names are :data:`CAPTURE_KEY` fields or sub-fields of DW0/DW1 (``type``, ``fmt``, ``tc``,
    ``length``, ``requester_id``, ``tag``... or dotted, ``"dw0.type"``).

    >>> match, mask = capture_filter(kind=CaptureKind.DROP, port=3)
    """
    match = pack(CAPTURE_KEY, fields, CAPTURE_KEY_SUBFIELDS)
    mask = 0
    for name in fields:
        lsb, width = _locate(CAPTURE_KEY, name, CAPTURE_KEY_SUBFIELDS)
        mask |= ((1 << width) - 1) << lsb
    return match, mask


def capture_key_of(*, hdr, pfx=0, port=0, kind=0, reason=0):
    """The packed capture key of one event (what the RTL compares)."""
    dw = [(hdr >> (32 * k)) & 0xFFFF_FFFF for k in range(4)]
    four_dw = (dw[0] >> DW0["fmt"][0]) & 1
    return pack(CAPTURE_KEY, {"dw0": dw[0], "dw1": dw[1], "dw2": dw[2],
                              "addr_lo": dw[3] if four_dw else dw[2], "pfx": pfx,
                              "reason": reason, "kind": kind, "port": port})


def key_matches(key, match, mask):
    """The filter rule: ``(key & mask) == (match & mask)``, padding bits ignored."""
    defined = sum(((1 << w) - 1) << lsb for lsb, w in CAPTURE_KEY.values())
    return (key ^ match) & mask & defined == 0


# ----------------------------------------------------------------------------------------------
# Latency histogram reference functions
# ----------------------------------------------------------------------------------------------

def elapsed_cycles(now, stamp, width=16):
    """Cycles from ``stamp`` to ``now`` on a free-running ``width``-bit counter (mod 2^width)."""
    return (now - stamp) % (1 << width)


def latency_bucket(latency, n_buckets):
    """Histogram bucket of ``latency``: 0 for 0, k for [2^(k-1), 2^k), the last bucket for
    everything at or above ``2^(n_buckets-2)``."""
    if latency < 0:
        raise ValueError(f"latency must be >= 0, not {latency}")
    return min(int(latency).bit_length(), n_buckets - 1)


def bucket_bounds(k, n_buckets):
    """``(low, high)`` latencies of bucket ``k`` (``high`` inclusive; None: unbounded)."""
    if k == 0:
        return 0, 0
    if k == n_buckets - 1:
        return 1 << (k - 1), None
    return 1 << (k - 1), (1 << k) - 1


# ----------------------------------------------------------------------------------------------
# Reference model of the header capture (hdl/telemetry.py HeaderCapture), cycle by cycle
# ----------------------------------------------------------------------------------------------

class HeaderCaptureModel:
    """Cycle-level reference of :class:`~smartfabric.hdl.telemetry.HeaderCapture`'s contract.

    Set the configuration attributes (``enable``, ``mode`` 0/1, ``match``, ``mask``,
    ``trigger_kinds``, ``trigger_on_match``, ``post_trigger``), then call :meth:`step` once per
    clock cycle with the events offered in that cycle. :meth:`entries` returns the valid ring
    entries, oldest first, as dicts of :data:`CAPTURE_ENTRY` fields. ``missed`` is the final
    count (the RTL shows it two cycles later).
    """

    def __init__(self, n_sources=1, depth=64, *, record_all=True, ts_width=32,
                 missed_width=32):
        self.n_sources, self.depth, self.record_all = n_sources, depth, record_all
        self.ts_mask = (1 << ts_width) - 1
        self.missed_max = (1 << missed_width) - 1
        self.enable, self.mode, self.match, self.mask = 1, 0, 0, 0
        self.trigger_kinds, self.trigger_on_match, self.post_trigger = DEFAULT_TRIGGER_KINDS, 0, 0
        self.now = 0
        self.ring = [None] * depth
        self.arm()

    def arm(self):
        self.write_ptr = self.count = self.missed = 0
        self.triggered = self.frozen = False
        self.trigger_time = 0
        self.remaining = 0
        self.gap_pending = False
        self.batch = []          # pending entries (dicts without the batch flags)
        self.b_flags = {}        # ts, trig, post, gap of the batch

    def _matches(self, ev):
        return key_matches(capture_key_of(**ev), self.match, self.mask)

    def step(self, events=(), *, trigger=False, arm=False):
        """One cycle: ``events`` is a list (length ``n_sources``) of None or dicts with
        ``port``, ``kind``, ``reason``, ``hdr``, ``pfx``."""
        events = list(events) + [None] * (self.n_sources - len(events))
        now = self.now
        self.now = (self.now + 1) & self.ts_mask
        if arm:
            self.arm()
            return
        hits = [ev is not None and self._matches(ev) for ev in events]
        trig_src = any(ev is not None and (self.trigger_kinds >> ev["kind"]) & 1 and
                       (not self.trigger_on_match or h) for ev, h in zip(events, hits))
        # write stage
        trig_mode = self.mode == 1
        freeze_now = (trig_mode and self.triggered and self.remaining == 0 and
                      (not self.batch or self.b_flags["post"]))
        if freeze_now:
            self.frozen = True
            self.batch = []
        elif self.batch:
            e = dict(self.batch.pop(0))
            e.update(timestamp=self.b_flags["ts"], trig=int(self.b_flags["trig"]),
                     gap=int(self.b_flags["gap"]))
            self.b_flags["gap"] = False
            self.ring[self.write_ptr] = e
            self.write_ptr = (self.write_ptr + 1) % self.depth
            self.count = min(self.count + 1, self.depth)
            if self.b_flags["post"]:
                self.remaining -= 1
        # take stage
        recording = self.enable and not self.frozen and not freeze_now
        fire = self.enable and not self.frozen and not self.triggered and (trigger or trig_src)
        lost = 0
        if recording and any(hits):
            taken = [ev for ev, h in zip(events, hits) if h]
            if self.batch:
                lost = len(taken)
            else:
                if not self.record_all:
                    lost, taken = len(taken) - 1, taken[:1]
                self.batch = [{k: ev[k] for k in ("port", "kind", "reason", "hdr", "pfx")}
                              for ev in taken]
                self.b_flags = {"ts": now, "trig": fire, "post": trig_mode and self.triggered,
                                "gap": self.gap_pending}
                self.gap_pending = False
        if lost:
            self.gap_pending = True
            self.missed = min(self.missed + lost, self.missed_max)
        if fire:
            self.triggered, self.remaining, self.trigger_time = True, self.post_trigger, now

    @property
    def oldest(self):
        return (self.write_ptr - self.count) % self.depth

    def entries(self):
        return [self.ring[(self.oldest + i) % self.depth] for i in range(self.count)]
