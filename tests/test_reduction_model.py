"""Directed and randomized tests of the reduction golden model (docs/reduction.md, brief section 4).

Pure Python and fast. Each directed test names the rule of docs/reduction.md it checks; expected
bit patterns are worked out by hand (the arithmetic is in the comments). The randomized tests
compare the model with an independent slow reference written here: decode with ml_dtypes to
Python floats, sum exactly with ``fractions.Fraction``, round to nearest even by comparing with the
two neighbouring representable values, encode with ml_dtypes. Randomized tests print their seed;
``SMARTFABRIC_SEED=<n>`` reproduces a run. The 8 x 1,000,000 timing runs only with
``SMARTFABRIC_LONG=1``.
"""

import math
import os
import random
import time
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from smartfabric.models.reduction import (
    DTYPES, ELEMENT_EVENTS, FLOAT_DTYPES, FP8_DTYPES, INT_DTYPES, dtype_info, from_bits, reduce,
    reduce_scatter_chunks, reduce_with_events, to_bits,
)

LONG = os.environ.get("SMARTFABRIC_LONG", "0") not in ("", "0")


def _seed(request):
    env = os.environ.get("SMARTFABRIC_SEED")
    seed = int(env, 0) if env else random.randrange(1 << 32)
    print(f"{request.node.name}: SMARTFABRIC_SEED={seed}")
    return seed


def red(dtype, op, *members, saturate=True):
    """Reduce one element: each argument is one member's raw bits."""
    out = reduce(dtype, op, np.array([[m] for m in members], dtype=np.int64), saturate=saturate)
    assert out.shape == (1,) and out.dtype == DTYPES[dtype].container
    return int(out[0])


# hand-written encodings per float type
#   one: 1.0; two: 2.0; pinf/ninf; qnan: a non-canonical NaN with payload; nnan: a negative NaN;
#   max: largest finite; min_sub/max_sub: smallest/largest subnormal; min_norm: smallest normal
F = {
    "fp32": dict(s=0x80000000, one=0x3F800000, two=0x40000000, pinf=0x7F800000, ninf=0xFF800000,
                 qnan=0x7F800001, nnan=0xFFC12345, cnan=0x7FC00000, max=0x7F7FFFFF,
                 min_sub=0x00000001, max_sub=0x007FFFFF, min_norm=0x00800000),
    "fp16": dict(s=0x8000, one=0x3C00, two=0x4000, pinf=0x7C00, ninf=0xFC00, qnan=0x7C01,
                 nnan=0xFE55, cnan=0x7E00, max=0x7BFF, min_sub=0x0001, max_sub=0x03FF,
                 min_norm=0x0400),
    "bf16": dict(s=0x8000, one=0x3F80, two=0x4000, pinf=0x7F80, ninf=0xFF80, qnan=0x7F81,
                 nnan=0xFFC5, cnan=0x7FC0, max=0x7F7F, min_sub=0x0001, max_sub=0x007F,
                 min_norm=0x0080),
    "fp8_e5m2": dict(s=0x80, one=0x3C, two=0x40, pinf=0x7C, ninf=0xFC, qnan=0x7D, nnan=0xFF,
                     cnan=0x7E, max=0x7B, min_sub=0x01, max_sub=0x03, min_norm=0x04),
    "fp8_e4m3": dict(s=0x80, one=0x38, two=0x40, pinf=None, ninf=None, qnan=0x7F, nnan=0xFF,
                     cnan=0x7F, max=0x7E, min_sub=0x01, max_sub=0x07, min_norm=0x08),
}
IEEE_INF = ("fp32", "fp16", "bf16", "fp8_e5m2")
WIDE = ("fp32", "fp16", "bf16")
NATIVE = {"fp32": np.float32, "fp16": np.float16, "bf16": ml_dtypes.bfloat16,
          "fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2}
CONTAINER = {8: np.uint8, 16: np.uint16, 32: np.uint32}


# ============================================================================================
# the dtype table
# ============================================================================================

def test_dtype_table():
    """Rule: element types (brief: types; canonical NaNs; largest finite 448 / 57344)."""
    want = {"int8": (8, np.uint8), "int16": (16, np.uint16), "int32": (32, np.uint32),
            "uint8": (8, np.uint8), "uint16": (16, np.uint16), "uint32": (32, np.uint32),
            "fp32": (32, np.uint32), "fp16": (16, np.uint16), "bf16": (16, np.uint16),
            "fp8_e4m3": (8, np.uint8), "fp8_e5m2": (8, np.uint8)}
    assert set(DTYPES) == set(want)
    for name, (w, c) in want.items():
        d = dtype_info(name)
        assert (d.width, d.container) == (w, np.dtype(c))
    for name, f in F.items():
        d = dtype_info(name)
        assert d.canonical_nan == f["cnan"] and d.max_finite == f["max"]
        assert d.max_value == float(ml_dtypes.finfo(NATIVE[name]).max)
    assert dtype_info("fp8_e4m3").max_value == 448.0
    assert dtype_info("fp8_e5m2").max_value == 57344.0
    assert dtype_info("int8").max_value == 127 and dtype_info("uint32").max_value == 2**32 - 1
    assert DTYPES["fp8_e4m3"].inf_bits is None and DTYPES["fp8_e5m2"].inf_bits == 0x7C


def test_to_from_bits_roundtrip():
    """to_bits/from_bits are views between native arrays and raw bits."""
    x = np.array([1.0, -2.5], dtype=ml_dtypes.bfloat16)
    assert to_bits("bf16", x).tolist() == [0x3F80, 0xC020]
    assert from_bits("fp32", np.array([0x3F800000], np.uint32)).tolist() == [1.0]
    with pytest.raises(ValueError):
        to_bits("bf16", np.array([1.0], np.float32))


# ============================================================================================
# integers
# ============================================================================================

@pytest.mark.parametrize("dtype, members, want", [
    ("int8", [0x7F, 0x01], 0x80),                  # 127 + 1 wraps to -128
    ("int8", [0x80, 0xFF], 0x7F),                  # -128 + -1 wraps to 127
    ("int8", [0xFF, 0xFF, 0xFF], 0xFD),            # -1 * 3 = -3
    ("uint8", [0xFF, 0x01], 0x00),                 # 255 + 1 wraps to 0
    ("uint8", [0xF0] * 17, 0xF0),                  # 17 * 240 = 4080 = 15 * 256 + 240
    ("int16", [0x7FFF, 0x0001], 0x8000),
    ("uint16", [0xFFFF, 0xFFFF], 0xFFFE),
    ("int32", [0x7FFFFFFF, 0x00000001], 0x80000000),
    ("int32", [0x80000000, 0x80000000, 0x00000005], 0x00000005),
    ("uint32", [0xFFFFFFFF] * 8, 0xFFFFFFF8),      # 8 * (2^32 - 1) = -8 mod 2^32
])
def test_int_sum_wraps(dtype, members, want):
    """Rule: integer sums wrap (two's complement)."""
    assert red(dtype, "sum", *members) == want


@pytest.mark.parametrize("dtype, members, lo, hi", [
    ("int8", [0x80, 0x01, 0x7F], 0x80, 0x7F),      # -128 < 1 < 127
    ("uint8", [0x80, 0x01, 0x7F], 0x01, 0x80),     # 1 < 127 < 128
    ("int8", [0xFF, 0x00], 0xFF, 0x00),            # -1 < 0
    ("uint8", [0xFF, 0x00], 0x00, 0xFF),
    ("int16", [0x8000, 0xFFFF, 0x0000, 0x7FFF], 0x8000, 0x7FFF),
    ("uint16", [0x8000, 0xFFFF, 0x0000, 0x7FFF], 0x0000, 0xFFFF),
    ("int32", [0x80000000, 0xFFFFFFFF, 0x00000000], 0x80000000, 0x00000000),
    ("uint32", [0x80000000, 0xFFFFFFFF, 0x00000000], 0x00000000, 0xFFFFFFFF),
])
def test_int_minmax_signedness(dtype, members, lo, hi):
    """Rule: min/max are signed for intN, unsigned for uintN."""
    assert red(dtype, "min", *members) == lo
    assert red(dtype, "max", *members) == hi


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_int_bitwise(dtype):
    """Rule: and, or, xor for the integers (bitwise over all members)."""
    # 0xCA & 0xA6 & 0xF0 = 0x80; | = 0xFE; 0xCA ^ 0xA6 = 0x6C, ^ 0xF0 = 0x9C
    assert red(dtype, "and", 0xCA, 0xA6, 0xF0) == 0x80
    assert red(dtype, "or", 0xCA, 0xA6, 0xF0) == 0xFE
    assert red(dtype, "xor", 0xCA, 0xA6, 0xF0) == 0x9C
    if DTYPES[dtype].width == 32:
        assert red(dtype, "and", 0xDEADBEEF, 0x0F0F0F0F) == 0x0E0D0E0F
        assert red(dtype, "or", 0xDEADBEEF, 0x0F0F0F0F) == 0xDFAFBFEF
        assert red(dtype, "xor", 0xDEADBEEF, 0x0F0F0F0F) == 0xD1A2B1E0


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", ["and", "or", "xor"])
def test_bitwise_rejected_for_floats(dtype, op):
    """Rule: and, or, xor exist for the integers only."""
    with pytest.raises(ValueError, match="integer types only"):
        red(dtype, op, 1, 2)


@pytest.mark.parametrize("call", [
    lambda: reduce("fp64", "sum", np.zeros((2, 2), np.uint32)),          # unknown type
    lambda: reduce("int8", "prod", np.zeros((2, 2), np.uint8)),          # unknown op
    lambda: reduce("int8", "sum", np.zeros(4, np.uint8)),                # 1-D
    lambda: reduce("int8", "sum", np.zeros((2, 2, 2), np.uint8)),        # 3-D
    lambda: reduce("int8", "sum", np.zeros((0, 4), np.uint8)),           # no member
    lambda: reduce("uint8", "sum", np.array([[256]])),                   # too wide
    lambda: reduce("int8", "sum", np.array([[-1]])),                     # negative raw bits
    lambda: reduce("fp16", "sum", np.zeros((2, 2), np.float32)),         # not raw bits
])
def test_bad_arguments(call):
    """Bad type, operation, shape or bit patterns: ValueError."""
    with pytest.raises(ValueError):
        call()


def test_shapes_and_single_member():
    """Result shape (elements,), container dtype; one member: its own bits (NaN canonical)."""
    assert reduce("bf16", "sum", np.zeros((3, 0), np.uint16)).shape == (0,)
    a = np.array([[0x3F80, 0x8000, 0x0001, 0x7F81, 0xFF80]], np.uint16)
    assert reduce("bf16", "sum", a).tolist() == [0x3F80, 0x8000, 0x0001, 0x7FC0, 0xFF80]
    assert reduce("bf16", "min", a).tolist() == [0x3F80, 0x8000, 0x0001, 0x7FC0, 0xFF80]
    r = reduce("int16", "sum", np.array([[1, 2], [3, 4]], np.uint16))
    assert r.dtype == np.uint16 and r.tolist() == [4, 6]


# ============================================================================================
# float sums: special values
# ============================================================================================

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("op", ["sum", "min", "max"])
@pytest.mark.parametrize("saturate", [True, False])
def test_any_nan_gives_canonical_nan(dtype, op, saturate):
    """Rule: any NaN gives the canonical quiet NaN of the type (payload and sign dropped)."""
    f = F[dtype]
    for members in ([f["qnan"], f["one"]], [f["one"], f["nnan"]], [f["cnan"]], [f["qnan"]],
                    [f["max"], f["max"], f["nnan"]], [f["s"], f["qnan"], f["min_sub"]]):
        assert red(dtype, op, *members, saturate=saturate) == f["cnan"], members
    if f["pinf"] is not None:
        assert red(dtype, op, f["pinf"], f["qnan"], saturate=saturate) == f["cnan"]
        assert red(dtype, op, f["nnan"], f["ninf"], saturate=saturate) == f["cnan"]


@pytest.mark.parametrize("dtype", IEEE_INF)
@pytest.mark.parametrize("saturate", [True, False])
def test_opposite_infinities_give_nan(dtype, saturate):
    """Rule: +inf together with -inf gives the canonical NaN (sum)."""
    f = F[dtype]
    assert red(dtype, "sum", f["pinf"], f["ninf"], saturate=saturate) == f["cnan"]
    assert red(dtype, "sum", f["one"], f["ninf"], f["max"], f["pinf"], saturate=saturate) == \
        f["cnan"]


@pytest.mark.parametrize("dtype", WIDE)
def test_infinity_wins(dtype):
    """Rule: otherwise an infinity wins (fp32/fp16/bf16; the saturate flag does not apply)."""
    f = F[dtype]
    for sat in (True, False):
        assert red(dtype, "sum", f["pinf"], f["max"] | f["s"], saturate=sat) == f["pinf"]
        assert red(dtype, "sum", f["ninf"], f["max"], f["max"], saturate=sat) == f["ninf"]
        assert red(dtype, "sum", f["pinf"], f["pinf"], saturate=sat) == f["pinf"]
        assert red(dtype, "sum", f["s"], f["ninf"], saturate=sat) == f["ninf"]


def test_infinity_wins_e5m2_saturate():
    """Rule: E5M2 infinity wins, then the saturate flag: on -> +-max finite (infinities
    included), off -> +-inf."""
    assert red("fp8_e5m2", "sum", 0x7C, 0xBC) == 0x7B                     # +inf + -1, sat on
    assert red("fp8_e5m2", "sum", 0x7C, 0xBC, saturate=False) == 0x7C
    assert red("fp8_e5m2", "sum", 0xFC, 0x7B, 0x7B) == 0xFB                # -inf + 2 max
    assert red("fp8_e5m2", "sum", 0xFC, 0x7B, 0x7B, saturate=False) == 0xFC
    assert red("fp8_e5m2", "sum", 0x7C) == 0x7B                            # lone +inf
    assert red("fp8_e5m2", "sum", 0x7C, saturate=False) == 0x7C
    assert red("fp8_e5m2", "sum", 0x7C, 0xFC) == 0x7E                      # NaN beats saturation


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_zero_sum_sign(dtype):
    """Rule: an exact zero sum is +0 unless every contribution is -0."""
    f = F[dtype]
    z, nz = 0, f["s"]
    assert red(dtype, "sum", z, nz) == z
    assert red(dtype, "sum", nz, z) == z
    assert red(dtype, "sum", nz, nz) == nz
    assert red(dtype, "sum", nz) == nz
    assert red(dtype, "sum", nz, nz, nz, nz, nz, nz, nz, nz) == nz
    assert red(dtype, "sum", nz, nz, nz, z) == z
    assert red(dtype, "sum", f["one"], f["one"] | f["s"]) == z            # 1 + -1
    assert red(dtype, "sum", f["one"] | f["s"], f["one"], nz) == z        # -1 + 1 + -0
    assert red(dtype, "sum", f["max"], nz, f["max"] | f["s"]) == z
    assert red(dtype, "sum", f["min_sub"] | f["s"], f["min_sub"]) == z


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_subnormals_kept(dtype):
    """Rule: subnormals are kept, never flushed (inputs and results)."""
    f = F[dtype]
    ms, s = f["min_sub"], f["s"]
    assert red(dtype, "sum", ms, ms) == 0x02                              # 2 quanta
    assert red(dtype, "sum", ms, ms, ms) == 0x03
    assert red(dtype, "sum", f["max_sub"], ms) == f["min_norm"]           # into the normal range
    assert red(dtype, "sum", f["min_norm"], ms | s) == f["max_sub"]       # back out of it
    assert red(dtype, "sum", ms | s, ms | s) == s | 0x02
    assert red(dtype, "sum", ms, ms | s, ms) == ms
    # max_sub = (2^m - 1) q, twice that (2^(m+1) - 2) q = 1.11..10b x 2^emin: a normal whose
    # bits are min_norm + (max_sub - 1), i.e. 2 * max_sub
    assert red(dtype, "sum", f["max_sub"], f["max_sub"]) == f["min_norm"] + f["max_sub"] - 1


@pytest.mark.parametrize("dtype", WIDE)
def test_overflow_gives_infinity(dtype):
    """Rule: overflow of fp16, bf16 and fp32 gives +-inf (saturate flag ignored)."""
    f = F[dtype]
    for sat in (True, False):
        assert red(dtype, "sum", f["max"], f["max"], saturate=sat) == f["pinf"]
        assert red(dtype, "sum", f["max"] | f["s"], f["max"] | f["s"], saturate=sat) == f["ninf"]
        assert red(dtype, "sum", *[f["max"]] * 8, saturate=sat) == f["pinf"]


@pytest.mark.parametrize("dtype, max_, half_ulp, quarter_ulp, inf", [
    # fp16 max 65504 = 1.1111111111b x 2^15, ulp 2^5: half 16 = 2^4 (E 19 -> 0x4C00),
    # quarter 8 = 2^3 (0x4800). 65504 + 16 is a tie; 65504 is odd -> rounds up -> overflow.
    ("fp16", 0x7BFF, 0x4C00, 0x4800, 0x7C00),
    # bf16 max 1.1111111b x 2^127, ulp 2^120: half 2^119 (E 246 = 0xF6 -> 0x7B00),
    # quarter 2^118 (0x7A80)
    ("bf16", 0x7F7F, 0x7B00, 0x7A80, 0x7F80),
    # fp32 max (2 - 2^-23) 2^127, ulp 2^104: half 2^103 (E 230 -> 0x73000000), quarter 2^102
    ("fp32", 0x7F7FFFFF, 0x73000000, 0x72800000, 0x7F800000),
])
def test_overflow_threshold(dtype, max_, half_ulp, quarter_ulp, inf):
    """Rule: overflow is decided on the correctly rounded result: max + ulp/4 rounds back to
    max; max + ulp/2 is a tie, rounds to even (up), and overflows to inf."""
    assert red(dtype, "sum", max_, quarter_ulp) == max_
    assert red(dtype, "sum", max_, half_ulp) == inf
    s = F[dtype]["s"]
    assert red(dtype, "sum", max_ | s, half_ulp | s) == inf | s
    assert red(dtype, "sum", max_ | s, quarter_ulp | s) == max_ | s


@pytest.mark.parametrize("members, sat_on, sat_off", [
    ([0x7E, 0x7E], 0x7E, 0x7F),            # 448 + 448 = 896: beyond max -> 448 / NaN
    ([0xFE, 0xFE], 0xFE, 0x7F),            # -896 -> -448 / canonical NaN (sign dropped)
    ([0x7E, 0x58], 0x7E, 0x7E),            # 448 + 16 = 464: tie, 448 (mantissa 110) even: no ovf
    ([0x7E, 0x59], 0x7E, 0x7F),            # 448 + 18 = 466 > 464: rounds to 480 -> overflow
    ([0x7E, 0x60], 0x7E, 0x7F),            # 448 + 32 = 480 -> overflow
    ([0x7E, 0x7E, 0xFE], 0x7E, 0x7E),      # 448 + 448 - 448: exact, no overflow
    ([0x77, 0x77], 0x7E, 0x7F),            # 240 + 240 = 480 -> overflow
    ([0x76, 0x76], 0x7E, 0x7E),            # 224 + 224 = 448 exactly
])
def test_fp8_e4m3_overflow_saturate(members, sat_on, sat_off):
    """Rule: E4M3 beyond the largest finite value: saturate on -> +-448, off -> NaN (0x7F)."""
    assert red("fp8_e4m3", "sum", *members) == sat_on             # default is on
    assert red("fp8_e4m3", "sum", *members, saturate=True) == sat_on
    assert red("fp8_e4m3", "sum", *members, saturate=False) == sat_off


@pytest.mark.parametrize("members, sat_on, sat_off", [
    ([0x7B, 0x7B], 0x7B, 0x7C),            # 57344 * 2 -> 57344 / +inf
    ([0xFB, 0xFB], 0xFB, 0xFC),            # -> -57344 / -inf
    ([0x7B, 0x68], 0x7B, 0x7B),            # 57344 + 2048 = 59392 < 61440: rounds back to max
    ([0x7B, 0x6C], 0x7B, 0x7C),            # 57344 + 4096 = 61440: tie, max odd -> 65536: ovf
    ([0x7B, 0x7B, 0xFB], 0x7B, 0x7B),      # exact, no overflow
])
def test_fp8_e5m2_overflow_saturate(members, sat_on, sat_off):
    """Rule: E5M2 beyond the largest finite value: saturate on -> +-57344, off -> +-inf."""
    assert red("fp8_e5m2", "sum", *members) == sat_on
    assert red("fp8_e5m2", "sum", *members, saturate=False) == sat_off


# ============================================================================================
# float sums: rounding and exactness
# ============================================================================================

@pytest.mark.parametrize("dtype, members, want", [
    # fp32: ulp(1) = 2^-23; 2^-24 = 0x33800000 (E 103); 2^-25 = 0x33000000; 2^-60 = 0x21800000
    ("fp32", [0x3F800000, 0x33800000], 0x3F800000),              # 1 + half ulp: tie, to even
    ("fp32", [0x3F800001, 0x33800000], 0x3F800002),              # odd + half ulp: tie, up
    ("fp32", [0xBF800001, 0xB3800000], 0xBF800002),              # negative tie, away from 0
    ("fp32", [0x3F800000, 0x33000000], 0x3F800000),              # below half: down
    ("fp32", [0x3F800000, 0x33800000, 0x21800000], 0x3F800001),  # just above half (sticky): up
    ("fp32", [0x3F800000, 0x33800000, 0xA1800000], 0x3F800000),  # just below half: down
    ("fp32", [0x3F800001, 0x33800000, 0xA1800000], 0x3F800001),  # just below half: down
    ("fp32", [0x3FFFFFFF, 0x33800000], 0x40000000),              # carry into the exponent
    # bf16: ulp(1) = 2^-7; 2^-8 = 0x3B80 (E 119); 2^-64 = 0x1F80
    ("bf16", [0x3F80, 0x3B80], 0x3F80),
    ("bf16", [0x3F81, 0x3B80], 0x3F82),
    ("bf16", [0x3F80, 0x3B80, 0x1F80], 0x3F81),
    ("bf16", [0x3FFF, 0x3B80], 0x4000),
    # fp16: ulp(1) = 2^-10; 2^-11 = 0x1000 (E 4); min subnormal 2^-24 = 0x0001
    ("fp16", [0x3C00, 0x1000], 0x3C00),
    ("fp16", [0x3C01, 0x1000], 0x3C02),
    ("fp16", [0x3C00, 0x1000, 0x0001], 0x3C01),
    ("fp16", [0x3C00, 0x1000, 0x8001], 0x3C00),
    ("fp16", [0x3FFF, 0x1000], 0x4000),
    # E4M3: 1.0 = 0x38, ulp(1) = 2^-3; 2^-4 = 0x18 (E 3); min subnormal 2^-9 = 0x01
    ("fp8_e4m3", [0x38, 0x18], 0x38),
    ("fp8_e4m3", [0x39, 0x18], 0x3A),
    ("fp8_e4m3", [0x38, 0x18, 0x01], 0x39),
    ("fp8_e4m3", [0x3F, 0x18], 0x40),
    # E5M2: 1.0 = 0x3C, ulp(1) = 2^-2; 2^-3 = 0x30 (E 12); min subnormal 2^-16 = 0x01
    ("fp8_e5m2", [0x3C, 0x30], 0x3C),
    ("fp8_e5m2", [0x3D, 0x30], 0x3E),
    ("fp8_e5m2", [0x3C, 0x30, 0x01], 0x3D),
    ("fp8_e5m2", [0x3F, 0x30], 0x40),
])
def test_round_half_even(dtype, members, want):
    """Rule: rounded once to the element type with round-to-nearest-even (ties to even,
    sticky bits from every contribution count)."""
    assert red(dtype, "sum", *members) == want


def test_heavy_cancellation_fp32():
    """Rule: exact sum, rounded once: 1e30 + 1 - 1e30 = 1 exactly in fp32
    (1e30 rounds to 0x7149F2CA in fp32)."""
    assert red("fp32", "sum", 0x7149F2CA, 0x3F800000, 0xF149F2CA) == 0x3F800000
    assert red("fp32", "sum", 0x7149F2CA, 0xF149F2CA, 0x3F800000) == 0x3F800000
    assert red("fp32", "sum", 0x3F800000, 0x7149F2CA, 0xF149F2CA) == 0x3F800000


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_heavy_cancellation(dtype):
    """Rule: exact sum, rounded once: max + x - max = x exactly; max + max - max = max (an
    intermediate float sum would overflow); the smallest subnormal survives next to max."""
    f = F[dtype]
    mx, nmx = f["max"], f["max"] | f["s"]
    for sat in (True, False):
        assert red(dtype, "sum", mx, f["one"], nmx, saturate=sat) == f["one"]
        assert red(dtype, "sum", mx, f["min_sub"], nmx, saturate=sat) == f["min_sub"]
        assert red(dtype, "sum", mx, mx, nmx, saturate=sat) == mx
        assert red(dtype, "sum", nmx, mx, nmx, mx, f["two"] | f["s"], saturate=sat) == \
            f["two"] | f["s"]


# ============================================================================================
# float min / max
# ============================================================================================

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_float_minmax_ieee2019(dtype):
    """Rule: IEEE 754-2019 minimum/maximum: -0 < +0, NaN-propagating, result one of the inputs."""
    f = F[dtype]
    s, one, ms = f["s"], f["one"], f["min_sub"]
    assert red(dtype, "min", 0, s) == s and red(dtype, "min", s, 0) == s
    assert red(dtype, "max", 0, s) == 0 and red(dtype, "max", s, 0) == 0
    assert red(dtype, "min", one, one | s, f["two"]) == one | s
    assert red(dtype, "max", one, one | s, f["two"]) == f["two"]
    assert red(dtype, "min", one | s, f["two"] | s) == f["two"] | s       # -2 < -1
    assert red(dtype, "max", one | s, f["two"] | s) == one | s
    assert red(dtype, "min", ms, 0, s, ms | s) == ms | s                  # -q < -0 < +0 < q
    assert red(dtype, "max", ms, 0, s, ms | s) == ms
    assert red(dtype, "min", f["max"] | s, f["max"]) == f["max"] | s
    assert red(dtype, "max", f["max_sub"], f["min_norm"]) == f["min_norm"]
    for op in ("min", "max"):
        assert red(dtype, op, one, f["qnan"], f["two"]) == f["cnan"]
        assert red(dtype, op, f["nnan"]) == f["cnan"]


@pytest.mark.parametrize("dtype", IEEE_INF)
@pytest.mark.parametrize("saturate", [True, False])
def test_float_minmax_infinities(dtype, saturate):
    """Rule: min/max of infinities: the result is one of the inputs (the fp8 saturate flag
    applies to sums only; see docs/reduction.md), -inf < everything < +inf."""
    f = F[dtype]
    assert red(dtype, "min", f["pinf"], f["ninf"], saturate=saturate) == f["ninf"]
    assert red(dtype, "max", f["pinf"], f["ninf"], saturate=saturate) == f["pinf"]
    assert red(dtype, "max", f["max"], f["pinf"], saturate=saturate) == f["pinf"]
    assert red(dtype, "min", f["max"] | f["s"], f["pinf"], saturate=saturate) == f["max"] | f["s"]


# ============================================================================================
# ReduceScatter chunks
# ============================================================================================

@pytest.mark.parametrize("n, m, want", [
    (8, 4, [(0, 2), (2, 4), (4, 6), (6, 8)]),
    (10, 4, [(0, 3), (3, 6), (6, 9), (9, 10)]),          # ceil(10/4) = 3, last shorter
    (10, 3, [(0, 4), (4, 8), (8, 10)]),
    (5, 4, [(0, 2), (2, 4), (4, 5), (5, 5)]),            # trailing chunk empty
    (1, 3, [(0, 1), (1, 1), (1, 1)]),
    (0, 2, [(0, 0), (0, 0)]),
    (7, 1, [(0, 7)]),
])
def test_reduce_scatter_chunks(n, m, want):
    """Rule: ReduceScatter: members contiguous chunks of ceil(n/members), the last shorter."""
    assert reduce_scatter_chunks(n, m) == want


def test_reduce_scatter_chunks_bad():
    with pytest.raises(ValueError):
        reduce_scatter_chunks(4, 0)
    with pytest.raises(ValueError):
        reduce_scatter_chunks(-1, 2)


# ============================================================================================
# independent slow reference (Fraction) and random data
# ============================================================================================

def _ref_decode(dtype, bits):
    """Raw bits -> Python floats, through ml_dtypes / numpy (exact in float64)."""
    w = DTYPES[dtype].width
    with np.errstate(invalid="ignore"):             # signalling NaN payloads
        f64 = np.asarray(bits, dtype=CONTAINER[w]).view(NATIVE[dtype]).astype(np.float64)
    return [float(x) for x in f64]


def _ref_encode(dtype, value):
    """An exactly representable value -> raw bits, through ml_dtypes / numpy."""
    w = DTYPES[dtype].width
    b = int(np.array([float(value)], np.float64).astype(NATIVE[dtype]).view(CONTAINER[w])[0])
    back = _ref_decode(dtype, [b])[0]
    assert (math.isnan(back) and math.isnan(float(value))) or back == value, (dtype, value)
    return b


def _ref_round(dtype, q):
    """Round the non-zero Fraction q to nearest even: find the two neighbouring representable
    values (unbounded exponent range) and compare distances."""
    fi = ml_dtypes.finfo(NATIVE[dtype])
    man, emin = int(fi.nmant), int(fi.minexp)
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    ulp = Fraction(2) ** (max(e, emin) - man)
    k = math.floor(a / ulp)
    lo, hi = k * ulp, (k + 1) * ulp
    if a - lo < hi - a:
        r = lo
    elif a - lo > hi - a:
        r = hi
    else:
        r = lo if k % 2 == 0 else hi
    return r if q > 0 else -r


def ref_sum_saturated(dtype, bits, saturate):
    """(result bits, saturated): saturated when the result is the saturate rule's +-max
    finite (an infinity, or a rounded sum beyond max finite, with saturate on, fp8)."""
    cnan = F[dtype]["cnan"]
    maxf = Fraction(float(ml_dtypes.finfo(NATIVE[dtype]).max))
    vals = _ref_decode(dtype, bits)
    if any(math.isnan(v) for v in vals):
        return cnan, False
    pinf, ninf = math.inf in vals, -math.inf in vals
    if pinf and ninf:
        return cnan, False

    def beyond(negative):
        if dtype in FP8_DTYPES and saturate:
            return _ref_encode(dtype, -maxf if negative else maxf), True
        if dtype == "fp8_e4m3":
            return cnan, False
        return _ref_encode(dtype, -math.inf if negative else math.inf), False

    if pinf or ninf:
        return beyond(ninf)
    total = sum((Fraction(v) for v in vals), Fraction(0))
    if total == 0:
        all_neg_zero = all(v == 0 and math.copysign(1.0, v) < 0 for v in vals)
        return _ref_encode(dtype, -0.0 if all_neg_zero else 0.0), False
    r = _ref_round(dtype, total)
    if abs(r) > maxf:
        return beyond(r < 0)
    return _ref_encode(dtype, r), False


def ref_sum(dtype, bits, saturate):
    return ref_sum_saturated(dtype, bits, saturate)[0]


def ref_minmax(dtype, op, bits):
    vals = _ref_decode(dtype, bits)
    if any(math.isnan(v) for v in vals):
        return F[dtype]["cnan"]
    key = [(v, math.copysign(1.0, v)) for v in vals]          # -0 < +0
    i = (min if op == "min" else max)(range(len(vals)), key=key.__getitem__)
    return int(bits[i])


def ref_int(dtype, op, bits):
    d = DTYPES[dtype]
    w = d.width
    vals = [int(b) - (1 << w) if d.kind == "int" and b >> (w - 1) else int(b) for b in bits]
    if op == "sum":
        return sum(vals) % (1 << w)
    if op in ("min", "max"):
        return (min if op == "min" else max)(vals) % (1 << w)
    acc = int(bits[0])
    for b in bits[1:]:
        acc = {"and": acc & int(b), "or": acc | int(b), "xor": acc ^ int(b)}[op]
    return acc


def _specials(dtype):
    f = F[dtype]
    s = f["s"]
    out = [0, s, f["qnan"], f["nnan"], f["cnan"], f["max"], f["max"] | s, f["min_sub"],
           f["min_sub"] | s, f["max_sub"], f["max_sub"] | s, f["min_norm"], f["min_norm"] | s,
           f["one"], f["one"] | s, f["two"]]
    if f["pinf"] is not None:
        out += [f["pinf"], f["ninf"]]
    return np.array(out, dtype=np.int64)


def random_float_bits(rng, dtype, m, n):
    """(m, n) raw bits mixing, per element (column): uniform random bits; values from a few
    nearby binades with random signs (rounding, cancellation); specials mixed with those;
    exact cancellation pairs plus a small value; values near the largest finite, mostly one
    sign (overflow, saturation)."""
    d = DTYPES[dtype]
    w, man = d.width, d.man_bits
    emax = d.max_finite >> man

    def near(e0, spread):
        e = np.clip(e0 - rng.integers(0, spread + 1, (m, n)), 0, emax)
        sig = rng.integers(0, 1 << man, (m, n))
        sgn = rng.integers(0, 2, (m, n))
        b = (sgn << (w - 1)) | (e << man) | sig
        if dtype == "fp8_e4m3":
            b = np.where((b & 0x7F) == 0x7F, b & ~1, b)          # keep NaNs to the other modes
        return b

    mode = rng.integers(0, 5, n)
    uniform = rng.integers(0, 1 << w, (m, n))
    e0 = rng.integers(0, emax + 1, n)
    clustered = near(e0, int(rng.integers(0, man + 4)))
    sp = _specials(dtype)
    special = np.where(rng.random((m, n)) < 0.3, sp[rng.integers(0, len(sp), (m, n))], clustered)
    cancel = clustered.copy()
    half = m // 2
    cancel[half:2 * half] = cancel[:half] ^ d.sign_bit
    if m % 2:
        cancel[-1] = near(e0 - man - 2, 2)[-1]
    big = near(np.full(n, emax), 2)
    big = np.where(rng.random((m, n)) < 0.9, big & ~d.sign_bit, big)
    out = np.choose(mode, [uniform, clustered, special, cancel, big])
    return out.astype(np.int64)


MEMBER_COUNTS = [(1, 200), (2, 1500), (3, 1500), (8, 1500), (33, 200)]    # (members, elements)


@pytest.mark.parametrize("dtype, saturate", [(d, True) for d in FLOAT_DTYPES]
                         + [(d, False) for d in FP8_DTYPES])
def test_float_against_fraction_reference(request, dtype, saturate):
    """Rules: exact sum rounded once (nearest even), special values, zero signs, overflow,
    saturation, min/max; against the independent Fraction reference, random bit patterns."""
    seed = _seed(request)
    rng = np.random.default_rng(seed)
    for m, n in MEMBER_COUNTS:
        bits = random_float_bits(rng, dtype, m, n)
        got = {op: reduce(dtype, op, bits, saturate=saturate) for op in ("sum", "min", "max")}
        for j in range(n):
            col = bits[:, j]
            want = {"sum": ref_sum(dtype, col, saturate),
                    "min": ref_minmax(dtype, "min", col), "max": ref_minmax(dtype, "max", col)}
            for op, w in want.items():
                g = int(got[op][j])
                assert g == w, (f"seed {seed} {dtype} {op} sat={saturate} members {m} element {j}: "
                                f"inputs {[hex(x) for x in col]} want {w:#x} got {g:#x}")


@pytest.mark.parametrize("dtype, saturate", [(d, True) for d in FLOAT_DTYPES]
                         + [(d, False) for d in FP8_DTYPES])
def test_events_against_fraction_reference(request, dtype, saturate):
    """Statistic events (docs/telemetry.md section 2.1) against the Fraction reference: NaN and
    infinity classified by decoding the result with ml_dtypes, saturation where the reference
    took the saturate branch; a sum that rounds to max finite without overflowing is not a
    saturation. Random bit patterns, near-overflow values included."""
    seed = _seed(request)
    rng = np.random.default_rng(seed)
    seen = dict.fromkeys(ELEMENT_EVENTS, 0)
    genuine_max = 0
    for m, n in MEMBER_COUNTS:
        bits = random_float_bits(rng, dtype, m, n)
        for op in ("sum", "min", "max"):
            got, ev = reduce_with_events(dtype, op, bits, saturate=saturate)
            assert np.array_equal(got, reduce(dtype, op, bits, saturate=saturate))
            assert set(ev) == set(ELEMENT_EVENTS)
            for name in ELEMENT_EVENTS:
                assert ev[name].shape == (n,) and ev[name].dtype == bool
            for j in range(n):
                col = bits[:, j]
                if op == "sum":
                    want_bits, want_sat = ref_sum_saturated(dtype, col, saturate)
                else:
                    want_bits, want_sat = ref_minmax(dtype, op, col), False
                value = _ref_decode(dtype, [want_bits])[0]
                want = {"nan": math.isnan(value), "infinity": math.isinf(value),
                        "saturation": want_sat}
                have = {name: bool(ev[name][j]) for name in ELEMENT_EVENTS}
                assert have == want, (f"seed {seed} {dtype} {op} sat={saturate} members {m} "
                                      f"element {j}: inputs {[hex(x) for x in col]} result "
                                      f"{want_bits:#x}: events {have}, want {want}")
                seen.update({k: seen[k] + v for k, v in want.items()})
                genuine_max += op == "sum" and not want_sat and \
                    want_bits & ~DTYPES[dtype].sign_bit == DTYPES[dtype].max_finite
    print(f"events seen: {seen}; max-finite sums that are not saturations: {genuine_max}")
    assert seen["nan"] and (seen["infinity"] or dtype == "fp8_e4m3" or
                            (dtype == "fp8_e5m2" and saturate))
    if dtype in FP8_DTYPES and saturate:
        assert seen["saturation"] and genuine_max
    else:
        assert not seen["saturation"]


@pytest.mark.parametrize("dtype, op, saturate, members, want_bits, events", [
    # E4M3 (max 448 = 0x7E): 448 + 448 saturates; off: NaN
    ("fp8_e4m3", "sum", True, [0x7E, 0x7E], 0x7E, {"saturation"}),
    ("fp8_e4m3", "sum", False, [0x7E, 0x7E], 0x7F, {"nan"}),
    ("fp8_e4m3", "sum", True, [0xFE, 0xD9], 0xFE, {"saturation"}),     # -448 - 18: -480
    ("fp8_e4m3", "sum", True, [0x7E, 0x58], 0x7E, set()),              # 464: tie, 448 genuine
    ("fp8_e4m3", "sum", True, [0x76, 0x76], 0x7E, set()),              # 224 + 224 = 448
    ("fp8_e4m3", "sum", True, [0x7E], 0x7E, set()),                    # lone max
    ("fp8_e4m3", "sum", True, [0x7F, 0x7E, 0x7E], 0x7F, {"nan"}),      # NaN beats saturation
    ("fp8_e4m3", "max", True, [0x7E, 0x7E], 0x7E, set()),
    # E5M2 (max 57344 = 0x7B): infinity in, saturate on: clamped, counted as saturation
    ("fp8_e5m2", "sum", True, [0x7C, 0xBC], 0x7B, {"saturation"}),
    ("fp8_e5m2", "sum", False, [0x7C, 0xBC], 0x7C, {"infinity"}),
    ("fp8_e5m2", "sum", True, [0xFC], 0xFB, {"saturation"}),
    ("fp8_e5m2", "sum", True, [0x7B, 0x6C], 0x7B, {"saturation"}),     # 61440: tie, overflow
    ("fp8_e5m2", "sum", False, [0x7B, 0x6C], 0x7C, {"infinity"}),
    ("fp8_e5m2", "sum", True, [0x7B, 0x68], 0x7B, set()),              # 59392: back to max
    ("fp8_e5m2", "sum", True, [0x7C, 0xFC], 0x7E, {"nan"}),            # +inf + -inf
    ("fp8_e5m2", "max", True, [0x7C, 0x01], 0x7C, {"infinity"}),       # min/max: no saturation
    ("fp8_e5m2", "min", True, [0xFC, 0x7D], 0x7E, {"nan"}),
    # wide floats: overflow is an infinity, never a saturation
    ("fp16", "sum", True, [0x7BFF, 0x4C00], 0x7C00, {"infinity"}),
    ("fp16", "sum", True, [0x7BFF, 0x4800], 0x7BFF, set()),
    ("bf16", "sum", True, [0xFF7F, 0xFF7F], 0xFF80, {"infinity"}),
    ("fp32", "sum", True, [0x7F800001, 0x3F800000], 0x7FC00000, {"nan"}),
    ("fp32", "min", True, [0xFF800000, 0x3F800000], 0xFF800000, {"infinity"}),
    # integers: never an event, whatever the bits
    ("int8", "sum", True, [0x7F, 0x7F], 0xFE, set()),
    ("uint8", "max", True, [0xFF, 0x7E], 0xFF, set()),
    ("uint16", "or", True, [0x7C00, 0x0001], 0x7C01, set()),
    ("int32", "xor", True, [0x7F800000, 0x00400000], 0x7FC00000, set()),
])
def test_events_directed(dtype, op, saturate, members, want_bits, events):
    """Rule of each statistic on hand-worked cases (docs/telemetry.md section 2.1)."""
    bits, ev = reduce_with_events(dtype, op, np.array([[v] for v in members], dtype=np.int64),
                                  saturate=saturate)
    assert int(bits[0]) == want_bits
    assert {name for name in ELEMENT_EVENTS if ev[name][0]} == events


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_int_against_python_ints(request, dtype):
    """Rules: wrap-around sums, signed/unsigned min/max, bitwise ops; against Python ints."""
    seed = _seed(request)
    rng = np.random.default_rng(seed)
    d = DTYPES[dtype]
    edge = np.array([0, 1, d.mask, d.sign_bit, d.sign_bit - 1, d.sign_bit + 1], np.int64)
    for m, n in MEMBER_COUNTS:
        bits = rng.integers(0, 1 << d.width, (m, n))
        bits = np.where(rng.random((m, n)) < 0.2, edge[rng.integers(0, len(edge), (m, n))], bits)
        for op in ("sum", "min", "max", "and", "or", "xor"):
            got = reduce(dtype, op, bits)
            want = [ref_int(dtype, op, bits[:, j]) for j in range(n)]
            assert got.tolist() == want, (seed, dtype, op, m)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_order_independence(request, dtype):
    """Rule: the result does not depend on the order of contributions (permuted member rows
    give identical bits)."""
    seed = _seed(request)
    rng = np.random.default_rng(seed)
    d = DTYPES[dtype]
    m, n = 8, 2000
    if d.is_float:
        bits = random_float_bits(rng, dtype, m, n)
        ops = ("sum", "min", "max")
    else:
        bits = rng.integers(0, 1 << d.width, (m, n))
        ops = ("sum", "min", "max", "and", "or", "xor")
    for op in ops:
        for sat in ((True, False) if dtype in FP8_DTYPES else (True,)):
            base = reduce(dtype, op, bits, saturate=sat)
            for _ in range(10):
                perm = bits[rng.permutation(m)]
                assert np.array_equal(reduce(dtype, op, perm, saturate=sat), base), (seed, op)
            # per-element independent shuffles too
            shuffled = np.take_along_axis(bits, rng.permuted(np.tile(np.arange(m)[:, None],
                                                                     (1, n)), axis=0), axis=0)
            assert np.array_equal(reduce(dtype, op, shuffled, saturate=sat), base), (seed, op)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_blocking_is_transparent(request, dtype):
    """The model works in blocks of elements; results across block edges equal per-slice
    results."""
    seed = _seed(request)
    rng = np.random.default_rng(seed)
    bits = random_float_bits(rng, dtype, 3, 70_000)
    whole = reduce(dtype, "sum", bits)
    parts = np.concatenate([reduce(dtype, "sum", bits[:, i:i + 999]) for i in range(0, 70_000, 999)])
    assert np.array_equal(whole, parts)


# ============================================================================================
# speed (SMARTFABRIC_LONG=1)
# ============================================================================================

@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="8 x 1M timing per dtype; SMARTFABRIC_LONG=1")
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_speed_8x1m(dtype):
    """Golden model requirement: 8 members x 1,000,000 elements of any type well under a
    minute (random bit patterns: the widest exponent spread)."""
    rng = np.random.default_rng(1)
    d = DTYPES[dtype]
    bits = rng.integers(0, 1 << d.width, (8, 1_000_000), dtype=np.uint64).astype(d.container)
    for op in ("sum", "min", "max"):
        t = time.perf_counter()
        reduce(dtype, op, bits)
        dt = time.perf_counter() - t
        print(f"{dtype} {op} 8 x 1M: {dt:.3f} s")
        assert dt < 30
