"""RegisterBlock (hdl/regblock.py) over AXI4-Lite, in Amaranth's simulator.

Random values come from one seed, printed at the start of each test; set SMARTFABRIC_SEED to
replay it. WAVES=1 writes a VCD per test into build/waves/.
"""

import os
import random
from pathlib import Path

import pytest
from amaranth.hdl import Elaboratable, Module, Mux, Signal
from amaranth.sim import Simulator

from smartfabric.hdl.regblock import RegisterBlock
from smartfabric.models.regmap import FieldKind
from smartfabric.models.regmodel import RegisterModel

# Two of every per-port, per-window, per-route and per-group register, and a short capture
# ring: the block's logic is the same at every size, and the Python simulator's time grows
# with the registers read. test_hw_w_inputs_visible[default] and
# test_write_readback_all_rw_registers[default] read and write the full-size map.
SMALL = {"n_ports": 2, "n_windows": 2, "n_id_routes": 2, "n_groups": 4, "n_rgroups": 2,
         "capture_depth": 4}
#: The default configuration's map but for the group table (a memory, 1,024 words).
FULL = {"n_ports": 8, "n_windows": 16, "n_id_routes": 16, "n_rgroups": 64, "capture_depth": 64}
OKAY, SLVERR = 0, 2


# ---- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def rng(request):
    seed = int(os.environ.get("SMARTFABRIC_SEED", random.randrange(1 << 32)))
    print(f"{request.node.name}: SMARTFABRIC_SEED={seed}")
    return random.Random(seed)


def make(window_latency=None, **config):
    config = {**SMALL, **config}
    return RegisterBlock(**config, window_latency=window_latency), RegisterModel(**config)


def run(dut, testbench, name="regblock", monitors=()):
    """Simulate ``testbench`` (and background ``monitors``) against ``dut`` to completion."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    for monitor in monitors:
        sim.add_testbench(monitor, background=True)
    if os.environ.get("WAVES"):
        Path("build/waves").mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(f"build/waves/{name}.vcd"):
            sim.run()
    else:
        sim.run()


async def channel_put(ctx, dut, channel, **fields):
    """Present one transfer on AXI4-Lite request channel ``channel`` (aw, w, ar) and hold it
    until the block takes it."""
    for name, value in fields.items():
        ctx.set(getattr(dut, f"s_axil_{name}"), value)
    ctx.set(getattr(dut, f"s_axil_{channel}valid"), 1)
    await ctx.tick().until(getattr(dut, f"s_axil_{channel}ready"))
    ctx.set(getattr(dut, f"s_axil_{channel}valid"), 0)


async def channel_get(ctx, dut, channel, *names):
    """Accept one transfer on response channel ``channel`` (b, r); returns the named fields."""
    ctx.set(getattr(dut, f"s_axil_{channel}ready"), 1)
    values = await ctx.tick().sample(*(getattr(dut, f"s_axil_{n}") for n in names)).until(
        getattr(dut, f"s_axil_{channel}valid"))
    ctx.set(getattr(dut, f"s_axil_{channel}ready"), 0)
    return values


async def aw_put(ctx, dut, addr):
    await channel_put(ctx, dut, "aw", awaddr=addr)


async def w_put(ctx, dut, data, strb=0xF):
    await channel_put(ctx, dut, "w", wdata=data, wstrb=strb)


async def b_get(ctx, dut):
    """Accept one write response; returns bresp."""
    resp, = await channel_get(ctx, dut, "b", "bresp")
    return resp


async def ar_put(ctx, dut, addr):
    await channel_put(ctx, dut, "ar", araddr=addr)


async def r_get(ctx, dut):
    """Accept one read response; returns (rdata, rresp)."""
    data, resp = await channel_get(ctx, dut, "r", "rdata", "rresp")
    return data, resp


async def axil_write(ctx, dut, addr, data, strb=0xF):
    """AW and W presented together; returns bresp."""
    ctx.set(dut.s_axil_awaddr, addr)
    ctx.set(dut.s_axil_wdata, data)
    ctx.set(dut.s_axil_wstrb, strb)
    ctx.set(dut.s_axil_awvalid, 1)
    ctx.set(dut.s_axil_wvalid, 1)
    pending = {"aw": dut.s_axil_awvalid, "w": dut.s_axil_wvalid}
    while pending:
        _, _, aw_ready, w_ready = await ctx.tick().sample(dut.s_axil_awready, dut.s_axil_wready)
        for channel, ready in (("aw", aw_ready), ("w", w_ready)):
            if ready and channel in pending:
                ctx.set(pending.pop(channel), 0)
    return await b_get(ctx, dut)


async def axil_read(ctx, dut, addr):
    """Returns (rdata, rresp)."""
    await ar_put(ctx, dut, addr)
    return await r_get(ctx, dut)


async def read_reg(ctx, dut, model, path):
    """Read a register by path (64-bit: low word, then high word), expecting OKAY."""
    value = 0
    for word in range(model.width(path) // 32):
        data, resp = await axil_read(ctx, dut, model.address(path) + 4 * word)
        assert resp == OKAY, f"read {path} word {word}: resp {resp}"
        value |= data << (32 * word)
    return value


async def read_words(ctx, dut, addresses):
    """Read ``addresses`` with reads in flight: each AR presented as soon as the last was
    taken, R always ready. Returns ``[(rdata, rresp)]`` in address order; fails (instead of
    waiting forever) if the responses have not all come within 8 cycles a read."""
    responses = []
    issued = 0
    ctx.set(dut.s_axil_rready, 1)
    for _ in range(8 * len(addresses) + 16):
        if len(responses) == len(addresses):
            break
        if issued < len(addresses):
            ctx.set(dut.s_axil_araddr, addresses[issued])
        ctx.set(dut.s_axil_arvalid, issued < len(addresses))
        _, _, ar_ready, r_valid, data, resp = await ctx.tick().sample(
            dut.s_axil_arready, dut.s_axil_rvalid, dut.s_axil_rdata, dut.s_axil_rresp)
        if ar_ready and issued < len(addresses):
            issued += 1
        if r_valid:
            responses.append((data, resp))
    assert len(responses) == len(addresses), \
        f"{issued} reads taken, {len(responses)} of {len(addresses)} responses"
    ctx.set(dut.s_axil_arvalid, 0)
    ctx.set(dut.s_axil_rready, 0)
    return responses


async def read_regs(ctx, dut, model, paths):
    """Read registers by path with reads in flight (:func:`read_words`; a 64-bit register's
    low word, then its high word, back to back), expecting OKAY. Returns ``{path: value}``."""
    words = [(path, word) for path in paths for word in range(model.width(path) // 32)]
    responses = await read_words(ctx, dut, [model.address(path) + 4 * word
                                            for path, word in words])
    values = dict.fromkeys(paths, 0)
    for (path, word), (data, resp) in zip(words, responses):
        assert resp == OKAY, f"read {path} word {word}: resp {resp}"
        values[path] |= data << (32 * word)
    return values


async def cycles_until(ctx, signal):
    """Clock edges until ``signal`` is high (0 if it already is)."""
    n = 0
    while not ctx.get(signal):
        await ctx.tick()
        n += 1
    return n


async def aw_w_one_cycle(ctx, dut, addr, data):
    """Present AW and W together for one cycle (the block takes both when it is idle)."""
    ctx.set(dut.s_axil_awaddr, addr)
    ctx.set(dut.s_axil_wdata, data)
    ctx.set(dut.s_axil_wstrb, 0xF)
    ctx.set(dut.s_axil_awvalid, 1)
    ctx.set(dut.s_axil_wvalid, 1)
    assert ctx.get(dut.s_axil_awready) and ctx.get(dut.s_axil_wready)
    await ctx.tick()
    ctx.set(dut.s_axil_awvalid, 0)
    ctx.set(dut.s_axil_wvalid, 0)


async def write_reg(ctx, dut, model, path, value, strb=0xF):
    resp = await axil_write(ctx, dut, model.address(path), value, strb)
    assert resp == OKAY, f"write {path}: resp {resp}"


def expected_value(dut, model, path, stored=None, hw=None):
    """What software should read from ``path``: storage from ``stored`` (or reset), hardware
    inputs from ``hw`` (or their init), constants."""
    value = 0
    for f in model.register(path).fields:
        if f.kind.has_storage:
            field = (stored or {}).get(f.path, f.reset)
        elif f.kind is FieldKind.CONST:
            field = f.reset
        else:
            field = (hw or {}).get(f.path, f.reset)
        value |= field << f.lsb
    return value


def writable_registers(model):
    return [p for p in model.registers() if model.is_writable(p)]


def unmapped_addresses(model, rng, count=24):
    mapped = {model.address(p) + 4 * w for p in model.registers()
              for w in range(model.width(p) // 32)}
    fixed = [0x28, 0x2C, 0x44, 0x114, 0x11C, 0x7FC, 0x10F8, 0x10FC, 0x3E04, 0x3F04, 0xFFFC]
    fixed += [max(mapped) + 4]
    free = [a for a in range(0, 1 << RegisterBlock.ADDR_WIDTH, 4) if a not in mapped]
    assert all(a in free for a in fixed)
    return fixed + rng.sample(free, count)


# ---- tests -----------------------------------------------------------------------------------

def test_reset_values_readable():
    dut, model = make()

    async def tb(ctx):
        paths = model.registers()
        assert await read_regs(ctx, dut, model, paths) == {
            path: model.reset_value(path) for path in paths}
        for path, sig in dut.hw_r.items():
            f = next(f for f in model.register(path.rsplit(".", 1)[0]).fields if f.path == path)
            assert ctx.get(sig) == f.reset, path
        # Spot checks against the RDL text.
        assert await read_reg(ctx, dut, model, "id") == 0x53464142
        assert await read_reg(ctx, dut, model, "version") == 0x0000_0001
        assert await read_reg(ctx, dut, model, "port_enable") == 0xFFFF_FFFF

    run(dut, tb, "reset")


@pytest.mark.parametrize("config", [{}, FULL], ids=["small", "default"])
def test_write_readback_all_rw_registers(rng, config):
    dut, model = make(**config)
    paths = writable_registers(model)
    assert "scratch" in paths and "window[1].ctrl" in paths and "id_route[1]" in paths

    async def tb(ctx):
        stored = {}
        # Write them all first, then read them all back: catches address aliasing.
        for path in paths:
            for f in model.register(path).fields:
                if f.kind.has_storage:
                    stored[f.path] = rng.getrandbits(f.width)
            raw = expected_value(dut, model, path, stored) | rng.getrandbits(32) & ~sum(
                f.mask for f in model.register(path).fields if f.kind.has_storage)
            raw &= ~sum(f.mask for f in model.register(path).fields
                        if f.kind is FieldKind.CLEAR_ON_WRITE)
            await write_reg(ctx, dut, model, path, raw)
        assert await read_regs(ctx, dut, model, model.registers()) == {
            path: expected_value(dut, model, path, stored) for path in model.registers()}
        for path, sig in dut.hw_r.items():
            assert ctx.get(sig) == stored[path], path

    run(dut, tb, "readback")


def test_wstrb_partial_writes():
    dut, model = make()

    async def tb(ctx):
        await write_reg(ctx, dut, model, "scratch", 0x1122_3344)
        await write_reg(ctx, dut, model, "scratch", 0xAABB_CCDD, strb=0b0101)
        assert await read_reg(ctx, dut, model, "scratch") == 0x11BB_33DD
        await write_reg(ctx, dut, model, "scratch", 0xFFFF_FFFF, strb=0)
        assert await read_reg(ctx, dut, model, "scratch") == 0x11BB_33DD
        for lane in range(4):
            await write_reg(ctx, dut, model, "port_enable", 0, strb=1 << lane)
            expect = 0xFFFF_FFFF & ~(0xFF << 8 * lane)
            assert await read_reg(ctx, dut, model, "port_enable") == expect
            assert ctx.get(dut.hw_r["port_enable.enable"]) == expect
            await write_reg(ctx, dut, model, "port_enable", 0xFFFF_FFFF)
        # A field straddling no lane boundary is written only by its own lane.
        await write_reg(ctx, dut, model, "id_route[0]", 0xFFFF_FFFF, strb=0b1011)
        assert model.decode("id_route[0]", await read_reg(ctx, dut, model, "id_route[0]")) == {
            "bus_lo": 0xFF, "bus_hi": 0xFF, "port": 0, "enable": 1}

    run(dut, tb, "wstrb")


@pytest.mark.parametrize("order", ["aw_first", "w_first"])
def test_aw_w_order(order):
    dut, model = make()
    addr = model.address("window[1].base_hi")

    async def tb(ctx):
        if order == "aw_first":
            await aw_put(ctx, dut, addr)
            await ctx.tick().repeat(5)
            assert not ctx.get(dut.s_axil_bvalid)
            assert not ctx.get(dut.s_axil_awready)  # the address is held
            await w_put(ctx, dut, 0xCAFE_F00D)
        else:
            await w_put(ctx, dut, 0xCAFE_F00D)
            await ctx.tick().repeat(5)
            assert not ctx.get(dut.s_axil_bvalid)
            assert not ctx.get(dut.s_axil_wready)  # the data is held
            await aw_put(ctx, dut, addr)
        assert await b_get(ctx, dut) == OKAY
        assert await read_reg(ctx, dut, model, "window[1].base_hi") == 0xCAFE_F00D
        assert ctx.get(dut.hw_r["window[1].base_hi.value"]) == 0xCAFE_F00D
        assert ctx.get(dut.hw_r["window[0].base_hi.value"]) == 0

    run(dut, tb, f"order_{order}")


def test_slverr_on_unmapped_addresses(rng):
    dut, model = make()
    addresses = unmapped_addresses(model, rng)

    async def tb(ctx):
        for addr in addresses:
            data, resp = await axil_read(ctx, dut, addr)
            assert (data, resp) == (0, SLVERR), hex(addr)
            assert await axil_write(ctx, dut, addr, 0xFFFF_FFFF) == SLVERR, hex(addr)
        # Nothing changed, and mapped addresses still answer OKAY.
        assert await read_regs(ctx, dut, model, model.registers()) == {
            path: model.reset_value(path) for path in model.registers()}

    run(dut, tb, "slverr")


def test_read_only_registers_ignore_writes(rng):
    dut, model = make()
    hw = {path: rng.getrandbits(len(sig)) for path, sig in dut.hw_w.items()}
    read_only = [p for p in model.registers() if not model.is_writable(p)]
    assert {"id", "version", "params0", "err_count", "err_hdr[4]", "port[1].tx_err"} <= set(
        read_only)

    async def tb(ctx):
        for path, value in hw.items():
            ctx.set(dut.hw_w[path], value)
        for path in read_only:
            for word in range(model.width(path) // 32):
                assert await axil_write(ctx, dut, model.address(path) + 4 * word,
                                        0xFFFF_FFFF) == OKAY, path
        assert await read_regs(ctx, dut, model, model.registers()) == {
            path: expected_value(dut, model, path, hw=hw) for path in model.registers()}

    run(dut, tb, "read_only")


@pytest.mark.parametrize("config", [{}, FULL], ids=["small", "default"])
def test_hw_w_inputs_visible(rng, config):
    dut, model = make(**config)

    async def tb(ctx):
        for _ in range(2):
            hw = {path: rng.getrandbits(len(sig)) for path, sig in dut.hw_w.items()}
            for path, value in hw.items():
                ctx.set(dut.hw_w[path], value)
            assert await read_regs(ctx, dut, model, model.registers()) == {
                path: expected_value(dut, model, path, hw=hw) for path in model.registers()}

    run(dut, tb, "hw_w")


def test_64bit_read_is_atomic():
    dut, model = make()
    counter = dut.hw_w["hc_monitor[1].copies.count"]
    other = dut.hw_w["parity_errors.count"]
    low = model.address("hc_monitor[1].copies")

    async def tb(ctx):
        ctx.set(counter, 0x0000_0001_FFFF_FFFF)
        ctx.set(other, 0x7777_7777_0000_0000)
        assert await axil_read(ctx, dut, low) == (0xFFFF_FFFF, OKAY)
        ctx.set(counter, 0x0000_0002_0000_0000)      # carries between the two reads
        assert await axil_read(ctx, dut, low + 4) == (0x0000_0001, OKAY)   # latched
        assert await read_reg(ctx, dut, model, "hc_monitor[1].copies") == 0x0000_0002_0000_0000
        # The snapshot is shared: the last low-word read decides what a high read returns.
        await axil_read(ctx, dut, model.address("parity_errors"))
        assert await axil_read(ctx, dut, low + 4) == (0x7777_7777, OKAY)
        # Writes to 64-bit registers are ignored (OKAY), and do not disturb the snapshot.
        assert await axil_write(ctx, dut, low + 4, 0x1234_5678) == OKAY
        assert await axil_read(ctx, dut, low + 4) == (0x7777_7777, OKAY)

    run(dut, tb, "atomic64")


def test_swmod_strobe_on_woclr_write():
    dut, model = make()
    strobe = dut.swmod["err_status.valid"]
    pulses = []

    async def monitor(ctx):
        cycle = 0
        async for _, _, value, bvalid in ctx.tick().sample(strobe, dut.s_axil_bvalid):
            cycle += 1
            if value:
                pulses.append((cycle, bvalid))

    async def tb(ctx):
        ctx.set(dut.hw_w["err_status.valid"], 1)
        ctx.set(dut.hw_w["err_status.port"], 5)
        ctx.set(dut.hw_w["err_status.reason"], 3)
        assert await read_reg(ctx, dut, model, "err_status") == model.encode(
            "err_status", valid=1, port=5, reason=3)
        await write_reg(ctx, dut, model, "err_status", 0xFFFF_FFFE)   # valid bit 0: no clear
        await write_reg(ctx, dut, model, "err_status", 1, strb=0b1110)  # lane masked: no clear
        await ctx.tick().repeat(3)
        assert pulses == []
        await write_reg(ctx, dut, model, "err_status", 1)
        await ctx.tick().repeat(3)
        assert len(pulses) == 1, pulses
        assert pulses[0][1], "the strobe is high in the cycle bvalid rises"
        # No storage: what is read is still the hardware's input.
        assert await read_reg(ctx, dut, model, "err_status") == model.encode(
            "err_status", valid=1, port=5, reason=3)
        ctx.set(dut.hw_w["err_status.valid"], 0)
        assert model.decode("err_status", await read_reg(ctx, dut, model, "err_status"))[
            "valid"] == 0

    run(dut, tb, "swmod", monitors=[monitor])


def test_swmod_strobe_on_rw_write():
    """A ``swmod`` field with storage: the strobe rises with bvalid, when hw_r shows the new
    value, on every write to its register and on no other."""
    dut, model = make()
    strobe = dut.swmod["mc_ctrl.enable"]
    pulses = []

    async def monitor(ctx):
        async for _, _, value, bvalid, enable in ctx.tick().sample(
                strobe, dut.s_axil_bvalid, dut.hw_r["mc_ctrl.enable"]):
            if value:
                pulses.append((bvalid, enable))

    async def tb(ctx):
        await write_reg(ctx, dut, model, "mc_base_lo", 0x1234)
        await ctx.tick().repeat(3)
        assert pulses == []
        await write_reg(ctx, dut, model, "mc_ctrl", model.encode("mc_ctrl", enable=1))
        await ctx.tick().repeat(3)
        assert pulses == [(1, 1)], pulses
        await write_reg(ctx, dut, model, "mc_ctrl", 0, strb=0b0010)   # enable's lane masked
        await ctx.tick().repeat(3)
        assert pulses == [(1, 1), (1, 1)], pulses

    run(dut, tb, "swmod_rw", monitors=[monitor])


def test_external_memory_words(rng):
    """``hc_group`` entries live in a memory: written whole, read back, partial strobes
    refused with SLVERR, bits above the stored width read as 0; a parent read port sees a
    write from the cycle after bvalid rises."""
    dut, model = make(n_groups=16)
    memory = dut.memories["hc_group"]
    probe = memory.read_port(transparent_for=())
    width = len(probe.data)

    async def tb(ctx):
        values = [rng.getrandbits(32) for _ in range(16)]
        for g, value in enumerate(values):
            await write_reg(ctx, dut, model, f"hc_group[{g}]", value)
        for g, value in enumerate(values):
            assert await read_reg(ctx, dut, model, f"hc_group[{g}]") == value & ((1 << width) - 1)
        address = model.address("hc_group[3]")
        assert await axil_write(ctx, dut, address, 0xFFFF_FFFF, strb=0b0001) == SLVERR
        assert await read_reg(ctx, dut, model, "hc_group[3]") == values[3] & ((1 << width) - 1)
        # Visibility: write entry 5 and read it through the parent's port every cycle.
        ctx.set(probe.addr, 5)
        ctx.set(probe.en, 1)
        ctx.set(dut.s_axil_bready, 0)
        ctx.set(dut.s_axil_awaddr, model.address("hc_group[5]"))
        ctx.set(dut.s_axil_wdata, values[5] ^ 1)
        ctx.set(dut.s_axil_wstrb, 0xF)
        ctx.set(dut.s_axil_awvalid, 1)
        ctx.set(dut.s_axil_wvalid, 1)
        await ctx.tick()
        ctx.set(dut.s_axil_awvalid, 0)
        ctx.set(dut.s_axil_wvalid, 0)
        await ctx.tick().until(dut.s_axil_bvalid)
        # bvalid just rose: a read enabled in this cycle returns the new word after the edge.
        await ctx.tick()
        assert ctx.get(probe.data) == (values[5] ^ 1) & ((1 << width) - 1)
        ctx.set(dut.s_axil_bready, 1)
        await ctx.tick()

    run(dut, tb, "external", monitors=[])


def test_singlepulse_command_fields():
    """``singlepulse`` fields store nothing and read 0; a write of 1 pulses the bit (after
    wstrb) for exactly the cycle bvalid rises."""
    dut, model = make()
    arm, trigger = dut.pulse["cap_cmd.arm"], dut.pulse["cap_cmd.trigger"]
    pulses = []

    async def monitor(ctx):
        async for _, _, a, t, bvalid in ctx.tick().sample(arm, trigger, dut.s_axil_bvalid):
            if a or t:
                pulses.append((a, t, bvalid))

    async def tb(ctx):
        await write_reg(ctx, dut, model, "cap_cmd", model.encode("cap_cmd", trigger=1))
        await ctx.tick().repeat(3)
        assert pulses == [(0, 1, 1)], pulses
        await write_reg(ctx, dut, model, "cap_cmd", 3, strb=0b1110)    # lane masked: nothing
        await write_reg(ctx, dut, model, "cap_cmd", 0)
        await ctx.tick().repeat(3)
        assert pulses == [(0, 1, 1)], pulses
        await write_reg(ctx, dut, model, "cap_cmd", 3)
        await ctx.tick().repeat(3)
        assert pulses == [(0, 1, 1), (1, 1, 1)], pulses
        assert await read_reg(ctx, dut, model, "cap_cmd") == 0

    run(dut, tb, "pulse", monitors=[monitor])


class _WindowParent(Elaboratable):
    """A register block whose read windows answer ``f(window, index)`` exactly
    ``window.latency`` cycles after the index (a register per cycle of latency, like a
    table's synchronous read port), and hold it; any other cycle the data is garbage."""

    def __init__(self, dut):
        self.dut = dut

    @staticmethod
    def word(k, index, width=32):
        value = (0x5A000000 * (k + 1) + index * 0x10003) & 0xFFFF_FFFF
        return value | (value ^ 0xC3C3_0000) << 32 if width == 64 else value

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        for k, window in enumerate(self.dut.read_windows.values()):
            value = Signal(window.width)
            m.d.comb += value.eq(self.word(k, window.index, window.width))
            for _ in range(window.latency - 1):
                delayed = Signal(window.width)
                m.d.sync += delayed.eq(value)
                value = delayed
            pending = [window.en]
            for _ in range(window.latency):
                nxt = Signal()
                m.d.sync += nxt.eq(pending[-1])
                pending.append(nxt)
            held = Signal(window.width)
            m.d.sync += held.eq(Mux(pending[-2], value, ~held))    # garbage unless due
            m.d.comb += window.data.eq(held)
        return m


@pytest.mark.parametrize("port_latency", [1, 3, 4])
def test_read_windows(rng, port_latency):
    """Read windows (latency_hist, rgroup_stats, cap_entry, and the 64-bit port counters at
    several latencies): every register reads what the parent answers for its index, taken
    exactly the window's latency after the index; a 64-bit window's low-word read fills
    the shared snapshot; writes are ignored with OKAY."""
    dut, model = make(n_rgroups=2, capture_depth=4, window_latency={"port": port_latency})
    assert dut.read_stages >= port_latency - 1
    parent = _WindowParent(dut)
    names = list(dut.read_windows)
    assert names == ["port", "latency_hist", "cap_entry", "rgroup_stats"]

    async def tb(ctx):
        paths = [p for p in model.registers() if model.register(p).read_window]
        assert len(paths) == 31 * 2 + 16 * 2 + 8 * 4 + 8 * 2
        for path in rng.sample(paths, len(paths)):
            reg = model.register(path)
            k = names.index(reg.array_name)
            if reg.width == 64:
                first = model.address("port[0].rx_packets")
                index = (reg.address - first) // 8
            else:
                first = model.address(f"{reg.array_name}[0][0]")
                index = (reg.address - first) // 4
            assert await read_reg(ctx, dut, model, path) == \
                parent.word(k, index, reg.width), path
        assert await axil_write(ctx, dut, model.address("cap_entry[1][3]"), 0x1234,
                                strb=0b0001) == OKAY
        assert await read_reg(ctx, dut, model, "cap_entry[1][3]") == parent.word(2, 11)
        # The window's high half went to the block's one snapshot.
        low = model.address("port[1].tx_bytes")
        assert await axil_read(ctx, dut, low) == (parent.word(0, 32 + 6, 64) & 0xFFFF_FFFF,
                                                  OKAY)
        assert await axil_read(ctx, dut, model.address("parity_errors") + 4) == \
            (parent.word(0, 32 + 6, 64) >> 32, OKAY)
        # A word in a hole of the window's address range maps nothing.
        assert await axil_read(ctx, dut, model.address("port[0].rx_packets") + 0xF8) == \
            (0, SLVERR)

    sim = Simulator(parent)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_backpressure_holds_responses():
    dut, model = make()

    async def tb(ctx):
        await write_reg(ctx, dut, model, "scratch", 0x5A5A_0001)
        # Read held by rready = 0: rvalid and rdata stay.
        await ar_put(ctx, dut, model.address("scratch"))
        await ctx.tick().until(dut.s_axil_rvalid)
        for _ in range(6):
            assert ctx.get(dut.s_axil_rvalid)
            assert ctx.get(dut.s_axil_rdata) == 0x5A5A_0001
            assert ctx.get(dut.s_axil_rresp) == OKAY
            await ctx.tick()
        assert await r_get(ctx, dut) == (0x5A5A_0001, OKAY)
        await ctx.tick()
        assert not ctx.get(dut.s_axil_rvalid)
        # Write response held by bready = 0; the next AW and W are taken but wait for B.
        await aw_put(ctx, dut, model.address("scratch"))
        await w_put(ctx, dut, 0x5A5A_0002)
        await ctx.tick().until(dut.s_axil_bvalid)
        await aw_put(ctx, dut, model.address("scratch"))
        await w_put(ctx, dut, 0x5A5A_0003)
        for _ in range(6):
            assert ctx.get(dut.s_axil_bvalid)
            assert ctx.get(dut.s_axil_bresp) == OKAY
            assert not ctx.get(dut.s_axil_awready) and not ctx.get(dut.s_axil_wready)
            await ctx.tick()
        # The held write has not happened yet (the read path is independent of the write path).
        assert await axil_read(ctx, dut, model.address("scratch")) == (0x5A5A_0002, OKAY)
        assert await b_get(ctx, dut) == OKAY
        assert await b_get(ctx, dut) == OKAY
        assert await read_reg(ctx, dut, model, "scratch") == 0x5A5A_0003

    run(dut, tb, "backpressure")


def test_pipelined_reads(rng):
    """Reads in flight: an AR every other cycle, at most read_latency outstanding while R
    is held, responses in AR order; a 64-bit low/high pair stays atomic inside a burst."""
    dut, model = make()
    counter = dut.hw_w["hc_monitor[1].copies.count"]
    other = dut.hw_w["parity_errors.count"]
    values = [rng.getrandbits(64) for _ in range(2)]
    low, low2 = model.address("hc_monitor[1].copies"), model.address("parity_errors")
    burst = [(model.address("scratch"), (0x1234_5678, OKAY)),
             (low, (values[0] & 0xFFFF_FFFF, OKAY)),
             (low2, (values[1] & 0xFFFF_FFFF, OKAY)),
             (low2 + 4, (values[1] >> 32, OKAY)),
             (low + 4, (values[1] >> 32, OKAY)),        # the snapshot of the last low read
             (0xFFFC, (0, SLVERR)),
             (low, (values[0] & 0xFFFF_FFFF, OKAY)),
             (low + 4, (values[0] >> 32, OKAY)),
             (model.address("id"), (0x53464142, OKAY))]

    # The issuer and the reader run as two testbenches.
    state = {"taken": [], "go": False}

    async def issuer(ctx):
        """Present the burst's ARs back to back; record the cycle of each handshake."""
        while not state["go"]:
            await ctx.tick()
        cycle = 0
        for address, _ in burst:
            ctx.set(dut.s_axil_araddr, address)
            ctx.set(dut.s_axil_arvalid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.s_axil_arready)
                cycle += 1
                if ready:
                    state["taken"].append(cycle)
                    break
        ctx.set(dut.s_axil_arvalid, 0)

    async def reader(ctx):
        await write_reg(ctx, dut, model, "scratch", 0x1234_5678)
        ctx.set(counter, values[0])
        ctx.set(other, values[1])
        state["go"] = True
        await ctx.tick().repeat(4 * dut.read_latency)   # R held all this time
        assert len(state["taken"]) == dut.read_latency, state["taken"]
        gaps = {b - a for a, b in zip(state["taken"], state["taken"][1:])}
        assert gaps == {2}, state["taken"]
        got = [await r_get(ctx, dut) for _ in burst]
        assert got == [expect for _, expect in burst]
        # with R always taken, the whole burst went at one AR every other cycle after that
        assert {b - a for a, b in zip(state["taken"][dut.read_latency:],
                                      state["taken"][dut.read_latency + 1:])} <= {2}

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(issuer, background=True)
    sim.add_testbench(reader)
    sim.run()


def test_latency_contract():
    """rvalid rises read_latency cycles, bvalid 2 cycles after the handshake cycle, as the
    docstring says."""
    dut, model = make()

    async def tb(ctx):
        ctx.set(dut.s_axil_araddr, model.address("id"))
        ctx.set(dut.s_axil_arvalid, 1)
        assert ctx.get(dut.s_axil_arready)
        await ctx.tick()                                  # handshake cycle ends
        ctx.set(dut.s_axil_arvalid, 0)
        assert await cycles_until(ctx, dut.s_axil_rvalid) == dut.read_latency - 1
        assert await r_get(ctx, dut) == (0x53464142, OKAY)

        await aw_w_one_cycle(ctx, dut, model.address("switch_id"), 0xBEEF)
        assert await cycles_until(ctx, dut.s_axil_bvalid) == 2 - 1
        assert ctx.get(dut.hw_r["switch_id.completer_id"]) == 0xBEEF  # with bvalid
        assert await b_get(ctx, dut) == OKAY

    run(dut, tb, "latency")


@pytest.mark.parametrize("delay", [0, 1, 7])
def test_applied_writes_wait_for_write_applied(delay):
    """A write of an ``applied_writes`` array is stored at once (``hw_r``, ``swmod``,
    ``write_held``), but its bvalid rises only at the edge where ``write_applied`` is high,
    however long the parent takes; a second write waits for that response; other registers
    answer as usual."""
    dut = RegisterBlock(**SMALL, applied_writes=("window",))
    model = RegisterModel(**SMALL)
    seen = []

    async def parent(ctx):
        # Raise write_applied `delay` cycles after write_held (with the swmod strobe of the
        # window write); keep it low otherwise.
        while True:
            await ctx.tick()
            held = ctx.get(dut.write_held)
            assert held == ctx.get(dut.swmod["window[1].base_lo.value"])
            if held:
                seen.append("held")
                for _ in range(delay):
                    await ctx.tick()
                ctx.set(dut.write_applied, 1)
                await ctx.tick()
                ctx.set(dut.write_applied, 0)

    async def tb(ctx):
        ctx.set(dut.s_axil_bready, 1)
        await aw_w_one_cycle(ctx, dut, model.address("window[1].base_lo"), 0x1234_5000)
        await ctx.tick()                   # the write is stored at this edge
        assert ctx.get(dut.hw_r["window[1].base_lo.value"]) == 0x1234_5000
        assert not ctx.get(dut.s_axil_bvalid)
        # bvalid rises at the edge where write_applied is high (delay + 1 cycles on)
        assert await cycles_until(ctx, dut.s_axil_bvalid) == delay + 1
        assert ctx.get(dut.s_axil_bresp) == OKAY
        await ctx.tick()
        assert not ctx.get(dut.s_axil_bvalid)
        # not a window: the usual 2 cycles, write_applied never raised
        await aw_w_one_cycle(ctx, dut, model.address("switch_id"), 0xBEEF)
        assert await cycles_until(ctx, dut.s_axil_bvalid) == 1
        await ctx.tick()
        # a second write behind a held one waits for its response
        ctx.set(dut.s_axil_bready, 0)
        await aw_w_one_cycle(ctx, dut, model.address("window[1].base_lo"), 0x7000)
        await aw_put(ctx, dut, model.address("scratch"))     # taken, and held
        await w_put(ctx, dut, 0x55)
        await ctx.tick().repeat(delay + 2)
        assert ctx.get(dut.s_axil_bvalid)
        assert ctx.get(dut.hw_r["window[1].base_lo.value"]) == 0x7000
        ctx.set(dut.s_axil_bready, 1)
        await ctx.tick()                   # the window write's response is taken
        assert await cycles_until(ctx, dut.s_axil_bvalid) == 1     # then the scratch write
        await ctx.tick()
        assert await read_reg(ctx, dut, model, "scratch") == 0x55
        assert seen == ["held", "held"]

    run(dut, tb, "applied_writes", monitors=[parent])


def test_applied_writes_must_name_registers():
    with pytest.raises(ValueError, match="applied_writes"):
        RegisterBlock(**SMALL, applied_writes=("no_such_register",))
    with pytest.raises(ValueError, match="applied_writes"):
        RegisterBlock(**SMALL, applied_writes=("hc_group",))      # external: a memory


def test_default_config_elaborates_and_converts():
    from amaranth.back import verilog
    dut = RegisterBlock(n_ports=8)
    text = verilog.convert(dut, name="rb", emit_src=False)
    for port in ("s_axil_awaddr", "s_axil_wstrb", "s_axil_bresp", "s_axil_rdata",
                 "s_axil_rready", "s_axil_arprot"):
        assert f"{port}" in text
    assert dut.read_windows["port"].width == 64
    assert len(dut.hw_w["parity_errors.count"]) == 64
    assert dut.hw_r["window[15].ctrl.port"].init == 0


@pytest.mark.parametrize("bad, error", [
    ({"n_ports": 0}, ValueError), ({"n_ports": 33}, ValueError),
    ({"n_ports": "8"}, TypeError), ({"n_ports": 8, "n_windows": 100}, ValueError),
])
def test_bad_parameters_raise(bad, error):
    with pytest.raises(error):
        RegisterBlock(**bad)


def test_memory_parity_bit(rng):
    """A ``parity_memories`` array stores even parity above the register bits, inverted for
    a write made while ``parity_invert`` is high; software reads see only the register bits;
    ``memory_written`` pulses once per write."""
    config = {**SMALL, "n_groups": 16}
    dut, model = RegisterBlock(**config, parity_memories=("hc_group",)), RegisterModel(**config)
    probe = dut.memories["hc_group"].read_port(transparent_for=())
    width = len(probe.data) - 1
    strobes = []

    async def monitor(ctx):
        async for _, _, written in ctx.tick().sample(dut.memory_written["hc_group"]):
            if written:
                strobes.append(1)

    async def tb(ctx):
        values = [rng.getrandbits(32) for _ in range(16)]
        invert = [rng.random() < 0.5 for _ in range(16)]
        for g, value in enumerate(values):
            ctx.set(dut.parity_invert["hc_group"], invert[g])
            await write_reg(ctx, dut, model, f"hc_group[{g}]", value)
        ctx.set(dut.parity_invert["hc_group"], 0)
        assert len(strobes) == 16
        for g, value in enumerate(values):
            stored = value & ((1 << width) - 1)
            assert await read_reg(ctx, dut, model, f"hc_group[{g}]") == stored
            ctx.set(probe.addr, g)
            ctx.set(probe.en, 1)
            await ctx.tick()
            word = ctx.get(probe.data)
            assert word & ((1 << width) - 1) == stored
            assert bin(word).count("1") % 2 == invert[g], (g, hex(word), invert[g])
        # a refused (partial-strobe) write stores nothing and does not pulse the strobe
        ctx.set(dut.parity_invert["hc_group"], 1)
        assert await axil_write(ctx, dut, model.address("hc_group[3]"), 0, strb=0b0001) == SLVERR
        assert len(strobes) == 16

    run(dut, tb, "parity", monitors=[monitor])


def test_parity_memories_must_be_external():
    with pytest.raises(ValueError, match="not external"):
        RegisterBlock(**SMALL, parity_memories=("window",))
