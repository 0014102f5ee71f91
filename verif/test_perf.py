"""Performance measurements on the RTL (run by ``smartfabric bench``), with the scoreboard on.

Results are written as JSON to the file named by SMARTFABRIC_RESULT. These are measurements,
not pass/fail timing tests: the only assertions are the scoreboard's (correct delivery).
"""

import json
import os

import cocotb
from cocotb.triggers import RisingEdge, ClockCycles

from ..models.formats import SfKind, sf_prefix, HC_SET_PORTS
from .env import SwitchEnv, params_from_env, seed_from_env

WARMUP = 200


async def _saturate(env, pick_dst, payload_beats, cycles):
    """Keep every ingress saturated with ``payload_beats``-beat writes to ``pick_dst(src)``,
    measure delivered beats per egress per cycle over ``cycles`` cycles after a warm-up."""
    n = env.params.n_ports
    lanes = env.params.data_width // 8
    nbytes = max(4, min(env.params.max_payload, payload_beats * lanes))
    per_port = (WARMUP + cycles) // payload_beats + 32
    env.answer_reads = False
    for src in range(n):
        for _ in range(per_port):
            env.send_tlp(src, env.mem_write(src, pick_dst(src), nbytes, wide=False))
    await ClockCycles(env.dut.clk, WARMUP)
    start = env.delivered_beats
    await ClockCycles(env.dut.clk, cycles)
    beats = env.delivered_beats - start
    await env.drain()
    return beats / (cycles * n)


async def _zero_load_latency(env):
    """Cycles from the edge a lone packet's first beat is accepted at its ingress to the first
    cycle its first beat is valid at the egress (egress ready held high)."""
    seen = {}
    env.ports.on_ingress.append(lambda p, b: seen.setdefault("in", env.ports.cycle))
    env.ports.on_egress.append(lambda p, pkt: seen.setdefault("out", env.ports.cycle))
    env.send_tlp(0, env.mem_write(0, 1 % env.params.n_ports, 4, wide=False))
    await env.drain()
    # The egress monitor sees the transfer at the edge that ends the beat's first valid cycle.
    return seen["out"] - seen["in"] - 1


@cocotb.test()
async def unicast_bench(dut):
    params = params_from_env()
    env = SwitchEnv(dut, params, seed_from_env(1))
    await env.start()
    n, rng = params.n_ports, env.rng
    beats = int(os.environ.get("SMARTFABRIC_PAYLOAD_BEATS", "4"))
    cycles = int(os.environ.get("SMARTFABRIC_CYCLES", "2000"))
    env.ports.set_gap(0.0)
    env.ports.set_ready(1.0)
    result = {"ports": n, "data_width": params.data_width, "payload_beats": beats,
              "voq_depth": params.voq_depth, "max_payload": params.max_payload,
              "measure_cycles": cycles, "seed": env.seed}
    result["zero_load_latency_cycles"] = await _zero_load_latency(env)
    result["saturation_throughput"] = await _saturate(
        env, lambda s: rng.randrange(n), beats, cycles)
    perm = rng.sample(range(n), n)
    result["permutation_throughput"] = await _saturate(env, lambda s: perm[s], beats, cycles)
    result["single_beat_throughput"] = await _saturate(
        env, lambda s: rng.randrange(n), 1, cycles)
    await env.check_counters()
    result["packets_checked"] = env.delivered
    with open(os.environ["SMARTFABRIC_RESULT"], "w") as f:
        json.dump(result, f)


class _Watch:
    """Beats accepted per ingress and delivered per egress, and the last delivery's cycle."""

    def __init__(self, env):
        n = env.params.n_ports
        self.env = env
        self.rx = [0] * n
        self.tx = [0] * n
        self.rx_bytes = [0] * n         # payload bytes accepted per ingress
        self.tx_bytes = [0] * n         # payload bytes delivered per egress
        self.tx_packets = [0] * n
        self.last = 0
        self.deliveries = []            # (cycle, port, beats) when ``log`` is set
        self.log = False
        env.ports.on_ingress.append(self._rx)
        env.ports.on_egress.append(self._tx)

    def _rx(self, port, beat):
        self.rx[port] += 1
        self.rx_bytes[port] += bin(beat.keep).count("1")

    def _tx(self, port, packet):
        self.tx[port] += len(packet)
        self.tx_bytes[port] += sum(bin(b.keep).count("1") for b in packet.beats)
        self.tx_packets[port] += 1
        self.last = self.env.ports.cycle
        if self.log:
            self.deliveries.append((self.last, port, len(packet)))

    async def timed(self, send):
        """Cycles from queuing ``send()``'s traffic to its last delivery; beats per port."""
        rx0, tx0 = list(self.rx), list(self.tx)
        start = self.env.ports.cycle
        send()
        await self.env.drain()
        return (self.last - start,
                [a - b for a, b in zip(self.rx, rx0)], [a - b for a, b in zip(self.tx, tx0)])


async def _fanout(env, mc, watch, payload_beats, cycles):
    """One source saturated with multicast writes to every port: delivered beats per cycle at
    the slowest destination, over ``cycles`` cycles after a warm-up."""
    n, lanes = env.params.n_ports, env.params.data_width // 8
    nbytes = max(4, min(env.params.max_payload, payload_beats * lanes))
    group = 0
    env.config.hc_groups[group] = (1 << n) - 1
    await env.regs.write(f"hc_group[{group}]", (1 << n) - 1)
    for _ in range((WARMUP + cycles) // payload_beats + 32):
        env.send_beats(0, mc.to_group(0, group, nbytes))
    await ClockCycles(env.dut.clk, WARMUP)
    before = list(watch.tx)
    await ClockCycles(env.dut.clk, cycles)
    per_port = [(a - b) / cycles for a, b in zip(watch.tx, before)]
    await env.drain()
    return min(per_port), per_port


async def _group_update(env, mc, updates):
    """Back-to-back one-beat packets to a group while its entry is rewritten: the cycles from
    each write response to the first header accepted after it that uses the new set, minus 1
    (the worst over ``updates`` writes), and the source's stall cycles meanwhile."""
    n, rng = env.params.n_ports, env.rng
    group = 1
    masks = [rng.randrange(1, 1 << n) for _ in range(2)]
    while masks[1] == masks[0]:
        masks[1] = rng.randrange(1, 1 << n)
    env.config.hc_groups[group] = masks[0]
    await env.regs.write(f"hc_group[{group}]", masks[0])
    env.keep_log = True
    env.ingress_log.clear()
    env.egress_log.clear()
    src = 0
    for _ in range(updates * 40 + 100):
        env.send_beats(src, mc.to_group(src, group, 4))
    stalls = env.ports.rx_stall[src]
    await ClockCycles(env.dut.clk, 20)
    writes = []
    for k in range(updates):
        new = masks[(k + 1) % 2]

        def update(new=new):
            env.config.hc_groups[group] = new
        first_response = len(env.response_cycles)
        await env.write_in_lockstep(f"hc_group[{group}]", new, update)
        await ClockCycles(env.dut.clk, 2)
        writes.append((env.response_cycles[first_response], new))
        await ClockCycles(env.dut.clk, rng.randint(10, 30))
    await env.drain()
    stalls = env.ports.rx_stall[src] - stalls
    env.keep_log = False
    copies = {}
    for _, port, _, packet in env.egress_log:
        copies.setdefault(packet.beats[0].data & 0xFFFFFFFF, set()).add(port)
    headers = [(c, beat.data & 0xFFFFFFFF) for c, port, beat in env.ingress_log if port == src]
    worst = 0
    for response, new in writes:
        want = {p for p in range(n) if new >> p & 1}
        first_new = next((c for c, seq in headers if c > response and copies[seq] == want),
                         None)
        assert first_new is not None, f"no header after the response at {response} used the set"
        worst = max(worst, first_new - response - 1)
    return worst, stalls


async def _allgather(env, mc, watch, shard_bytes):
    """Every port sends a shard to every other: once by Hypercast (a group of all, source
    excluded) and as N-1 unicast copies. Cycles of each, and the speedup the link loads
    allow (the busiest link's beats, unicast over Hypercast)."""
    n, mps = env.params.n_ports, env.params.max_payload
    group = 2
    env.config.hc_groups[group] = (1 << n) - 1
    await env.regs.write(f"hc_group[{group}]", (1 << n) - 1)
    chunks = [min(mps, shard_bytes - o) for o in range(0, shard_bytes, mps)]

    def hypercast():
        for p in range(n):
            for size in chunks:
                env.send_beats(p, mc.to_group(p, group, size, xs=True))

    def unicast():
        for p in range(n):
            for k in range(1, n):
                dst = (p + k) % n
                for size in chunks:
                    env.send_beats(p, mc.write(p, mc.window_address(dst, size), size))
    hc_cycles, hc_rx, hc_tx = await watch.timed(hypercast)
    uc_cycles, uc_rx, uc_tx = await watch.timed(unicast)
    bound = max(uc_rx + uc_tx) / max(hc_rx + hc_tx)
    return hc_cycles, uc_cycles, bound


async def _moe_dispatch(env, mc, watch, tokens, token_bytes, experts=64, top_k=8):
    """One source dispatches tokens to the ports hosting each token's top-k experts (random
    gates; experts spread evenly over the ports): by destination set, then by unicast
    copies. The source is the bottleneck."""
    n, mps, rng = env.params.n_ports, env.params.max_payload, env.rng
    per_port = -(-experts // n)
    sets = [sorted({e // per_port for e in rng.sample(range(experts), top_k)})
            for _ in range(tokens)]
    chunks = [min(mps, token_bytes - o) for o in range(0, token_bytes, mps)]
    src = 0

    def hypercast():
        for ports in sets:
            address = mc.window_address(ports[0], token_bytes)
            pfx = sf_prefix(SfKind.HC_SET, mask=mc.mask_of(ports))
            for k, size in enumerate(chunks):
                env.send_beats(src, mc.write(src, address + k * mps, size, pfx))

    def unicast():
        for ports in sets:
            for dst in ports:
                address = mc.window_address(dst, token_bytes)
                for k, size in enumerate(chunks):
                    env.send_beats(src, mc.write(src, address + k * mps, size))
    hc_cycles, hc_rx, _ = await watch.timed(hypercast)
    uc_cycles, uc_rx, _ = await watch.timed(unicast)
    copies = sum(len(s) for s in sets)
    packets = tokens * len(chunks)
    # Source bytes with the TLP headers (3 DW, below 4 GiB) and, for Hypercast, the prefix DW.
    hc_bytes = tokens * token_bytes + packets * (12 + 4)
    uc_bytes = copies * token_bytes + copies * len(chunks) * 12
    return {
        "moe_tokens": tokens, "moe_token_bytes": token_bytes,
        "moe_experts": experts, "moe_top_k": top_k,
        "moe_mean_destinations": round(copies / tokens, 3),
        "moe_dispatch_source_beats_ratio": round(hc_rx[src] / uc_rx[src], 4),
        "moe_dispatch_ideal_ratio": round(tokens / copies, 4),
        "moe_dispatch_source_bytes_ratio_with_headers": round(hc_bytes / uc_bytes, 4),
        "moe_dispatch_cycles": hc_cycles, "moe_unicast_cycles": uc_cycles,
        "moe_dispatch_speedup": round(uc_cycles / hc_cycles, 3),
        "moe_dispatch_speedup_over_mean_destinations": round(
            uc_cycles / hc_cycles / (copies / tokens), 3),
    }


async def _saturating_env(dut):
    """A started bench with no gaps, no backpressure and no read answers (seed 1 unless
    SMARTFABRIC_SEED says otherwise)."""
    env = SwitchEnv(dut, params_from_env(), seed_from_env(1))
    await env.start()
    env.answer_reads = False
    env.ports.set_gap(0.0)
    env.ports.set_ready(1.0)
    return env


@cocotb.test()
async def multicast_bench(dut):
    from .multicast import Multicast
    env = await _saturating_env(dut)
    params = env.params
    mc = Multicast(env)
    watch = _Watch(env)
    n = params.n_ports
    beats = int(os.environ.get("SMARTFABRIC_PAYLOAD_BEATS", "4"))
    cycles = int(os.environ.get("SMARTFABRIC_CYCLES", "2000"))
    result = {"ports": n, "data_width": params.data_width, "payload_beats": beats,
              "voq_depth": params.voq_depth, "max_payload": params.max_payload,
              "measure_cycles": cycles, "seed": env.seed}
    fanout, per_port = await _fanout(env, mc, watch, beats, cycles)
    result["fanout_throughput"] = round(fanout, 4)
    result["fanout_throughput_per_egress"] = [round(v, 4) for v in per_port]
    worst, stalls = await _group_update(env, mc, int(os.environ.get("SMARTFABRIC_UPDATES", "8")))
    result["group_update_cycles"] = worst
    result["group_update_source_stall_cycles"] = stalls
    shard = int(os.environ.get("SMARTFABRIC_SHARD_BYTES", str(4 * params.max_payload)))
    hc, uc, bound = await _allgather(env, mc, watch, shard)
    result.update({"allgather_shard_bytes": shard, "allgather_cycles": hc,
                   "allgather_unicast_cycles": uc,
                   "allgather_speedup_vs_unicast": round(uc / hc, 3),
                   "allgather_speedup_link_bound": round(bound, 3),
                   "allgather_speedup_fraction_of_bound": round(uc / hc / bound, 3)})
    if n <= HC_SET_PORTS:
        result.update(await _moe_dispatch(env, mc, watch,
                                          int(os.environ.get("SMARTFABRIC_TOKENS", "32")), 1024))
    else:
        result["moe_dispatch"] = f"not measured: a destination set names at most " \
                                 f"{HC_SET_PORTS} ports"
    await env.check_counters()
    result["packets_checked"] = env.delivered
    with open(os.environ["SMARTFABRIC_RESULT"], "w") as f:
        json.dump(result, f)


def _sizes_from_env(params):
    sizes = [int(x) for x in os.environ.get("SMARTFABRIC_BYTES", "65536").split(",")]
    n, lanes = params.n_ports, params.data_width // 8
    for size in sizes:
        if size <= 0 or size % (n * lanes):
            raise ValueError(f"--bytes {size}: must be a positive multiple of ports x beat "
                             f"bytes ({n} x {lanes} = {n * lanes})")
    return sizes


async def _engine_collective(env, red, watch, collective, size, nrng, dtype):
    """One AllReduce / ReduceScatter of ``size`` bytes per member through the engine, every
    port a member, results checked by the scoreboard. Cycles from queuing the contributions
    to the last result delivered; payload bytes in and out per port; result beats per cycle
    at port 0 from its first result to its last."""
    from ..models.reduction import dtype_info
    from .reduction import operands
    n = env.params.n_ports
    esize = dtype_info(dtype).width // 8
    cfg = red.random_group(0, dtype, "sum", (1 << n) - 1, size, 0,
                           env.params.reduce_buffer_beats, collective=collective)
    cfg.collective = collective
    await red.arm(0, cfg)
    rows = operands(nrng, dtype, n, size // esize)
    mps = env.params.max_payload
    # maximum-payload writes, like the ring's
    packets = [[red.contribution(p, 0, cfg, off, rows[p].tobytes()[off:off + mps])
                for off in range(0, size, mps)] for p in range(n)]
    out0, in0 = list(watch.rx_bytes), list(watch.tx_bytes)
    watch.deliveries.clear()
    watch.log = True

    def send():
        for p in range(n):
            for pkt in packets[p]:
                env.send_beats(p, pkt)
    cycles, _, _ = await watch.timed(send)
    watch.log = False
    await red.disarm(0)
    at0 = [(c, b) for c, port, b in watch.deliveries if port == 0]
    rate = (sum(b for _, b in at0[1:]) / (at0[-1][0] - at0[0][0])
            if len(at0) > 1 and at0[-1][0] > at0[0][0] else None)
    return (cycles, max(a - b for a, b in zip(watch.rx_bytes, out0)),
            max(a - b for a, b in zip(watch.tx_bytes, in0)), rate)


async def _ring_collective(env, watch, size, steps):
    """The endpoints' ring over unicast on the same switch: ``steps`` steps (N-1 for a
    ReduceScatter, 2(N-1) for an AllReduce), each port sending a chunk of size/N bytes to
    the next port per step. Pipelined at packet granularity (the strongest ring): piece j of
    step k leaves as soon as piece j of step k-1 has arrived; the endpoints' additions take
    no time. Cycles from the start to the last delivery; payload bytes per port."""
    n, mps = env.params.n_ports, env.params.max_payload
    chunk = size // n
    pieces = [min(mps, chunk - o) for o in range(0, chunk, mps)]
    per_step = len(pieces)
    received = [0] * n
    env.ports.on_egress.append(lambda port, packet: received.__setitem__(port,
                                                                         received[port] + 1))
    out0, in0 = list(watch.rx_bytes), list(watch.tx_bytes)
    start = env.ports.cycle
    total = steps * per_step

    async def endpoint(p):
        dst = (p + 1) % n
        for i in range(total):
            while received[p] < i - per_step + 1:
                await RisingEdge(env.dut.clk)
            nbytes = pieces[i % per_step]
            env.send_tlp(p, env.mem_write(p, dst, nbytes, wide=False))
    tasks = [cocotb.start_soon(endpoint(p)) for p in range(n)]
    for t in tasks:
        await t
    await env.drain()
    env.ports.on_egress.pop()
    return (watch.last - start, max(a - b for a, b in zip(watch.rx_bytes, out0)),
            max(a - b for a, b in zip(watch.tx_bytes, in0)))


@cocotb.test()
async def allreduce_bench(dut):
    """AllReduce and ReduceScatter through the reduction engine against a ring over unicast
    on the same switch, for each size in SMARTFABRIC_BYTES (bytes per member)."""
    import numpy as np
    from ..models.formats import Collective
    from .reduction import Reduction
    env = await _saturating_env(dut)
    params = env.params
    await env.regs.write("inc_timeout", 0)
    red = Reduction(env)
    watch = _Watch(env)
    nrng = np.random.default_rng(env.seed)
    n = params.n_ports
    dtype = os.environ.get("SMARTFABRIC_DTYPE") or (
        "bf16" if "bf16" in params.reduce_dtypes else params.reduce_dtypes[0])
    result = {"ports": n, "data_width": params.data_width, "max_payload": params.max_payload,
              "reduce_buffer_beats": params.reduce_buffer_beats, "dtype": dtype, "op": "sum",
              "seed": env.seed, "sizes": []}
    checked = 0
    for size in _sizes_from_env(params):
        entry = {"bytes": size}
        for name, collective, steps in (("allreduce", Collective.ALLREDUCE, 2 * (n - 1)),
                                        ("reducescatter", Collective.REDUCESCATTER, n - 1)):
            e_cycles, e_out, e_in, rate = await _engine_collective(
                env, red, watch, collective, size, nrng, dtype)
            r_cycles, r_out, r_in = await _ring_collective(env, watch, size, steps)
            if name == "allreduce":
                theory_speedup = 2 * (n - 1) / n
                theory_io = 1 - n / (2 * (n - 1))
            else:
                theory_speedup = (n - 1) / n
                theory_io = 1 - (n + 1) / (2 * (n - 1))
            entry[name] = {
                "engine_cycles": e_cycles, "ring_cycles": r_cycles,
                "speedup_vs_ring": round(r_cycles / e_cycles, 4),
                "theoretical_speedup": round(theory_speedup, 4),
                "speedup_fraction_of_theory": round(r_cycles / e_cycles / theory_speedup, 4),
                "engine_bytes_out_per_port": e_out, "engine_bytes_in_per_port": e_in,
                "ring_bytes_out_per_port": r_out, "ring_bytes_in_per_port": r_in,
                "io_reduction": round(1 - (e_out + e_in) / (r_out + r_in), 4),
                "theoretical_io_reduction": round(theory_io, 4),
                "engine_result_beats_per_cycle": round(rate, 4) if rate else None,
            }
        entry["elements_checked"] = env.model.inc.elements_checked - checked
        checked = env.model.inc.elements_checked
        result["sizes"].append(entry)
    await _check_engine_idle(env)
    await env.check_counters()
    result["packets_checked"] = env.delivered
    with open(os.environ["SMARTFABRIC_RESULT"], "w") as f:
        json.dump(result, f)


async def _check_engine_idle(env):
    for g in range(env.params.n_rgroups):
        got = await env.regs.read(f"rgroup[{g}].completed")
        assert got == env.model.inc.completed[g], f"rgroup[{g}].completed {got}"
