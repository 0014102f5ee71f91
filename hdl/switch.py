"""Top level: the switch core, its register block and counters, with flat Verilog port names."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..models.formats import DropReason as R, N_HC_MONITORS, ParityTarget
from ..models.capture_format import CaptureKind, LINK_STATUS
from ..models.reduction import ELEMENT_EVENTS
from .params import SwitchParams
from .core import SwitchCore
from .counters import CounterBank
from .ingress import STAMP_BITS
from .reduce_engine import ReductionEngine
from .regblock import RegisterBlock
from .telemetry import (CaptureSource, GroupStatistics, HeaderCapture, LatencyHistogram,
                        LatencyTimer, LinkMonitor, elapsed_cycles)
from .tlp import IngressBeat, EgressBeat
from .window_table import WindowTable

__all__ = ["SmartfabricSwitch", "COUNTERS", "VERSION"]

VERSION = (0, 1)

# Counter name -> (side, event expression builder). One 64-bit counter per port each.
_INGRESS_COUNTERS = {
    "rx_packets": lambda ev: ev.rx_packet,
    "rx_beats": lambda ev: ev.rx_beat,
    "rx_bytes": lambda ev: ev.rx_bytes,
    "rx_stall": lambda ev: ev.rx_stall,
    "drop_malformed": lambda ev: ev.reason == R.MALFORMED,
    "drop_unsupported": lambda ev: ev.reason == R.UNSUPPORTED,
    "drop_no_route": lambda ev: ev.reason == R.NO_ROUTE,
    "drop_port_disabled": lambda ev: ev.reason == R.PORT_DISABLED,
    "drop_length": lambda ev: ev.reason == R.LENGTH,
    "err_truncated": lambda ev: ev.reason == R.TRUNCATED,
    "err_overlong": lambda ev: ev.reason == R.OVERLONG,
    "err_keep": lambda ev: ev.reason == R.KEEP,
    "msg_local": lambda ev: ev.reason == R.MSG_LOCAL,
    "ur_sent": lambda ev: ev.ur,
    "rx_mcast": lambda ev: ev.mcast,
    "drop_hc_bad_group": lambda ev: ev.reason == R.HC_BAD_GROUP,
    "drop_hc_bad_set": lambda ev: ev.reason == R.HC_BAD_SET,
    "drop_hc_empty": lambda ev: ev.reason == R.HC_EMPTY,
    "drop_mc_spill": lambda ev: ev.reason == R.MC_SPILL,
    "drop_parity": lambda ev: ev.reason == R.PARITY,    # plus the engine's, below
}
# Contributions the reduction engine rejects, counted against the port that sent them.
_ENGINE_COUNTERS = {
    "drop_inc_bad_group": R.INC_BAD_GROUP,
    "drop_inc_not_member": R.INC_NOT_MEMBER,
    "drop_inc_mismatch": R.INC_MISMATCH,
    "drop_inc_offset": R.INC_OFFSET,
    "drop_inc_outside": R.INC_OUTSIDE,
    "drop_parity": R.PARITY,      # the same counter as the ingress's PARITY drops
}
_EGRESS_COUNTERS = {
    "tx_packets": lambda ev: ev.tx_packet,
    "tx_beats": lambda ev: ev.tx_beat,
    "tx_bytes": lambda ev: ev.tx_bytes,
    "tx_stall": lambda ev: ev.tx_stall,
    "tx_err": lambda ev: ev.tx_err,
    "tx_mcast": lambda ev: ev.tx_mcast,
}
COUNTERS = list(dict.fromkeys([*_INGRESS_COUNTERS, *_EGRESS_COUNTERS, *_ENGINE_COUNTERS]))


def _port_members(params):
    """Flat Verilog ports of every switch port: ``s<p>_*`` ingress, ``m<p>_*`` egress."""
    members = {}
    for p in range(params.n_ports):
        for side, beat, fwd, back in (("s", IngressBeat(params.data_width), In, Out),
                                      ("m", EgressBeat(params.data_width), Out, In)):
            members[f"{side}{p}_valid"] = fwd(1)
            members[f"{side}{p}_ready"] = back(1)
            for name, field in beat:
                members[f"{side}{p}_{name}"] = fwd(field.shape)
    return members


class SmartfabricSwitch(wiring.Component):
    """The smartfabric switch: N ports of PCIe TLP streams and an AXI4-Lite control port.

    Verilog ports (module ``smartfabric_switch``; ``clk`` and ``rst`` (synchronous, active
    high) come first): per port ``p`` an ingress ``s<p>_{valid,ready,data,keep,first,last,hdr,
    pfx}`` and an egress ``m<p>_{valid,ready,data,keep,first,last,hdr,pfx,err}``, and the
    control port ``s_axil_*`` (``docs/integration.md``, ``docs/protocol.md``).

    Parameters
    ----------
    params : SwitchParams
    """

    def __init__(self, params: SwitchParams = SwitchParams()):
        # before any block exists, so a bad configuration leaves nothing half-built behind
        ReductionEngine.check_params(params)
        self.params = params
        self.regs = RegisterBlock(n_ports=params.n_ports, n_windows=params.n_windows,
                                  n_id_routes=params.n_id_routes, n_groups=params.n_groups,
                                  n_rgroups=params.n_rgroups,
                                  capture_depth=params.capture_depth,
                                  parity_memories=("hc_group",),
                                  window_latency={"port": CounterBank.READ_LATENCY},
                                  applied_writes=("window",))
        members = _port_members(params)
        for name, member in self.regs.signature.members.items():
            members[name] = member
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.n_ports
        regs = m.submodules.regs = self.regs
        core = m.submodules.core = SwitchCore(p)
        engine = m.submodules.engine = ReductionEngine(p)
        for q in range(n):
            wiring.connect(m, core.contrib[q], engine.contrib[q])
        wiring.connect(m, engine.result, core.inject)

        # Control port pass-through.
        for name, member in regs.signature.members.items():
            if member.flow == In:
                m.d.comb += getattr(regs, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(regs, name))

        # Streams.
        for q in range(n):
            ing, eg = core.ingress[q], core.egress[q]
            m.d.comb += [ing.valid.eq(getattr(self, f"s{q}_valid")),
                         getattr(self, f"s{q}_ready").eq(ing.ready),
                         getattr(self, f"m{q}_valid").eq(eg.valid),
                         eg.ready.eq(getattr(self, f"m{q}_ready"))]
            for name, _ in IngressBeat(p.data_width):
                m.d.comb += getattr(ing.payload, name).eq(getattr(self, f"s{q}_{name}"))
            for name, _ in EgressBeat(p.data_width):
                m.d.comb += getattr(self, f"m{q}_{name}").eq(getattr(eg.payload, name))

        # Configuration from the register block.
        hw_r, hw_w = regs.hw_r, regs.hw_w
        m.d.comb += [
            core.port_enable.eq(hw_r["port_enable.enable"][:n]),
            core.completer_id.eq(hw_r["switch_id.completer_id"]),
            core.root_port.eq(hw_r["root_port.port"]),
            core.root_valid.eq(hw_r["root_port.valid"]),
        ]
        # Parity error injection (docs/protocol.md section 9): armed by a write of
        # dbg_parity_inject, consumed by the next write (arming) into the target table.
        inject_pending = Signal()
        inject_target = hw_r["dbg_parity_inject.target"]
        inject_consumed = Signal()
        with m.If(regs.swmod["dbg_parity_inject.arm"]):
            m.d.sync += inject_pending.eq(hw_r["dbg_parity_inject.arm"])
        with m.Elif(inject_consumed):
            m.d.sync += inject_pending.eq(0)
        m.d.comb += hw_w["dbg_parity_inject.pending"].eq(inject_pending)

        def injecting(target):
            return inject_pending & (inject_target == target)

        # Address windows: one parity bit per window, over the bits of its registers,
        # written with every write of one of them (the strobe comes with the new value).
        window_fields = ("base_lo.value", "base_hi.value", "limit_lo.value", "limit_hi.value",
                         "ctrl.port", "ctrl.enable")
        # The core routes by the window table's copy, which takes a write over together with
        # the receiver windows derived from it; the write's response waits for that.
        table = m.submodules.window_table = WindowTable(p)
        table.serve(m, core)
        m.d.comb += regs.write_applied.eq(table.applied)
        window_written = []
        for k in range(p.n_windows):
            w = table.windows[k]
            f = lambda reg: hw_r[f"window[{k}].{reg}"]
            m.d.comb += [
                w.base.eq(Cat(f("base_lo.value"), f("base_hi.value"))),
                w.limit.eq(Cat(f("limit_lo.value"), f("limit_hi.value"))),
                w.port.eq(f("ctrl.port")),
                w.enable.eq(f("ctrl.enable")),
            ]
            written = Signal(name=f"window{k}_written")
            m.d.comb += written.eq(Cat(regs.swmod[f"window[{k}].{name}"]
                                       for name in window_fields).any())
            window_written.append(written)
            bits = Cat(f(name) for name in window_fields).xor()
            parity = Signal(name=f"window{k}_parity")
            with m.If(written):
                m.d.sync += parity.eq(bits ^ injecting(ParityTarget.WINDOW))
            m.d.comb += table.window_parity[k].eq(
                Mux(written, injecting(ParityTarget.WINDOW), bits ^ parity))
        # every window write restarts the scan that its response waits for
        m.d.comb += table.changed.eq(regs.write_held)
        for k in range(p.n_id_routes):
            r = core.id_routes[k]
            for name in ("bus_lo", "bus_hi", "port", "enable"):
                m.d.comb += getattr(r, name).eq(hw_r[f"id_route[{k}].{name}"])

        # Hypercast configuration (docs/protocol.md section 8.6). Registers that must change
        # together are applied by the write of their control register: a held copy, bypassed
        # in the cycle of that write so the new value is in use as the response goes out.
        def applied(m, strobe, value, name):
            held = Signal(len(value), name=name)
            with m.If(strobe):
                m.d.sync += held.eq(value)
            return Mux(strobe, value, held)

        mc_written = regs.swmod["mc_ctrl.enable"]
        m.d.comb += core.mc.eq(applied(m, mc_written, Cat(
            hw_r["mc_base_lo.value"], hw_r["mc_base_hi.value"], hw_r["mc_ctrl.index_pos"],
            hw_r["mc_ctrl.num_group"], hw_r["mc_ctrl.enable"], hw_r["mc_ctrl.exclude_source"]),
            "mc_window"))
        for q in range(n):
            m.d.comb += core.mc_receive[q].eq(hw_r[f"mc_receive[{q}].groups"])
            f = lambda reg: hw_r[f"mc_overlay[{q}].{reg}"]
            m.d.comb += core.overlays[q].eq(applied(
                m, regs.swmod[f"mc_overlay[{q}].ctrl.size"],
                Cat(f("base_lo.value"), f("base_hi.value"), f("ctrl.size")), f"overlay{q}"))

        # The group table: a memory of the register block (with a parity bit), one read port
        # per ingress.
        m.d.comb += regs.parity_invert["hc_group"].eq(injecting(ParityTarget.HC_GROUP))
        m.d.comb += engine.parity_inject.eq(Mux(injecting(ParityTarget.RGROUP), 0b11, 0))
        m.d.comb += inject_consumed.eq(
            (regs.memory_written["hc_group"] & injecting(ParityTarget.HC_GROUP)) |
            (Cat(window_written).any() & injecting(ParityTarget.WINDOW)) |
            (engine.parity_injected & injecting(ParityTarget.RGROUP)))
        group_table = regs.memories["hc_group"]
        for q in range(n):
            read = group_table.read_port()
            m.d.comb += [read.addr.eq(core.group_addr[q]), read.en.eq(core.group_en[q]),
                         core.group_data[q].eq(read.data)]

        # Reduction groups (docs/reduction-engine.md section 3): a write of ctrl arms.
        m.d.comb += [engine.timeout.eq(hw_r["inc_timeout.cycles"]),
                     engine.completer_id.eq(hw_r["switch_id.completer_id"])]
        for g in range(p.n_rgroups):
            f = lambda reg: hw_r[f"rgroup[{g}].{reg}"]
            cfg = engine.config[g]
            m.d.comb += [
                cfg.enable.eq(f("ctrl.enable")),
                cfg.elem_type.eq(f("ctrl.elem_type")),
                cfg.op.eq(f("ctrl.op")),
                cfg.saturate.eq(f("ctrl.saturate")),
                cfg.collective.eq(f("ctrl.collective")),
                cfg.root.eq(f("ctrl.root")),
                cfg.members.eq(f("members.mask")),
                cfg.base.eq(Cat(f("base_lo.value"), f("base_hi.value"))),
                cfg.size.eq(f("size.value")),
                cfg.buf_base.eq(f("buf_base.value")),
                cfg.buf_beats.eq(f("buf_beats.value")),
                cfg.result_offset.eq(Cat(f("result_lo.value"), f("result_hi.value"))),
                cfg.notify_offset.eq(Cat(f("notify_lo.value"), f("notify_hi.value"))),
                engine.arm[g].eq(regs.swmod[f"rgroup[{g}].ctrl.enable"] & f("ctrl.enable")),
                hw_w[f"rgroup[{g}].status.active"].eq(engine.active[g]),
            ]
            cause = Signal(4, name=f"rgroup{g}_cause")
            completed = Signal(64, name=f"rgroup{g}_completed")
            aborted = Signal(64, name=f"rgroup{g}_aborted")
            with m.If(engine.config_error.valid & (engine.config_error.group == g)):
                m.d.sync += cause.eq(engine.config_error.cause)
            with m.Elif(engine.arm[g]):
                m.d.sync += cause.eq(0)
            m.d.sync += [
                completed.eq(completed + (engine.completed.valid & (engine.completed.group == g))),
                aborted.eq(aborted + (engine.aborted.valid & (engine.aborted.group == g))),
            ]
            m.d.comb += [hw_w[f"rgroup[{g}].status.cause"].eq(cause),
                         hw_w[f"rgroup[{g}].completed.count"].eq(completed),
                         hw_w[f"rgroup[{g}].aborted.count"].eq(aborted)]
        for name, event in (("inc_completed", engine.completed.valid),
                            ("inc_aborted", engine.aborted.valid),
                            ("inc_config_errors", engine.config_error.valid)):
            total = Signal(64, name=name)
            m.d.sync += total.eq(total + event)
            m.d.comb += hw_w[f"{name}.count"].eq(total)

        # Build parameters.
        m.d.comb += [
            hw_w["params0.n_ports"].eq(n),
            hw_w["params0.width_div64"].eq(p.data_width // 64),
            hw_w["params0.n_windows"].eq(p.n_windows),
            hw_w["params0.n_id_routes"].eq(p.n_id_routes),
            hw_w["params1.voq_depth"].eq(p.voq_depth),
            hw_w["params1.max_payload"].eq(p.max_payload),
        ]

        # 64-bit port counters, in block RAM (the `port` read window).
        window = regs.read_windows["port"]
        port_counts = {}        # bank index -> its increment this cycle
        parity_events = []
        for q in range(n):
            lane = engine.lane_events[q]
            increments = {}
            for side, table, events in (("in", _INGRESS_COUNTERS, core.ingress_events[q]),
                                        ("out", _EGRESS_COUNTERS, core.egress_events[q])):
                for name, event in table.items():
                    increments[name] = [event(events)]
            for name, reason in _ENGINE_COUNTERS.items():
                increments.setdefault(name, []).append(lane.reject & (lane.reason == reason))
            parity_events += increments["drop_parity"]
            for name, events in increments.items():
                most = sum((1 << len(e)) - 1 for e in events)
                inc = Signal(range(most + 1), name=f"port{q}_{name}_inc")
                m.d.comb += inc.eq(sum(events))
                port_counts[regs.window_index(f"port[{q}].{name}")] = inc
        bank = m.submodules.port_counters = CounterBank(
            [len(port_counts[k]) if k in port_counts else 0 for k in range(window.depth)])
        for k, inc in port_counts.items():
            m.d.comb += bank.inc[k].eq(inc)
        m.d.comb += [bank.read_en.eq(window.en), bank.read_index.eq(window.index),
                     window.data.eq(bank.read_data)]
        # Parity errors found: PARITY drops and rejections, scheduler snapshot errors and
        # engine copies dropped for a receiver-window parity error.
        parity_events += list(core.engine_parity_drops)
        parity_errors = Signal(64)
        m.d.sync += parity_errors.eq(parity_errors + sum(parity_events) + engine.parity_error)
        m.d.comb += hw_w["parity_errors.count"].eq(parity_errors)

        # Group monitors: multicast packets of one group, and their copies.
        for k in range(N_HC_MONITORS):
            sel = lambda name: hw_r[f"hc_monitor[{k}].select.{name}"]
            hits = [Signal(name=f"monitor{k}_hit{q}") for q in range(n)]
            for q, hit in enumerate(hits):
                ev = core.ingress_events[q]
                m.d.comb += hit.eq(sel("enable") & ev.mcast & (ev.group_source == sel("source") + 1)
                                   & (ev.group == sel("id")))
            packets = Signal(64, name=f"monitor{k}_packets")
            copies = Signal(64, name=f"monitor{k}_copies")
            m.d.sync += [packets.eq(packets + sum(hits)),
                         copies.eq(copies + sum(Mux(hit, core.ingress_events[q].copies, 0)
                                                for q, hit in enumerate(hits)))]
            m.d.comb += [hw_w[f"hc_monitor[{k}].packets.count"].eq(packets),
                         hw_w[f"hc_monitor[{k}].copies.count"].eq(copies)]

        # Error status: the first error since the last clear, lowest port first in a cycle.
        err_valid = Signal()
        err_port = Signal(5)
        err_reason = Signal(5)
        err_hdr = Signal(128)
        err_pfx = Signal(32)
        err_count = Signal(32)
        # Error sources: each ingress, then each engine lane (a rejected contribution).
        sources = []
        for q in range(n):
            ev = core.ingress_events[q]
            sources.append((q, (ev.reason != R.NONE) & (ev.reason != R.MSG_LOCAL), ev))
        for q in range(n):
            lane = engine.lane_events[q]
            sources.append((q, lane.reject, lane))
        is_error = [Signal(name=f"is_error{k}") for k in range(len(sources))]
        for k, (_, error, _) in enumerate(sources):
            m.d.comb += is_error[k].eq(error)
        n_errors = sum(is_error)
        with m.If(err_count + n_errors >= (1 << 32)):
            m.d.sync += err_count.eq((1 << 32) - 1)
        with m.Else():
            m.d.sync += err_count.eq(err_count + n_errors)
        with m.If(regs.swmod["err_status.valid"]):
            m.d.sync += err_valid.eq(0)
        with m.If(~err_valid):
            for k, (q, _, ev) in reversed(list(enumerate(sources))):
                with m.If(is_error[k]):
                    m.d.sync += [err_valid.eq(1), err_port.eq(q), err_reason.eq(ev.reason),
                                 err_hdr.eq(ev.hdr), err_pfx.eq(ev.pfx)]
        m.d.comb += [
            hw_w["err_status.valid"].eq(err_valid),
            hw_w["err_status.port"].eq(err_port),
            hw_w["err_status.reason"].eq(err_reason),
            hw_w["err_count.count"].eq(err_count),
        ]
        for k in range(4):
            m.d.comb += hw_w[f"err_hdr[{k}].value"].eq(err_hdr[32 * k:32 * k + 32])
        m.d.comb += hw_w["err_hdr[4].value"].eq(err_pfx)

        self._telemetry(m, core, engine)
        return m

    # Capture sources: ingress p, egress N + p, reduction lane 2N + p.
    SOURCES_PER_PORT = 3

    def _telemetry(self, m, core, engine):
        """Latency histograms, reduction group statistics, link monitors and the header
        capture (``docs/telemetry.md`` section 6), and their registers."""
        p, regs = self.params, self.regs
        n = p.n_ports
        hw_r, hw_w = regs.hw_r, regs.hw_w

        # ---- latency: one timer, a stamp per packet (in the core), a histogram per egress ----
        timer = m.submodules.latency_timer = LatencyTimer(STAMP_BITS)
        m.d.comb += core.now.eq(timer.now)
        window = regs.read_windows["latency_hist"]
        hists = []
        for q in range(n):
            hist = m.submodules[f"latency_hist{q}"] = LatencyHistogram(latency_width=STAMP_BITS)
            hists.append(hist)
            eg, meta = core.egress[q], core.egress_meta[q]
            m.d.comb += [
                hist.sample_valid.eq(eg.valid & eg.ready & eg.payload.first & ~meta.engine),
                hist.latency.eq(elapsed_cycles(timer.now, meta.stamp)),
                hist.clear.eq(regs.pulse["telemetry_ctrl.hist_clear"]),
                hist.read_index.eq(window.index[:4]),
            ]
        hist_port = Signal(range(window.depth // 16), name="latency_hist_port")
        m.d.sync += hist_port.eq(window.index[4:])
        m.d.comb += window.data.eq(_select(hist_port, [h.read_data for h in hists]))

        # ---- reduction group statistics ----
        # The engine pulses completed and aborted operations (one each) and the NaN, infinity
        # and saturated elements of each result beat (up to W/8 at once), with their group.
        stats = m.submodules.rgroup_stats = GroupStatistics(max(2, p.n_rgroups),
                                                            max_amount=engine.lanes)
        window = regs.read_windows["rgroup_stats"]
        for k, name in enumerate(stats.stats):
            event = getattr(engine, name)
            m.d.comb += [stats.events[k].valid.eq(event.valid),
                         stats.events[k].group.eq(event.group),
                         stats.events[k].amount.eq(event.amount if name in ELEMENT_EVENTS
                                                   else 1)]
        stat_word = Signal(3, name="rgroup_stats_word")
        m.d.sync += stat_word.eq(window.index[:3])
        m.d.comb += [stats.clear.eq(regs.pulse["telemetry_ctrl.gstat_clear"]),
                     stats.read_index.eq(window.index[3:]),
                     window.data.eq(_select(stat_word, list(stats.read_data)))]

        # ---- link status ----
        for q in range(n):
            mon = m.submodules[f"link_monitor{q}"] = LinkMonitor()
            ev, lane = core.ingress_events[q], engine.lane_events[q]
            ingress_error = (ev.reason != R.NONE) & (ev.reason != R.MSG_LOCAL)
            sticky = [regs.swmod[f"link_status[{q}].{name}"]
                      for name in ("tx_stuck_seen", "error_seen")]
            m.d.comb += [
                mon.enable.eq(hw_r["port_enable.enable"][q]),
                mon.rx_valid.eq(core.ingress[q].valid), mon.rx_ready.eq(core.ingress[q].ready),
                mon.tx_valid.eq(core.egress[q].valid), mon.tx_ready.eq(core.egress[q].ready),
                mon.error.eq(ingress_error | lane.reject),
                mon.error_reason.eq(Mux(ingress_error, ev.reason, lane.reason)),
                mon.stuck_threshold.eq(hw_r["telemetry_ctrl.stuck_threshold"]),
                mon.clear.eq(Cat(sticky).any()),
            ]
            for name in LINK_STATUS:
                m.d.comb += hw_w[f"link_status[{q}].{name}"].eq(getattr(mon.status, name))

        # ---- header capture (none with capture_depth = 0: its registers read 0) ----
        if p.capture_depth:
            self._header_capture(m, core, engine)

    def _header_capture(self, m, core, engine):
        """The header capture, its event sources and its registers."""
        p, regs = self.params, self.regs
        n = p.n_ports
        hw_r, hw_w = regs.hw_r, regs.hw_w
        cap = m.submodules.capture = HeaderCapture(self.SOURCES_PER_PORT * n,
                                                   depth=p.capture_depth)
        for q in range(n):
            # Ingress q: IngressEvents, one cycle after the beat.
            ev, src = core.ingress_events[q], cap.sources[q]
            m.d.comb += [
                src.valid.eq(ev.rx_packet | (ev.reason != R.NONE)),
                src.port.eq(q),
                src.kind.eq(Mux(~ev.rx_packet, CaptureKind.CUT,
                                Mux(ev.reason == R.NONE, CaptureKind.INGRESS,
                                    Mux(ev.reason == R.MSG_LOCAL, CaptureKind.CONSUMED,
                                        CaptureKind.DROP)))),
                src.reason.eq(ev.reason), src.hdr.eq(ev.hdr), src.pfx.eq(ev.pfx),
            ]
            # Egress q: registered, so it is one cycle after the beat like the others.
            eg, meta, src = core.egress[q], core.egress_meta[q], cap.sources[n + q]
            m.d.sync += [
                src.valid.eq(eg.valid & eg.ready & eg.payload.first),
                src.port.eq(q),
                src.kind.eq(Mux(meta.ur, CaptureKind.UR, CaptureKind.EGRESS)),
                src.reason.eq(R.NONE), src.hdr.eq(eg.payload.hdr), src.pfx.eq(eg.payload.pfx),
            ]
            # Reduction lane q: rejected contributions, one cycle after the fact.
            lane, src = engine.lane_events[q], cap.sources[2 * n + q]
            m.d.comb += [
                src.valid.eq(lane.reject), src.port.eq(q), src.kind.eq(CaptureKind.INC_REJECT),
                src.reason.eq(lane.reason), src.hdr.eq(lane.hdr), src.pfx.eq(lane.pfx),
            ]
        m.d.comb += [
            cap.enable.eq(hw_r["cap_ctrl.enable"]),
            cap.mode.eq(hw_r["cap_ctrl.mode"]),
            cap.trigger_on_match.eq(hw_r["cap_ctrl.trigger_on_match"]),
            cap.trigger_kinds.eq(hw_r["cap_ctrl.trigger_kinds"]),
            cap.post_trigger.eq(hw_r["cap_post_trigger.count"]),
            cap.match.eq(Cat(hw_r[f"cap_match[{k}].value"] for k in range(6))),
            cap.mask.eq(Cat(hw_r[f"cap_mask[{k}].value"] for k in range(6))),
            cap.arm.eq(regs.pulse["cap_cmd.arm"]),
            # software, or an arming of a reduction group that failed
            cap.trigger.eq(regs.pulse["cap_cmd.trigger"] | engine.config_error.valid),
            hw_w["cap_status.count"].eq(cap.count),
            hw_w["cap_status.frozen"].eq(cap.frozen),
            hw_w["cap_status.triggered"].eq(cap.triggered),
            hw_w["cap_ptr.write_ptr"].eq(cap.write_ptr),
            hw_w["cap_ptr.oldest"].eq(cap.oldest),
            hw_w["cap_missed.count"].eq(cap.missed),
            hw_w["cap_trigger_time.value"].eq(cap.trigger_time),
            hw_w["cap_depth.depth"].eq(cap.depth),
            hw_w["cap_depth.ts_width"].eq(cap.ts_width),
            hw_w["cap_depth.n_sources"].eq(cap.n_sources),
        ]
        window = regs.read_windows["cap_entry"]
        m.d.comb += [cap.read_index.eq(window.index[3:]), cap.read_word.eq(window.index[:3]),
                     window.data.eq(cap.read_word_data)]


def _select(index, values):
    """``values[index]``, 0 past the end (a multiplexer)."""
    result = Const(0, 32)
    for k, value in enumerate(values):
        result = Mux(index == k, value, result)
    return result
