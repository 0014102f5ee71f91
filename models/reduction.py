"""Golden model of in-network reduction (docs/reduction.md; brief section 4).

Pure Python + numpy (no Amaranth import). Values travel as raw bit patterns: unsigned integers of
the element type's width (numpy ``uint8``/``uint16``/``uint32``), the same bits the RTL carries.

API
---
* ``DTYPES`` / ``dtype_info(name)``: the element-type table (:class:`DType`).
* ``OPS``, ``INT_OPS``, ``FLOAT_OPS``: operation names.
* ``reduce(dtype, op, contributions, saturate=True)``: contributions of shape (members, elements),
  raw bits; returns raw bits of shape (elements,).
* ``reduce_with_events(dtype, op, contributions, saturate=True)``: the same result and, per
  result element, the statistic events it counts (``ELEMENT_EVENTS``: NaN, infinity,
  saturation; docs/telemetry.md section 2.1).
* ``reduce_scatter_chunks(n_elements, members)``: ReduceScatter chunk boundaries.
* ``to_bits(dtype, values)`` / ``from_bits(dtype, bits)``: convert between native numpy /
  ml_dtypes arrays and raw bits (conveniences for callers and tests; the model never uses them).

Method (docs/reduction.md "How the golden model computes it"): float sums are exact. Every finite
contribution is an integer multiple of the format's subnormal quantum 2^emin_sub; it is decoded with
integer operations to (sign, integer significand, shift) and added, as a signed integer in units of
that quantum, into an exact multi-limb accumulator (32-bit limbs held in int64, carries propagated
once at the end). The exact integer sum is then rounded once to the element type with
round-to-nearest-even. No float is ever added to another float.
"""

from __future__ import annotations

__all__ = [
    "DType", "DTYPES", "DTYPE_NAMES", "INT_DTYPES", "FLOAT_DTYPES", "FP8_DTYPES",
    "OPS", "INT_OPS", "FLOAT_OPS", "ELEMENT_EVENTS", "dtype_info", "reduce",
    "reduce_with_events", "reduce_scatter_chunks", "to_bits", "from_bits",
]

import dataclasses
import math

import numpy as np

# ============================================================================================
# element types
# ============================================================================================


@dataclasses.dataclass(frozen=True)
class DType:
    """One element type.

    ``container`` is the numpy unsigned dtype holding raw bit patterns. ``max_finite`` is the
    largest finite value's raw bit pattern (for integers: the largest value, as raw bits) and
    ``max_value`` its numeric value. Float fields are ``None`` / 0 for integer types.
    """

    name: str
    kind: str                    # "int", "uint" or "float"
    width: int                   # bits
    container: np.dtype          # raw-bit numpy dtype
    max_finite: int              # raw bits of the largest finite (float) / largest (int) value
    max_value: float             # its value
    exp_bits: int = 0
    man_bits: int = 0            # stored fraction bits (no hidden bit)
    bias: int = 0
    has_inf: bool = False        # IEEE-like: E all-ones & M == 0 is inf, M != 0 NaN
    canonical_nan: int | None = None
    native: str | None = None    # numpy / ml_dtypes type name, for to_bits/from_bits only

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_signed_int(self) -> bool:
        return self.kind == "int"

    @property
    def sign_bit(self) -> int:
        return 1 << (self.width - 1)

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1

    @property
    def emin_sub(self) -> int:
        """Exponent of the subnormal quantum: every finite value is a multiple of 2**emin_sub."""
        return 1 - self.bias - self.man_bits

    @property
    def inf_bits(self) -> int | None:
        """Raw bits of +inf, or None (E4M3 has no infinities)."""
        return ((1 << self.exp_bits) - 1) << self.man_bits if self.has_inf else None

    @property
    def max_exp_field(self) -> int:
        """Largest biased exponent field of a finite value."""
        return self.max_finite >> self.man_bits

    @property
    def max_aligned_bits(self) -> int:
        """Bit length of the largest finite magnitude in units of 2**emin_sub."""
        return (self.max_exp_field - 1) + self.man_bits + 1


def _float(name, width, exp_bits, man_bits, has_inf, canonical_nan, max_finite, native):
    bias = (1 << (exp_bits - 1)) - 1
    e = (max_finite >> man_bits) - bias
    frac = max_finite & ((1 << man_bits) - 1)
    max_value = math.ldexp((1 << man_bits) + frac, e - man_bits)
    return DType(name, "float", width, np.dtype(f"uint{width}"), max_finite, max_value,
                 exp_bits, man_bits, bias, has_inf, canonical_nan, native)


def _int(name, signed, width):
    mx = (1 << (width - 1)) - 1 if signed else (1 << width) - 1
    return DType(name, "int" if signed else "uint", width, np.dtype(f"uint{width}"), mx, float(mx),
                 native=name)


DTYPES: dict[str, DType] = {
    d.name: d for d in (
        _int("int8", True, 8), _int("int16", True, 16), _int("int32", True, 32),
        _int("uint8", False, 8), _int("uint16", False, 16), _int("uint32", False, 32),
        #      name        w   E   M   inf    canonical NaN  max finite   native
        _float("fp32",     32, 8, 23, True,  0x7FC00000,    0x7F7FFFFF,  "float32"),
        _float("fp16",     16, 5, 10, True,  0x7E00,        0x7BFF,      "float16"),
        _float("bf16",     16, 8, 7,  True,  0x7FC0,        0x7F7F,      "bfloat16"),
        # OCP E4M3 ("FN"): no infinities, NaN only S.1111.111, max 0.1111.110 = 448
        _float("fp8_e4m3", 8,  4, 3,  False, 0x7F,          0x7E,        "float8_e4m3fn"),
        # OCP E5M2: IEEE-like, max 0.11110.11 = 57344
        _float("fp8_e5m2", 8,  5, 2,  True,  0x7E,          0x7B,        "float8_e5m2"),
    )
}
DTYPE_NAMES = tuple(DTYPES)
INT_DTYPES = tuple(n for n, d in DTYPES.items() if not d.is_float)
FLOAT_DTYPES = tuple(n for n, d in DTYPES.items() if d.is_float)
FP8_DTYPES = ("fp8_e4m3", "fp8_e5m2")

FLOAT_OPS = ("sum", "min", "max")
INT_OPS = ("sum", "min", "max", "and", "or", "xor")
OPS = INT_OPS

#: Statistic events of one result element (``reduce_with_events``), named as the per-group
#: statistics of ``models.capture_format.GROUP_STATS`` that count them.
ELEMENT_EVENTS = ("nan", "infinity", "saturation")


def dtype_info(dtype: str | DType) -> DType:
    if isinstance(dtype, DType):
        return dtype
    try:
        return DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"unknown element type {dtype!r}; expected one of "
                         f"{', '.join(DTYPE_NAMES)}") from None


def _native(d: DType):
    if d.native in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        import ml_dtypes
        return np.dtype(getattr(ml_dtypes, d.native))
    return np.dtype(d.native)


def to_bits(dtype, values) -> np.ndarray:
    """Native values (numpy / ml_dtypes array of the element type) -> raw bits (a view)."""
    d = dtype_info(dtype)
    a = np.asarray(values)
    if a.dtype != _native(d):
        raise ValueError(f"{dtype}: expected a {_native(d)} array, got {a.dtype}")
    return a.view(d.container)


def from_bits(dtype, bits) -> np.ndarray:
    """Raw bits -> native numpy / ml_dtypes array of the element type (a view)."""
    d = dtype_info(dtype)
    return _check_bits(d, np.asarray(bits)).view(_native(d))


# ============================================================================================
# reduce
# ============================================================================================

_CHUNK = 1 << 16          # elements per block of the float sum (keeps temporaries in cache)
_LIMB = 32
_M32 = (1 << _LIMB) - 1


def _check_bits(d: DType, a: np.ndarray) -> np.ndarray:
    if a.dtype == d.container:
        return a
    if a.dtype.kind not in "ui":
        raise ValueError(f"{d.name}: contributions must be raw bit patterns (unsigned integers of "
                         f"{d.width} bits), got dtype {a.dtype}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > d.mask):
        raise ValueError(f"{d.name}: raw bit patterns must lie in [0, 2**{d.width}), got values in "
                         f"[{int(a.min())}, {int(a.max())}]")
    return a.astype(d.container)


def reduce(dtype, op: str, contributions, saturate: bool = True) -> np.ndarray:
    """Reduce the contributions of a group, element by element.

    ``contributions``: array (members, elements) of raw bit patterns (unsigned integers of the
    type's width; any integer array with values in range is accepted). Returns raw bits, shape
    (elements,), dtype the type's container (uint8/16/32). ``saturate`` is the group's fp8
    saturate flag; it affects only fp8 sums. Raises ValueError on an unknown type or operation,
    a bitwise operation on a float type, a wrong shape or out-of-range bits.
    """
    return _reduce(dtype_info(dtype), op, contributions, saturate)[0]


def reduce_with_events(dtype, op: str, contributions, saturate: bool = True):
    """:func:`reduce`, and which statistic events each result element counts.

    Returns ``(result, events)``: ``result`` as :func:`reduce` returns it; ``events`` a dict
    with a boolean array of shape (elements,) per name of :data:`ELEMENT_EVENTS`
    (docs/telemetry.md section 2.1):

    * ``nan``: the result element is a NaN (float types; classified from its bits);
    * ``infinity``: the result element is +inf or -inf (float types with infinities);
    * ``saturation``: the result element is +-max finite *because of the saturate rule*: an
      fp8 sum with ``saturate`` on, no NaN result (no NaN contribution, not +inf with -inf),
      and either an infinity among the contributions (E5M2) or the correctly rounded exact
      sum beyond the largest finite value (docs/reduction.md readings 1 and 3). A sum that
      rounds to max finite without overflowing is not a saturation.

    Integer results never count; min/max results count ``nan`` / ``infinity`` by their bits
    and never ``saturation``. Same arguments and errors as :func:`reduce`.
    """
    d = dtype_info(dtype)
    result, saturated = _reduce(d, op, contributions, saturate)
    if d.is_float:
        _, _, nan, inf = _classify(d, result.astype(np.int64))
    else:
        nan = inf = np.zeros(result.shape, dtype=bool)
    return result, {"nan": nan, "infinity": inf, "saturation": saturated}


def _reduce(d: DType, op: str, contributions, saturate):
    """Checks the arguments, reduces; returns (result bits, saturated mask)."""
    ops = FLOAT_OPS if d.is_float else INT_OPS
    if op not in ops:
        if op in INT_OPS:
            raise ValueError(f"operation {op!r} is defined for integer types only, not {d.name}")
        raise ValueError(f"unknown operation {op!r}; expected one of {', '.join(ops)}")
    a = np.asarray(contributions)
    if a.ndim != 2:
        raise ValueError(f"contributions must have shape (members, elements), got {a.shape}")
    if a.shape[0] < 1:
        raise ValueError("a reduction needs at least one member")
    a = _check_bits(d, a)
    if d.is_float and op == "sum":
        return _float_sum(d, a, bool(saturate))
    out = _float_minmax(d, a, op) if d.is_float else _int_reduce(d, a, op)
    return out, np.zeros(out.shape, dtype=bool)


# --------------------------------------------------------------------------------- integers

_SIGNED = {8: np.int8, 16: np.int16, 32: np.int32}


def _int_reduce(d: DType, a: np.ndarray, op: str) -> np.ndarray:
    if op == "sum":           # two's complement wrap = sum modulo 2**width of the raw bits
        s = a.sum(axis=0, dtype=np.uint64)
        return (s & np.uint64(d.mask)).astype(d.container)
    if op in ("min", "max"):
        v = a.view(_SIGNED[d.width]) if d.is_signed_int else a
        r = v.min(axis=0) if op == "min" else v.max(axis=0)
        return r.view(d.container) if d.is_signed_int else r
    uf = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}[op]
    return uf.reduce(a, axis=0).astype(d.container)


# ------------------------------------------------------------------------------- float min/max

def _classify(d: DType, bits: np.ndarray):
    """bits: int64 array. Returns (sign, magnitude bits, is_nan, is_inf)."""
    sign = (bits >> (d.width - 1)) & 1
    mag = bits & (d.sign_bit - 1)
    if d.has_inf:
        inf_bits = d.inf_bits
        return sign, mag, mag > inf_bits, mag == inf_bits
    nan = mag == d.canonical_nan          # E4M3: S.1111.111 is the only NaN
    return sign, mag, nan, np.zeros_like(nan)


def _float_minmax(d: DType, a: np.ndarray, op: str) -> np.ndarray:
    """IEEE 754-2019 minimum / maximum: NaN -> canonical NaN, -0 < +0, else one of the inputs."""
    bits = a.astype(np.int64)
    sign, mag, nan, _ = _classify(d, bits)
    # total-order key of the non-NaN encodings: -0 -> -1 < +0 -> 0, larger negative -> smaller
    key = np.where(sign == 1, -mag - 1, mag)
    idx = np.argmin(key, axis=0) if op == "min" else np.argmax(key, axis=0)
    res = np.take_along_axis(a, idx[None, :], axis=0)[0]
    return np.where(nan.any(axis=0), d.canonical_nan, res).astype(d.container)


# ---------------------------------------------------------------------------------- float sum

def _float_sum(d: DType, a: np.ndarray, saturate: bool):
    """Returns (result bits, saturated mask: the result is the saturate rule's +-max finite)."""
    m, n = a.shape
    out = np.empty(n, dtype=d.container)
    saturated = np.empty(n, dtype=bool)
    # bits needed by the exact signed sum in units of 2**emin_sub (+1 sign, +1 spare)
    need = d.max_aligned_bits + max(m - 1, 1).bit_length() + 2
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        out[lo:hi], saturated[lo:hi] = _float_sum_block(d, a[:, lo:hi], saturate, need)
    return out, saturated


def _float_sum_block(d: DType, a: np.ndarray, saturate: bool, need: int):
    m, n = a.shape
    man = d.man_bits
    bits = a.astype(np.int64)
    sign, mag, nan, inf = _classify(d, bits)
    finite = ~(nan | inf)

    # ---- decode: value = sig * 2**(shift + emin_sub), sig an integer < 2**(man+1)
    e = mag >> man
    sig = mag & ((1 << man) - 1)
    sig = np.where(e > 0, sig | (1 << man), sig)
    sig = np.where(finite, sig, 0)
    shift = np.maximum(e, 1) - 1

    # ---- exact sum in units of 2**emin_sub, as limbs (L, n) of 32 bits held in int64
    if need <= 63:
        # the whole exact sum fits one int64 (fp16, fp8): no limbs needed to add
        v = sig << shift
        s = np.where(sign == 1, -v, v).sum(axis=0)
        neg = s < 0
        s = np.abs(s)
        limbs = np.stack([s & _M32, s >> _LIMB]).astype(np.uint64)
    else:
        nl = -(-need // _LIMB) + 1
        k = shift >> 5                             # limb of the significand's low bit
        v = sig << (shift & 31)                    # < 2**55: spans limbs k and k+1
        lo32 = v & _M32
        hi32 = v >> _LIMB
        neg_c = sign == 1
        lo32 = np.where(neg_c, -lo32, lo32)
        hi32 = np.where(neg_c, -hi32, hi32)
        acc = np.zeros((nl, n), dtype=np.int64)
        flat = acc.reshape(-1)
        col = np.arange(n, dtype=np.int64)
        for i in range(m):                         # indices are distinct within one member row
            idx = k[i] * n + col
            flat[idx] += lo32[i]
            flat[idx + n] += hi32[i]
        _carry(acc)
        neg = acc[-1] < 0
        if neg.any():                              # magnitude = two's complement negation
            body = acc[:-1]
            body[:, neg] = _M32 - body[:, neg]
            acc[-1, neg] = -1 - acc[-1, neg]
            acc[0, neg] += 1
            _carry(acc)
        limbs = acc.astype(np.uint64)

    mag_bits = _round_limbs(d, limbs)            # round once, nearest even (unbounded exponent)

    # ---- special values, zero sign, overflow
    res = np.where(neg, d.sign_bit, 0).astype(np.int64) | mag_bits
    nonzero = limbs.any(axis=0)
    all_neg_zero = (bits == d.sign_bit).all(axis=0)
    res = np.where(nonzero, res, np.where(all_neg_zero, d.sign_bit, 0))
    ovf = nonzero & (mag_bits > d.max_finite)
    res = np.where(ovf, _overflow(d, neg, saturate), res)

    any_nan = nan.any(axis=0)
    pinf = (inf & (sign == 0)).any(axis=0)
    ninf = (inf & (sign == 1)).any(axis=0)
    if d.has_inf:
        res = np.where(pinf | ninf, _overflow(d, ninf, saturate), res)
    is_nan = any_nan | (pinf & ninf)
    res = np.where(is_nan, d.canonical_nan, res)
    # the overflow rule gave +-max finite (fp8, saturate on): overflow or an infinity
    saturated = (ovf | pinf | ninf) & ~is_nan & (d.name in FP8_DTYPES and saturate)
    return res.astype(d.container), saturated


def _overflow(d: DType, neg: np.ndarray, saturate: bool) -> np.ndarray:
    """Result of a sum beyond the largest finite value (an infinity included), by sign."""
    s = np.where(neg, d.sign_bit, 0).astype(np.int64)
    if d.name in FP8_DTYPES:
        if saturate:
            return s | d.max_finite
        if not d.has_inf:                           # E4M3, saturate off: NaN
            return np.full_like(s, d.canonical_nan)
    return s | d.inf_bits


def _carry(acc: np.ndarray) -> None:
    """Normalise limbs in place: rows 0..L-2 to [0, 2**32), the signed rest into the top row."""
    for j in range(acc.shape[0] - 1):
        c = acc[j] >> _LIMB                        # arithmetic shift: floor division
        acc[j] &= _M32
        acc[j + 1] += c


def _bitlen32(x: np.ndarray) -> np.ndarray:
    """Bit length of each element of a uint64 array with values < 2**32 (integer ops only)."""
    x = x.copy()
    n = np.zeros(x.shape, dtype=np.int64)
    for b in (16, 8, 4, 2, 1):
        big = (x >> np.uint64(b)) != 0
        n += np.where(big, b, 0)
        x = np.where(big, x >> np.uint64(b), x)
    return n + x.astype(np.int64)


def _round_limbs(d: DType, limbs: np.ndarray) -> np.ndarray:
    """Round the non-negative integers N (limbs (L, n), uint64 < 2**32 each; value
    N * 2**emin_sub) to the format, nearest even, unbounded exponent. Returns the magnitude's raw
    bits as int64 (greater than max_finite means overflow). N == 0 gives 0."""
    man = d.man_bits
    nl, n = limbs.shape
    col = np.arange(n)
    nz = limbs != 0
    q = (nl - 1) - np.argmax(nz[::-1], axis=0)         # highest non-zero limb (0 if N == 0)
    h = q * _LIMB + _bitlen32(limbs[q, col]) - 1        # index of N's leading one
    sh = h - man                                        # right shift that leaves man+1 bits
    exact = sh <= 0                                     # N < 2**(man+1): N is its own encoding
    # window of man+2 bits starting at bit a = sh-1: kept significand and the round bit
    a = np.where(exact, 0, sh - 1)
    qa = a >> 5
    oa = (a & 31).astype(np.uint64)
    pad = np.concatenate([limbs, np.zeros((1, n), dtype=np.uint64)])
    w = (pad[qa, col] >> oa) | (pad[qa + 1, col] << (np.uint64(_LIMB) - oa))
    w = (w & np.uint64((1 << (man + 2)) - 1)).astype(np.int64)
    below = np.logical_or.accumulate(nz, axis=0)        # below[j] = any limb <= j non-zero
    sticky = ((pad[qa, col] & ((np.uint64(1) << oa) - np.uint64(1))) != 0) | \
        np.where(qa > 0, below[np.maximum(qa - 1, 0), col], False)
    kept = w >> 1
    rnd = (w & 1) == 1
    up = rnd & (sticky | ((kept & 1) == 1))
    # exponent field = sh + 1 for kept in [2**man, 2**(man+1)); a carry out of the significand
    # on rounding up moves into the exponent field by itself
    rounded = (sh.astype(np.int64) << man) + kept + up
    return np.where(exact, limbs[0].astype(np.int64), rounded)


# ============================================================================================
# ReduceScatter
# ============================================================================================

def reduce_scatter_chunks(n_elements: int, members: int) -> list[tuple[int, int]]:
    """Chunk boundaries of a ReduceScatter: ``[(start, stop), ...]``, one per member, member i
    (i-th in ascending port order) receiving elements ``start <= e < stop`` of the result.

    Rule: ``members`` contiguous chunks of ``c = ceil(n_elements / members)`` elements in order;
    the last chunk holds what is left. When ``n_elements`` is not a multiple of ``c`` the tail is
    shorter, and when ``(members - 1) * c >= n_elements`` trailing chunks are shorter still or
    empty (e.g. 5 elements over 4 members: 2, 2, 1, 0).
    """
    n_elements = int(n_elements)
    members = int(members)
    if members < 1:
        raise ValueError("a ReduceScatter needs at least one member")
    if n_elements < 0:
        raise ValueError("n_elements must be >= 0")
    c = -(-n_elements // members)
    return [(min(i * c, n_elements), min((i + 1) * c, n_elements)) for i in range(members)]
