"""In-network reduction engine: member contributions in, reduced MWr packets out.

Architecture and rules: ``docs/reduction-engine.md``; numeric semantics: ``docs/reduction.md``
(brief section 4); wire formats: ``models/formats.py`` (``INC_PREFIX``, ``INC_NOTICE``,
``DropReason.INC_*``). Arithmetic is :class:`~smartfabric.hdl.reduce_datapath.BeatReducer`.

Block diagram (one lane and one stage memory per port, one scheduler, one reducer)::

    contrib[p] --> lane p: header checks, DW gearbox --> stage memory p (ring per group)
                       |  reject / notice                         |  (read, same address
                       v                                          v   on every memory)
                  notice arbiter --> notice FIFO --+     scheduler: pick group (round robin),
                                                   |     burst of k beats --> BeatReducer
                                                   v                             |
                                       result <-- output queue <-- packetiser +
"""

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, Value
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..models import formats as F
from ..models.reduction import DTYPE_NAMES, DTYPES, ELEMENT_EVENTS, FLOAT_OPS, OPS
from .params import SwitchParams
from .reduce_datapath import BeatReducer, ElementEventCounter, ElemType, ReduceOp, model_enum
from .bits import one_hot_select
from .tlp import EgressBeat, hdr_address, hdr_dw, hdr_field, with_address

__all__ = [
    "Collective", "ConfigError", "RGroupConfig", "ResultBeat", "LaneEvent", "GroupEvent",
    "GroupCount", "ConfigEvent", "ReductionEngine", "SIZE_BITS", "OFFSET_BITS", "TIMEOUT_BITS",
]

SIZE_BITS = 32                  # bytes of one operation (``size``): up to 4 GiB - 4
OFFSET_BITS = SIZE_BITS - 2     # DW offsets inside an operation
TIMEOUT_BITS = 32
ROOT_BITS = 5                   # rgroup[g].ctrl.root: ports 0..31
BUF_FIELD_BITS = 17             # rgroup[g].buf_base / buf_beats: up to 65,536 beats
GROUP_ID_BITS = 8               # INC_PREFIX["group"]
REASON_BITS = 8


Collective = model_enum("Collective", [m.name for m in F.Collective], """Where a reduction
    group's results go (``RGroupConfig.collective``): ``models.formats.Collective``.""")

ConfigError = model_enum("ConfigError", [m.name for m in F.RGroupConfigError], """Why arming a
    group failed (``config_error.cause``): ``models.formats.RGroupConfigError``,
    docs/reduction-engine.md section 2.""")


def RGroupConfig(n_ports, buffer_beats):
    """Layout of one reduction group's configuration (``ReductionEngine.config[g]``).

    Fields: ``enable``; ``members`` (bit p: port p contributes); ``elem_type``
    (:class:`ElemType`), ``op`` (:class:`ReduceOp`), ``saturate`` (fp8 sums);
    ``collective`` (:class:`Collective`), ``root`` (REDUCE); ``base`` (64-bit address of the
    group window: contributions write ``base + offset``); ``size`` (bytes of one operation);
    ``buf_base`` / ``buf_beats`` (the group's ring in every stage memory, in beats);
    ``result_offset`` (results go to receiver-window offset ``result_offset + offset``);
    ``notify_offset`` (receiver-window offset of notices).

    ``root``, ``buf_base`` and ``buf_beats`` are as wide as their registers (5 and 17 bits),
    not as the build needs, so that a value out of range fails to arm (ROOT, BUFFER) instead
    of being truncated into a legal one.
    """
    return data.StructLayout({
        "enable": 1,
        "members": n_ports,
        "elem_type": ElemType,
        "op": ReduceOp,
        "saturate": 1,
        "collective": Collective,
        "root": ROOT_BITS,
        "base": 64,
        "size": SIZE_BITS,
        "buf_base": BUF_FIELD_BITS,
        "buf_beats": BUF_FIELD_BITS,
        "result_offset": 64,
        "notify_offset": 64,
    })


def ResultBeat(data_width, n_ports):
    """Payload of the ``result`` stream: an egress beat, its destination ports and the
    ``rebase`` flag (1: the header address is an offset into each receiver's window)."""
    return data.StructLayout({"beat": EgressBeat(data_width), "dests": n_ports, "rebase": 1})


LaneEvent = data.StructLayout({
    "accept": 1,            # a contribution was applied whole (its last beat taken)
    "reject": 1,            # a contribution was dropped whole; reason, hdr, pfx say which
    "reason": REASON_BITS,  # DropReason
    "hdr": F.HDR_BITS,
    "pfx": F.PFX_BITS,
})

GroupEvent = data.StructLayout({"valid": 1, "group": GROUP_ID_BITS})


def GroupCount(max_amount):
    """Layout of a counted group event: ``amount`` (1..``max_amount``) events of ``group``
    this cycle (``valid``). The engine's ``nan``, ``infinity`` and ``saturation`` outputs."""
    return data.StructLayout({"valid": 1, "group": GROUP_ID_BITS,
                              "amount": range(max_amount + 1)})


ConfigEvent = data.StructLayout({"valid": 1, "group": GROUP_ID_BITS, "cause": ConfigError})


def _clog2(n):
    return (n - 1).bit_length()


def _lowest_one(m, vec, width, name):
    """Priority encoder: (any bit set, index of the lowest set bit)."""
    idx = Signal(range(max(width, 2)), name=f"{name}_idx")
    hit = Signal(name=f"{name}_any")
    m.d.comb += hit.eq(Value.cast(vec).any())
    for i in reversed(range(width)):
        with m.If(vec[i]):
            m.d.comb += idx.eq(i)
    return hit, idx


def _round_robin(m, req, width, name):
    """Round-robin choice among the set bits of ``req``: the lowest set bit above the pointer
    (the previous grant), else the lowest set bit. Returns ``(valid, index, pointer)``; the
    caller loads ``pointer`` with ``index`` when the grant is used."""
    ptr = Signal(range(max(width, 2)), name=f"{name}_ptr")
    above = Signal(width, name=f"{name}_above")
    m.d.comb += above.eq(Cat(req[i] & (ptr < i) if i else C(0) for i in range(width)))
    hit_above, idx_above = _lowest_one(m, above, width, f"{name}_a")
    hit, idx_all = _lowest_one(m, req, width, f"{name}_r")
    idx = Signal(range(max(width, 2)), name=f"{name}_grant")
    m.d.comb += idx.eq(Mux(hit_above, idx_above, idx_all))
    return hit, idx, ptr


def _min(a, b):
    return Mux(a < b, a, b)


class ReductionEngine(wiring.Component):
    """The switch's in-network reduction engine (AllReduce, ReduceScatter, Reduce).

    Each member port sends its buffer once, as posted MWr *contributions* carrying an INC
    descriptor (``models.formats.inc_prefix``); the engine reduces the members' data element
    by element, bit-exactly as ``models.reduction.reduce`` does, and emits the result as MWr
    packets addressed to offsets in the receivers' windows. Full contract:
    ``docs/reduction-engine.md``.

    Parameters
    ----------
    params : SwitchParams
        ``n_ports`` N, ``data_width`` W, ``max_payload`` (longest contribution accepted and
        longest result packet), ``n_rgroups`` G, ``reduce_buffer_beats`` D (depth of each stage
        memory) and ``reduce_dtypes`` (element types built).

    Members
    -------
    contrib : In(stream.Signature(EgressBeat(W))).array(N)
        Lane p: whole contribution packets from port p (header and prefix beside the first
        beat, payload from byte lane 0, ``keep`` per ``docs/protocol.md``; the ingress has
        checked framing). A packet ends at ``last``; a last beat with ``err`` set discards the
        packet silently (the ingress counted it). Each lane takes its beats into a one-beat
        input register and checks a first beat there, so ``ready`` depends on registers of the
        engine only (that register, ring space, notice arbitration), never on ``valid``, the
        payload or ``result.ready``.
    result : Out(stream.Signature(ResultBeat(W, N)))
        Result packets (MWr, one per burst) and one-DW notice MWr, never interleaved.
        ``payload.beat``: ``first``/``last``, ``hdr`` (3-DW header when the address is below
        2**32, else 4-DW; Requester ID = ``completer_id``, Tag 0, TC/Attr 0), ``pfx`` = 0,
        ``keep`` (all ones but on a result's operation-final beat), ``err`` = 0;
        ``payload.dests``: destination ports; ``payload.rebase`` = 1 (the address is an offset
        for the switch to add to each receiver's window base). ``valid`` is a register and
        never depends on ``ready``; the payload holds still until transferred.
    config : In(RGroupConfig(N, D)).array(G)
        Per-group configuration. It is copied when the group is armed (and validated then);
        changes take effect at the next arming.
    arm : In(G)
        One-cycle strobes: re-arm group g (as a rising edge of ``enable``) while enabled.
    timeout : In(32)
        Cycles a group may wait for a missing contribution before its operation is aborted;
        0 = never.
    completer_id : In(16)
        Requester ID of every packet the engine sends.
    active : Out(G)
        Bit g: group g is armed and accepts contributions.
    lane_events : Out(LaneEvent).array(N)
        One-cycle pulses, one cycle after the fact: ``accept`` (a contribution applied) or
        ``reject`` with ``reason`` (DropReason) and the offending ``hdr``/``pfx``.
    completed, aborted : Out(GroupEvent)
        One-cycle pulses (``valid``, ``group``): the last beat of an operation left on
        ``result``; an operation timed out.
    nan, infinity, saturation : Out(GroupCount(W / 8))
        The per-group element statistics (docs/telemetry.md section 2.1): ``amount`` elements
        of one result beat of ``group`` (within its ``keep``) are NaNs / infinities /
        saturations (+-max finite because the saturate rule clamped them: fp8 sums only).
        Counted once per beat the reducer hands to the output queue (which sends every
        such beat), so once per element sent, whatever the number of destinations. Each
        output pulses at most once per cycle, 2 cycles after the clock edge at which the
        beat entered the output queue: before the ``completed`` pulse of its round.
    config_error : Out(ConfigEvent)
        One-cycle pulse: arming ``group`` failed for ``cause`` (the group stays inactive).
    bad_config : Out(1)
        One-cycle pulse: the reducer flagged a beat's (type, op, members) as unsupported.
        Arming validates every group, so this never happens; it is an internal-error flag.
    parity_inject : In(2)
        Error injection (``dbg_parity_inject``, docs/reduction-engine.md section 15): while bit
        0 (lane snapshots) or bit 1 (scheduler snapshot) is set, the next successful arming
        writes the group's entries of those snapshot memories with inverted parity.
    parity_injected : Out(1)
        One-cycle pulse, one cycle after an arming that used ``parity_inject``.
    parity_error : Out(1)
        One-cycle pulse: the scheduler found the scheduler snapshot of the group it picked
        failing its parity check (the operation is aborted, ``aborted`` pulses). A lane
        snapshot failing its check rejects the contribution (``lane_events``, PARITY).

    Bad input: a contribution that does not fit its group is dropped whole, reported on
    ``lane_events`` and answered with a notice packet to its sender; other contributions and
    groups are unaffected (docs/reduction-engine.md sections 5-7). Nothing is ever dropped
    for lack of buffer space: a lane whose group ring is full waits.

    Latency: a contribution's beats become reducible when its last beat is taken. On an idle
    engine with ``result`` ready, the first result beat is transferred 11 cycles after the
    edge at which ``contrib`` handed over the last beat needed (input register 1, pick 1,
    plan 2, burst start 1, stage-memory read 1, reducer 3, output queue 2). Rate: one burst
    every third cycle at most, and bursts of three or more beats follow each other without
    gaps, so a group whose members keep up gets one result beat per cycle while ``result`` is
    ready.
    Ordering: a group's results leave in offset order, rounds in order; groups interleave at
    packet granularity.
    """

    @staticmethod
    def check_params(params):
        """Raises ValueError when ``params`` cannot build an engine (a stage memory too small
        for any group), TypeError when it is not a SwitchParams."""
        if not isinstance(params, SwitchParams):
            raise TypeError(f"params must be a SwitchParams, not {params!r}")
        D = params.reduce_buffer_beats
        if D < params.reduce_min_group_beats:
            raise ValueError(f"reduce_buffer_beats {D} is below the smallest group ring, "
                             f"{params.reduce_min_group_beats} beats (two maximum payloads of "
                             f"{params.max_payload} bytes): no group could be armed")

    def __init__(self, params=SwitchParams()):
        self.check_params(params)
        self.params = params
        N, W = params.n_ports, params.data_width
        G, D = params.n_rgroups, params.reduce_buffer_beats
        self.dtypes = params.reduce_dtypes
        self.n_dw = W // 32                              # DWs per beat
        self.lanes = W // 8                              # bytes per beat
        self.count_bits = _clog2(D) + 1                  # ring counters, modulo 2D
        self.out_beats = max(1, params.max_payload // self.lanes)
        self.min_group_beats = params.reduce_min_group_beats
        self.config_layout = RGroupConfig(N, D)
        self.result_layout = ResultBeat(W, N)
        # a queued notice; ``at_group``: address it to the group's notify_offset (read when
        # the notice leaves), else to offset 0
        self.notice_layout = data.StructLayout({
            "port": range(N), "group": GROUP_ID_BITS, "reason": REASON_BITS, "kind": 8,
            "at_group": 1})
        super().__init__({
            "contrib": In(stream.Signature(EgressBeat(W))).array(N),
            "result": Out(stream.Signature(self.result_layout)),
            "config": In(self.config_layout).array(G),
            "arm": In(G),
            "timeout": In(TIMEOUT_BITS),
            "completer_id": In(16),
            "active": Out(G),
            "lane_events": Out(LaneEvent).array(N),
            "completed": Out(GroupEvent),
            "aborted": Out(GroupEvent),
            **{name: Out(GroupCount(self.lanes)) for name in ELEMENT_EVENTS},
            "config_error": Out(ConfigEvent),
            "bad_config": Out(1),
            "parity_inject": In(2),
            "parity_injected": Out(1),
            "parity_error": Out(1),
        })

    # ----------------------------------------------------------------------------------------
    def _cfg(self, index):
        """The configuration of group ``index`` (a mux over the G groups)."""
        return self.config_layout(Array([Value.cast(c) for c in self.config])[index])

    def elaborate(self, platform):
        m = Module()
        P = self.params
        N, W, G, D = P.n_ports, P.data_width, P.n_rgroups, P.reduce_buffer_beats
        n, L = self.n_dw, self.lanes
        lgn, lgL, lgD = _clog2(n), _clog2(L), _clog2(D)
        CW = self.count_bits
        OW = OFFSET_BITS
        BW = SIZE_BITS - lgL + 1                         # beats of an operation, beat offsets
        KW = self.out_beats.bit_length()                 # burst length 1..out_beats
        cfg = self.config
        ones_cw = (1 << CW) - 1

        # ======================================================================================
        # shared state
        # ======================================================================================
        active = Signal(G)
        m.d.comb += self.active.eq(active)
        # per (port, group): beats of the member's stream complete in the ring (mod 2D), and
        # whether it is inside an operation (its expected offset, in a lane memory, is valid)
        wcomp = [[Signal(CW, name=f"wcomp_p{p}_g{g}") for g in range(G)] for p in range(N)]
        started = [[Signal(name=f"started_p{p}_g{g}") for g in range(G)] for p in range(N)]
        # per group: beats claimed by the scheduler (mod 2D), timeout counter; and, in a LUT
        # memory read and written only by the scheduler, the beat offset of the next burst in
        # the operation and the ReduceScatter chunk state ("fresh": the memory entry is stale,
        # use the initial state: set when the group is reset)
        rbeats = [Signal(CW, name=f"rbeats_g{g}") for g in range(G)]
        timer = [Signal(TIMEOUT_BITS, name=f"timer_g{g}") for g in range(G)]
        fresh = Signal(G)
        state_view = data.StructLayout({"roff": BW, "chunk_rem": BW, "chunk_port": range(N)})

        # configuration snapshots, written when a group is armed (so the configuration inputs
        # may change at any time; a change takes effect at the next arming): one LUT memory
        # per lane (the fields its header checks read), one for the scheduler, one for the
        # notices' addresses, and the member masks in registers (read for every group at once).
        # The lane and scheduler snapshots end with an even-parity bit (the XOR of the whole
        # entry is 0), checked at every read (docs/reduction-engine.md section 15).
        lane_view = data.StructLayout({
            "member": 1, "elem_type": 4, "op": 3, "base": 64, "size": SIZE_BITS,
            "buf_base": range(D), "buf_mask": CW, "parity": 1})
        sched_view = data.StructLayout({
            "members": N, "elem_type": ElemType, "op": ReduceOp, "saturate": 1,
            "collective": Collective, "root": range(N), "size": SIZE_BITS, "bpo": BW,
            "buf_base": range(D), "buf_mask": CW, "result_offset": 64,
            "chunk_beats": BW, "first_member": range(N), "parity": 1})
        depth = max(G, 2)
        lane_snap = [Memory(shape=lane_view, depth=depth, init=[]) for _ in range(N)]
        sched_snap = Memory(shape=sched_view, depth=depth, init=[])
        notify_snap = Memory(shape=64, depth=depth, init=[])
        sched_state = Memory(shape=state_view, depth=depth, init=[])
        m.submodules.sched_state = sched_state
        for p, mem in enumerate(lane_snap):
            m.submodules[f"lane_config{p}"] = mem
        m.submodules.sched_config = sched_snap
        m.submodules.notify_config = notify_snap
        members_r = [Signal(N, name=f"members_g{g}") for g in range(G)]

        arm_apply = Signal(G)          # comb: arming of a group succeeds this cycle
        abort_now = Signal(G)          # comb: a group's operation is aborted this cycle
        deact = Signal(G)              # comb: a group stops being active this cycle
        kill_now = Signal(G)           # comb: lanes drop their packets in flight for these
        m.d.comb += kill_now.eq(deact | abort_now)
        progress = [Signal(name=f"progress_g{g}") for g in range(G)]

        # scheduler registers (declared here: the lanes' ring-space check reads them)
        pick_valid = Signal()
        pick_g = Signal(range(max(G, 2)))
        slot_valid = Signal()
        # a planned burst: group, beats, first stream beat, ring, reducer settings (in the
        # burst registers, "start" then counts the next beat to read and "k" the beats left)
        burst_fields = {"g": range(max(G, 2)), "k": KW, "start": CW, "base": range(D),
                        "mask": CW, "members": N, "elem_type": ElemType, "op": ReduceOp,
                        "saturate": 1}
        slot = {k: Signal(v, name=f"slot_{k}") for k, v in burst_fields.items()}
        b_valid = Signal()
        burst = {k: Signal(v, name=f"burst_{k}") for k, v in burst_fields.items()}
        b_first = Signal()

        # the earliest beat of each group's streams still to be read from the rings
        free = []
        held = Signal(G)               # group in the scheduler (picked, planned or bursting)
        for g in range(G):
            f = Signal(CW, name=f"free_g{g}")
            m.d.comb += f.eq(Mux(b_valid & (burst["g"] == g), burst["start"],
                                 Mux(slot_valid & (slot["g"] == g), slot["start"], rbeats[g])))
            free.append(f)
            m.d.comb += held[g].eq((pick_valid & (pick_g == g)) |
                                   (slot_valid & (slot["g"] == g)) |
                                   (b_valid & (burst["g"] == g)))

        # ======================================================================================
        # notices: requests from the aborter (index 0) and the lanes (1..N), round robin
        # ======================================================================================
        notice_fifo = m.submodules.notice_fifo = SyncFIFO(
            width=self.notice_layout.size, depth=4)
        nreq_valid = Signal(N + 1)
        nreq = [Signal(self.notice_layout, name=f"notice_req{i}") for i in range(N + 1)]
        ngnt = Signal(N + 1)
        n_hit, n_idx, n_ptr = _round_robin(m, nreq_valid, N + 1, "notice_rr")
        with m.If(n_hit & notice_fifo.w_rdy):
            m.d.comb += [notice_fifo.w_en.eq(1),
                         notice_fifo.w_data.eq(Array(nreq)[n_idx]),
                         ngnt.eq(1 << n_idx)]
            m.d.sync += n_ptr.eq(n_idx)

        # ======================================================================================
        # lanes
        # ======================================================================================
        stage_mems = []
        lane_prog = []                 # (strobe, group) of accepted contribution beats
        inval = Signal()        # comb: what the lanes' registered checks read changes
        m.d.comb += inval.eq(arm_apply.any() | deact.any() | abort_now.any())
        for p in range(N):
            # Each lane takes its beats from a one-beat input register, ``s`` (``s.valid``,
            # ``s.payload``, and ``s.ready`` = the lane takes it), and checks a first beat as it
            # enters that register: the checks' carry chains end at registers, one cycle before
            # the beat is used, instead of at the stage memory's write enable. The checks read
            # the lane's group state; a commit of this lane updates the registered state it
            # changes (expected offset, written count) as it updates its own, and an arming,
            # a deactivation or an abort makes the registered checks stale: they are taken
            # again from the held beat, and the lane waits a cycle.
            s_in = self.contrib[p]
            s = stream.Signature(EgressBeat(W)).create(path=(f"l{p}_in",))
            checked = Signal(name=f"l{p}_checked")
            recheck = Signal(name=f"l{p}_recheck")        # comb: check the held beat again
            m.d.comb += [recheck.eq(s.valid & ~checked),
                         s_in.ready.eq(~s.valid | (s.ready & checked))]
            with m.If(s_in.valid & s_in.ready):
                m.d.sync += [s.valid.eq(1), s.payload.eq(s_in.payload)]
            with m.Elif(s.valid & s.ready & checked):
                m.d.sync += s.valid.eq(0)
            cand = Signal(EgressBeat(W), name=f"l{p}_check_beat")   # the beat being checked
            m.d.comb += cand.eq(Mux(recheck, s.payload, s_in.payload))
            beat = s.payload
            hdr, pfx = cand.hdr, cand.pfx
            dw0, dw1 = hdr_dw(hdr, 0), hdr_dw(hdr, 1)

            mem = Memory(shape=W, depth=D, init=[])
            m.submodules[f"stage{p}"] = mem
            wp = mem.write_port(granularity=32)
            rp = mem.read_port(domain="sync")
            stage_mems.append(rp)
            exp_mem = Memory(shape=OW, depth=max(G, 2), init=[])
            m.submodules[f"expected{p}"] = exp_mem
            exp_rd = exp_mem.read_port(domain="comb")
            exp_wr = exp_mem.write_port()

            # ---- header decode and checks (first beat)
            g_h = Signal(GROUP_ID_BITS, name=f"l{p}_group")
            et_h = Signal(4, name=f"l{p}_elem_type")
            op_h = Signal(3, name=f"l{p}_op")
            len_dw = Signal(11, name=f"l{p}_len")
            length = hdr_field(dw0, F.DW0, "length")
            m.d.comb += [
                g_h.eq(hdr_field(pfx, F.INC_PREFIX, "group")),
                et_h.eq(hdr_field(pfx, F.INC_PREFIX, "elem_type")),
                op_h.eq(hdr_field(pfx, F.INC_PREFIX, "op")),
                len_dw.eq(Mux(length == 0, 1024, length)),
            ]
            fmt = hdr_field(dw0, F.DW0, "fmt")
            is_inc = (pfx[24:32] == F.SF_PREFIX_HEAD) & \
                (hdr_field(pfx, F.INC_PREFIX, "kind") == F.SfKind.INC)
            is_mwr = ((fmt == F.Fmt.DW3_DATA) | (fmt == F.Fmt.DW4_DATA)) & \
                (hdr_field(dw0, F.DW0, "type") == F.Type.MEM)
            in_range = g_h < G
            lcfg = lane_snap[p].read_port(domain="comb")
            m.d.comb += lcfg.addr.eq(g_h)
            c = lcfg.data
            lane_perr = Signal(name=f"l{p}_parity_error")
            m.d.comb += lane_perr.eq(c.as_value().xor())
            act_h = active.bit_select(g_h, 1) & in_range
            first_be = hdr_field(dw1, F.REQ_DW1, "first_be")
            last_be = hdr_field(dw1, F.REQ_DW1, "last_be")
            be_ok = (first_be == 0xF) & Mux(len_dw == 1, last_be == 0, last_be == 0xF)
            addr = hdr_address(hdr)
            diff = Signal(65, name=f"l{p}_diff")              # bit 64: address below base
            off_b = diff[:64]
            end_b = Signal(SIZE_BITS + 1, name=f"l{p}_end")
            m.d.comb += [diff.eq(addr - c.base), end_b.eq(off_b[:SIZE_BITS] + (len_dw << 2))]
            outside = diff[64] | (off_b[SIZE_BITS:] != 0) | (end_b > c.size) | ~be_ok | \
                ((len_dw << 2) > P.max_payload)
            m.d.comb += exp_rd.addr.eq(g_h)
            expected = Signal(OW, name=f"l{p}_expected")
            m.d.comb += expected.eq(Mux(Array(started[p])[g_h], exp_rd.data, 0))
            reason = Signal(REASON_BITS, name=f"l{p}_reason")
            R = F.DropReason
            with m.If(~is_inc | ~is_mwr):
                m.d.comb += reason.eq(R.MALFORMED)
            with m.Elif(~act_h):
                m.d.comb += reason.eq(R.INC_BAD_GROUP)
            with m.Elif(lane_perr):
                m.d.comb += reason.eq(R.PARITY)
            with m.Elif(~c.member):
                m.d.comb += reason.eq(R.INC_NOT_MEMBER)
            with m.Elif((et_h != c.elem_type) | (op_h != c.op)):
                m.d.comb += reason.eq(R.INC_MISMATCH)
            with m.Elif(outside):
                m.d.comb += reason.eq(R.INC_OUTSIDE)
            # (the offset check, last, is made when the beat is used: see reason_use)

            # header-derived values of an accepted packet
            end_dw = Signal(OW + 1, name=f"l{p}_end_dw")
            m.d.comb += end_dw.eq(off_b[2:2 + OW] + len_dw)
            op_end_h = end_dw == c.size[2:]
            end_rows = Signal(OW + 1, name=f"l{p}_end_rows")   # rows complete after it
            m.d.comb += end_rows.eq((end_dw >> lgn) + (op_end_h & (end_dw[:lgn] != 0)))
            row_h = Signal(CW, name=f"l{p}_row_hdr")
            m.d.comb += row_h.eq(Array(wcomp[p])[g_h])
            commit_off_h = Mux(op_end_h, 0, end_dw[:OW])

            # ---- the registered checks of the held beat (see above)
            reason_q = Signal(REASON_BITS, name=f"l{p}_reason_q")   # all but the offset check
            g_q = Signal(GROUP_ID_BITS, name=f"l{p}_group_q")
            rot_q = Signal(range(n), name=f"l{p}_rot_q")
            len_q = Signal(11, name=f"l{p}_len_q")
            off_q = Signal(OW, name=f"l{p}_off_q")
            # the offset check, made as the beat is registered (and again when a commit of its
            # group changes the expected offset), so it is not at the start of the lane's
            # longest path (through the notice arbiter to ``ready``)
            off_bad_q = Signal(name=f"l{p}_off_bad_q")
            row_q = Signal(CW, name=f"l{p}_row_q")
            delta_q = Signal(CW, name=f"l{p}_delta_q")    # commit count = row + delta
            commit_off_q = Signal(OW, name=f"l{p}_commit_off_q")
            op_end_q = Signal(name=f"l{p}_op_end_q")
            buf_base_q = Signal(range(D), name=f"l{p}_buf_base_q")
            buf_mask_q = Signal(CW, name=f"l{p}_buf_mask_q")

            # ---- lane registers
            busy = Signal(name=f"l{p}_busy")          # inside a packet
            drop = Signal(name=f"l{p}_drop")          # ... discarding it
            flush = Signal(name=f"l{p}_flush")        # ... writing its tail (ready low)
            grp = Signal(GROUP_ID_BITS, name=f"l{p}_grp")
            rot = Signal(range(n), name=f"l{p}_rot")  # DW rotation: start offset mod n
            row = Signal(CW, name=f"l{p}_row")        # stream beat of the next row written
            left = Signal(11, name=f"l{p}_left")      # data DWs still to come
            carry = Signal(W, name=f"l{p}_carry")
            carry_en = Signal(n, name=f"l{p}_carry_en")
            rbase = Signal(range(D), name=f"l{p}_base")
            rmask = Signal(CW, name=f"l{p}_mask")
            c_w = Signal(CW, name=f"l{p}_commit_w")
            c_off = Signal(OW, name=f"l{p}_commit_off")
            c_started = Signal(name=f"l{p}_commit_started")

            first = ~busy
            cur_g = Signal(GROUP_ID_BITS, name=f"l{p}_cur_g")
            cur_rot = Signal(range(n), name=f"l{p}_cur_rot")
            cur_row = Signal(CW, name=f"l{p}_cur_row")
            cur_left = Signal(11, name=f"l{p}_cur_left")
            cur_cen = Signal(n, name=f"l{p}_cur_carry_en")
            cur_base = Signal(range(D), name=f"l{p}_cur_base")
            cur_mask = Signal(CW, name=f"l{p}_cur_mask")
            m.d.comb += [
                cur_g.eq(Mux(first, g_q, grp)),
                cur_rot.eq(Mux(first, rot_q, rot)),
                cur_row.eq(Mux(first, row_q, row)),
                cur_left.eq(Mux(first, len_q, Mux(flush, 0, left))),
                cur_cen.eq(Mux(first, 0, carry_en)),
                cur_base.eq(Mux(first, buf_base_q, rbase)),
                cur_mask.eq(Mux(first, buf_mask_q, rmask)),
            ]

            # ---- the gearbox: data DW j goes to lane (j + rot) mod n; lanes >= rot of this
            # row, lanes < rot of the next (carried); the carry fills lanes < rot of the row
            v = Signal(range(n + 1), name=f"l{p}_v")
            m.d.comb += v.eq(Mux(cur_left >= n, n, cur_left))
            rotated = Signal(W, name=f"l{p}_rotated")
            m.d.comb += rotated.eq(Array([beat.data.rotate_left(32 * r)
                                          for r in range(n)])[cur_rot])
            low_en = Signal(n, name=f"l{p}_low_en")
            spill_en = Signal(n, name=f"l{p}_spill_en")
            wr_data = Signal(W, name=f"l{p}_wr_data")
            for lane in range(n):
                m.d.comb += [
                    # (lane n - 1 and up: cur_rot < n, so the comparisons are constant)
                    low_en[lane].eq((cur_rot <= lane if lane < n - 1 else C(1))
                                    & (cur_rot + v > lane)),
                    spill_en[lane].eq((cur_rot > lane if lane < n - 1 else C(0))
                                      & (cur_rot + v > lane + n)),
                    wr_data[32 * lane:32 * lane + 32].eq(
                        Mux(cur_cen[lane], carry[32 * lane:32 * lane + 32],
                            rotated[32 * lane:32 * lane + 32])),
                ]
            wr_en = Signal(n, name=f"l{p}_wr_en")
            m.d.comb += wr_en.eq(cur_cen | low_en)
            space_ok = Signal(name=f"l{p}_space_ok")
            m.d.comb += space_ok.eq(
                ((cur_row - Array(free)[cur_g])[:CW] & ~cur_mask) == 0)
            do_write = Signal(name=f"l{p}_write")
            m.d.comb += [
                wp.addr.eq((cur_base + (cur_row & cur_mask))[:lgD]),
                wp.data.eq(wr_data),
                wp.en.eq(Mux(do_write, wr_en, 0)),
            ]
            kill_cur = kill_now.bit_select(cur_g, 1)

            commit = Signal(name=f"l{p}_commit")
            rejected = Signal(name=f"l{p}_rejected")
            prog = Signal(name=f"l{p}_progress")
            xfer = s.valid & s.ready & checked
            reason_use = Signal(REASON_BITS, name=f"l{p}_reason")
            m.d.comb += reason_use.eq(Mux(reason_q != 0, reason_q,
                                          Mux(off_bad_q, R.INC_OFFSET, 0)))
            commit_w_first = Signal(CW, name=f"l{p}_commit_w_first")
            m.d.comb += commit_w_first.eq(row_q + delta_q)

            def load_packet():
                return [grp.eq(g_q), rot.eq(rot_q), rbase.eq(buf_base_q),
                        rmask.eq(buf_mask_q), c_w.eq(commit_w_first),
                        c_off.eq(commit_off_q), c_started.eq(~op_end_q)]

            def advance():
                return [row.eq(cur_row + 1), left.eq(cur_left - v), carry.eq(rotated),
                        carry_en.eq(spill_en)]

            with m.If(flush):
                with m.If(kill_cur):
                    m.d.sync += [busy.eq(0), flush.eq(0)]
                with m.Elif(space_ok):
                    m.d.comb += [do_write.eq(1), commit.eq(1)]
                    m.d.sync += [busy.eq(0), flush.eq(0)]
            with m.Elif(busy & drop):
                m.d.comb += s.ready.eq(1)
                with m.If(xfer & beat.last):
                    m.d.sync += [busy.eq(0), drop.eq(0)]
            with m.Elif(busy):
                with m.If(kill_cur):
                    m.d.comb += s.ready.eq(1)
                    with m.If(xfer):
                        m.d.sync += drop.eq(~beat.last)
                        with m.If(beat.last):
                            m.d.sync += busy.eq(0)
                with m.Else():
                    m.d.comb += s.ready.eq(~wr_en.any() | space_ok)
                    with m.If(xfer):
                        m.d.comb += [do_write.eq(1), prog.eq(1)]
                        m.d.sync += advance()
                        with m.If(beat.last):
                            with m.If(beat.err):
                                m.d.sync += busy.eq(0)
                            with m.Elif(spill_en.any()):
                                m.d.sync += flush.eq(1)
                            with m.Else():
                                m.d.comb += commit.eq(1)
                                m.d.sync += busy.eq(0)
            with m.Else():                                    # a first beat
                with m.If(~checked):
                    pass                                      # checked again this cycle
                with m.Elif(reason_use != 0):
                    m.d.comb += [nreq_valid[1 + p].eq(s.valid), s.ready.eq(ngnt[1 + p])]
                    with m.If(xfer):
                        m.d.comb += rejected.eq(1)
                        m.d.sync += [busy.eq(~beat.last), drop.eq(1)]
                with m.Elif(kill_now.bit_select(g_q, 1)):
                    pass                                      # decide again next cycle
                with m.Else():
                    m.d.comb += s.ready.eq(space_ok)
                    with m.If(xfer):
                        m.d.comb += [do_write.eq(1), prog.eq(1)]
                        m.d.sync += load_packet() + advance() + [drop.eq(0)]
                        with m.If(~beat.last):
                            m.d.sync += busy.eq(1)
                        with m.Elif(beat.err):
                            pass
                        with m.Elif(spill_en.any()):
                            m.d.sync += [busy.eq(1), flush.eq(1)]
                        with m.Else():
                            m.d.comb += commit.eq(1)

            lane_prog.append((prog, cur_g))
            m.d.comb += [
                nreq[1 + p].port.eq(p), nreq[1 + p].group.eq(g_q),
                nreq[1 + p].reason.eq(reason_use),
                nreq[1 + p].kind.eq(F.IncNoticeKind.REJECTED),
                nreq[1 + p].at_group.eq((reason_use != R.MALFORMED) &
                                        (reason_use != R.INC_BAD_GROUP) &
                                        (reason_use != R.PARITY)),
            ]

            # ---- commit: the packet is applied (its rows become reducible)
            commit_w = Mux(first, commit_w_first, c_w)
            commit_off = Mux(first, commit_off_q, c_off)
            commit_started = Mux(first, ~op_end_q, c_started)

            # ---- take the checks: of the beat entering the input register, or of the held
            # beat again; a commit of this lane in the same cycle is forwarded
            committed_expected = Mux(commit_started, commit_off, 0)
            same_g = commit & (cur_g == g_h)
            capture = (s_in.valid & s_in.ready) | recheck
            with m.If(capture):
                m.d.sync += [
                    checked.eq(~inval),
                    reason_q.eq(reason), g_q.eq(g_h), rot_q.eq(off_b[2:2 + lgn]),
                    len_q.eq(len_dw), off_q.eq(off_b[2:SIZE_BITS]),
                    # both comparisons are made beside the commit, which only picks one
                    off_bad_q.eq(Mux(same_g, off_b[2:SIZE_BITS] != committed_expected,
                                     off_b[2:SIZE_BITS] != expected)),
                    row_q.eq(Mux(same_g, commit_w, row_h)),
                    delta_q.eq(end_rows - off_b[2 + lgn:2 + OW]),
                    commit_off_q.eq(commit_off_h), op_end_q.eq(op_end_h),
                    buf_base_q.eq(c.buf_base), buf_mask_q.eq(c.buf_mask),
                ]
            with m.Else():
                m.d.sync += checked.eq(checked & ~inval)
                with m.If(commit & (cur_g == g_q)):
                    m.d.sync += [off_bad_q.eq(off_q != committed_expected),
                                 row_q.eq(commit_w)]
            m.d.comb += [exp_wr.addr.eq(cur_g), exp_wr.data.eq(commit_off),
                         exp_wr.en.eq(commit)]
            for g in range(G):
                with m.If(commit & (cur_g == g)):
                    m.d.sync += [wcomp[p][g].eq(commit_w), started[p][g].eq(commit_started)]

            ev = self.lane_events[p]
            m.d.sync += [ev.accept.eq(commit), ev.reject.eq(rejected)]
            with m.If(rejected):
                m.d.sync += [ev.reason.eq(reason_use), ev.hdr.eq(beat.hdr),
                             ev.pfx.eq(beat.pfx)]

        # ======================================================================================
        # readiness of each group
        # ======================================================================================
        all_have = Signal(G)            # every member has a complete beat not yet claimed
        pending = Signal(G)             # some member has data of an operation not yet claimed
        for g in range(G):
            have = [wcomp[p][g] != rbeats[g] for p in range(N)]
            mem_g = members_r[g]
            m.d.comb += [
                all_have[g].eq(Cat(~mem_g[p] | have[p] for p in range(N)).all()),
                pending[g].eq(Cat(mem_g[p] & (have[p] | started[p][g])
                                  for p in range(N)).any()),
            ]
        # groups whose scheduler snapshot failed its parity check, waiting to be aborted
        parity_abort = Signal(G)
        # groups that timed out in the cycle before (registered: see "timeout" below)
        timed_out = Signal(G)
        ready_vec = Signal(G)
        m.d.comb += ready_vec.eq(active & all_have & ~parity_abort & ~timed_out)

        # ======================================================================================
        # scheduler stage A: pick a group (round robin)
        # ======================================================================================
        s_hit, s_idx, s_ptr = _round_robin(m, ready_vec, G, "sched_rr")
        with m.If(~pick_valid & s_hit):
            m.d.sync += [pick_valid.eq(1), pick_g.eq(s_idx), s_ptr.eq(s_idx)]

        # ======================================================================================
        # scheduler stage B: size the burst, build its header, claim its beats
        # ======================================================================================
        hdr_layout = data.StructLayout({"hdr": F.HDR_BITS, "dests": N, "tail_keep": L,
                                        "op_end": 1, "group": GROUP_ID_BITS,
                                        "elem_type": ElemType})
        hdr_fifo = m.submodules.hdr_fifo = SyncFIFO(width=hdr_layout.size, depth=8)
        scfg = sched_snap.read_port(domain="comb")
        m.d.comb += scfg.addr.eq(pick_g)
        cb = scfg.data
        rb = Signal(CW)
        st_rd = sched_state.read_port(domain="comb")
        st_wr = sched_state.write_port()
        is_fresh = fresh.bit_select(pick_g, 1)
        m.d.comb += [st_rd.addr.eq(pick_g), rb.eq(Array(rbeats)[pick_g])]
        # The picked group's scheduler state, registered like the members' beats below: it
        # changes only when the group's burst fires, so in the second planning cycle these
        # are exact.
        ro = Signal(BW)                  # beat offset of the burst in the round
        to_end = Signal(BW)              # beats from there to the round's end
        crem = Signal(BW)
        cport = Signal(range(N))
        ro_now = Mux(is_fresh, 0, st_rd.data.roff)
        m.d.sync += [ro.eq(ro_now), to_end.eq(cb.bpo - ro_now),
                     crem.eq(Mux(is_fresh, cb.chunk_beats, st_rd.data.chunk_rem)),
                     cport.eq(Mux(is_fresh, cb.first_member, st_rd.data.chunk_port))]
        level = []                       # beats each member has; a balanced min tree
        for p in range(N):
            d_p = Signal(CW, name=f"avail_p{p}")
            m.d.comb += d_p.eq(Mux(cb.members[p], (Array(wcomp[p])[pick_g] - rb)[:CW],
                                   ones_cw))
            level.append(d_p)
        lvl = 0
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level) - 1, 2):
                t = Signal(CW, name=f"avail_l{lvl}_{j // 2}")
                m.d.comb += t.eq(_min(level[j], level[j + 1]))
                nxt.append(t)
            level = nxt + level[len(level) & ~1:]
            lvl += 1
        # The beats every member has, registered: the burst is sized in the next cycle from
        # this cycle's count. A count a cycle old is never more than the beats there are: the
        # picked group's counts only grow while it is picked (nothing resets a held group,
        # and only its own burst claims beats), so a burst may be shorter, never wrong.
        avail = Signal(CW)
        planned = Signal()               # avail is that of pick_g
        m.d.sync += avail.eq(level[0])
        is_rs = cb.collective == Collective.REDUCESCATTER
        # k, the burst's length, is the least of these operands. Which one it is comes from
        # their comparisons with each other, all made at once (ties go to the lowest-numbered
        # operand), and the sums that need k (the new round offset, chunk remainder and
        # claimed beats) are made for every operand beside them and picked by that one-hot:
        # no carry chain waits for the minimum.
        limits = [avail, to_end, Mux(is_rs, crem, self.out_beats), C(self.out_beats, KW)]
        at_most = {(i, j): Signal(name=f"k_le_{i}_{j}")
                   for i in range(4) for j in range(i + 1, 4)}
        m.d.comb += [v.eq(limits[i] <= limits[j]) for (i, j), v in at_most.items()]
        is_k = Signal(4)                 # one-hot: the operand that is k
        for i in range(4):
            m.d.comb += is_k[i].eq(Cat(at_most[i, j] if i < j else ~at_most[j, i]
                                       for j in range(4) if j != i).all())
        k = Signal(KW)
        m.d.comb += k.eq(one_hot_select(is_k, limits))

        def plus_k(base):
            return one_hot_select(is_k, [base + v for v in limits])

        def minus_k(base):
            return one_hot_select(is_k, [base - v for v in limits])
        rb_next = Signal(CW)             # the group's claimed beats after this burst
        m.d.comb += rb_next.eq(plus_k(rb))
        # Whether the burst ends the operation (k == to_end, as ro <= bpo) and whether it
        # ends the chunk (k == crem): for an operand x of the minimum, k == x is "x <= every
        # operand". crem is one for ReduceScatter, the only collective whose chunk state
        # (chunk_rem, chunk_port) is read, so chunk_end means nothing for the others.
        op_end = Signal()
        chunk_end = Signal()
        m.d.comb += [op_end.eq(Cat(to_end <= v for v in limits).all()),
                     chunk_end.eq(Cat(crem <= v for v in limits).all())]
        nbytes = Signal(14)
        m.d.comb += nbytes.eq(Mux(op_end, cb.size - (ro << lgL), k << lgL))
        len_field = nbytes[2:12]
        dw0 = Signal(32)
        dw1 = Signal(32)
        m.d.comb += [
            hdr_field(dw0, F.DW0, "fmt").eq(F.Fmt.DW3_DATA),
            hdr_field(dw0, F.DW0, "type").eq(F.Type.MEM),
            hdr_field(dw0, F.DW0, "length").eq(len_field),
            hdr_field(dw1, F.REQ_DW1, "requester_id").eq(self.completer_id),
            hdr_field(dw1, F.REQ_DW1, "first_be").eq(0xF),
            hdr_field(dw1, F.REQ_DW1, "last_be").eq(Mux(len_field == 1, 0, 0xF)),
        ]
        res_addr = Signal(64)
        m.d.comb += res_addr.eq(cb.result_offset + (ro << lgL))
        dests = Signal(N)
        with m.Switch(cb.collective):
            with m.Case(Collective.REDUCE):
                m.d.comb += dests.eq((C(1, N) << cb.root)[:N])
            with m.Case(Collective.REDUCESCATTER):
                m.d.comb += dests.eq((C(1, N) << cport)[:N])
            with m.Default():
                m.d.comb += dests.eq(cb.members)
        rem = cb.size[:lgL]
        tail_keep = Mux(op_end & (rem != 0), ((C(1, L + 1) << rem) - 1)[:L], (1 << L) - 1)
        hd_in = Signal(hdr_layout)
        m.d.comb += [hd_in.hdr.eq(with_address(Cat(dw0, dw1, C(0, 64)), res_addr)),
                     hd_in.dests.eq(dests), hd_in.tail_keep.eq(tail_keep),
                     hd_in.op_end.eq(op_end), hd_in.group.eq(pick_g),
                     hd_in.elem_type.eq(cb.elem_type), hdr_fifo.w_data.eq(hd_in)]
        # ReduceScatter: the next chunk goes to the next member up
        above = Cat(cb.members[q] & (cport < q) if q else C(0) for q in range(N))
        _, b_next_member = _lowest_one(m, above, N, "b_next_member")

        slot_take = Signal()
        b_fire = Signal()
        sched_perr = Signal()
        m.d.comb += sched_perr.eq(cb.as_value().xor())
        m.d.comb += b_fire.eq(pick_valid & planned & ~sched_perr & (~slot_valid | slot_take) &
                              hdr_fifo.w_rdy)
        m.d.sync += planned.eq(pick_valid & ~b_fire & ~sched_perr)
        # a picked group whose snapshot fails its parity check is not served: dropped from
        # the scheduler and aborted (below) once nothing of it is in the scheduler
        m.d.sync += self.parity_error.eq(pick_valid & sched_perr)
        with m.If(pick_valid & sched_perr):
            m.d.sync += pick_valid.eq(0)
            for g in range(G):
                with m.If(pick_g == g):
                    m.d.sync += parity_abort[g].eq(1)
        m.d.comb += hdr_fifo.w_en.eq(b_fire)
        with m.If(b_fire):
            m.d.sync += [
                pick_valid.eq(0),
                slot["g"].eq(pick_g), slot["k"].eq(k), slot["start"].eq(rb),
                slot["base"].eq(cb.buf_base), slot["mask"].eq(cb.buf_mask),
                slot["members"].eq(cb.members), slot["elem_type"].eq(cb.elem_type),
                slot["op"].eq(cb.op), slot["saturate"].eq(cb.saturate),
            ]
            for g in range(G):
                with m.If(pick_g == g):
                    m.d.sync += [rbeats[g].eq(rb_next), fresh[g].eq(0)]
        m.d.comb += [st_wr.addr.eq(pick_g), st_wr.en.eq(b_fire),
                     st_wr.data.roff.eq(Mux(op_end, 0, plus_k(ro)))]
        with m.If(op_end):
            m.d.comb += [st_wr.data.chunk_rem.eq(cb.chunk_beats),
                         st_wr.data.chunk_port.eq(cb.first_member)]
        with m.Elif(chunk_end):
            m.d.comb += [st_wr.data.chunk_rem.eq(cb.chunk_beats),
                         st_wr.data.chunk_port.eq(b_next_member)]
        with m.Else():
            m.d.comb += [st_wr.data.chunk_rem.eq(minus_k(crem)),
                         st_wr.data.chunk_port.eq(cport)]
        with m.If(slot_take):
            m.d.sync += slot_valid.eq(0)
        with m.If(b_fire):
            m.d.sync += slot_valid.eq(1)

        # ======================================================================================
        # burst: read the k beats from every stage memory, same address each cycle
        # ======================================================================================
        red = m.submodules.reducer = BeatReducer(N, W, self.dtypes, tag_width=2)
        rd_valid = Signal()
        rd_first = Signal()
        rd_last = Signal()
        rd_cfg = {k_: Signal(burst[k_].shape(), name=f"rd_{k_}")
                  for k_ in ("members", "elem_type", "op", "saturate")}
        advance = Signal()
        issue = Signal()
        m.d.comb += [advance.eq(~rd_valid | red.i.ready), issue.eq(advance & b_valid)]
        last_issue = issue & (burst["k"] == 1)
        m.d.comb += slot_take.eq(slot_valid & (~b_valid | last_issue))
        rd_addr = (burst["base"] + (burst["start"] & burst["mask"]))[:lgD]
        for rp in stage_mems:
            m.d.comb += [rp.addr.eq(rd_addr), rp.en.eq(advance)]
        with m.If(issue):
            m.d.sync += [burst["start"].eq(burst["start"] + 1), burst["k"].eq(burst["k"] - 1),
                         b_first.eq(0)]
            with m.If(burst["k"] == 1):
                m.d.sync += b_valid.eq(0)
        with m.If(slot_take):
            m.d.sync += [b_valid.eq(1), b_first.eq(1)]
            m.d.sync += [burst[k_].eq(slot[k_]) for k_ in slot]
        with m.If(advance):
            m.d.sync += [rd_valid.eq(issue), rd_first.eq(b_first),
                         rd_last.eq(burst["k"] == 1)]
            m.d.sync += [rd_cfg[k_].eq(burst[k_]) for k_ in rd_cfg]
        m.d.comb += [
            red.i.valid.eq(rd_valid),
            red.i.payload.members.eq(rd_cfg["members"]),
            red.i.payload.elem_type.eq(rd_cfg["elem_type"]),
            red.i.payload.op.eq(rd_cfg["op"]),
            red.i.payload.saturate.eq(rd_cfg["saturate"]),
            red.i.payload.tag.eq(Cat(rd_first, rd_last)),
        ]
        for p, rp in enumerate(stage_mems):
            m.d.comb += red.i.payload.operands[p].eq(rp.data)

        # ======================================================================================
        # output queue: result packets and notices, never interleaved. Two entries, so "can
        # take a beat" is a register: no combinational path from ``result.ready`` back into
        # the reducer and the scheduler (the same one-cycle latency as a plain register).
        # ======================================================================================
        out = self.result
        # an entry holds what varies from beat to beat: pfx, err and rebase are constants of
        # every engine packet, set on ``result`` below
        varying = ("data", "keep", "first", "last", "hdr")
        beat_layout = EgressBeat(W)
        out_entry = data.StructLayout({**{f: beat_layout[f].shape for f in varying},
                                       "dests": N, "op_end": 1, "group": GROUP_ID_BITS})
        out_q = m.submodules.out_queue = SyncFIFO(width=out_entry.size, depth=2)
        out_w = Signal(out_entry)
        out_head = out_entry(out_q.r_data)
        load = Signal()
        m.d.comb += load.eq(out_q.w_rdy)
        res_lock = Signal()             # a result packet is half way out
        prio_notice = Signal()
        hd = hdr_layout(hdr_fifo.r_data)
        nt = self.notice_layout(notice_fifo.r_data)
        r_first, r_last = red.o.payload.tag[0], red.o.payload.tag[1]
        sel_notice = Signal()
        sel_result = Signal()
        m.d.comb += [
            sel_notice.eq(notice_fifo.r_rdy & ~res_lock & (prio_notice | ~red.o.valid)),
            sel_result.eq(red.o.valid & ~sel_notice),
            red.o.ready.eq(load & sel_result),
            notice_fifo.r_en.eq(load & sel_notice),
            hdr_fifo.r_en.eq(load & sel_result & r_last),
            out_q.w_en.eq(sel_notice | sel_result),
            out_q.w_data.eq(out_w),
            out.valid.eq(out_q.r_rdy),
            out_q.r_en.eq(out.ready),
            *[out.payload.beat[f].eq(out_head[f]) for f in varying],
            out.payload.beat.pfx.eq(0),
            out.payload.beat.err.eq(0),
            out.payload.dests.eq(out_head.dests),
            out.payload.rebase.eq(1),
        ]
        n_dw0 = Signal(32)
        n_dw1 = Signal(32)
        m.d.comb += [
            hdr_field(n_dw0, F.DW0, "fmt").eq(F.Fmt.DW3_DATA),
            hdr_field(n_dw0, F.DW0, "type").eq(F.Type.MEM),
            hdr_field(n_dw0, F.DW0, "length").eq(1),
            hdr_field(n_dw1, F.REQ_DW1, "requester_id").eq(self.completer_id),
            hdr_field(n_dw1, F.REQ_DW1, "first_be").eq(0xF),
        ]
        notice_offset = Signal(64)
        ncfg = notify_snap.read_port(domain="comb")
        m.d.comb += [ncfg.addr.eq(nt.group), notice_offset.eq(Mux(nt.at_group, ncfg.data, 0))]
        notice_dw = Signal(32)
        m.d.comb += [
            hdr_field(notice_dw, F.INC_NOTICE, "reason").eq(nt.reason),
            hdr_field(notice_dw, F.INC_NOTICE, "group").eq(nt.group),
            hdr_field(notice_dw, F.INC_NOTICE, "kind").eq(nt.kind),
        ]
        with m.If(sel_notice):
            m.d.comb += [
                out_w.data.eq(notice_dw),
                out_w.keep.eq(0xF),
                out_w.first.eq(1),
                out_w.last.eq(1),
                out_w.hdr.eq(with_address(Cat(n_dw0, n_dw1, C(0, 64)), notice_offset)),
                out_w.dests.eq((C(1, N) << nt.port)[:N]),
            ]
        with m.Else():
            m.d.comb += [
                out_w.data.eq(red.o.payload.result),
                out_w.keep.eq(Mux(r_last, hd.tail_keep, (1 << L) - 1)),
                out_w.first.eq(r_first),
                out_w.last.eq(r_last),
                out_w.hdr.eq(hd.hdr),
                out_w.dests.eq(hd.dests),
                out_w.op_end.eq(r_last & hd.op_end),
                out_w.group.eq(hd.group),
            ]
        with m.If(load):
            with m.If(sel_notice):
                m.d.sync += prio_notice.eq(0)
            with m.Elif(sel_result):
                m.d.sync += res_lock.eq(~r_last)
                with m.If(r_last):
                    m.d.sync += prio_notice.eq(1)
        m.d.sync += [
            self.completed.valid.eq(out.valid & out.ready & out_head.op_end),
            self.completed.group.eq(out_head.group),
            self.bad_config.eq(red.o.valid & red.o.ready & red.o.payload.bad_config),
        ]

        # element statistics of every result beat handed to the output queue (each is
        # sent): a registered classification and population count beside the output path
        stat = m.submodules.element_events = ElementEventCounter(W, self.dtypes,
                                                                 tag_width=GROUP_ID_BITS)
        m.d.comb += [
            stat.i.valid.eq(red.o.valid & red.o.ready),
            stat.i.data.eq(red.o.payload.result),
            stat.i.keep.eq(Mux(r_last, hd.tail_keep, (1 << L) - 1)),
            stat.i.elem_type.eq(hd.elem_type),
            stat.i.saturated.eq(red.o.payload.saturated),
            stat.i.tag.eq(hd.group),
        ]
        for name in ELEMENT_EVENTS:                   # stat.o is registered
            m.d.comb += [getattr(self, name).valid.eq(stat.o[name].valid),
                         getattr(self, name).group.eq(stat.o.tag),
                         getattr(self, name).amount.eq(stat.o[name].amount)]

        # ======================================================================================
        # arming: enable edges and arm strobes; one group validated at a time
        # ======================================================================================
        en_vec = Signal(G)
        m.d.comb += en_vec.eq(Cat(c_.enable for c_ in cfg))
        prev_en = Signal(G)
        m.d.sync += prev_en.eq(en_vec)
        arm_req = Signal(G)
        fall = Signal(G)
        m.d.comb += [arm_req.eq((en_vec & ~prev_en) | (self.arm & en_vec)),
                     fall.eq(~en_vec & prev_en),
                     deact.eq(arm_req | fall)]
        arm_pending = Signal(G)
        arm_done = Signal(G)            # comb: the armer finished this group (ok or not)
        m.d.sync += arm_pending.eq((arm_pending & ~arm_done & ~fall) | arm_req)
        m.d.sync += active.eq((active & ~deact) | arm_apply)

        a_g = Signal(range(max(G, 2)))
        ca = Signal(self.config_layout)                  # the configuration being armed
        a_cause = Signal(ConfigError)
        a_chunk = Signal(BW)
        a_hit, a_idx = _lowest_one(m, arm_pending & ~held, G, "arm_pick")
        # element size (log2 bytes) and type/op legality
        lg_es = Signal(2)
        type_ok = Signal()
        with m.Switch(ca.elem_type):
            for name in DTYPE_NAMES:
                with m.Case(ElemType[name]):
                    m.d.comb += lg_es.eq(_clog2(DTYPES[name].width // 8))
                    if name in self.dtypes:
                        ops = FLOAT_OPS if DTYPES[name].is_float else OPS
                        m.d.comb += type_ok.eq(
                            Cat(ca.op.as_value() == ReduceOp[o].value for o in ops).any())
        n_mem = Signal(range(N + 1))
        m.d.comb += n_mem.eq(sum(ca.members[q] for q in range(N)))
        bb = ca.buf_beats
        a_bpo = Signal(BW)
        m.d.comb += a_bpo.eq((ca.size + (L - 1)) >> lgL)
        static_cause = Signal(ConfigError)
        with m.If(ca.members == 0):
            m.d.comb += static_cause.eq(ConfigError.NO_MEMBERS)
        with m.Elif(ca.collective.as_value() == 3):
            m.d.comb += static_cause.eq(ConfigError.COLLECTIVE)
        with m.Elif((ca.collective == Collective.REDUCE) &
                    ((ca.root >= N) | ~ca.members.bit_select(ca.root, 1))):
            m.d.comb += static_cause.eq(ConfigError.ROOT)
        with m.Elif(~type_ok):
            m.d.comb += static_cause.eq(ConfigError.TYPE_OP)
        with m.Elif((ca.size == 0) | (ca.size[:2] != 0)):
            m.d.comb += static_cause.eq(ConfigError.SIZE)
        with m.Elif((ca.base[:2] != 0) | (ca.result_offset[:2] != 0) |
                    (ca.notify_offset[:2] != 0)):
            m.d.comb += static_cause.eq(ConfigError.ALIGN)
        with m.Elif((bb == 0) | ((bb & (bb - 1)) != 0) | (bb < self.min_group_beats) |
                    (ca.buf_base + bb > D)):
            m.d.comb += static_cause.eq(ConfigError.BUFFER)

        # ReduceScatter chunk: c = ceil(elements / members) by restoring division
        n_el = Signal(SIZE_BITS)
        m.d.comb += n_el.eq(ca.size >> lg_es)
        d_num = Signal(SIZE_BITS + 1)
        d_rem = Signal(range(2 * N + 2))
        d_q = Signal(SIZE_BITS + 1)
        d_cnt = Signal(range(SIZE_BITS + 2))
        r2 = Cat(d_num[-1], d_rem)
        chunk_bytes = Signal(SIZE_BITS + 3)
        m.d.comb += chunk_bytes.eq(d_q << lg_es)
        whole = d_q >= n_el                              # one chunk holds everything

        _, a_first_member = _lowest_one(m, ca.members, N, "a_first_member")
        with m.FSM(name="armer"):
            with m.State("IDLE"):
                with m.If(a_hit):
                    m.d.sync += [a_g.eq(a_idx), ca.eq(self._cfg(a_idx))]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [a_cause.eq(static_cause), a_chunk.eq(a_bpo),
                             d_num.eq(n_el + n_mem - 1), d_rem.eq(0), d_q.eq(0),
                             d_cnt.eq(SIZE_BITS + 1)]
                with m.If((static_cause == ConfigError.NONE) &
                          (ca.collective == Collective.REDUCESCATTER)):
                    m.next = "DIVIDE"
                with m.Else():
                    m.next = "APPLY"
            with m.State("DIVIDE"):
                ge = r2 >= n_mem
                m.d.sync += [d_num.eq(d_num << 1), d_q.eq(Cat(ge, d_q[:-1])),
                             d_rem.eq(Mux(ge, r2 - n_mem, r2)), d_cnt.eq(d_cnt - 1)]
                with m.If(d_cnt == 1):
                    m.next = "CHUNK"
            with m.State("CHUNK"):
                with m.If(~whole & (chunk_bytes[:lgL] != 0)):
                    m.d.sync += a_cause.eq(ConfigError.CHUNK)
                with m.Elif(~whole):
                    m.d.sync += a_chunk.eq(chunk_bytes >> lgL)
                m.next = "APPLY"
            with m.State("APPLY"):
                # skipped if the group was disabled meanwhile; redone if re-armed meanwhile
                with m.If(arm_pending.bit_select(a_g, 1) & ~arm_req.bit_select(a_g, 1)):
                    m.d.comb += arm_done.eq(1 << a_g)
                    with m.If(a_cause == ConfigError.NONE):
                        m.d.comb += arm_apply.eq(1 << a_g)
                    with m.Else():
                        m.d.sync += [self.config_error.valid.eq(1),
                                     self.config_error.group.eq(a_g),
                                     self.config_error.cause.eq(a_cause)]
                m.next = "IDLE"
        with m.If(self.config_error.valid):
            m.d.sync += self.config_error.valid.eq(0)

        apply_any = arm_apply.any()
        m.d.sync += self.parity_injected.eq(apply_any & self.parity_inject.any())

        def with_parity(entry, invert):
            """``entry`` (every field but ``parity`` assigned) with its parity bit set."""
            body = entry.as_value()[:-1]
            return Cat(body, body.xor() ^ invert)

        for p, mem in enumerate(lane_snap):
            wr = mem.write_port()
            e = Signal(lane_view, name=f"lane_entry{p}")
            m.d.comb += [e.member.eq(ca.members[p]),
                         e.elem_type.eq(ca.elem_type.as_value()),
                         e.op.eq(ca.op.as_value()), e.base.eq(ca.base),
                         e.size.eq(ca.size), e.buf_base.eq(ca.buf_base),
                         e.buf_mask.eq((ca.buf_beats - 1)[:CW]),
                         wr.addr.eq(a_g), wr.en.eq(apply_any),
                         wr.data.eq(with_parity(e, self.parity_inject[0]))]
        wr = sched_snap.write_port()
        e = Signal(sched_view, name="sched_entry")
        m.d.comb += [e.members.eq(ca.members), e.elem_type.eq(ca.elem_type),
                     e.op.eq(ca.op), e.saturate.eq(ca.saturate),
                     e.collective.eq(ca.collective), e.root.eq(ca.root),
                     e.size.eq(ca.size), e.bpo.eq(a_bpo),
                     e.buf_base.eq(ca.buf_base),
                     e.buf_mask.eq((ca.buf_beats - 1)[:CW]),
                     e.result_offset.eq(ca.result_offset),
                     e.chunk_beats.eq(a_chunk), e.first_member.eq(a_first_member),
                     wr.addr.eq(a_g), wr.en.eq(apply_any),
                     wr.data.eq(with_parity(e, self.parity_inject[1]))]
        wr = notify_snap.write_port()
        m.d.comb += [wr.addr.eq(a_g), wr.en.eq(apply_any), wr.data.eq(ca.notify_offset)]
        for g in range(G):
            with m.If(arm_apply[g]):
                m.d.sync += members_r[g].eq(ca.members)

        # ======================================================================================
        # timeout: abort an operation that waits too long for a missing contribution
        # ======================================================================================
        waiting = Signal(G)
        expired = Signal(G)
        for g in range(G):
            m.d.comb += progress[g].eq(
                Cat(s_ & (g_ == g) for s_, g_ in lane_prog).any() | (b_fire & (pick_g == g)))
            m.d.comb += [
                waiting[g].eq(active[g] & pending[g] & ~all_have[g] & ~held[g]),
                expired[g].eq(waiting[g] & (self.timeout != 0) & (timer[g] >= self.timeout)),
            ]
            with m.If(~waiting[g] | progress[g]):
                m.d.sync += timer[g].eq(0)
            with m.Elif(timer[g] != (1 << TIMEOUT_BITS) - 1):
                m.d.sync += timer[g].eq(timer[g] + 1)
        ab_busy = Signal()
        ab_g = Signal(range(max(G, 2)))
        ab_mask = Signal(N)
        # The abort acts on the expiry of the cycle before, so that the members' counts, from
        # which "waiting" is derived, do not lead through the abort into every lane in one
        # cycle. A group that expired is not picked in the next cycle (ready_vec), and it was
        # not in the scheduler when it expired (waiting), so it is not in the scheduler when it
        # is aborted; it is still active (a group deactivated in between is not aborted).
        m.d.sync += timed_out.eq(expired & ~abort_now)
        abort_req = Signal(G)          # timed out, or failed a parity check (not in flight)
        m.d.comb += abort_req.eq((timed_out & active) | (parity_abort & ~held))
        x_hit, x_idx = _lowest_one(m, abort_req, G, "abort_pick")
        ab_hit, ab_port = _lowest_one(m, ab_mask, N, "abort_port")
        m.d.sync += self.aborted.valid.eq(0)
        with m.If(~ab_busy & x_hit):
            m.d.comb += abort_now.eq(1 << x_idx)
            m.d.sync += [ab_busy.eq(1), ab_g.eq(x_idx),
                         ab_mask.eq(Array(members_r)[x_idx]),
                         self.aborted.valid.eq(1), self.aborted.group.eq(x_idx)]
        with m.If(ab_busy):
            m.d.comb += nreq_valid[0].eq(ab_hit)
            with m.If(ngnt[0]):
                m.d.sync += ab_mask.eq(ab_mask & ~(1 << ab_port))
            with m.If(~ab_hit):
                m.d.sync += ab_busy.eq(0)
        m.d.comb += [nreq[0].port.eq(ab_port), nreq[0].group.eq(ab_g), nreq[0].reason.eq(0),
                     nreq[0].kind.eq(F.IncNoticeKind.ABORTED),
                     nreq[0].at_group.eq(1)]

        # ======================================================================================
        # group resets (last: they win over lane commits and claims in the same cycle)
        # ======================================================================================
        for g in range(G):
            with m.If(arm_apply[g] | abort_now[g] | deact[g]):
                m.d.sync += parity_abort[g].eq(0)
            with m.If(arm_apply[g] | abort_now[g]):
                m.d.sync += [wcomp[p][g].eq(0) for p in range(N)]
                m.d.sync += [started[p][g].eq(0) for p in range(N)]
                m.d.sync += [rbeats[g].eq(0), timer[g].eq(0), fresh[g].eq(1)]
        return m
