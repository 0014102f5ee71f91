"""Amaranth views of the wire formats defined in :mod:`smartfabric.models.formats`.

Nothing here redefines a bit position: layouts and field slices are built from the tables in
``models/formats.py`` so RTL, model and benches read the same definition.
"""

from amaranth.hdl import Value, Cat, Mux, C
from amaranth.lib import data

from ..models import formats as F

__all__ = ["beat_layout", "hdr_dw", "hdr_field", "with_address", "IngressBeat", "EgressBeat"]


def beat_layout(data_width, *, egress=False):
    """Struct layout of one stream beat (``data``, ``keep``, ``first``, ``last``, ``hdr``,
    ``pfx`` and, on the egress, ``err``)."""
    fields = dict(F.BEAT_FIELDS(data_width))
    if egress:
        fields["err"] = 1
    return data.StructLayout(fields)


def IngressBeat(data_width):
    return beat_layout(data_width)


def EgressBeat(data_width):
    return beat_layout(data_width, egress=True)


def hdr_dw(hdr, k):
    """Header DW ``k`` (the PCIe big-endian DW value) of a 128-bit sideband value."""
    return Value.cast(hdr)[32 * k:32 * k + 32]


def hdr_field(dw, table, name):
    """Field ``name`` of a header DW, positions from a ``models.formats`` table."""
    lsb, width = table[name]
    return Value.cast(dw)[lsb:lsb + width]


def hdr_address(hdr):
    """64-bit target address of a memory request or address-routed message header (3-DW
    headers: upper half zero; the two low bits are reserved and read as zero)."""
    dw0, dw2, dw3 = hdr_dw(hdr, 0), hdr_dw(hdr, 2), hdr_dw(hdr, 3)
    is_4dw = hdr_field(dw0, F.DW0, "fmt")[0]
    return Mux(is_4dw, Cat(C(0, 2), dw3[2:], dw2), Cat(C(0, 2), dw2[2:], C(0, 32)))


def with_address(hdr, address):
    """A memory request header ``hdr`` readdressed to the 64-bit ``address``
    (``docs/protocol.md`` section 8.4): a 3-DW header when ``address < 2**32``, else a 4-DW
    one; the original address DW's bits 1:0 and every other field are kept, Fmt's header-size
    bit follows the address."""
    hdr, address = Value.cast(hdr), Value.cast(address)
    dw0, dw1, dw2, dw3 = (hdr_dw(hdr, k) for k in range(4))
    fmt_lsb, _ = F.DW0["fmt"]
    was_4dw = dw0[fmt_lsb]
    low_bits = Mux(was_4dw, dw3[:2], dw2[:2])
    is_4dw = address[32:] != 0
    new_dw0 = Cat(dw0[:fmt_lsb], is_4dw, dw0[fmt_lsb + 1:])
    address_dw = Cat(low_bits, address[2:32])
    return Cat(new_dw0, dw1, Mux(is_4dw, address[32:], address_dw),
               Mux(is_4dw, address_dw, 0))
