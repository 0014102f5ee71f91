"""The switch test environment: clock, reset, configuration, endpoints, scoreboard, drain.

driver (FabricPorts) -> ingress monitor -> golden model -> scoreboard <- egress monitor;
endpoint models answer memory reads with completions, which re-enter the switch.
"""

import os
import json
import logging
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, ClockCycles
from cocotbext.axi import AxiLiteBus, AxiLiteMaster
from cocotbext.pcie.core.tlp import Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from ..models.switch_model import SwitchModel, SwitchConfig, Packet, decode_header
from ..models.regmodel import RegisterModel
from ..models import tlp_build as tb
from ..models.formats import CplStatus, Fmt, Type
from .regaccess import RegisterAccess
from .streams import FabricPorts

__all__ = ["SwitchEnv", "params_from_env", "seed_from_env", "packets_from_env", "drain_bound",
           "AddressPlan", "bad_packets"]


def params_from_env():
    """Build parameters handed to the cocotb test by the pytest runner."""
    from ..hdl.params import SwitchParams
    return SwitchParams(**json.loads(os.environ["SMARTFABRIC_PARAMS"]))


def seed_from_env(default=None):
    """The test's random seed: SMARTFABRIC_SEED if set, else ``default`` or a fresh one."""
    if os.environ.get("SMARTFABRIC_SEED"):
        return int(os.environ["SMARTFABRIC_SEED"])
    return default if default is not None else random.SystemRandom().randrange(1 << 31)


def packets_from_env(default):
    """The workload size tests/test_sim.py hands a bench in ``SMARTFABRIC_PACKETS``, else
    ``default``. What it counts (packets per port, packets in all, a scale factor, cycles of
    a window) is the bench's own, stated in its docstring."""
    value = os.environ.get("SMARTFABRIC_PACKETS")
    return int(value) if value else default


def drain_bound(params):
    """Cycles within which a switch with ready egresses must deliver everything it holds:
    every VOQ of an egress full (N sources + the reduction engine, ``voq_depth`` beats each)
    at one beat per cycle, plus the ingress pipelines and the engine's lanes."""
    return (params.n_ports + 1) * params.voq_depth + 4 * params.max_beats + 200


class AddressPlan:
    """Where each endpoint lives: its bus number, requester ID and memory windows.

    Port p hosts bus p+1 (the switch is bus 0), a 32-bit window at 0x8000_0000 + p * 16 MiB
    and, when the switch has enough windows, a 64-bit window at (p+1) << 36 of 4 GiB.
    """

    WIN32_BASE = 0x8000_0000
    WIN32_SIZE = 0x0100_0000
    WIN64_SIZE = 0x1_0000_0000

    def __init__(self, n_ports, n_windows, n_id_routes):
        self.n = n_ports
        self.has64 = n_windows >= 2 * n_ports
        self.use64 = self.has64     # random addresses may be 64-bit (a bench may turn it off)
        if n_windows < n_ports or n_id_routes < n_ports:
            raise ValueError("the plan needs a window and an ID route per port")

    def bus(self, port):
        return port + 1

    def requester_id(self, port):
        return self.bus(port) << 8

    def win32(self, port):
        base = self.WIN32_BASE + port * self.WIN32_SIZE
        return base, base + self.WIN32_SIZE - 1

    def win64(self, port):
        base = (port + 1) << 36
        return base, base + self.WIN64_SIZE - 1

    def windows(self):
        """(base, limit, port, enable) entries in window order."""
        wins = [(*self.win32(p), p, True) for p in range(self.n)]
        if self.has64:
            wins += [(*self.win64(p), p, True) for p in range(self.n)]
        return wins

    def id_routes(self):
        return [(self.bus(p), self.bus(p), p, True) for p in range(self.n)]

    def address(self, rng, port, length_bytes, wide=None):
        """A random DW-aligned address in ``port``'s memory with room for ``length_bytes``."""
        if wide is None:
            wide = self.use64 and rng.random() < 0.5
        base, limit = self.win64(port) if wide else self.win32(port)
        return base + 4 * rng.randrange((limit - base + 1 - length_bytes) // 4)


def memory_bytes(address, n):
    """What every endpoint's memory holds: a fixed function of the address (so read data is
    predictable whatever writes raced with it)."""
    return bytes(((a * 0x9E3779B1) >> 11) & 0xFF for a in range(address, address + n))


class SwitchEnv:
    """Everything a switch test needs.

    Parameters
    ----------
    dut : cocotb top-level handle
    params : SwitchParams
    seed : int
        Printed, and the only source of randomness (rerun with SMARTFABRIC_SEED=<seed>).
    """

    def __init__(self, dut, params, seed):
        self.dut = dut
        self.params = params
        self.seed = seed
        self.rng = random.Random(seed)
        dut._log.info(f"seed {seed} (rerun with SMARTFABRIC_SEED={seed})")
        n = params.n_ports
        self.plan = AddressPlan(n, params.n_windows, params.n_id_routes)
        self.config = SwitchConfig(n_ports=n, data_width=params.data_width,
                                   max_payload=params.max_payload,
                                   windows=self._pad(self.plan.windows(), params.n_windows,
                                                     (0, 0, 0, False)),
                                   id_routes=self._pad(self.plan.id_routes(), params.n_id_routes,
                                                       (0, 0, 0, False)),
                                   root_port=0, completer_id=0x0000, n_groups=params.n_groups,
                                   voq_depth=params.voq_depth, n_rgroups=params.n_rgroups,
                                   reduce_dtypes=params.reduce_dtypes,
                                   reduce_buffer_beats=params.reduce_buffer_beats)
        self.model = SwitchModel(self.config)
        self.regmodel = RegisterModel(n, params.n_windows, params.n_id_routes, params.n_groups,
                                      params.n_rgroups, capture_depth=params.capture_depth)
        self.ports = None
        self.regs = None
        self.delivered = 0
        self.delivered_beats = 0
        self.answer_reads = True
        self.tags = [0] * n
        self.egress_log = []        # (cycle, port, src, packet), if enabled
        self.keep_log = False
        self.ingress_log = []       # (cycle, port, beat) of first beats, if enabled
        self._lockstep = []         # model updates waiting for their write to take effect
        self._bvalid_seen = 0
        self.write_cycles = []      # edge after each lockstep write took effect
        self.response_cycles = []   # edge of every B handshake

    @staticmethod
    def _pad(entries, size, empty):
        return list(entries)[:size] + [empty] * (size - len(entries))

    async def start(self):
        """Clock, reset, bus models, program the configuration."""
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        self.ports = FabricPorts(dut, self.params.n_ports, self.rng)
        self.ports.on_cycle.append(self._cycle)
        self.ports.on_ingress.append(self._ingress)
        self.ports.on_egress.append(self._egress)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for part in (self.axil.write_if, self.axil.read_if):
            part.log.setLevel(logging.WARNING)      # it logs every access at INFO
        self.regs = RegisterAccess(self.regmodel, self.axil)
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        cocotb.start_soon(self.ports.run())
        await self.program()

    async def reset(self, cycles=4):
        """Assert ``rst`` for ``cycles`` edges now, whatever is in flight: the bus models and
        the golden model start afresh (nothing sent before may be delivered after), then the
        configuration is programmed again (reset cleared the registers). No AXI4-Lite access
        may be in flight."""
        await self.ports.reset(cycles)
        self.model = SwitchModel(self.config)
        self._lockstep.clear()
        self._bvalid_seen = 0
        await self.program()

    async def program(self):
        """Write the model's configuration into the switch over AXI4-Lite."""
        cfg, regs = self.config, self.regs
        for k, (base, limit, port, enable) in enumerate(cfg.windows):
            await regs.write(f"window[{k}].base_lo", base & 0xFFFFFFFF)
            await regs.write(f"window[{k}].base_hi", base >> 32)
            await regs.write(f"window[{k}].limit_lo", limit & 0xFFFFFFFF)
            await regs.write(f"window[{k}].limit_hi", limit >> 32)
            await regs.write(f"window[{k}].ctrl", enable=int(enable), port=port)
        for k, (lo, hi, port, enable) in enumerate(cfg.id_routes):
            await regs.write(f"id_route[{k}]", bus_lo=lo, bus_hi=hi, port=port,
                             enable=int(enable))
        rp = cfg.root_port
        await regs.write("root_port", port=rp or 0, valid=int(rp is not None))
        await regs.write("switch_id", completer_id=cfg.completer_id)
        await regs.write("port_enable", cfg.port_enable)
        await self.program_multicast()

    async def program_multicast(self):
        """Write the model's multicast configuration (docs/protocol.md section 8) into the
        switch: group table entries, multicast window, receive masks, overlays, monitors."""
        cfg, regs = self.config, self.regs
        for g, mask in sorted(cfg.hc_groups.items()):
            await regs.write(f"hc_group[{g}]", mask)
        for p in range(self.params.n_ports):
            await regs.write(f"mc_receive[{p}]", cfg.mc_receive[p])
            base, size = cfg.mc_overlay[p]
            await regs.write(f"mc_overlay[{p}].base_lo", base & 0xFFFFFFFF)
            await regs.write(f"mc_overlay[{p}].base_hi", base >> 32)
            await regs.write(f"mc_overlay[{p}].ctrl", size=size)
        await regs.write("mc_base_lo", cfg.mc_base & 0xFFFFFFFF)
        await regs.write("mc_base_hi", cfg.mc_base >> 32)
        await regs.write("mc_ctrl", enable=int(cfg.mc_enable), index_pos=cfg.mc_index_pos,
                         num_group=cfg.mc_num_group,
                         exclude_source=int(cfg.mc_exclude_source))
        for k, (enable, source, ident) in enumerate(cfg.hc_monitors):
            await regs.write(f"hc_monitor[{k}].select", enable=int(enable), source=source,
                             id=ident)

    async def set_port_enabled(self, port, enabled):
        """Turn ``port`` on or off in ``port_enable`` and in the model. The switch checks
        ``port_enable`` on first beats (docs/protocol.md section 4), so a bench changes it
        only when no first beat can race with the write."""
        if enabled:
            self.config.port_enable |= 1 << port
        else:
            self.config.port_enable &= ~(1 << port)
        await self.regs.write("port_enable", self.config.port_enable)

    async def write_in_lockstep(self, path, value, update):
        """Write register ``path`` and apply ``update()`` to the model exactly when the write
        takes effect in the switch: before the model sees the beats accepted at the edge of
        the write response (the group table is written as ``bvalid`` rises, so a header
        accepted from the next edge on reads the new entry; docs/protocol.md section 8.6).
        ``value`` is the register's value or a dict of its field values.
        Only for writes that take effect as ``bvalid`` rises; no other write may be in
        flight."""
        self._lockstep.append(update)
        if isinstance(value, dict):
            await self.regs.write(path, **value)       # field values by name
        else:
            await self.regs.write(path, value)

    def _cycle(self, cycle):
        # Values read at an edge are those before it: bvalid seen high for the first time
        # means it rose at the previous edge, where the write was made.
        bvalid = int(self.dut.s_axil_bvalid.value)
        if bvalid and not self._bvalid_seen and self._lockstep:
            self._lockstep.pop(0)()
            self.write_cycles.append(cycle)
        if bvalid and int(self.dut.s_axil_bready.value):
            self.response_cycles.append(cycle)
        self._bvalid_seen = bvalid

    # ---- monitors ----
    def _ingress(self, port, beat):
        if self.keep_log and beat.first:
            self.ingress_log.append((self.ports.cycle, port, beat))
        self.model.ingress_beat(port, beat)

    def _egress(self, port, packet):
        src = self.model.match_egress(port, packet)
        self.delivered += 1
        self.delivered_beats += len(packet)
        if self.keep_log:
            self.egress_log.append((self.ports.cycle, port, src, packet))
        self._check_meaning(port, packet)
        if self.answer_reads and not packet.err:
            self._endpoint(port, packet)

    def _check_meaning(self, port, packet):
        """What the independent encoder (cocotbext-pcie) reads in the delivered header agrees
        with where the switch sent it."""
        if packet.err:
            return
        try:
            self._check_meaning_of(port, packet)
        except ValueError:
            pass    # a reserved encoding the switch forwards as is (fuzzing): nothing to read

    def _check_meaning_of(self, port, packet):
        d = decode_header(packet.hdr)
        fmt, typ = d.fmt, d.type
        if typ == Type.MEM and fmt <= Fmt.DW4_DATA:
            tlp = self.to_tlp(packet)
            if self.in_mc_window(tlp.address):
                return      # a multicast-window copy without overlay keeps its address
            base, limit = self.plan.win32(port)
            ok = base <= tlp.address <= limit
            if self.plan.has64:
                b64, l64 = self.plan.win64(port)
                ok = ok or b64 <= tlp.address <= l64
            assert ok, f"{tlp!r} delivered at port {port}, outside its windows"
        elif typ == Type.CPL and fmt in (Fmt.DW3, Fmt.DW3_DATA):
            tlp = self.to_tlp(packet)
            if (tlp.status == CplStatus.UR and
                    int(tlp.completer_id) == self.config.completer_id):
                return      # the switch's own UR goes back out of the request's ingress
            assert tlp.requester_id.bus == self.plan.bus(port), \
                f"{tlp!r} delivered at port {port}, whose bus is {self.plan.bus(port)}"

    def in_mc_window(self, address):
        cfg = self.config
        size = (cfg.mc_num_group + 1) << max(12, cfg.mc_index_pos)
        return cfg.mc_enable and cfg.mc_base <= address < cfg.mc_base + size

    def to_tlp(self, packet):
        """Decode a delivered packet with the independent standard decoder."""
        payload = tb.split_beats_payload(packet.beats, self.params.data_width) \
            if packet.beats[0].keep else b""
        return Tlp.unpack(tb.hdr_to_bytes(packet.hdr) + payload)

    def _endpoint(self, port, packet):
        """Endpoint at ``port``: answer a memory read with one completion with data."""
        d = decode_header(packet.hdr)
        if not (d.type == Type.MEM and d.fmt in (Fmt.DW3, Fmt.DW4)):
            return
        req = self.to_tlp(packet)
        cpl = Tlp.create_completion_data_for_tlp(req, PcieId(self.plan.bus(port), 0, 0))
        n = req.length * 4
        cpl.set_data(memory_bytes(req.address, n))
        cpl.byte_count = req.get_be_byte_count()
        cpl.lower_address = req.get_lower_address()
        self.send_tlp(port, cpl)

    # ---- stimulus ----
    def beats_of_tlp(self, tlp, pfx=0):
        b = bytes(tlp.pack())
        hsize = tlp.get_header_size()
        return tb.packet_beats(tb.hdr_from_bytes(b[:hsize]), pfx, b[hsize:],
                               self.params.data_width)

    def send_tlp(self, port, tlp, pfx=0):
        self.ports.send(port, self.beats_of_tlp(tlp, pfx))

    def send_beats(self, port, beats):
        self.ports.send(port, beats)

    def next_tag(self, port):
        t = self.tags[port]
        self.tags[port] = (t + 1) % 1024
        return t

    def _mem_request(self, src, dst, nbytes, wide, write):
        """A cocotbext-pcie MWr (``write``) or MRd from ``src``'s endpoint for ``nbytes`` of
        ``dst``'s memory; 64-bit header when the random address is above 4 GiB."""
        addr = self.plan.address(self.rng, dst, nbytes, wide)
        wide_addr = addr >= 1 << 32
        tlp = Tlp()
        if write:
            tlp.fmt_type = TlpType.MEM_WRITE_64 if wide_addr else TlpType.MEM_WRITE
        else:
            tlp.fmt_type = TlpType.MEM_READ_64 if wide_addr else TlpType.MEM_READ
        tlp.requester_id = PcieId(self.plan.bus(src), 0, 0)
        tlp.tag = self.next_tag(src)
        if write:
            tlp.set_addr_be_data(addr, self.rng.randbytes(nbytes))
        else:
            tlp.set_addr_be(addr, nbytes)
        return tlp

    def mem_write(self, src, dst, nbytes, wide=None):
        return self._mem_request(src, dst, nbytes, wide, write=True)

    def mem_read(self, src, dst, nbytes, wide=None):
        return self._mem_request(src, dst, nbytes, wide, write=False)

    def message(self, src, dst):
        """A message that the configuration routes from ``src`` to ``dst`` (by ID, by
        address, or to the root port when ``dst`` is it), with 0 to 2 DW of data."""
        rid = self.plan.requester_id(src)
        length = self.rng.choice([None, 1, 2])
        payload = self.rng.randbytes(4 * length) if length else b""
        kinds = ["id", "addr"] + (["root"] if dst == self.config.root_port else [])
        kind = self.rng.choice(kinds)
        kw = dict(requester_id=rid, tag=self.rng.randrange(256), length=length,
                  code=self.rng.randrange(256))
        if kind == "id":
            hdr = tb.msg_by_id_hdr(self.plan.bus(dst) << 8, **kw)
        elif kind == "addr":
            hdr = tb.msg_by_addr_hdr(self.plan.address(self.rng, dst, 4), **kw)
        else:
            hdr = tb.msg_to_root_hdr(**kw)
        return tb.packet_beats(hdr, 0, payload, self.params.data_width)

    def random_packet(self, src, dst, max_bytes=None, mix=(0.6, 0.25, 0.15)):
        """Beats of a random legal request from ``src`` to ``dst``: a write (60%), a read
        (25%, answered by ``dst``'s endpoint) or a message (15%)."""
        max_bytes = max_bytes or self.params.max_payload
        nbytes = 4 * self.rng.randint(1, max_bytes // 4)
        r = self.rng.random()
        if r < mix[0]:
            return self.beats_of_tlp(self.mem_write(src, dst, nbytes))
        if r < mix[0] + mix[1]:
            return self.beats_of_tlp(self.mem_read(src, dst, nbytes))
        return self.message(src, dst)

    # ---- end of test ----
    async def drain(self, max_cycles=200_000):
        """Wait until every offered packet is delivered and nothing is in flight; fail with
        the leftovers after ``max_cycles``."""
        clk = self.dut.clk
        quiet = 0
        for _ in range(max_cycles):
            await RisingEdge(clk)
            if self.ports.idle() and self.model.pending() == 0:
                quiet += 1
                if quiet >= 8:      # responses to the last reads may still be coming
                    return
            else:
                quiet = 0
        raise AssertionError(f"not drained after {max_cycles} cycles: "
                             f"{self.model.pending()} packets missing\n"
                             + self.model.describe_pending())

    async def check_counters(self):
        """Read every port's counters over AXI4-Lite and compare with the model (and with
        the stall cycles the bus models saw)."""
        await ClockCycles(self.dut.clk, 4)
        expect = {}
        for p in range(self.params.n_ports):
            model = {**self.model.counters[p], "rx_stall": self.ports.rx_stall[p],
                     "tx_stall": self.ports.tx_stall[p]}
            expect.update({f"port[{p}].{name}": value for name, value in model.items()})
        for k, model in enumerate(self.model.monitor_counters):
            expect.update({f"hc_monitor[{k}].{name}": value for name, value in model.items()})
        mismatches = await self.regs.mismatches(expect)
        assert not mismatches, "counter mismatches:\n" + "\n".join(mismatches)
        count = await self.regs.read("err_count")
        assert count == min(self.model.err_count, 0xFFFFFFFF), \
            f"err_count {count}, expected {self.model.err_count}"


def bad_packets(env, src, dst):
    """(description, beats) of every kind of bad input the switch must reject."""
    from ..models import tlp_build as tb
    from ..models.formats import Fmt, Type
    w = env.params.data_width
    lanes = w // 8
    rid = env.plan.requester_id(src)
    rng = env.rng
    good_addr = env.plan.address(rng, dst, 64, wide=False)
    bad = []

    def frame(hdr, payload=b"", pfx=0):
        return tb.packet_beats(hdr, pfx, payload, w)

    bad.append(("reserved fmt", frame(tb.raw_hdr(0b101, 0, length=1, dw1=rid << 16))))
    bad.append(("unknown type", frame(tb.raw_hdr(Fmt.DW3, 0b00011, dw1=rid << 16))))
    bad.append(("bad prefix", frame(tb.mwr_hdr(good_addr, 1, requester_id=rid), bytes(4),
                                    pfx=0x12345678)))
    bad.append(("IO read -> UR", frame(tb.raw_hdr(Fmt.DW3, Type.IO, length=1,
                                                  dw1=(rid << 16) | (0x5A << 8) | 0xF))))
    bad.append(("Cfg write -> UR", frame(tb.raw_hdr(Fmt.DW3_DATA, Type.CFG0, length=1,
                                                    dw1=(rid << 16) | 0x0F), bytes(4))))
    bad.append(("AtomicOp -> UR", frame(tb.raw_hdr(Fmt.DW3_DATA, Type.FETCH_ADD, length=2,
                                                   dw1=(rid << 16) | 0x77 << 8,
                                                   dw2=good_addr), bytes(8))))
    bad.append(("CplLk", frame(tb.raw_hdr(Fmt.DW3, Type.CPL_LOCKED,
                                          dw2=env.plan.requester_id(dst) << 16))))
    bad.append(("broadcast message", frame(tb.msg_broadcast_hdr(requester_id=rid))))
    big = env.params.max_payload + 4
    bad.append(("write above max payload", frame(tb.mwr_hdr(good_addr, big // 4,
                                                            requester_id=rid), bytes(big))))
    bad.append(("read of unmapped address -> UR",
                frame(tb.mrd_hdr(0x1234_0000, 4, requester_id=rid, tag=0x3C5))))
    bad.append(("write to unmapped address", frame(tb.mwr_hdr(0x10, 1, requester_id=rid),
                                                   bytes(4))))
    bad.append(("completion for unknown bus", frame(tb.cpld_hdr(200 << 8, 1, 1), bytes(4))))
    bad.append(("local message (consumed)", frame(tb.msg_local_hdr(requester_id=rid))))
    # Framing errors on a packet of at least three beats.
    n_bytes = min(env.params.max_payload, 3 * lanes)
    good = frame(tb.mwr_hdr(good_addr, n_bytes // 4, requester_id=rid), rng.randbytes(n_bytes))
    assert len(good) >= 3

    def edit(beats, k, **changes):
        beats = list(beats)
        beats[k] = type(beats[k])(**{**beats[k].__dict__, **changes})
        return beats
    bad.append(("no first flag", edit(good, 0, first=False)))
    bad.append(("keep hole on first beat", edit(good, 0, keep=good[0].keep & ~2)))
    bad.append(("keep hole on later beat", edit(good, 1, keep=good[1].keep & ~1)))
    bad.append(("truncated at first beat", edit(good[:1], 0, last=True)))
    bad.append(("truncated later", edit(good[:2], 1, last=True)))
    bad.append(("overlong", edit(good, len(good) - 1, last=False)
                + [type(good[0])(data=123, keep=good[-1].keep, first=False, last=True)]))
    bad.append(("first flag inside packet", edit(good, 1, first=True)))
    return bad
