"""Per-lane arithmetic of the in-switch reduction engine (docs/reduction.md; brief section 4).

:class:`BeatReducer` reduces, one beat per cycle, the W-bit beats of up to ``n_inputs`` group
members into one W-bit result beat. A beat holds ``W // width`` elements of the group's element
type, little-endian lanes: element ``k`` in bits ``[k * width, (k + 1) * width)`` (byte offset
``k * width / 8``). Every element of the result equals, bit for bit, what the golden model
``models.reduction.reduce(dtype, op, <member contributions>, saturate)`` returns.

The element types and their constants (widths, exponent/fraction bits, bias, infinities,
canonical NaNs, largest finite values) come from the golden model's ``DTYPES`` table; nothing
about a format is written down twice.

Per-element units, one class per job, each parameterised by a model ``DType`` (all
combinational; :class:`BeatReducer` places the pipeline registers between them):

* :class:`IntegerLaneReducer`: wrapping sum, signed/unsigned min/max, and/or/xor.
* :class:`FloatMinMaxLane`: IEEE 754-2019 minimum/maximum (canonical NaN, -0 < +0).
* :class:`FloatDecoder`: one float to its exact magnitude in units of ``2**emin_sub`` and its
  class (NaN, infinity, -0).
* :class:`ExactAccumulator`: the exact signed sum of the members (Kulisch-style fixed point,
  adder tree) plus NaN / +inf / -inf / "every member is -0" flags.
* :class:`ExactRounder`: the exact sum rounded once to the element type, nearest even, with the
  special-value, zero-sign and overflow/saturate rules; it flags results the saturate rule
  clamped.

No float is ever added to another float.

:class:`ElementEventCounter` counts, in a result beat, the elements that are NaNs, infinities
and saturations: the per-group statistics of ``docs/telemetry.md`` section 2.1.
"""

from amaranth.hdl import C, Cat, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..models.reduction import (
    DTYPE_NAMES, DTYPES, ELEMENT_EVENTS, FLOAT_OPS, FP8_DTYPES, OPS, DType, dtype_info,
)

__all__ = [
    "ElemType", "ReduceOp", "elem_type", "reduce_op", "model_name", "accumulator_width",
    "float_class", "IntegerLaneReducer", "FloatMinMaxLane", "FloatDecoder", "ExactAccumulator",
    "ExactRounder", "BeatReducer", "ElementEventCounter", "SUPPORTED_DATA_WIDTHS", "MAX_INPUTS",
]

SUPPORTED_DATA_WIDTHS = (64, 128, 256, 512)
MAX_INPUTS = 32


# ============================================================================================
# shared enums: one definition, generated from the golden model's names
# ============================================================================================

def model_enum(name, names, doc):
    """An ``amaranth.lib.enum.Enum`` with members ``names`` valued 0, 1, ... in order and the
    narrowest unsigned shape. (The functional ``Enum(...)`` API takes no ``shape=``, and ``and``
    / ``or`` cannot be written as class attributes, hence the explicit metaclass call.)"""
    meta = type(enum.Enum)
    shape = Shape.cast(range(len(names)))
    ns = meta.__prepare__(name, (enum.Enum,), shape=shape)
    ns["__module__"] = __name__
    ns["__qualname__"] = name
    ns["__doc__"] = doc
    for value, member in enumerate(names):
        ns[member] = value
    return meta(name, (enum.Enum,), ns, shape=shape)


ElemType = model_enum("ElemType", DTYPE_NAMES, """Element type of a reduction group.

    One member per entry of ``models.reduction.DTYPES``, in that order (``int8`` = 0 ...
    ``fp8_e5m2`` = 10), named exactly as the model names it: ``ElemType["fp8_e4m3"]``,
    ``ElemType.fp32.name == "fp32"``. Shape ``unsigned(4)``.
    """)

ReduceOp = model_enum("ReduceOp", OPS, """Reduction operation.

    ``sum`` = 0, ``min`` = 1, ``max`` = 2, ``and`` = 3, ``or`` = 4, ``xor`` = 5: the model's
    ``OPS`` in order, under the model's names (``ReduceOp["and"]``; ``and``/``or`` are Python
    keywords, so use the subscript form). Shape ``unsigned(3)``.
    """)


def elem_type(name):
    """Model element-type name (or an :class:`ElemType` or model ``DType``) -> :class:`ElemType`.

    Raises ValueError naming an unknown type (the model's :func:`dtype_info` check). The
    reverse is :func:`model_name`.
    """
    if isinstance(name, ElemType):
        return name
    return ElemType[dtype_info(name).name]


def reduce_op(name):
    """Model operation name (or a :class:`ReduceOp`) -> :class:`ReduceOp`.

    Raises ValueError naming an unknown operation. The reverse is :func:`model_name`.
    """
    if isinstance(name, ReduceOp):
        return name
    try:
        return ReduceOp[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown operation {name!r}; expected one of "
                         f"{', '.join(OPS)}") from None


def model_name(member):
    """:class:`ElemType` or :class:`ReduceOp` member -> the golden model's name (a str)."""
    if not isinstance(member, (ElemType, ReduceOp)):
        raise TypeError(f"expected an ElemType or ReduceOp member, got {member!r}")
    return member.name


# ============================================================================================
# helpers
# ============================================================================================

def _clog2(n):
    return (n - 1).bit_length()


def float_class(dtype, value):
    """``(nan, inf)``: whether the raw bits ``value`` of a float type are a NaN / an infinity
    (two 1-bit Values, combinational). IEEE-like types: exponent field all ones with a non-zero
    / zero fraction; E4M3: NaN only S.1111.111, never an infinity (the model's ``_classify``)."""
    d = _float_dtype(dtype)
    v = Value.cast(value)
    if d.has_inf:
        mag = v[:d.width - 1]
        return mag > d.inf_bits, mag == d.inf_bits
    return v[:d.width - 1] == d.canonical_nan, C(0)


def _float_dtype(dtype):
    d = dtype_info(dtype)
    if not d.is_float:
        raise ValueError(f"{d.name} is not a float type")
    return d


def _int_dtype(dtype):
    d = dtype_info(dtype)
    if d.is_float:
        raise ValueError(f"{d.name} is not an integer type")
    return d


def _check_n_inputs(n_inputs, lo=1):
    if not isinstance(n_inputs, int) or isinstance(n_inputs, bool) or \
            not lo <= n_inputs <= MAX_INPUTS:
        raise ValueError(f"n_inputs must be an integer in {lo}..{MAX_INPUTS}, got {n_inputs!r}")
    return n_inputs


def accumulator_width(dtype, n_inputs):
    """Bits of the signed exact sum of ``n_inputs`` finite values of a float type, in units of
    its subnormal quantum ``2**emin_sub``: ``max_aligned_bits + ceil(log2(n_inputs)) + 1``.

    Each finite magnitude is below ``2**max_aligned_bits`` quanta, so the sum of n of them is
    below ``2**(max_aligned_bits + ceil(log2 n))``; one more bit holds the sign. For 32 inputs
    that is ``max_aligned_bits`` + 5 guard bits + sign (fp32: 283, bf16: 267, fp16: 46,
    fp8_e5m2: 38, fp8_e4m3: 24).
    """
    d = _float_dtype(dtype)
    return d.max_aligned_bits + _clog2(n_inputs) + 1


def _min_tree(m, keys, prefix):
    """Unsigned minimum of ``keys`` by a balanced tree of comparators. Returns a Value."""
    level = list(keys)
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            a, b = level[j], level[j + 1]
            s = Signal(len(a), name=f"{prefix}_l{depth}_{j // 2}")
            m.d.comb += s.eq(Mux(b < a, b, a))
            nxt.append(s)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
    return level[0]


def _fold(values, fn):
    """Balanced-tree fold of ``values`` with a binary ``fn`` (each operand used once, so no
    intermediate signals are needed)."""
    level = list(values)
    while len(level) > 1:
        nxt = [fn(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# ============================================================================================
# per-element units (combinational)
# ============================================================================================

class IntegerLaneReducer(wiring.Component):
    """One element lane of an integer reduction over the selected members (combinational).

    Parameters
    ----------
    dtype : str or DType
        A model integer type (``int8`` ... ``uint32``).
    n_inputs : int
        Number of inputs, 1..32.

    Members
    -------
    operands : In(ArrayLayout(width, n_inputs))
        Raw bits of each input's element.
    members : In(n_inputs)
        Inputs that take part. With no member set, the result is the operation's identity
        (callers flag that case; see :class:`BeatReducer`).
    op : In(ReduceOp)
        ``sum`` wraps modulo ``2**width`` (two's complement for intN); ``min``/``max`` are signed
        for intN and unsigned for uintN; ``and``/``or``/``xor`` are bitwise. Other encodings
        give 0.
    result : Out(width)
        Raw bits of the reduced element.
    """

    def __init__(self, dtype, n_inputs):
        self.dtype = _int_dtype(dtype)
        self.n_inputs = _check_n_inputs(n_inputs)
        w = self.dtype.width
        super().__init__({
            "operands": In(data.ArrayLayout(w, n_inputs)),
            "members": In(n_inputs),
            "op": In(ReduceOp),
            "result": Out(w),
        })

    def elaborate(self, platform):
        m = Module()
        d, n, w = self.dtype, self.n_inputs, self.dtype.width
        ones = (1 << w) - 1
        x = [self.operands[k] for k in range(n)]
        sel = [self.members[k] for k in range(n)]

        total = _fold([Mux(s, v, 0) for s, v in zip(sel, x)], lambda a, b: (a + b)[:w])
        band = _fold([Mux(s, v, ones) for s, v in zip(sel, x)], lambda a, b: a & b)
        bor = _fold([Mux(s, v, 0) for s, v in zip(sel, x)], lambda a, b: a | b)
        bxor = _fold([Mux(s, v, 0) for s, v in zip(sel, x)], lambda a, b: a ^ b)

        # min and max share one unsigned min tree: signed values become offset binary (flip the
        # sign bit); max is the min of the complemented keys; non-members get the identity
        # (all ones).
        offset = d.sign_bit if d.is_signed_int else 0
        is_max = Signal()
        m.d.comb += is_max.eq(self.op == ReduceOp.max)
        flip = Mux(is_max, ones, 0)
        keys = []
        for k in range(n):
            key = Signal(w, name=f"key{k}")
            m.d.comb += key.eq(Mux(sel[k], x[k] ^ offset ^ flip, ones))
            keys.append(key)
        best = _min_tree(m, keys, "minmax")
        extreme = best ^ flip ^ offset

        with m.Switch(self.op):
            with m.Case(ReduceOp.sum):
                m.d.comb += self.result.eq(total)
            with m.Case(ReduceOp.min, ReduceOp.max):
                m.d.comb += self.result.eq(extreme)
            with m.Case(ReduceOp["and"]):
                m.d.comb += self.result.eq(band)
            with m.Case(ReduceOp["or"]):
                m.d.comb += self.result.eq(bor)
            with m.Case(ReduceOp.xor):
                m.d.comb += self.result.eq(bxor)
            with m.Default():
                m.d.comb += self.result.eq(0)
        return m


class FloatMinMaxLane(wiring.Component):
    """One element lane of a float minimum or maximum (IEEE 754-2019 ``minimum`` /
    ``maximum``) over the selected members (combinational).

    Any member NaN gives the type's canonical NaN; otherwise the result is the bits of one of
    the members, in the total order -inf < ... < -0 < +0 < ... < +inf (so min(+0, -0) = -0,
    max(+0, -0) = +0). The saturate flag plays no part (docs/reduction.md, reading 2).

    Parameters
    ----------
    dtype : str or DType
        A model float type.
    n_inputs : int
        Number of inputs, 1..32.

    Members
    -------
    operands : In(ArrayLayout(width, n_inputs))
        Raw bits of each input's element.
    members : In(n_inputs)
        Inputs that take part (at least one; with none the result is unspecified).
    maximum : In(1)
        0: minimum, 1: maximum.
    result : Out(width)
        Raw bits of the result.
    """

    def __init__(self, dtype, n_inputs):
        self.dtype = _float_dtype(dtype)
        self.n_inputs = _check_n_inputs(n_inputs)
        w = self.dtype.width
        super().__init__({
            "operands": In(data.ArrayLayout(w, n_inputs)),
            "members": In(n_inputs),
            "maximum": In(1),
            "result": Out(w),
        })

    def elaborate(self, platform):
        m = Module()
        d, n, w = self.dtype, self.n_inputs, self.dtype.width
        ones = (1 << w) - 1
        flip = Mux(self.maximum, ones, 0)
        keys, nans = [], []
        for k in range(n):
            x = self.operands[k]
            sign = x[w - 1]
            nan, _ = float_class(d, x)
            nans.append(self.members[k] & nan)
            # monotone unsigned key of the total order: negatives complemented (so -0 sits
            # just below +0), positives with the sign bit set
            order = Mux(sign, ~x, x | d.sign_bit)
            key = Signal(w, name=f"key{k}")
            m.d.comb += key.eq(Mux(self.members[k], order ^ flip, ones))
            keys.append(key)
        best = Signal(w)
        m.d.comb += best.eq(_min_tree(m, keys, "minmax") ^ flip)
        value = Mux(best[w - 1], best ^ d.sign_bit, ~best)[:w]
        m.d.comb += self.result.eq(Mux(Cat(nans).any(), d.canonical_nan, value))
        return m


class FloatDecoder(wiring.Component):
    """Decode one float to its exact magnitude in units of the type's subnormal quantum
    ``2**emin_sub``, and classify it (combinational, integer operations only).

    A finite value is ``sig * 2**(shift + emin_sub)`` with ``sig = F`` (exponent field 0) or
    ``F + 2**man_bits``, ``shift = max(E, 1) - 1``; ``aligned = sig << shift``.

    Parameters
    ----------
    dtype : str or DType
        A model float type.

    Members
    -------
    value : In(width)
        Raw bits.
    sign : Out(1)
        The sign bit.
    aligned : Out(max_aligned_bits)
        Magnitude in quanta; 0 for NaN and infinities.
    nan, inf : Out(1)
        NaN (E4M3: only S.1111.111) / infinity (never for E4M3).
    neg_zero : Out(1)
        The bits are exactly -0.
    """

    def __init__(self, dtype):
        self.dtype = _float_dtype(dtype)
        super().__init__({
            "value": In(self.dtype.width),
            "sign": Out(1),
            "aligned": Out(self.dtype.max_aligned_bits),
            "nan": Out(1),
            "inf": Out(1),
            "neg_zero": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.dtype
        w, man, eb = d.width, d.man_bits, d.exp_bits
        v = self.value
        e = v[man:w - 1]
        f = v[:man]
        nan, inf = float_class(d, v)
        m.d.comb += [self.nan.eq(nan), self.inf.eq(inf)]
        finite = ~(self.nan | self.inf)
        sig = Signal(man + 1)
        shift = Signal(eb)
        m.d.comb += [
            sig.eq(Mux(finite, Cat(f, e != 0), 0)),
            shift.eq(Mux(e == 0, 0, (e - 1)[:eb])),
            self.aligned.eq((sig << shift)[:d.max_aligned_bits]),
            self.sign.eq(v[w - 1]),
            self.neg_zero.eq(v == d.sign_bit),
        ]
        return m


class ExactAccumulator(wiring.Component):
    """Exact signed sum of the selected members of one float lane (combinational).

    Each member is decoded (:class:`FloatDecoder`) to a signed integer in units of
    ``2**emin_sub`` and the integers are added by a balanced adder tree of width
    :func:`accumulator_width` (never overflows). NaNs and infinities contribute 0 to ``sum``
    and are reported in the flags instead.

    Parameters
    ----------
    dtype : str or DType
        A model float type.
    n_inputs : int
        Number of inputs, 1..32.

    Members
    -------
    operands : In(ArrayLayout(width, n_inputs))
        Raw bits of each input's element.
    members : In(n_inputs)
        Inputs that take part.
    sum : Out(signed(accumulator_width))
        Exact sum of the finite members, in quanta.
    any_nan, pos_inf, neg_inf : Out(1)
        Some member is a NaN / +inf / -inf.
    all_neg_zero : Out(1)
        Every member's bits are exactly -0 (1 when no member is selected).
    """

    def __init__(self, dtype, n_inputs):
        self.dtype = _float_dtype(dtype)
        self.n_inputs = _check_n_inputs(n_inputs)
        self.width = accumulator_width(self.dtype, n_inputs)
        super().__init__({
            "operands": In(data.ArrayLayout(self.dtype.width, n_inputs)),
            "members": In(n_inputs),
            "sum": Out(signed(self.width)),
            "any_nan": Out(1),
            "pos_inf": Out(1),
            "neg_inf": Out(1),
            "all_neg_zero": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n, aw = self.n_inputs, self.width
        terms, nan, pinf, ninf, negz = [], [], [], [], []
        for k in range(n):
            dec = m.submodules[f"decode{k}"] = FloatDecoder(self.dtype)
            sel = self.members[k]
            m.d.comb += dec.value.eq(self.operands[k])
            term = Signal(signed(aw), name=f"term{k}")
            m.d.comb += term.eq(Mux(sel, Mux(dec.sign, -dec.aligned, dec.aligned), 0))
            terms.append(term)
            nan.append(sel & dec.nan)
            pinf.append(sel & dec.inf & ~dec.sign)
            ninf.append(sel & dec.inf & dec.sign)
            negz.append(~sel | dec.neg_zero)
        # every partial sum is bounded by the full sum's bound, so truncating to aw is exact
        m.d.comb += [
            self.sum.eq(_fold(terms, lambda a, b: (a + b)[:aw].as_signed())),
            self.any_nan.eq(Cat(nan).any()),
            self.pos_inf.eq(Cat(pinf).any()),
            self.neg_inf.eq(Cat(ninf).any()),
            self.all_neg_zero.eq(Cat(negz).all()),
        ]
        return m


class ExactRounder(wiring.Component):
    """Round an exact sum once to a float type (combinational); docs/reduction.md steps 3-4.

    The magnitude is normalised by a log-depth leading-zero shifter; if it has at most
    ``man_bits + 1`` significant bits it is its own encoding (subnormal or smallest binade),
    otherwise the top ``man_bits + 1`` bits are kept and rounded to nearest even on the round
    and sticky bits; a carry out of the significand moves into the exponent field by itself.
    Rules, in increasing precedence:

    * zero sum: +0, or -0 if ``all_neg_zero``;
    * rounded magnitude above the largest finite value (overflow): +-inf for fp32/fp16/bf16;
      fp8 with ``saturate``: +-max finite; E5M2 without: +-inf; E4M3 without: canonical NaN;
    * an infinity present: +-inf by its sign, through the same overflow mapping;
    * a NaN present, or +inf with -inf: the canonical NaN.

    Parameters
    ----------
    dtype : str or DType
        A model float type.
    n_inputs : int
        Number of inputs the sum came from (sets :func:`accumulator_width`).

    Members
    -------
    sum : In(signed(accumulator_width))
        Exact sum in units of ``2**emin_sub``.
    any_nan, pos_inf, neg_inf, all_neg_zero : In(1)
        Flags from :class:`ExactAccumulator`.
    saturate : In(1)
        The group's saturate flag (used by fp8 types only).
    result : Out(width)
        Raw bits of the rounded result.
    saturated : Out(1)
        The result is +-max finite because the overflow mapping clamped it (fp8 with
        ``saturate``: the rounded sum overflowed, or an infinity was present, and the result
        is not a NaN); 0 for a sum that rounds to max finite without overflowing, and always 0
        for fp32, fp16 and bf16 (``models.reduction.reduce_with_events``, ``saturation``).
    """

    def __init__(self, dtype, n_inputs):
        self.dtype = _float_dtype(dtype)
        self.n_inputs = _check_n_inputs(n_inputs)
        self.width = accumulator_width(self.dtype, n_inputs)
        super().__init__({
            "sum": In(signed(self.width)),
            "any_nan": In(1),
            "pos_inf": In(1),
            "neg_inf": In(1),
            "all_neg_zero": In(1),
            "saturate": In(1),
            "result": Out(self.dtype.width),
            "saturated": Out(1),
        })

    def _overflow(self, negative):
        """Bits of a result beyond the largest finite value, by sign (a Value)."""
        d = self.dtype
        signed_inf = Cat(C(d.inf_bits or 0, d.width - 1), negative)
        if d.name in FP8_DTYPES:
            saturated = Cat(C(d.max_finite, d.width - 1), negative)
            unsaturated = signed_inf if d.has_inf else C(d.canonical_nan, d.width)
            return Mux(self.saturate, saturated, unsaturated)
        return signed_inf

    def elaborate(self, platform):
        m = Module()
        d = self.dtype
        w, man = d.width, d.man_bits
        mw = self.width - 1                        # magnitude bits (|sum| < 2**mw)

        negative = self.sum[-1]
        mag = Signal(mw)
        m.d.comb += mag.eq(Mux(negative, -self.sum, self.sum)[:mw])

        # normalise: shift left until the leading one is at the top of a power-of-two word
        p = 1 << _clog2(mw)
        x = Signal(p, name="norm_in")
        m.d.comb += x.eq(Cat(C(0, p - mw), mag))
        lz_bits = []
        k = p >> 1
        while k:
            z = Signal(name=f"lz{k}")
            nx = Signal(p, name=f"norm{k}")
            m.d.comb += [z.eq(x[p - k:] == 0), nx.eq(Mux(z, x.shift_left(k)[:p], x))]
            lz_bits.insert(0, z)
            x = nx
            k >>= 1
        lz = Cat(lz_bits)                          # leading zeros of mag (mag != 0)

        kept = x[p - 1 - man:]                     # man + 1 bits, leading one on top
        round_bit = x[p - 2 - man]
        sticky = x[:p - 2 - man].any()
        up = round_bit & (sticky | kept[0])
        # leading one at h = mw - 1 - lz; exact when h <= man; else shift sh = h - man
        exact = Signal()
        sh = Signal(range(mw))
        rounded = Signal(len(sh) + man + 2)
        m.d.comb += [
            exact.eq(lz >= mw - 1 - man),
            sh.eq((mw - 1 - man) - lz),
            rounded.eq((sh << man) + kept + up),
        ]
        magnitude = Mux(exact, mag[:w - 1], rounded[:w - 1])
        overflow = ~exact & (rounded > d.max_finite)
        # the overflow mapping gives +-max finite: the saturate rule clamped the result
        clamps = self.saturate if d.name in FP8_DTYPES else C(0)

        with m.If(self.any_nan | (self.pos_inf & self.neg_inf)):
            m.d.comb += self.result.eq(d.canonical_nan)
        with m.Elif(self.pos_inf | self.neg_inf):
            m.d.comb += [self.result.eq(self._overflow(self.neg_inf)), self.saturated.eq(clamps)]
        with m.Elif(mag == 0):
            m.d.comb += self.result.eq(Mux(self.all_neg_zero, d.sign_bit, 0))
        with m.Elif(overflow):
            m.d.comb += [self.result.eq(self._overflow(negative)), self.saturated.eq(clamps)]
        with m.Else():
            m.d.comb += self.result.eq(Cat(magnitude, negative))
        return m


# ============================================================================================
# the beat reducer
# ============================================================================================

class BeatReducer(wiring.Component):
    """N-input, fully pipelined reducer of W-bit beats: one beat in and one out per cycle.

    Each element lane of the result is ``models.reduction.reduce(dtype, op, [operand lane of
    each member input, in any order], saturate)``, bit for bit.

    Parameters
    ----------
    n_inputs : int
        Number of operand inputs, 2..32.
    data_width : int
        Beat width W in bits: 64, 128, 256 or 512.
    dtypes : iterable of str
        Model element-type names to build hardware for (default: all 11). A beat of a type not
        built is flagged ``bad_config``.
    tag_width : int
        Width of the ``tag`` passthrough field (default 0).

    Attributes
    ----------
    LATENCY : int
        Cycles from input transfer to output (3; also ``latency`` on instances).
    dtypes : tuple of str
        The element types built, in ``DTYPES`` order.
    i_layout, o_layout : StructLayout
        The payload layouts of ``i`` and ``o``.

    Members
    -------
    i : In(stream.Signature(i_layout))
        Payload ``operands`` (``ArrayLayout(W, n_inputs)``: the beat of each input),
        ``members`` (n_inputs-bit mask of the inputs that take part; at least one bit must be
        set), ``elem_type`` (:class:`ElemType`), ``op`` (:class:`ReduceOp`), ``saturate``
        (fp8 sums only), ``tag`` (carried through unchanged).
    o : Out(stream.Signature(o_layout))
        Payload ``result`` (W bits), ``saturated`` (W/8 bits), ``tag``, ``bad_config``.
        ``bad_config`` = 1 when the (elem_type, op) pair is not supported (and/or/xor on a
        float type, an op or type encoding outside the enums, a type not built) or
        ``members`` is 0; ``result`` and ``saturated`` are then 0. ``saturated`` bit
        ``k * width / 8`` (the element's lowest byte lane) is set when element ``k`` of a
        float sum is +-max finite because the saturate rule clamped it
        (:attr:`ExactRounder.saturated`: only fp8 sums with ``saturate``); every other bit
        is 0.

    Stream rules: ``o.valid`` never depends on ``o.ready`` (it is a register); the ``o``
    payload holds still while ``o.valid`` and not ``o.ready``. ``i.ready = ~o.valid | o.ready``:
    it depends on ``o.ready`` but never on ``i.valid``. A beat is taken when ``i.valid`` and
    ``i.ready`` are high at a clock edge.

    Latency: exactly ``LATENCY`` (3) enabled cycles from a beat's transfer on ``i`` to its
    result appearing on ``o`` (3 cycles when ``o.ready`` stays high). The whole pipeline
    advances together (enable = ``i.ready``), so with ``o.ready`` high it accepts one beat per
    cycle; while the output stalls nothing moves, and no beat is lost or duplicated. Results
    leave in input order.

    Pipeline:

    1. the beat is registered with its ``bad_config`` check (decode is wiring);
    2. integer ops and float min/max per lane (:class:`IntegerLaneReducer`,
       :class:`FloatMinMaxLane`) and, for float sums, decode/align and the exact adder tree
       (:class:`ExactAccumulator`); registered: the selected direct result and each float
       type's exact lane sums and special-value flags;
    3. rounding of the exact sums (:class:`ExactRounder`) and the output select; registered as
       the ``o`` payload.
    """

    LATENCY = 3

    def __init__(self, n_inputs, data_width, dtypes=DTYPE_NAMES, *, tag_width=0):
        _check_n_inputs(n_inputs, lo=2)
        if not isinstance(data_width, int) or isinstance(data_width, bool) or \
                data_width not in SUPPORTED_DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {SUPPORTED_DATA_WIDTHS}, "
                             f"got {data_width!r}")
        if isinstance(dtypes, (str, DType)):
            raise ValueError(f"dtypes must be an iterable of element-type names, got {dtypes!r}")
        names = []
        for name in dtypes:
            if isinstance(name, DType):
                name = name.name
            if name not in DTYPES:
                raise ValueError(f"unknown element type {name!r} in dtypes; expected names from "
                                 f"{', '.join(DTYPE_NAMES)}")
            names.append(name)
        if not names:
            raise ValueError("dtypes must name at least one element type, got none")
        if not isinstance(tag_width, int) or isinstance(tag_width, bool) or tag_width < 0:
            raise ValueError(f"tag_width must be an integer >= 0, got {tag_width!r}")

        self.n_inputs = n_inputs
        self.data_width = data_width
        self.dtypes = tuple(n for n in DTYPE_NAMES if n in names)     # model order, no repeats
        self.tag_width = tag_width
        self.latency = self.LATENCY
        self.i_layout = data.StructLayout({
            "operands": data.ArrayLayout(data_width, n_inputs),
            "members": n_inputs,
            "elem_type": ElemType,
            "op": ReduceOp,
            "saturate": 1,
            "tag": tag_width,
        })
        self.o_layout = data.StructLayout({
            "result": data_width,
            "saturated": data_width // 8,
            "tag": tag_width,
            "bad_config": 1,
        })
        super().__init__({
            "i": In(stream.Signature(self.i_layout)),
            "o": Out(stream.Signature(self.o_layout)),
        })

    def _supported(self, m, payload):
        """1 when (elem_type, op) is built and defined and at least one member is set."""
        ok = Signal()
        with m.Switch(payload.elem_type):
            for name in self.dtypes:
                ops = FLOAT_OPS if DTYPES[name].is_float else OPS
                with m.Case(ElemType[name]):
                    m.d.comb += ok.eq(Cat(payload.op == ReduceOp[o] for o in ops).any())
        return ok & payload.members.any()

    def elaborate(self, platform):
        m = Module()
        n, W = self.n_inputs, self.data_width

        en = Signal()                                  # the whole pipeline advances together
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        # ---- stage 1: register the beat and its config check
        supported = Signal()
        m.d.comb += supported.eq(self._supported(m, self.i.payload))
        s1 = Signal(self.i_layout)
        v1 = Signal()
        bad1 = Signal()
        with m.If(en):
            m.d.sync += [v1.eq(self.i.valid), s1.eq(self.i.payload), bad1.eq(~supported)]

        # ---- stage 2: integer / min-max lanes, float decode + align + exact adder tree
        direct = {}                                    # name -> W-bit Value of direct results
        sums = {}                                      # name -> list of per-lane stage-2 regs
        for name in self.dtypes:
            d = DTYPES[name]
            lanes = W // d.width
            results = []
            lane_sums = []
            for j in range(lanes):
                lo, hi = j * d.width, (j + 1) * d.width
                if d.is_float:
                    mm = m.submodules[f"{name}_minmax{j}"] = FloatMinMaxLane(d, n)
                    acc = m.submodules[f"{name}_acc{j}"] = ExactAccumulator(d, n)
                    for k in range(n):
                        m.d.comb += [mm.operands[k].eq(s1.operands[k][lo:hi]),
                                     acc.operands[k].eq(s1.operands[k][lo:hi])]
                    m.d.comb += [mm.members.eq(s1.members), acc.members.eq(s1.members),
                                 mm.maximum.eq(s1.op == ReduceOp.max)]
                    results.append(mm.result)
                    regs = {
                        "sum": Signal(signed(acc.width), name=f"{name}_sum{j}"),
                        "any_nan": Signal(name=f"{name}_nan{j}"),
                        "pos_inf": Signal(name=f"{name}_pinf{j}"),
                        "neg_inf": Signal(name=f"{name}_ninf{j}"),
                        "all_neg_zero": Signal(name=f"{name}_negz{j}"),
                    }
                    with m.If(en):
                        m.d.sync += [reg.eq(getattr(acc, field)) for field, reg in regs.items()]
                    lane_sums.append(regs)
                else:
                    lane = m.submodules[f"{name}_int{j}"] = IntegerLaneReducer(d, n)
                    for k in range(n):
                        m.d.comb += lane.operands[k].eq(s1.operands[k][lo:hi])
                    m.d.comb += [lane.members.eq(s1.members), lane.op.eq(s1.op)]
                    results.append(lane.result)
            direct[name] = Cat(results)
            if d.is_float:
                sums[name] = lane_sums

        direct1 = Signal(W)
        with m.Switch(s1.elem_type):
            for name in self.dtypes:
                with m.Case(ElemType[name]):
                    m.d.comb += direct1.eq(direct[name])

        v2 = Signal()
        bad2 = Signal()
        direct2 = Signal(W)
        elem_type2 = Signal(ElemType)
        is_sum2 = Signal()
        saturate2 = Signal()
        tag2 = Signal(self.tag_width)
        with m.If(en):
            m.d.sync += [v2.eq(v1), bad2.eq(bad1), direct2.eq(direct1),
                         elem_type2.eq(s1.elem_type), is_sum2.eq(s1.op == ReduceOp.sum),
                         saturate2.eq(s1.saturate), tag2.eq(s1.tag)]

        # ---- stage 3: round the exact sums, select, register the output
        rounded = {}
        clamped = {}                                   # name -> W/8-bit saturated flags
        for name, lane_sums in sums.items():
            results, flags = [], []
            for j, regs in enumerate(lane_sums):
                rnd = m.submodules[f"{name}_round{j}"] = ExactRounder(name, n)
                m.d.comb += [getattr(rnd, field).eq(reg) for field, reg in regs.items()]
                m.d.comb += rnd.saturate.eq(saturate2)
                results.append(rnd.result)
                flags.append(Cat(rnd.saturated, C(0, DTYPES[name].width // 8 - 1)))
            rounded[name] = Cat(results)
            clamped[name] = Cat(flags)
        float_sum = Signal(W)
        float_sat = Signal(W // 8)
        is_float = Signal()
        with m.Switch(elem_type2):
            for name in sums:
                with m.Case(ElemType[name]):
                    m.d.comb += [float_sum.eq(rounded[name]), float_sat.eq(clamped[name]),
                                 is_float.eq(1)]

        use_sum = is_float & is_sum2 & ~bad2
        with m.If(en):
            m.d.sync += [
                self.o.valid.eq(v2),
                self.o.payload.result.eq(Mux(bad2, 0, Mux(use_sum, float_sum, direct2))),
                self.o.payload.saturated.eq(Mux(use_sum, float_sat, 0)),
                self.o.payload.tag.eq(tag2),
                self.o.payload.bad_config.eq(bad2),
            ]
        return m


# ============================================================================================
# statistics of result beats
# ============================================================================================

class ElementEventCounter(wiring.Component):
    """Counts, in one result beat, the elements that are NaNs, infinities and saturations: the
    per-group element statistics (``docs/telemetry.md`` section 2.1;
    ``models.reduction.reduce_with_events``). A 2-stage pipeline without backpressure: one
    beat per cycle in, its counts exactly :attr:`LATENCY` (2) cycles later.

    An element counts when the ``keep`` bit of its lowest byte lane is set (elements never
    straddle the ``keep`` boundary of a result: operations are whole DWs). NaN and infinity
    are classified from the element's bits by the beat's element type (:func:`float_class`;
    integer types never count); saturation is the reducer's flag
    (:attr:`BeatReducer` ``o.saturated``), which only an fp8 sum sets.

    Parameters
    ----------
    data_width : int
        Beat width W in bits: 64, 128, 256 or 512.
    dtypes : iterable of str
        Element types whose NaN / infinity encodings are classified (default: all 11); a beat
        of another type counts none.
    tag_width : int
        Width of the ``tag`` passthrough (the engine carries the group number in it).

    Attributes
    ----------
    LATENCY : int
        Cycles from ``i`` to ``o`` (2).
    max_count : int
        Largest count of one beat: W/8 (every element of an 8-bit type).

    Members
    -------
    i : In(i_layout)
        ``valid`` (count this beat), ``data`` (W bits of elements, little-endian lanes),
        ``keep`` (W/8 byte enables, as on the result stream), ``elem_type``
        (:class:`ElemType`), ``saturated`` (W/8 flags, as ``BeatReducer`` ``o.saturated``),
        ``tag``.
    o : Out(o_layout)
        For each name of ``models.reduction.ELEMENT_EVENTS`` (``nan``, ``infinity``,
        ``saturation``) a ``{valid, amount}``: ``amount`` (0..W/8) elements of the beat had
        the event, ``valid`` = ``amount != 0``; and the beat's ``tag``. All registered; every
        ``valid`` is 0 in the cycles without a counted beat.
    """

    LATENCY = 2

    def __init__(self, data_width, dtypes=DTYPE_NAMES, *, tag_width=0):
        if not isinstance(data_width, int) or isinstance(data_width, bool) or \
                data_width not in SUPPORTED_DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {SUPPORTED_DATA_WIDTHS}, "
                             f"got {data_width!r}")
        if not isinstance(tag_width, int) or isinstance(tag_width, bool) or tag_width < 0:
            raise ValueError(f"tag_width must be an integer >= 0, got {tag_width!r}")
        if isinstance(dtypes, (str, DType)):
            raise ValueError(f"dtypes must be an iterable of element-type names, got {dtypes!r}")
        names = {dtype_info(name).name for name in dtypes}
        self.data_width = data_width
        self.dtypes = tuple(n for n in DTYPE_NAMES if n in names)
        self.tag_width = tag_width
        self.max_count = data_width // 8
        count = data.StructLayout({"valid": 1, "amount": range(self.max_count + 1)})
        self.i_layout = data.StructLayout({
            "valid": 1,
            "data": data_width,
            "keep": data_width // 8,
            "elem_type": ElemType,
            "saturated": data_width // 8,
            "tag": tag_width,
        })
        self.o_layout = data.StructLayout({**{name: count for name in ELEMENT_EVENTS},
                                           "tag": tag_width})
        super().__init__({"i": In(self.i_layout), "o": Out(self.o_layout)})

    def elaborate(self, platform):
        m = Module()
        W, L = self.data_width, self.max_count
        i = self.i

        # ---- stage 1: classify every element by the beat's type; flags at the element's
        # lowest byte lane, masked by keep
        nan = Signal(L)
        inf = Signal(L)
        with m.Switch(i.elem_type):
            for name in self.dtypes:
                d = DTYPES[name]
                if not d.is_float:
                    continue
                step = d.width // 8
                nan_bits, inf_bits = [], []
                for k in range(W // d.width):
                    is_nan, is_inf = float_class(d, i.data[k * d.width:(k + 1) * d.width])
                    nan_bits.append(Cat(is_nan, C(0, step - 1)))
                    inf_bits.append(Cat(is_inf, C(0, step - 1)))
                with m.Case(ElemType[name]):
                    m.d.comb += [nan.eq(Cat(nan_bits)), inf.eq(Cat(inf_bits))]
        counted = Mux(i.valid, i.keep, 0)
        flags = {name: Signal(L, name=f"{name}_flags") for name in ELEMENT_EVENTS}
        tag1 = Signal(self.tag_width)
        m.d.sync += [flags["nan"].eq(nan & counted), flags["infinity"].eq(inf & counted),
                     flags["saturation"].eq(i.saturated & counted), tag1.eq(i.tag)]

        # ---- stage 2: population counts (adder trees)
        for name, vec in flags.items():
            m.d.sync += [self.o[name].valid.eq(vec.any()),
                         self.o[name].amount.eq(_fold(list(vec), lambda a, b: a + b))]
        m.d.sync += self.o.tag.eq(tag1)
        return m
