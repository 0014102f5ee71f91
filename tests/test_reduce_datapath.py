# amaranth: UnusedElaboratable=no
# (parameter checks construct blocks that raise, or are never elaborated)
"""Block tests of the reduction datapath (hdl/reduce_datapath.py) in Amaranth's simulator.

Every result is compared bit for bit with the golden model ``models.reduction.reduce`` run on
the member inputs' lanes. Stimulus: random bit patterns, special values (+-0, +-inf, NaNs with
payloads, subnormals, largest finite), values near the largest finite (overflow, saturate on and
off), heavy cancellation (x + (-x) + tiny), constructed ties-to-even cases; member counts 1..N
with non-contiguous masks; non-member inputs carry random garbage. Beats go through with random
gaps on ``i.valid`` and random backpressure on ``o.ready``; every output is checked in order by
its tag. Random tests print their seed; ``SMARTFABRIC_SEED=<n>`` reruns one (default: a fixed
seed).
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartfabric.hdl.reduce_datapath import (
    BeatReducer, ElementEventCounter, ElemType, ReduceOp, accumulator_width, elem_type,
    model_name, reduce_op,
)
from smartfabric.models.reduction import (
    DTYPE_NAMES, DTYPES, ELEMENT_EVENTS, FLOAT_DTYPES, FLOAT_OPS, FP8_DTYPES, INT_OPS, OPS,
    reduce, reduce_with_events,
)

DEFAULT_SEED = 0x5EED_2024


def valid_ops(dtype):
    return FLOAT_OPS if DTYPES[dtype].is_float else INT_OPS


# ============================================================================================
# stimulus: member rows (members, lanes) of raw bits
# ============================================================================================

def encode_quanta(dtype, q):
    """Raw bits of the non-negative value ``q * 2**emin_sub`` (must be representable)."""
    d = DTYPES[dtype]
    man = d.man_bits
    if q < 1 << (man + 1):
        return q
    sh = q.bit_length() - 1 - man
    assert q % (1 << sh) == 0, "not representable"
    return (sh << man) + (q >> sh)


def float_specials(dtype):
    d = DTYPES[dtype]
    s, man = d.sign_bit, d.man_bits
    mx = d.max_finite
    out = [0, s, mx, mx | s, 1, 1 | s, (1 << man) - 1, ((1 << man) - 1) | s, 1 << man,
           (1 << man) | s, d.canonical_nan, d.canonical_nan | s,
           encode_quanta(dtype, 1 << (man + d.bias - 1))]        # 1.0
    if d.has_inf:
        out += [d.inf_bits, d.inf_bits | s, d.inf_bits | 1, d.inf_bits | s | (1 << man) - 1,
                d.inf_bits | (1 << (man - 1)) | 1]                # NaNs with payloads
    return out


def float_rows(rng, dtype, m, lanes, mode=None):
    """(m, lanes) raw bits of one float type; each lane picks a stimulus mode."""
    d = DTYPES[dtype]
    w, man = d.width, d.man_bits
    emax = d.max_exp_field
    specials = float_specials(dtype)

    def finite(e_lo, e_hi, sign=None):
        e = rng.randint(max(e_lo, 0), min(e_hi, emax))
        f = rng.getrandbits(man)
        if e == emax:
            f = min(f, d.max_finite & ((1 << man) - 1))
        sg = rng.getrandbits(1) if sign is None else sign
        return (sg << (w - 1)) | (e << man) | f

    cols = []
    for _ in range(lanes):
        kind = mode or rng.choice(["uniform", "cluster", "special", "cancel", "big", "tie",
                                   "tiny"])
        if kind == "uniform":
            col = [rng.getrandbits(w) for _ in range(m)]
        elif kind == "cluster":                     # nearby binades, random signs: rounding
            e0 = rng.randint(0, emax)
            spread = rng.randint(0, man + 3)
            col = [finite(e0 - spread, e0) for _ in range(m)]
        elif kind == "special":
            col = [rng.choice(specials) if rng.random() < 0.5 else finite(0, emax)
                   for _ in range(m)]
        elif kind == "cancel":                      # x + (-x) + ... + tiny
            col = []
            while len(col) + 2 <= m:
                x = finite(0, emax)
                col += [x, x ^ d.sign_bit]
            if len(col) < m:
                col.append(finite(0, man + 2))
            rng.shuffle(col)
        elif kind == "big":                         # near the largest finite: overflow
            sg = rng.getrandbits(1) if rng.random() < 0.2 else 0
            col = [finite(emax - 2, emax, sg) for _ in range(m)]
        elif kind == "tie":                         # a + half an ulp of a (+ zeros)
            e = rng.randint(2, emax)
            sg = rng.getrandbits(1)
            a = finite(e, e, sg)
            half = encode_quanta(dtype, 1 << (e - 2)) | (sg << (w - 1))
            col = [a, half] + [rng.choice([0, d.sign_bit]) for _ in range(m - 2)]
            col = col[:m]
            rng.shuffle(col)
        else:                                       # subnormals and the smallest binades
            col = [finite(0, 2) for _ in range(m)]
        cols.append(col)
    return np.array(cols, dtype=np.int64).T.reshape(m, lanes)


def int_rows(rng, dtype, m, lanes):
    d = DTYPES[dtype]
    w = d.width
    specials = [0, 1, d.mask, d.sign_bit, d.sign_bit - 1, d.sign_bit + 1]
    rows = [[rng.choice(specials) if rng.random() < 0.25 else rng.getrandbits(w)
             for _ in range(lanes)] for _ in range(m)]
    return np.array(rows, dtype=np.int64)


def member_rows(rng, dtype, m, lanes, mode=None):
    if DTYPES[dtype].is_float:
        return float_rows(rng, dtype, m, lanes, mode)
    return int_rows(rng, dtype, m, lanes)


def pack(dtype, lanes):
    w = DTYPES[dtype].width
    return sum(int(v) << (j * w) for j, v in enumerate(lanes))


def pack_flags(dtype, flags):
    """Per-element flags as a W/8-bit vector: element k's flag at bit k * width / 8 (its
    lowest byte lane), as ``BeatReducer`` ``o.saturated`` and ``ElementEventCounter`` have
    them."""
    step = DTYPES[dtype].width // 8
    return sum(int(bool(f)) << (j * step) for j, f in enumerate(flags))


# ============================================================================================
# beats and the model's expectation
# ============================================================================================

class Beat:
    """One input beat and its expected output."""

    def __init__(self, n, width, dtype, op, saturate, rows, positions, rng, *, type_code=None,
                 op_code=None, expect_bad=False):
        d = DTYPES[dtype]
        lanes = width // d.width
        assert rows.shape[1] == lanes and len(positions) == rows.shape[0]
        self.dtype, self.op, self.saturate = dtype, op, saturate
        self.mask = sum(1 << p for p in positions)
        self.operands = [rng.getrandbits(width) for _ in range(n)]      # garbage for non-members
        for row, p in zip(rows, positions):
            self.operands[p] = pack(dtype, row)
        self.type_code = ElemType[dtype].value if type_code is None else type_code
        self.op_code = ReduceOp[op].value if op_code is None else op_code
        self.bad = expect_bad
        if expect_bad:
            self.result = self.saturated = 0
        else:
            # model: member rows in input order (any order gives the same bits)
            order = sorted(range(len(positions)), key=lambda r: positions[r])
            result, events = reduce_with_events(dtype, op, rows[order], saturate=saturate)
            self.result = pack(dtype, result)
            self.saturated = pack_flags(dtype, events["saturation"])

    def payload(self, tag):
        """The ``i`` payload; encodings outside the enums are driven by :meth:`drive`."""
        return {"operands": self.operands, "members": self.mask,
                "elem_type": min(self.type_code, len(ElemType) - 1),
                "op": min(self.op_code, len(ReduceOp) - 1),
                "saturate": int(self.saturate), "tag": tag}

    def drive(self, ctx, port, tag):
        ctx.set(port.payload, self.payload(tag))
        ctx.set(port.payload.elem_type.as_value(), self.type_code)     # raw: may be 11..15
        ctx.set(port.payload.op.as_value(), self.op_code)              # raw: may be 6, 7

    def describe(self):
        return (f"{self.dtype} {self.op} sat={int(self.saturate)} mask={self.mask:#x} "
                f"operands=[{', '.join(hex(x) for x in self.operands)}]")


def random_positions(rng, n, m):
    return rng.sample(range(n), m)


def random_beat(rng, n, width, dtype, op=None, saturate=None, m=None, mode=None):
    op = op or rng.choice(valid_ops(dtype))
    saturate = rng.random() < 0.5 if saturate is None else saturate
    m = m or rng.randint(1, n)
    lanes = width // DTYPES[dtype].width
    rows = member_rows(rng, dtype, m, lanes, mode)
    return Beat(n, width, dtype, op, saturate, rows, random_positions(rng, n, m), rng)


# ============================================================================================
# driving the DUT
# ============================================================================================

def run_beats(dut, beats, rng, *, gaps=0.3, stall=0.3):
    """Push ``beats`` through ``dut`` (tag = index) with random gaps on ``i.valid`` and random
    backpressure on ``o.ready``; returns the outputs [(result, tag, bad_config, saturated)] in
    order. Also checks the stream rules on ``o``: a stalled output holds still."""
    outputs = []
    tag_mask = (1 << dut.tag_width) - 1

    async def producer(ctx):
        for k, beat in enumerate(beats):
            while rng.random() < gaps:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            beat.drive(ctx, dut.i, k & tag_mask)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        held = None
        while len(outputs) < len(beats):
            ready = int(rng.random() >= stall)
            ctx.set(dut.o.ready, ready)
            _, _, valid, result, tag, bad, sat = await ctx.tick().sample(
                dut.o.valid, dut.o.payload.result, dut.o.payload.tag, dut.o.payload.bad_config,
                dut.o.payload.saturated)
            if held is not None:
                assert valid and (result, tag, bad, sat) == held, "o payload moved while stalled"
            held = None
            if valid and ready:
                outputs.append((result, tag, bad, sat))
            elif valid:
                held = (result, tag, bad, sat)
        # nothing more may come out
        ctx.set(dut.o.ready, 1)
        for _ in range(dut.LATENCY + 2):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "extra output beat"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return outputs


def check(dut, beats, outputs):
    tag_mask = (1 << dut.tag_width) - 1
    assert len(outputs) == len(beats)
    for k, (beat, (result, tag, bad, sat)) in enumerate(zip(beats, outputs)):
        assert tag == k & tag_mask, f"beat {k}: tag {tag}, expected {k & tag_mask} (order)"
        assert bad == int(beat.bad), f"beat {k}: bad_config {bad} for {beat.describe()}"
        assert sat == beat.saturated, \
            f"beat {k}: saturated {sat:#x}, expected {beat.saturated:#x} for {beat.describe()}"
        if result != beat.result:
            w = DTYPES[beat.dtype].width
            lanes = dut.data_width // w
            got = [(result >> (j * w)) & ((1 << w) - 1) for j in range(lanes)]
            want = [(beat.result >> (j * w)) & ((1 << w) - 1) for j in range(lanes)]
            raise AssertionError(f"beat {k}: {beat.describe()}\n  got  {[hex(x) for x in got]}"
                                 f"\n  want {[hex(x) for x in want]}")


# ============================================================================================
# tests
# ============================================================================================

def test_enums_follow_the_model():
    assert [e.name for e in ElemType] == list(DTYPE_NAMES)
    assert [e.value for e in ElemType] == list(range(len(DTYPE_NAMES)))
    assert [o.name for o in ReduceOp] == list(OPS) == ["sum", "min", "max", "and", "or", "xor"]
    assert [o.value for o in ReduceOp] == list(range(6))
    assert ElemType.as_shape().width == 4 and ReduceOp.as_shape().width == 3
    for name in DTYPE_NAMES:
        assert model_name(elem_type(name)) == name and elem_type(ElemType[name]) is ElemType[name]
    for name in OPS:
        assert model_name(reduce_op(name)) == name
    with pytest.raises(ValueError, match="fp64"):
        elem_type("fp64")
    with pytest.raises(ValueError, match="mul"):
        reduce_op("mul")
    assert accumulator_width("fp32", 32) == 277 + 5 + 1
    assert accumulator_width("fp8_e4m3", 5) == 18 + 3 + 1


@pytest.mark.parametrize("kwargs, bad", [
    (dict(n_inputs=1, data_width=64), "n_inputs.*1"),
    (dict(n_inputs=33, data_width=64), "n_inputs.*33"),
    (dict(n_inputs=2.0, data_width=64), "n_inputs.*2.0"),
    (dict(n_inputs=4, data_width=96), "data_width.*96"),
    (dict(n_inputs=4, data_width=64.0), "data_width.*64.0"),
    (dict(n_inputs=4, data_width=64, dtypes=("fp32", "fp64")), "fp64"),
    (dict(n_inputs=4, data_width=64, dtypes=()), "dtypes"),
    (dict(n_inputs=4, data_width=64, dtypes="fp32"), "fp32"),
    (dict(n_inputs=4, data_width=64, tag_width=-1), "tag_width.*-1"),
])
def test_parameter_validation(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        BeatReducer(**kwargs)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_every_op_against_model(dtype, seed):
    """One type built, 5 inputs, 64-bit beats: every valid op (fp8 sums with saturate on and
    off), every member count 1..5 with random non-contiguous masks, every stimulus mode."""
    rng = random.Random(f"{seed}-{dtype}")
    n, width = 5, 64
    dut = BeatReducer(n, width, dtypes=(dtype,), tag_width=8)
    per = 50 if DTYPES[dtype].is_float else 15
    beats = []
    for op in valid_ops(dtype):
        sats = (True, False) if op == "sum" and dtype in FP8_DTYPES else (rng.random() < 0.5,)
        for sat in sats:
            for m in range(1, n + 1):
                for _ in range(per):
                    beats.append(random_beat(rng, n, width, dtype, op, sat, m))
    rng.shuffle(beats)
    check(dut, beats, run_beats(dut, beats, rng))


# (op, saturate, expected, *members), raw bits; expectations worked out by hand
DIRECTED = {
    "fp32": [
        ("sum", 1, 0x7F800000, 0x7F7FFFFF, 0x7F7FFFFF),     # max + max overflows: +inf
        ("sum", 1, 0x7FC00000, 0x7F800000, 0xFF800000),     # +inf + -inf: NaN
        ("sum", 1, 0x80000000, 0x80000000, 0x80000000, 0x80000000),   # all -0: -0
        ("sum", 1, 0x00000000, 0x80000000, 0x00000000),     # -0 + +0: +0
        ("sum", 1, 0x00000001, 0x3F800000, 0xBF800000, 0x00000001),   # 1 - 1 + tiny
        ("sum", 1, 0x3F800000, 0x3F800000, 0x33800000),     # 1 + 2^-24: tie, even stays
        ("sum", 1, 0x3F800002, 0x3F800001, 0x33800000),     # tie from odd: rounds up
        ("sum", 1, 0x7FC00000, 0x7F800001, 0x3F800000),     # NaN with payload
        ("sum", 1, 0x00800000, 0x007FFFFF, 0x00000001),     # subnormals to smallest normal
        ("min", 1, 0x80000000, 0x00000000, 0x80000000),     # -0 < +0
        ("max", 1, 0x00000000, 0x80000000, 0x00000000),
        ("max", 1, 0x7FC00000, 0xFFC12345, 0x3F800000),     # negative NaN: canonical
        ("min", 1, 0xFF800000, 0xFF800000, 0x7F800000),
    ],
    "fp16": [
        ("sum", 1, 0x7BFF, 0x7BFF, 0x4800),                 # 65504 + 8: 65504
        ("sum", 1, 0x7C00, 0x7BFF, 0x4C00),                 # 65504 + 16: tie, odd: +inf
        ("sum", 0, 0xFC00, 0xFBFF, 0xCC00),
        ("sum", 1, 0x7E00, 0x7C01, 0x7C00),
    ],
    "bf16": [
        ("sum", 1, 0x7F80, 0x7F7F, 0x7F7F),
        ("sum", 1, 0x0001, 0x3F80, 0xBF80, 0x0001),
        ("sum", 1, 0x7FC0, 0x7FC5, 0x0000),
    ],
    "fp8_e4m3": [
        ("sum", 1, 0x7E, 0x7E, 0x58), ("sum", 0, 0x7E, 0x7E, 0x58),     # 448 + 16: tie, 448
        ("sum", 1, 0x7E, 0x7E, 0x59), ("sum", 0, 0x7F, 0x7E, 0x59),     # 448 + 18: overflow
        ("sum", 0, 0x7F, 0xFE, 0xD9), ("sum", 1, 0xFE, 0xFE, 0xD9),     # NaN has no sign
        ("sum", 1, 0x7F, 0x7F, 0x01),
        ("min", 1, 0x80, 0x00, 0x80), ("max", 1, 0x7F, 0xFF, 0x01),
    ],
    "fp8_e5m2": [
        ("sum", 1, 0x7B, 0x7B, 0x68),                       # 57344 + 2048: 57344
        ("sum", 1, 0x7B, 0x7B, 0x6C), ("sum", 0, 0x7C, 0x7B, 0x6C),     # + 4096: tie, overflow
        ("sum", 1, 0x7B, 0x7C, 0x01), ("sum", 0, 0xFC, 0xFC, 0x01),     # infinity, saturated
        ("sum", 1, 0x7E, 0x7C, 0xFC),
        ("max", 1, 0x7C, 0x7C, 0x01), ("min", 0, 0xFC, 0xFC, 0x01),     # min/max: no saturate
        ("sum", 1, 0x7E, 0x7D, 0x00),
    ],
}


def test_directed_special_values(seed):
    """Hand-computed cases for each rule of docs/reduction.md, through a 3-input DUT with every
    type built (the model must agree with the hand values too)."""
    rng = random.Random(seed)
    n, width = 3, 64
    beats = []
    for dtype, items in DIRECTED.items():
        lanes = width // DTYPES[dtype].width
        for op, sat, want, *vals in items:
            rows = np.array([[v] * lanes for v in vals], dtype=np.int64)
            beat = Beat(n, width, dtype, op, bool(sat), rows,
                        random_positions(rng, n, len(vals)), rng)
            assert beat.result == pack(dtype, [want] * lanes), (dtype, op, sat, vals)
            beats.append(beat)
    dut = BeatReducer(n, width, tag_width=8)
    check(dut, beats, run_beats(dut, beats, rng))


# one 64-bit beat of fp8, 3 members, a different case in each lane:
# (dtype, op, saturate, member rows by lane, want result by lane, want saturated flags)
E4M3_LANES = [[0x7E, 0x7E, 0x00],        # 896: saturated (off: NaN)
              [0x7E, 0x58, 0x00],        # 464: a tie, 448 even: a genuine max
              [0x76, 0x76, 0x00],        # 224 + 224 = 448 exactly
              [0xFE, 0xD9, 0x00],        # -466 rounds to -480: saturated to -448
              [0x7F, 0x7E, 0x7E],        # a NaN: NaN, not a saturation
              [0x38, 0x38, 0x00],        # 1 + 1 = 2
              [0x7E, 0x7E, 0xFE],        # 448 exactly
              [0x77, 0x77, 0x00]]        # 240 + 240 = 480: saturated
E5M2_LANES = [[0x7C, 0x01, 0x00],        # +inf wins: saturated to 57344 (off: +inf)
              [0x7B, 0x68, 0x00],        # 59392 rounds back to 57344: genuine
              [0x7B, 0x6C, 0x00],        # 61440: a tie that overflows: saturated
              [0x7C, 0xFC, 0x00],        # +inf + -inf: NaN
              [0xFC, 0x7B, 0x7B],        # -inf wins: saturated to -57344
              [0x7B, 0x7B, 0xFB],        # 57344 exactly
              [0x3C, 0x3C, 0x00],        # 1 + 1 = 2
              [0x7D, 0x00, 0x00]]        # a NaN
SATURATION_CASES = [
    ("fp8_e4m3", "sum", True, E4M3_LANES, [0x7E, 0x7E, 0x7E, 0xFE, 0x7F, 0x40, 0x7E, 0x7E], 0x89),
    ("fp8_e4m3", "sum", False, E4M3_LANES, [0x7F, 0x7E, 0x7E, 0x7F, 0x7F, 0x40, 0x7E, 0x7F], 0),
    ("fp8_e4m3", "max", True, E4M3_LANES, [0x7E, 0x7E, 0x76, 0x00, 0x7F, 0x38, 0x7E, 0x77], 0),
    ("fp8_e5m2", "sum", True, E5M2_LANES, [0x7B, 0x7B, 0x7B, 0x7E, 0xFB, 0x7B, 0x40, 0x7E], 0x15),
    ("fp8_e5m2", "sum", False, E5M2_LANES, [0x7C, 0x7B, 0x7C, 0x7E, 0xFC, 0x7B, 0x40, 0x7E], 0),
    ("fp8_e5m2", "min", True, E5M2_LANES, [0x00, 0x00, 0x00, 0xFC, 0xFC, 0xFB, 0x00, 0x7E], 0),
]


def test_saturated_flags_directed(seed):
    """``o.saturated`` on hand-worked fp8 beats (several elements per beat): set exactly for
    the elements the saturate rule clamped (an overflowing rounded sum or an infinity, with
    saturate on), never for a sum that rounds to max finite, a NaN, min/max, saturate off;
    never for fp16/bf16 overflow or integer types."""
    rng = random.Random(seed)
    n, width = 4, 64
    beats = []
    for dtype, op, sat, lanes, want, flags in SATURATION_CASES:
        rows = np.array(lanes, dtype=np.int64).T
        beat = Beat(n, width, dtype, op, sat, rows, random_positions(rng, n, 3), rng)
        assert beat.result == pack(dtype, want), (dtype, op, sat)
        assert beat.saturated == flags, (dtype, op, sat)
        beats.append(beat)
    for dtype, rows in (("fp16", [[0x7BFF] * 4, [0x4C00] * 4]),     # overflow: +inf
                        ("bf16", [[0xFF7F] * 4, [0xFF7F] * 4]),
                        ("int8", [[0x7F] * 8, [0x7F] * 8])):
        beat = Beat(n, width, dtype, "sum", True, np.array(rows, dtype=np.int64),
                    random_positions(rng, n, 2), rng)
        assert beat.saturated == 0
        beats.append(beat)
    dut = BeatReducer(n, width, dtypes=("fp8_e4m3", "fp8_e5m2", "fp16", "bf16", "int8"),
                      tag_width=4)
    check(dut, beats, run_beats(dut, beats, rng))


def test_all_types_mixed_with_bad_configs(seed):
    """Every type built, 3 inputs: a random mix of types and ops beat by beat, interleaved with
    unsupported configurations (bitwise op on a float type, op encodings 6/7, type encodings
    11..15, no member), which give bad_config and a zero result."""
    rng = random.Random(seed)
    n, width = 3, 64
    dut = BeatReducer(n, width, tag_width=6)       # tags wrap: order still checked

    def rows_for(dtype, m=2):
        return member_rows(rng, dtype, m, width // DTYPES[dtype].width)

    beats = [random_beat(rng, n, width, rng.choice(DTYPE_NAMES)) for _ in range(150)]
    for _ in range(6):
        dtype = rng.choice(FLOAT_DTYPES)
        beats.append(Beat(n, width, dtype, rng.choice(["and", "or", "xor"]), True,
                          rows_for(dtype), random_positions(rng, n, 2), rng, expect_bad=True))
        dtype = rng.choice(DTYPE_NAMES)
        beats.append(Beat(n, width, dtype, "sum", True, rows_for(dtype),
                          random_positions(rng, n, 2), rng, op_code=rng.choice([6, 7]),
                          expect_bad=True))
        beats.append(Beat(n, width, dtype, "sum", True, rows_for(dtype),
                          random_positions(rng, n, 2), rng,
                          type_code=rng.randint(len(DTYPE_NAMES), 15), expect_bad=True))
        nomember = Beat(n, width, dtype, "sum", True, rows_for(dtype),
                        random_positions(rng, n, 2), rng, expect_bad=True)
        nomember.mask = 0
        beats.append(nomember)
    rng.shuffle(beats)
    check(dut, beats, run_beats(dut, beats, rng))


@pytest.mark.parametrize("dtype", ["fp8_e5m2", "fp16"])
def test_thirty_two_inputs(dtype, seed):
    """The largest configuration's guard bits: 32 members near the largest finite value (and
    random mixes) still sum exactly."""
    rng = random.Random(f"{seed}-{dtype}")
    n, width = 32, 64
    dut = BeatReducer(n, width, dtypes=(dtype,), tag_width=4)
    beats = [random_beat(rng, n, width, dtype, "sum", rng.random() < 0.5, n, mode="big")
             for _ in range(6)]
    beats += [random_beat(rng, n, width, dtype, m=rng.choice([1, 17, 31, 32]))
              for _ in range(14)]
    # 16 values near the largest finite on inputs 0..15 (one subtree of the adder tree: its
    # partial sum needs every guard bit), 16 near-opposite values on inputs 16..31
    lanes = width // DTYPES[dtype].width
    for _ in range(6):
        pos = float_rows(rng, dtype, 16, lanes, mode="big") & ~DTYPES[dtype].sign_bit
        neg = (pos[rng.sample(range(16), 16)] ^ rng.choice([0, 1])) | DTYPES[dtype].sign_bit
        rows = np.concatenate([pos, neg])
        beats.append(Beat(n, width, dtype, "sum", rng.random() < 0.5, rows, list(range(n)), rng))
    check(dut, beats, run_beats(dut, beats, rng))


def test_wide_beat_subset_and_not_built_types(seed):
    """128-bit beats, 4 inputs, a subset of types built: the built ones match the model, the
    others are flagged bad_config (whatever the op)."""
    rng = random.Random(seed)
    n, width = 4, 128
    built = ("int16", "fp32", "fp8_e4m3")
    dut = BeatReducer(n, width, dtypes=built, tag_width=8)
    beats = []
    for _ in range(60):
        if rng.random() < 0.75:
            beats.append(random_beat(rng, n, width, rng.choice(built)))
        else:
            dtype = rng.choice([d for d in DTYPE_NAMES if d not in built])
            beats.append(Beat(n, width, dtype, rng.choice(valid_ops(dtype)), True,
                              member_rows(rng, dtype, 2, width // DTYPES[dtype].width),
                              random_positions(rng, n, 2), rng, expect_bad=True))
    check(dut, beats, run_beats(dut, beats, rng))


@pytest.mark.parametrize("dtypes", [("fp32", "fp16", "int32"), ("bf16", "fp8_e4m3", "fp8_e5m2",
                                                                   "uint8")])
def test_member_permutation_invariance(dtypes, seed):
    """The same contributions placed on different inputs, in different orders, give identical
    bits (and the model's)."""
    rng = random.Random(f"{seed}-{dtypes}")
    n, width = 5, 64
    dut = BeatReducer(n, width, dtypes=dtypes, tag_width=8)
    beats, groups = [], []
    for _ in range(10):
        dtype = rng.choice(dtypes)
        op = rng.choice(valid_ops(dtype))
        sat = rng.random() < 0.5
        m = rng.randint(2, n)
        rows = member_rows(rng, dtype, m, width // DTYPES[dtype].width)
        group = []
        for _ in range(4):
            perm = rng.sample(range(m), m)
            group.append(len(beats))
            beats.append(Beat(n, width, dtype, op, sat, rows[perm], random_positions(rng, n, m),
                              rng))
        groups.append(group)
    outputs = run_beats(dut, beats, rng)
    check(dut, beats, outputs)
    for group in groups:
        assert len({outputs[k][0] for k in group}) == 1, f"permutation changed {group}"


def test_latency_throughput_and_ready_path(seed):
    """With o.ready high: one beat per cycle back to back, each result exactly LATENCY cycles
    after its transfer. With the output stalled: i.ready low whatever i.valid is, the output
    holds, and the pipeline resumes without loss or duplication."""
    rng = random.Random(seed)
    n, width = 2, 64
    dut = BeatReducer(n, width, dtypes=("int8",), tag_width=8)
    beats = [random_beat(rng, n, width, "int8") for _ in range(12)]
    seen = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for cycle in range(len(beats) + dut.LATENCY + 1):
            if cycle < len(beats):
                ctx.set(dut.i.payload, beats[cycle].payload(cycle))
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            _, _, ready, valid, tag, result = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload.tag, dut.o.payload.result)
            assert ready, "i.ready low with o.ready high"
            if valid:
                seen.append((cycle, tag, result))
        # fill the pipeline with the output stalled; then i.ready is low whatever i.valid is
        ctx.set(dut.o.ready, 0)
        for k in range(dut.LATENCY):
            ctx.set(dut.i.payload, beats[k].payload(100 + k))
            ctx.set(dut.i.valid, 1)
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            assert ready, "an empty pipeline must take beats while o.ready is low"
        ctx.set(dut.i.payload, beats[3].payload(103))
        for _ in range(5):
            for v in (0, 1):
                ctx.set(dut.i.valid, v)
                assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.i.ready) == 0
                assert ctx.get(dut.o.payload.tag) == 100
            await ctx.tick()
        ctx.set(dut.o.ready, 1)                     # release: beat 103 goes in, 100 comes out
        tags = []
        for cycle in range(dut.LATENCY + 3):
            _, _, ready, valid, tag, result = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload.tag, dut.o.payload.result)
            if cycle == 0:
                assert ready
                ctx.set(dut.i.valid, 0)
            if valid:
                tags.append(tag)
                assert result == beats[tag - 100].result
        assert tags == [100, 101, 102, 103], tags

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert [(c, t) for c, t, _ in seen] == [(k + dut.LATENCY, k) for k in range(len(beats))]
    for (_, k, result) in seen:
        assert result == beats[k].result


def test_default_tag_width(seed):
    """tag_width defaults to 0 (no tag field bits); results still come out in order."""
    rng = random.Random(seed)
    dut = BeatReducer(2, 64, dtypes=("uint16", "fp16"))
    assert dut.tag_width == 0 and dut.o_layout["tag"].width == 0
    beats = [random_beat(rng, 2, 64, rng.choice(dut.dtypes)) for _ in range(30)]
    check(dut, beats, run_beats(dut, beats, rng))


# ============================================================================================
# ElementEventCounter
# ============================================================================================

def element_events(dtype, elements):
    """The model's NaN / infinity classification of raw elements: a one-member maximum returns
    each element itself (a NaN as the canonical NaN), so its events are the elements'."""
    if not DTYPES[dtype].is_float:
        return {name: [False] * len(elements) for name in ("nan", "infinity")}
    _, ev = reduce_with_events(dtype, "max", np.array([elements], dtype=np.int64))
    return {name: list(ev[name]) for name in ("nan", "infinity")}


@pytest.mark.parametrize("width, dtypes", [(128, DTYPE_NAMES), (512, FP8_DTYPES + ("bf16",))])
def test_element_event_counter(width, dtypes, seed):
    """Random beats of the built types (NaNs with payloads, infinities, max finite, random
    bits; 16 elements per beat at 128 bits, 64 at 512), random keep masks (an element counts
    when the keep bit of its lowest byte is set), random saturated flags at element positions,
    random idle cycles: every count, valid and tag, exactly LATENCY cycles later, against the
    model's classification; types not built count nothing."""
    rng = random.Random(f"{seed}-{width}")
    dut = ElementEventCounter(width, dtypes, tag_width=8)
    L = width // 8
    assert dut.max_count == L and dut.LATENCY == 2
    stimulus = []                          # per cycle: (payload, expected counts) or None
    for k in range(300):
        if rng.random() < 0.2:
            stimulus.append(None)
            continue
        dtype = rng.choice(DTYPE_NAMES if rng.random() < 0.1 else dtypes)
        d = DTYPES[dtype]
        lanes = width // d.width
        elements = [int(v) for v in member_rows(rng, dtype, 1, lanes)[0]]
        step = d.width // 8
        keep = rng.choice([(1 << L) - 1, (1 << (4 * rng.randint(0, L // 4))) - 1,
                           rng.getrandbits(L)])
        sat = [rng.random() < 0.3 for _ in range(lanes)]
        counted = [keep >> (j * step) & 1 for j in range(lanes)]
        ev = element_events(dtype, elements)
        built = dtype in dtypes
        want = {"nan": sum(c and f for c, f in zip(counted, ev["nan"])) if built else 0,
                "infinity": sum(c and f for c, f in zip(counted, ev["infinity"])) if built else 0,
                "saturation": sum(c and f for c, f in zip(counted, sat))}
        stimulus.append(({"valid": 1, "data": pack(dtype, elements), "keep": keep,
                          "elem_type": ElemType[dtype], "saturated": pack_flags(dtype, sat),
                          "tag": k & 0xFF}, want))
    seen = {"nan": 0, "infinity": 0, "saturation": 0, "max": 0}

    async def bench(ctx):
        for cycle in range(len(stimulus) + dut.LATENCY):
            if cycle < len(stimulus) and stimulus[cycle] is not None:
                ctx.set(dut.i, stimulus[cycle][0])
            else:
                ctx.set(dut.i, {"valid": 0, "data": rng.getrandbits(width), "keep": (1 << L) - 1,
                                "saturated": (1 << L) - 1})
            await ctx.tick()
            t = cycle - dut.LATENCY + 1           # the input whose counts are out now
            if t < 0:
                continue
            want = stimulus[t][1] if t < len(stimulus) and stimulus[t] else None
            for name in ELEMENT_EVENTS:
                amount = ctx.get(dut.o[name].amount)
                valid = ctx.get(dut.o[name].valid)
                expect = want[name] if want else 0
                assert (valid, amount) == (int(expect > 0), expect), \
                    f"cycle {t}: {name} {valid, amount}, expected {expect}"
                seen[name] += expect
                seen["max"] = max(seen["max"], expect)
            if want:
                assert ctx.get(dut.o.tag) == stimulus[t][0]["tag"]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    print(f"{width} bits: elements counted {seen}")
    assert seen["nan"] and seen["infinity"] and seen["saturation"] and seen["max"] > 8


def test_element_event_counter_parameters():
    for kwargs, bad in ((dict(data_width=96), "data_width"), (dict(data_width=64, tag_width=-1),
                                                              "tag_width"),
                        (dict(data_width=64, dtypes=("fp64",)), "fp64"),
                        (dict(data_width=64, dtypes="fp32"), "fp32")):
        with pytest.raises(ValueError, match=bad):
            ElementEventCounter(**kwargs)
