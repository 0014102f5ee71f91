"""Small combinational helpers on bit vectors, shared by the blocks: the lowest set bit, a
one-hot selection, a population count."""

from amaranth.hdl import Cat, C, Mux

__all__ = ["first_one_hot", "first_index", "one_hot_select", "popcount"]


def first_one_hot(bits):
    """One-hot of the lowest-numbered set bit of ``bits`` (a list of 1-bit values), as a list;
    all 0 when none is set."""
    return [b & ~Cat(bits[:k]).any() if k else b for k, b in enumerate(bits)]


def first_index(bits):
    """The index of the lowest-numbered set bit of ``bits`` (a list of 1-bit values), 0 when
    none is set: an OR of :func:`first_one_hot` per index bit, not a priority chain."""
    one_hot = first_one_hot(bits)
    width = (len(bits) - 1).bit_length()
    return Cat(Cat(b for k, b in enumerate(one_hot) if k >> j & 1).any() for j in range(width))


def one_hot_select(select, values):
    """``values[k]`` for the one bit ``k`` set in ``select`` (0 when none is): an AND-OR, so
    its depth grows with log2 of the entries, not with their number as a priority chain's,
    and it maps to fewer LUTs."""
    terms = [Mux(select[k], v, 0) for k, v in enumerate(values)]
    acc = terms[0]
    for t in terms[1:]:
        acc = acc | t
    return acc


def popcount(v):
    """The number of set bits of ``v`` (at most 64), 7 bits wide."""
    total = C(0, 7)
    for bit in v:
        total = total + bit
    return total[:7]
