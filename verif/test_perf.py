"""Performance measurements on the RTL (run by ``smartfabric bench``), with the scoreboard on.

Results are written as JSON to the file named by SMARTFABRIC_RESULT. These are measurements,
not pass/fail timing tests: the only assertions are the scoreboard's (correct delivery).
"""

import json
import os

import cocotb
from cocotb.triggers import RisingEdge, ClockCycles

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
