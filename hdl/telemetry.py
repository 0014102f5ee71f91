"""Telemetry blocks: latency histograms, counter tables, header capture and link monitors.

Issue 6 ("Telemetry"), design brief section 5. Each block is a :class:`wiring.Component` with
one job; the switch and the register block instantiate and wire them (``docs/telemetry.md``
lists how). Software-visible layouts (capture key, capture entry, link status) are defined once
in ``models/capture_format.py``; the ``data`` layouts here are built from those tables.

Blocks
------
:class:`LatencyTimer`
    The free-running cycle counter ``now`` that stamps headers at the ingress.
:func:`elapsed_cycles`, :func:`latency_bucket`
    The egress subtraction ``(now - stamp) mod 2^w`` and the log2 bucket priority encoder.
:class:`CounterTable`
    ``depth`` saturating counters in a memory, one increment (of 1 to ``max_increment``) per
    cycle, instant clear, a 1-cycle read port. The storage of the two blocks below.
:class:`LatencyHistogram`
    Log2-bucket latency histogram (a :class:`CounterTable` indexed by :func:`latency_bucket`).
:class:`GroupStatistics`
    Per reduction group event counters (completed, aborted, NaN, infinity, saturation).
:class:`HeaderCapture`
    Match/mask filtered capture ring of headers with timestamps and a freeze-on-trigger mode.
:class:`LinkMonitor`
    One port's ``link_status`` bits (activity, egress stuck, last error).
"""

from amaranth.hdl import C, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..models import capture_format as CF
from ..models.formats import DW0, HDR_BITS, PFX_BITS

__all__ = [
    "layout_from_table", "CaptureKey", "CaptureEntry", "LinkStatus", "CaptureSource",
    "CaptureMode", "elapsed_cycles", "latency_bucket", "LatencyTimer", "CounterTable",
    "LatencyHistogram", "GroupStatistics", "HeaderCapture", "LinkMonitor",
]


# ----------------------------------------------------------------------------------------------
# Layouts built from models/capture_format.py
# ----------------------------------------------------------------------------------------------

def layout_from_table(table, size, subfields=None):
    """A :class:`data.FlexibleLayout` of ``size`` bits with a field per ``(lsb, width)`` entry
    of ``table``; a field named in ``subfields`` gets that table as its own layout (so
    ``key.dw0.type`` works). Bits no field covers are padding."""
    subfields = subfields or {}
    fields = {}
    for name, (lsb, width) in table.items():
        shape = layout_from_table(subfields[name], width) if name in subfields else width
        fields[name] = data.Field(shape, lsb)
    return data.FlexibleLayout(size, fields)


#: The capture filter's key (``match`` and ``mask`` have this layout; 192 bits, 6 words).
CaptureKey = layout_from_table(CF.CAPTURE_KEY, CF.KEY_BITS, CF.CAPTURE_KEY_SUBFIELDS)
#: One capture ring entry as read (224 bits, 7 words: timestamp, meta, hdr DW0..3, pfx).
CaptureEntry = layout_from_table(CF.CAPTURE_ENTRY, CF.ENTRY_BITS)
#: The per-port ``link_status`` register (32 bits).
LinkStatus = layout_from_table(CF.LINK_STATUS, 32)


def _defined_bits(table):
    return sum(((1 << width) - 1) << lsb for lsb, width in table.values())


class CaptureSource(data.Struct):
    """One header event offered to :class:`HeaderCapture` in a cycle.

    ``kind`` is a :class:`~smartfabric.models.capture_format.CaptureKind` code, ``reason`` a
    ``DropReason`` code (0 for kinds that are not drops), ``port`` the port the event happened
    on, ``hdr``/``pfx`` the header sideband values (``docs/protocol.md`` section 1).
    """
    valid: 1
    port: CF.PORT_BITS
    kind: CF.KIND_BITS
    reason: CF.REASON_BITS
    hdr: HDR_BITS
    pfx: PFX_BITS


class CaptureMode(enum.Enum, shape=1):
    """``HeaderCapture.mode``."""
    CONTINUOUS = 0   # ring: the newest entry overwrites the oldest; a trigger only marks
    TRIGGER = 1      # freeze ``post_trigger`` entries after the trigger


# ----------------------------------------------------------------------------------------------
# Latency measurement
# ----------------------------------------------------------------------------------------------

def elapsed_cycles(now, stamp):
    """``(now - stamp) mod 2^w`` as a ``w``-bit value (``w = len(now)``): the cycles since a
    packet was stamped with the value of a free-running ``w``-bit counter. Exact while the
    true latency is below ``2^w``; longer latencies alias (modulo ``2^w``)."""
    now, stamp = Value.cast(now), Value.cast(stamp)
    return (now - stamp)[:len(now)]


def latency_bucket(latency, n_buckets):
    """Log2 bucket of an unsigned ``latency`` (a priority encoder, combinational).

    Bucket 0 holds latency 0, bucket ``k`` (``1 <= k < n_buckets - 1``) holds
    ``[2^(k-1), 2^k)``, and the last bucket everything at or above ``2^(n_buckets-2)``: the
    bucket is ``min(bit_length(latency), n_buckets - 1)``
    (``models.capture_format.latency_bucket`` is the reference).
    """
    if not isinstance(n_buckets, int) or n_buckets < 2:
        raise ValueError(f"n_buckets must be an integer >= 2, not {n_buckets!r}")
    latency = Value.cast(latency)
    top = n_buckets - 1
    bucket = C(0, range(n_buckets))
    # bits below the saturation threshold: the highest set bit wins (last Mux outermost)
    for k in range(min(len(latency), top - 1)):
        bucket = Mux(latency[k], k + 1, bucket)
    if len(latency) >= top:
        bucket = Mux(latency[top - 1:] != 0, top, bucket)
    return bucket


class LatencyTimer(wiring.Component):
    """Free-running cycle counter used to stamp headers (``now``).

    The switch's latency scheme (``docs/telemetry.md`` section 1): when an ingress accepts a
    first beat it stores ``now`` beside the header in the VOQ entry; when the egress delivers
    that first beat it computes :func:`elapsed_cycles` ``(now, stamp)`` and offers it to the
    egress's :class:`LatencyHistogram`. One counter serves every port.

    Parameters
    ----------
    width : int
        Counter width (default 16): latencies up to ``2^width - 1`` cycles are exact.

    Members
    -------
    now : Out(width)
        Cycles since reset, modulo ``2^width``; increments at every clock edge.
    """

    def __init__(self, width=16):
        if not isinstance(width, int) or not 1 <= width <= 64:
            raise ValueError(f"width must be an integer from 1 to 64, not {width!r}")
        self.width = width
        super().__init__({"now": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.now.eq(self.now + 1)
        return m


# ----------------------------------------------------------------------------------------------
# Counter storage
# ----------------------------------------------------------------------------------------------

class CounterTable(wiring.Component):
    """``depth`` saturating event counters kept in a memory.

    Storage: a ``lib.memory`` :class:`Memory` (``depth`` x ``count_width``) with one write
    port, one synchronous read port for the read-modify-write (transparent for the write port,
    so back-to-back increments of one counter are exact) and one synchronous read port for the
    bus. Synchronous reads let the memory map to LUT RAM (small tables) or block RAM (large
    ones); a register file would cost ``depth * count_width`` flip-flops plus a wide mux.
    ``depth`` valid bits (flip-flops) make ``clear`` instantaneous: a counter whose valid bit is
    0 reads as 0 and restarts from 0.

    Parameters
    ----------
    depth : int
        Number of counters (>= 2).
    count_width : int
        Bits per counter (1 to 64). Counters saturate at ``2^count_width - 1``; never wrap.
    max_increment : int
        Largest amount one increment adds (>= 1; default 1).

    Members
    -------
    inc_valid : In(1)
        Increment counter ``inc_index`` this cycle (at most one increment per cycle).
    inc_index : In(range(depth))
        Counter to increment. An index at or above ``depth`` is ignored.
    inc_amount : In(range(max_increment + 1), init=1)
        What the increment adds (0 adds nothing). Its reset value is 1, so a table of unit
        events may leave it undriven. The sum saturates: a counter that would pass
        ``2^count_width - 1`` stops there.
    clear : In(1)
        Set every counter to 0. Increments presented in the same cycle or the cycle before are
        discarded; increments from the next cycle on are counted.
    read_index : In(range(depth))
        Counter to read.
    read_data : Out(count_width)
        The value of counter ``read_index`` as of the clock edge that sampled ``read_index``;
        valid one cycle later (1-cycle latency). An increment presented in cycle *t* is
        visible to a read whose index is sampled at edge *t+2* or later (increments are
        written at edge *t+1*).
    """

    def __init__(self, depth, count_width=32, max_increment=1):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2, not {depth!r}")
        if not isinstance(count_width, int) or not 1 <= count_width <= 64:
            raise ValueError(f"count_width must be an integer from 1 to 64, not {count_width!r}")
        if not isinstance(max_increment, int) or isinstance(max_increment, bool) or \
                max_increment < 1:
            raise ValueError(f"max_increment must be an integer >= 1, not {max_increment!r}")
        self.depth = depth
        self.count_width = count_width
        self.max_increment = max_increment
        super().__init__({
            "inc_valid": In(1),
            "inc_index": In(range(depth)),
            "inc_amount": In(range(max_increment + 1), init=1),
            "clear": In(1),
            "read_index": In(range(depth)),
            "read_data": Out(count_width),
        })

    def elaborate(self, platform):
        m = Module()
        depth, width = self.depth, self.count_width
        m.submodules.memory = memory = Memory(shape=width, depth=depth, init=[])
        wp = memory.write_port()
        rmw = memory.read_port(domain="sync", transparent_for=(wp,))
        bus = memory.read_port(domain="sync")
        present = Signal(depth)        # bit i: counter i holds a value since the last clear

        # Stage 0: read the counter (a write to the same row at this edge is forwarded).
        in_range = (self.inc_index < depth) if depth < 1 << len(self.inc_index) else C(1)
        s1_valid = Signal()
        s1_index = Signal(range(depth))
        s1_amount = Signal.like(self.inc_amount)
        s1_present = Signal()
        m.d.comb += [rmw.addr.eq(self.inc_index), rmw.en.eq(1)]
        m.d.sync += [
            s1_valid.eq(self.inc_valid & in_range & ~self.clear),
            s1_index.eq(self.inc_index),
            s1_amount.eq(self.inc_amount),
            s1_present.eq(present.bit_select(self.inc_index, 1) |
                          (wp.en & (wp.addr == self.inc_index))),
        ]

        # Stage 1: add, saturating, and write back.
        old = Mux(s1_present, rmw.data, 0)
        total = old + s1_amount                    # one bit wider than both: never wraps
        m.d.comb += [
            wp.addr.eq(s1_index),
            wp.data.eq(Mux(total[width:].any(), (1 << width) - 1, total[:width])),
            wp.en.eq(s1_valid & ~self.clear),
        ]
        with m.If(self.clear):
            m.d.sync += present.eq(0)
        with m.Elif(wp.en):
            m.d.sync += present.bit_select(s1_index, 1).eq(1)

        # Bus read: 1-cycle latency, the value before any write at the sampling edge.
        bus_present = Signal()
        m.d.comb += [bus.addr.eq(self.read_index), bus.en.eq(1),
                     self.read_data.eq(Mux(bus_present, bus.data, 0))]
        m.d.sync += bus_present.eq(present.bit_select(self.read_index, 1))
        return m


class LatencyHistogram(wiring.Component):
    """Log2-bucket histogram of latencies (one per egress in the switch).

    Bucket 0 counts latency 0, bucket ``k`` counts latencies in ``[2^(k-1), 2^k)`` and the last
    bucket everything at or above ``2^(n_buckets-2)`` (:func:`latency_bucket`). Counters
    saturate. Storage is a :class:`CounterTable` (a 16 x 32 LUT RAM on an FPGA; see its notes).

    Parameters
    ----------
    n_buckets : int
        Number of buckets (2 to 64; default 16).
    count_width : int
        Bits per bucket counter (default 32).
    latency_width : int
        Width of ``latency`` (default 16, the :class:`LatencyTimer` width).

    Members
    -------
    sample_valid : In(1)
        Count ``latency`` this cycle (one sample per cycle).
    latency : In(latency_width)
        Cycles from header accepted to header delivered (:func:`elapsed_cycles`).
    clear : In(1)
        Zero every bucket (samples presented in this cycle or the one before are discarded).
    read_index : In(range(n_buckets))
    read_data : Out(count_width)
        Bucket ``read_index``'s count, one cycle after ``read_index`` is sampled. A sample
        presented in cycle *t* is visible to a read sampled at edge *t+2* or later.
    """

    def __init__(self, n_buckets=16, count_width=32, latency_width=16):
        if not isinstance(n_buckets, int) or not 2 <= n_buckets <= 64:
            raise ValueError(f"n_buckets must be an integer from 2 to 64, not {n_buckets!r}")
        if not isinstance(latency_width, int) or not 1 <= latency_width <= 64:
            raise ValueError(f"latency_width must be an integer from 1 to 64, "
                             f"not {latency_width!r}")
        self.n_buckets = n_buckets
        self.count_width = count_width
        self.latency_width = latency_width
        self._table = CounterTable(n_buckets, count_width)   # validates count_width
        super().__init__({
            "sample_valid": In(1),
            "latency": In(latency_width),
            "clear": In(1),
            "read_index": In(range(n_buckets)),
            "read_data": Out(count_width),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = self._table
        m.d.comb += [
            table.inc_valid.eq(self.sample_valid),
            table.inc_index.eq(latency_bucket(self.latency, self.n_buckets)),
            table.clear.eq(self.clear),
            table.read_index.eq(self.read_index),
            self.read_data.eq(table.read_data),
        ]
        return m


class GroupStatistics(wiring.Component):
    """Per reduction group event counters: one :class:`CounterTable` per statistic.

    Parameters
    ----------
    n_groups : int
        Reduction groups (``SwitchParams.n_rgroups``; >= 2).
    stats : tuple of str
        Statistic names, in order (default ``models.capture_format.GROUP_STATS``:
        completed, aborted, nan, infinity, saturation).
    count_width : int
        Bits per counter (saturating; default 32).
    max_amount : int
        Largest ``amount`` of one event (>= 1; default 1): the reduction engine's element
        statistics count up to ``data_width / 8`` elements of a result beat at once.

    Members
    -------
    events : In(event_layout, init={"amount": 1}).array(len(stats))
        ``event_layout`` = ``StructLayout({"valid": 1, "group": range(n_groups),
        "amount": range(max_amount + 1)})``. ``events[k]``: ``amount`` events of statistic
        ``k`` of ``group`` happened this cycle (one ``events[k]`` per statistic per cycle;
        e.g. the reduction engine's ``completed`` / ``aborted`` pulses, amount 1, and its
        ``nan`` / ``infinity`` / ``saturation`` element counts). ``amount`` resets to 1, so
        a unit event source may leave it undriven.
    clear : In(1)
        Zero every counter (as :class:`CounterTable`).
    read_index : In(range(n_groups))
    read_data : Out(count_width).array(len(stats))
        Every statistic of group ``read_index``, one cycle later.
    """

    def __init__(self, n_groups, stats=CF.GROUP_STATS, count_width=32, max_amount=1):
        stats = tuple(stats)
        if not stats or len(set(stats)) != len(stats):
            raise ValueError(f"stats must be distinct names, not {stats!r}")
        self.stats = stats
        self.n_groups = n_groups
        self.max_amount = max_amount
        self._tables = [CounterTable(n_groups, count_width, max_amount)   # validate
                        for _ in stats]
        self.event_layout = data.StructLayout({"valid": 1, "group": range(n_groups),
                                               "amount": range(max_amount + 1)})
        super().__init__({
            "events": In(self.event_layout, init={"amount": 1}).array(len(stats)),
            "clear": In(1),
            "read_index": In(range(n_groups)),
            "read_data": Out(count_width).array(len(stats)),
        })

    def index(self, name):
        """Position of statistic ``name`` in ``events`` / ``read_data``."""
        return self.stats.index(name)

    def elaborate(self, platform):
        m = Module()
        for k, table in enumerate(self._tables):
            m.submodules[f"table_{self.stats[k]}"] = table
            m.d.comb += [
                table.inc_valid.eq(self.events[k].valid),
                table.inc_index.eq(self.events[k].group),
                table.inc_amount.eq(self.events[k].amount),
                table.clear.eq(self.clear),
                table.read_index.eq(self.read_index),
                self.read_data[k].eq(table.read_data),
            ]
        return m


# ----------------------------------------------------------------------------------------------
# Header capture
# ----------------------------------------------------------------------------------------------

class HeaderCapture(wiring.Component):
    """Capture ring of headers that match a programmable filter, with a freeze-on-trigger mode.

    **Filter.** Each cycle every valid source's key (:data:`CaptureKey`, built from its header,
    prefix, port, kind and reason) is compared with the filter: the source *matches* when
    ``(key & mask) == (match & mask)`` (padding bits of ``mask`` are ignored; ``mask == 0``
    matches every event).

    **Recording.** While ``enable`` is high and the ring is not frozen, matching events are
    recorded in a ``depth``-entry ring with the cycle they were offered in (``now``).

    * ``record_all=True``: all matches of one cycle are taken into a batch register, one per
      source, and written one per clock edge, lowest-numbered source first, so entries are in
      timestamp order and, within a cycle, in source order. While a batch of *k* entries
      drains (*k - 1* further cycles), new matches cannot be taken: they are counted in
      ``missed``. A single match per cycle is recorded at full rate, every cycle.
    * ``record_all=False``: only the lowest-numbered match of a cycle is recorded; the other
      matches of that cycle are counted in ``missed``. Costs one entry register, not
      ``n_sources``.

    No match is lost silently: ``missed`` counts every matching event not recorded while
    recording, and the next entry recorded after a loss has its ``gap`` bit set. (Events while
    disabled or frozen, and the rest of a post-trigger batch once ``post_trigger`` entries are
    written, are not recorded by design and not counted.)

    **Ring.** Entry ``write_ptr`` is written next; after ``depth`` entries the newest
    overwrites the oldest. ``count`` entries are valid, the oldest at ``oldest``; read them in
    order at ``(oldest + i) mod depth`` for ``i < count``.

    **Trigger.** The trigger fires (once until ``arm``) in the first cycle, while recording,
    where ``trigger`` is high or a valid source's ``kind`` has its bit set in
    ``trigger_kinds`` (and, if ``trigger_on_match``, the source also matches the filter).
    ``triggered`` rises, ``trigger_time`` keeps ``now`` of that cycle and the entries of that
    cycle get their ``trig`` bit. In ``CaptureMode.TRIGGER`` recording then goes on for exactly
    ``post_trigger`` more entries (entries of later cycles), and the ring freezes (``frozen``):
    nothing more is written until ``arm``. Keep ``post_trigger < depth`` for the trigger's own
    entries to stay in the ring. In ``CaptureMode.CONTINUOUS`` the trigger only marks.

    **Arm.** ``arm`` empties the ring (``count = 0``, ``write_ptr = 0``) and clears
    ``triggered``, ``frozen``, ``missed`` and the gap state; events offered in the ``arm`` cycle
    are ignored. After reset the capture is armed. Change ``mode``, ``post_trigger``,
    ``match`` and ``mask`` while ``enable`` is low, then pulse ``arm``.

    Parameters
    ----------
    n_sources : int
        Event sources per cycle (1 to 96: three per port of a 32-port switch).
    depth : int
        Ring entries, a power of two (2 to 65,536; default 64).
    ts_width : int
        Width of the timestamp counter ``now`` (1 to 32; the entry's field has 32 bits).
    record_all : bool
        Record every match of a cycle (True, default) or only the lowest-numbered one.
    missed_width : int
        Width of the saturating ``missed`` counter (default 32).
    post_trigger_width : int
        Width of ``post_trigger`` (default 16).

    Members
    -------
    sources : In(CaptureSource).array(n_sources)
        Events offered this cycle (``valid`` qualifies each).
    enable, mode, match, mask, trigger_kinds, trigger_on_match, post_trigger : In
        Configuration (``match``, ``mask``: :data:`CaptureKey`; ``trigger_kinds``: 8 bits,
        bit k for kind k, ``models.capture_format.DEFAULT_TRIGGER_KINDS`` = error kinds).
    trigger : In(1)
        Explicit trigger (e.g. a software strobe or another block's error).
    arm : In(1)
        Restart strobe (see above).
    read_index : In(range(depth))
        Ring index to read (physical; see ``oldest``).
    read_data : Out(CaptureEntry)
        Entry ``read_index`` as of the edge that sampled the index, one cycle later (1-cycle
        latency; not transparent: a write at that same edge is not seen). Read a frozen or
        disabled ring for a consistent dump.
    read_word : In(range(8)), read_word_data : Out(32)
        The same read as 32-bit words, for a register window: word ``read_word`` (sampled at
        the same edge as ``read_index``) of ``read_data``; word 7 reads 0. Entry *i* word *k*
        then sits at window offset ``(8 * i + k) * 4``.
    count : Out(range(depth + 1)), write_ptr : Out(range(depth)), oldest : Out(range(depth))
    frozen, triggered : Out(1)
    trigger_time : Out(ts_width)
    missed : Out(missed_width)
        Matching events not recorded (saturating); updated two cycles after the loss.
    now : Out(ts_width)
        The timestamp counter (cycles since reset, wrapping).
    """

    def __init__(self, n_sources=1, depth=64, ts_width=32, *, record_all=True, missed_width=32,
                 post_trigger_width=16):
        if not isinstance(n_sources, int) or not 1 <= n_sources <= 96:
            raise ValueError(f"n_sources must be an integer from 1 to 96, not {n_sources!r}")
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1) or depth > 65536:
            raise ValueError(f"depth must be a power of two from 2 to 65536, not {depth!r}")
        if not isinstance(ts_width, int) or not 1 <= ts_width <= CF.ENTRY_TS_BITS:
            raise ValueError(f"ts_width must be an integer from 1 to {CF.ENTRY_TS_BITS}, "
                             f"not {ts_width!r}")
        for name, v in (("missed_width", missed_width), ("post_trigger_width", post_trigger_width)):
            if not isinstance(v, int) or not 1 <= v <= 64:
                raise ValueError(f"{name} must be an integer from 1 to 64, not {v!r}")
        self.n_sources = n_sources
        self.depth = depth
        self.ts_width = ts_width
        self.record_all = bool(record_all)
        self.missed_width = missed_width
        super().__init__({
            "sources": In(CaptureSource).array(n_sources),
            "enable": In(1),
            "mode": In(CaptureMode),
            "match": In(CaptureKey),
            "mask": In(CaptureKey),
            "trigger_kinds": In(1 << CF.KIND_BITS, init=CF.DEFAULT_TRIGGER_KINDS),
            "trigger_on_match": In(1),
            "post_trigger": In(post_trigger_width),
            "trigger": In(1),
            "arm": In(1),
            "read_index": In(range(depth)),
            "read_data": Out(CaptureEntry),
            "read_word": In(range(8)),
            "read_word_data": Out(32),
            "count": Out(range(depth + 1)),
            "write_ptr": Out(range(depth)),
            "oldest": Out(range(depth)),
            "frozen": Out(1),
            "triggered": Out(1),
            "trigger_time": Out(ts_width),
            "missed": Out(missed_width),
            "now": Out(ts_width),
        })

    @staticmethod
    def key_of(m, source, name="key"):
        """The :data:`CaptureKey` of a :class:`CaptureSource` (combinational)."""
        key = Signal(CaptureKey, name=name)
        hdr = Value.cast(source.hdr)
        dw = [hdr[32 * k:32 * k + 32] for k in range(4)]
        four_dw = dw[0][DW0["fmt"][0]]
        m.d.comb += [
            key.dw0.eq(dw[0]), key.dw1.eq(dw[1]), key.dw2.eq(dw[2]),
            key.addr_lo.eq(Mux(four_dw, dw[3], dw[2])), key.pfx.eq(source.pfx),
            key.reason.eq(source.reason), key.kind.eq(source.kind), key.port.eq(source.port),
        ]
        return key

    def elaborate(self, platform):
        m = Module()
        n, depth = self.n_sources, self.depth
        slots = n if self.record_all else 1
        ptr_bits = (depth - 1).bit_length()

        now = Signal(self.ts_width)
        m.d.sync += now.eq(now + 1)
        m.d.comb += self.now.eq(now)

        # ---- filter and trigger condition, per source ----
        defined = Const(_defined_bits(CF.CAPTURE_KEY), CF.KEY_BITS)
        mask = Value.cast(self.mask) & defined
        hits = Signal(n)
        trig_hits = Signal(n)
        for i, src in enumerate(self.sources):
            key = self.key_of(m, src, f"key_{i}")
            key_match = ((Value.cast(key) ^ Value.cast(self.match)) & mask) == 0
            m.d.comb += [
                hits[i].eq(src.valid & key_match),
                trig_hits[i].eq(src.valid & self.trigger_kinds.bit_select(src.kind, 1) &
                                (~self.trigger_on_match | key_match)),
            ]

        # ---- state ----
        entry_layout = data.StructLayout({
            "port": CF.PORT_BITS, "kind": CF.KIND_BITS, "reason": CF.REASON_BITS,
            "hdr": HDR_BITS, "pfx": PFX_BITS})
        batch = [Signal(entry_layout, name=f"batch_{k}") for k in range(slots)]
        pend = Signal(slots)            # batch slots not yet written
        b_ts = Signal(self.ts_width)    # the batch's cycle
        b_trig = Signal()               # captured in the trigger cycle
        b_post = Signal()               # captured after the trigger (counts for post_trigger)
        b_gap = Signal()                # the batch's first entry follows a loss
        triggered = Signal()
        frozen = Signal()
        remaining = Signal(len(self.post_trigger))
        gap_pending = Signal()
        write_ptr = Signal(ptr_bits)
        count = Signal(range(depth + 1))
        lost_count = Signal(range(n + 1))
        missed = Signal(self.missed_width)
        trigger_time = Signal(self.ts_width)

        # ---- write stage: one entry per edge, lowest pending slot first ----
        mode_trig = self.mode == CaptureMode.TRIGGER
        have = pend.any()
        sel = Signal(slots)
        m.d.comb += sel.eq(pend & (~pend + 1))           # lowest set bit
        freeze_now = Signal()
        m.d.comb += freeze_now.eq(mode_trig & triggered & (remaining == 0) & (~have | b_post))
        do_write = Signal()
        m.d.comb += do_write.eq(have & ~freeze_now & ~self.arm)
        pend_after = Mux(do_write, pend & ~sel, Mux(freeze_now, 0, pend))
        batch_free = pend_after == 0

        # ---- take stage: this cycle's matches into the batch ----
        recording = self.enable & ~frozen & ~self.arm
        fire = Signal()
        m.d.comb += fire.eq(recording & ~triggered & (self.trigger | trig_hits.any()))
        take = recording & ~freeze_now
        latch = Signal()
        m.d.comb += latch.eq(take & batch_free & hits.any())
        lost = Signal(n)
        if self.record_all:
            slot_hits = hits
            m.d.comb += lost.eq(Mux(take & ~batch_free, hits, 0))
            slot_load = [(k, self.sources[k]) for k in range(n)]
        else:
            first = Signal(n)
            m.d.comb += first.eq(hits & (~hits + 1))
            slot_hits = first.any()
            m.d.comb += lost.eq(Mux(take, Mux(batch_free, hits & ~first, hits), 0))
            # AND-OR select of the lowest-numbered matching source
            chosen = 0
            source_bits = CaptureSource.as_shape().size
            for k in range(n):
                chosen = chosen | (Value.cast(self.sources[k]) & first[k].replicate(source_bits))
            slot_load = [(0, CaptureSource(chosen))]

        # ---- memory ----
        stored = data.StructLayout({"ts": self.ts_width, "trig": 1, "gap": 1,
                                    "entry": entry_layout})
        m.submodules.memory = memory = Memory(shape=stored, depth=depth, init=[])
        wp = memory.write_port()
        rp = memory.read_port(domain="sync")
        selected = 0                    # AND-OR multiplexer of the batch slot being written
        for k in range(slots):
            selected = selected | (Value.cast(batch[k]) & sel[k].replicate(entry_layout.size))
        m.d.comb += [
            wp.addr.eq(write_ptr), wp.en.eq(do_write),
            wp.data.ts.eq(b_ts), wp.data.trig.eq(b_trig), wp.data.gap.eq(b_gap),
            wp.data.entry.eq(selected),
        ]

        # ---- state update ----
        lost_pop = sum((lost[i] for i in range(n)), C(0, range(n + 1)))
        with m.If(self.arm):
            m.d.sync += [
                pend.eq(0), triggered.eq(0), frozen.eq(0), gap_pending.eq(0), b_gap.eq(0),
                write_ptr.eq(0), count.eq(0), lost_count.eq(0), missed.eq(0),
                trigger_time.eq(0), remaining.eq(0),
            ]
        with m.Else():
            m.d.sync += pend.eq(Mux(latch, slot_hits, pend_after))
            with m.If(do_write):
                m.d.sync += [write_ptr.eq(write_ptr + 1), b_gap.eq(0)]
                with m.If(count != depth):
                    m.d.sync += count.eq(count + 1)
                with m.If(b_post):
                    m.d.sync += remaining.eq(remaining - 1)
            with m.If(latch):
                m.d.sync += [b_ts.eq(now), b_trig.eq(fire), b_post.eq(mode_trig & triggered),
                             b_gap.eq(gap_pending)]
                for k, src in slot_load:
                    m.d.sync += batch[k].eq(Cat(src.port, src.kind, src.reason, src.hdr, src.pfx))
            m.d.sync += gap_pending.eq(Mux(latch, 0, gap_pending) | lost.any())
            with m.If(fire):
                m.d.sync += [triggered.eq(1), remaining.eq(self.post_trigger),
                             trigger_time.eq(now)]
            with m.If(freeze_now):
                m.d.sync += frozen.eq(1)
            # missed: population count registered, then a saturating add
            m.d.sync += lost_count.eq(lost_pop)
            total = missed + lost_count
            max_missed = (1 << self.missed_width) - 1
            m.d.sync += missed.eq(Mux(total > max_missed, max_missed, total))

        # ---- read side and status ----
        m.d.comb += [rp.addr.eq(self.read_index), rp.en.eq(1)]
        out = self.read_data
        word = Signal(range(8))
        m.d.sync += word.eq(self.read_word)
        words = [Value.cast(out)[32 * k:32 * k + 32] for k in range(CF.ENTRY_WORDS)]
        word_data = C(0, 32)
        for k, w in enumerate(words):
            word_data = Mux(word == k, w, word_data)
        m.d.comb += self.read_word_data.eq(word_data)
        m.d.comb += [
            out.timestamp.eq(rp.data.ts), out.trig.eq(rp.data.trig), out.gap.eq(rp.data.gap),
            out.port.eq(rp.data.entry.port), out.kind.eq(rp.data.entry.kind),
            out.reason.eq(rp.data.entry.reason), out.hdr.eq(rp.data.entry.hdr),
            out.pfx.eq(rp.data.entry.pfx),
            self.count.eq(count), self.write_ptr.eq(write_ptr),
            self.oldest.eq((write_ptr - count)[:ptr_bits]),
            self.frozen.eq(frozen), self.triggered.eq(triggered),
            self.trigger_time.eq(trigger_time), self.missed.eq(missed),
        ]
        return m


# ----------------------------------------------------------------------------------------------
# Link monitor
# ----------------------------------------------------------------------------------------------

class LinkMonitor(wiring.Component):
    """One port's link status (the proposed ``link_status[p]`` register, :data:`LinkStatus`).

    All ``status`` fields are registered: they reflect the inputs up to the previous cycle.

    * ``enabled``: ``enable`` (the port's ``port_enable`` bit).
    * ``rx_active`` / ``tx_active``: a beat crossed the ingress (``rx_valid & rx_ready``) /
      egress (``tx_valid & tx_ready``) in the last ``2^activity_log2`` cycles: high for exactly
      ``2^activity_log2`` cycles after the cycle of the last transfer.
    * ``stall_cycles``: consecutive cycles, up to the previous one, with ``tx_valid`` high and
      ``tx_ready`` low (saturating at ``2^stuck_threshold_width - 1``; 0 after any other cycle).
    * ``tx_stuck``: the egress has stalled for more than ``stuck_threshold`` consecutive
      cycles: it rises in the cycle after the ``(stuck_threshold + 1)``-th consecutive stall
      cycle and falls in the cycle after the stall ends.
    * ``tx_stuck_seen``, ``error_seen``: sticky versions (``tx_stuck`` rose / ``error`` pulsed)
      until ``clear``.
    * ``last_error``: ``error_reason`` of the latest ``error`` pulse (0 after ``clear``).

    ``clear`` resets the sticky bits and ``last_error``; an event in the same cycle wins.

    Parameters
    ----------
    stuck_threshold_width : int
        Width of ``stuck_threshold`` and of the stall run counter (1 to 16).
    activity_log2 : int
        ``k`` of the activity window ``2^k`` cycles (1 to 32; default 16).

    Members
    -------
    enable, rx_valid, rx_ready, tx_valid, tx_ready, error : In(1)
    error_reason : In(5)
        DropReason of the error pulsed on ``error``.
    stuck_threshold : In(stuck_threshold_width)
    clear : In(1)
    status : Out(LinkStatus)
    """

    def __init__(self, stuck_threshold_width=16, activity_log2=16):
        if not isinstance(stuck_threshold_width, int) or not 1 <= stuck_threshold_width <= 16:
            raise ValueError(f"stuck_threshold_width must be an integer from 1 to 16, "
                             f"not {stuck_threshold_width!r}")
        if not isinstance(activity_log2, int) or not 1 <= activity_log2 <= 32:
            raise ValueError(f"activity_log2 must be an integer from 1 to 32, "
                             f"not {activity_log2!r}")
        self.stuck_threshold_width = stuck_threshold_width
        self.activity_log2 = activity_log2
        super().__init__({
            "enable": In(1),
            "rx_valid": In(1), "rx_ready": In(1),
            "tx_valid": In(1), "tx_ready": In(1),
            "error": In(1), "error_reason": In(CF.REASON_BITS),
            "stuck_threshold": In(stuck_threshold_width),
            "clear": In(1),
            "status": Out(LinkStatus),
        })

    def _activity(self, m, transfer, name):
        timer = Signal(self.activity_log2, name=f"{name}_timer")
        active = Signal(name=f"{name}_active")
        with m.If(transfer):
            m.d.sync += [timer.eq((1 << self.activity_log2) - 1), active.eq(1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += active.eq(0)
        return active

    def elaborate(self, platform):
        m = Module()
        st = self.status
        rx_active = self._activity(m, self.rx_valid & self.rx_ready, "rx")
        tx_active = self._activity(m, self.tx_valid & self.tx_ready, "tx")

        width = self.stuck_threshold_width
        run = Signal(width)
        stuck = Signal()
        stuck_seen = Signal()
        error_seen = Signal()
        last_error = Signal(CF.REASON_BITS)
        enabled = Signal()
        stall = self.tx_valid & ~self.tx_ready
        becomes_stuck = stall & (stuck | (run == self.stuck_threshold))
        with m.If(stall):
            with m.If(run != (1 << width) - 1):
                m.d.sync += run.eq(run + 1)
        with m.Else():
            m.d.sync += run.eq(0)
        m.d.sync += [stuck.eq(becomes_stuck), enabled.eq(self.enable)]

        with m.If(self.clear):
            m.d.sync += [stuck_seen.eq(0), error_seen.eq(0), last_error.eq(0)]
        with m.If(becomes_stuck):
            m.d.sync += stuck_seen.eq(1)
        with m.If(self.error):
            m.d.sync += [error_seen.eq(1), last_error.eq(self.error_reason)]

        m.d.comb += [
            st.enabled.eq(enabled), st.rx_active.eq(rx_active), st.tx_active.eq(tx_active),
            st.tx_stuck.eq(stuck), st.tx_stuck_seen.eq(stuck_seen),
            st.error_seen.eq(error_seen), st.last_error.eq(last_error),
            st.stall_cycles.eq(run),
        ]
        return m
