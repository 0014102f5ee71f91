"""Amaranth views of the wire formats defined in :mod:`smartfabric.models.formats`.

Nothing here redefines a bit position: layouts and field slices are built from the tables in
``models/formats.py`` so RTL, model and benches read the same definition.
"""

from amaranth.hdl import Value
from amaranth.lib import data

from ..models import formats as F

__all__ = ["beat_layout", "hdr_dw", "hdr_field", "IngressBeat", "EgressBeat"]


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
