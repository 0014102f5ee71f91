"""TLP construction helpers for tests and benches (pure Python).

These helpers build the *sideband* representation the switch uses (``docs/protocol.md``,
section 1): the 128-bit ``hdr`` integer (header DW *k* at ``hdr[32k+31:32k]``), the 32-bit
``pfx`` and the payload beats. They are written from the PCIe header layout and the field
tables of :mod:`smartfabric.models.formats`, independently of cocotbext-pcie, and convert
to/from the standard big-endian byte encoding so that a TLP packed by any standard encoder can
be turned into a sideband header (:func:`hdr_from_bytes`, :func:`tlp_from_bytes`).

Header builders return the ``hdr`` integer. Common keyword arguments:

``tc``      traffic class (DW0[22:20]).
``attr``    3-bit attribute: bits 1:0 go to DW0[13:12], bit 2 to DW0[18].
``tag``     10-bit tag: bits 7:0 go to DW1/DW2 (requests/completions), bit 8 to DW0[19],
            bit 9 to DW0[23].
``td``      TD bit (ECRC present); the framing helper then appends an ECRC DW.
``ep``      EP bit (poisoned).
``length``  DW count written into DW0[9:0]; 1024 is written as 0 (values are taken modulo 1024,
            so ``length=1024`` and ``length=0`` both produce the field value 0).
"""

from __future__ import annotations

import zlib
from typing import Iterable, Sequence

from .formats import (
    CPL_DW1, CPL_DW2, DW0, MSG_DW1, REQ_DW1, CplStatus, Fmt, MsgRouting, Type, field_get,
    field_put, payload_beats, keep_for_beat,
)

__all__ = [
    "dw0", "hdr_pack", "hdr_dws", "hdr_dw", "hdr_from_bytes", "hdr_to_bytes",
    "header_ndw", "has_data", "length_dw", "payload_bytes_of",
    "mem_hdr", "mrd_hdr", "mwr_hdr", "cpl_hdr", "cpld_hdr",
    "msg_hdr", "msg_to_root_hdr", "msg_gather_hdr", "msg_by_addr_hdr", "msg_by_id_hdr",
    "msg_broadcast_hdr", "msg_local_hdr", "raw_hdr", "prefix_dw", "rewrite_address",
    "packet_beats", "tlp_to_bytes", "tlp_from_bytes", "split_beats_payload",
]

_MASK32 = 0xFFFF_FFFF


# --------------------------------------------------------------------------------------------
# sideband <-> DW list <-> bytes
# --------------------------------------------------------------------------------------------

def hdr_pack(dws: Sequence[int]) -> int:
    """Pack up to four header DWs (DW0 first) into the 128-bit sideband integer.

    Parameters
    ----------
    dws : sequence of int
        Header DW values, each the big-endian 32-bit value of 4 header bytes.

    Returns
    -------
    int
        ``sum(dws[k] << 32k)``; missing DWs are zero.
    """
    if len(dws) > 4:
        raise ValueError(f"a header has at most 4 DWs, got {len(dws)}")
    hdr = 0
    for k, dw in enumerate(dws):
        if not 0 <= dw <= _MASK32:
            raise ValueError(f"header DW{k} = {dw:#x} does not fit 32 bits")
        hdr |= dw << (32 * k)
    return hdr


def hdr_dw(hdr: int, k: int) -> int:
    """Header DW ``k`` (0..3) of the sideband integer."""
    return (hdr >> (32 * k)) & _MASK32


def hdr_dws(hdr: int, ndw: int = 4) -> list[int]:
    """The first ``ndw`` header DWs of the sideband integer, DW0 first."""
    return [hdr_dw(hdr, k) for k in range(ndw)]


def header_ndw(hdr_or_dw0: int) -> int:
    """Header size in DWs (3 or 4) implied by Fmt bit 0 of DW0 (``hdr`` or a bare DW0)."""
    return 4 if field_get(hdr_or_dw0 & _MASK32, DW0, "fmt") & 1 else 3


def hdr_from_bytes(b: bytes, ndw: int | None = None) -> int:
    """Standard big-endian header bytes -> sideband ``hdr`` integer.

    Parameters
    ----------
    b : bytes
        The TLP starting at header byte 0 (no prefix). Bytes beyond the header (payload) are
        ignored, so ``hdr_from_bytes(tlp.pack())`` works for a full packed TLP.
    ndw : int, optional
        Number of header DWs to take. Default: 3 or 4 according to Fmt bit 0 of byte 0.

    Returns
    -------
    int
        The 128-bit sideband value; ``hdr[127:96]`` is 0 for a 3-DW header.
    """
    b = bytes(b)
    if len(b) < 4:
        raise ValueError("need at least the 4 bytes of DW0")
    if ndw is None:
        ndw = header_ndw(int.from_bytes(b[0:4], "big"))
    if not 1 <= ndw <= 4 or len(b) < 4 * ndw:
        raise ValueError(f"need {4 * ndw} header bytes, got {len(b)}")
    return hdr_pack([int.from_bytes(b[4 * k:4 * k + 4], "big") for k in range(ndw)])


def hdr_to_bytes(hdr: int, ndw: int | None = None) -> bytes:
    """Sideband ``hdr`` integer -> standard big-endian header bytes (``4*ndw`` bytes).

    ``ndw`` defaults to the size implied by Fmt (3 or 4).
    """
    if ndw is None:
        ndw = header_ndw(hdr)
    return b"".join(dw.to_bytes(4, "big") for dw in hdr_dws(hdr, ndw))


# --------------------------------------------------------------------------------------------
# DW0 and size helpers
# --------------------------------------------------------------------------------------------

def dw0(fmt: int, type_: int, *, length: int = 0, tc: int = 0, attr: int = 0, tag: int = 0,
        td: bool = False, ep: bool = False, th: bool = False, ln: bool = False,
        at: int = 0) -> int:
    """Build header DW0. ``tag`` contributes only its bits 9:8; ``attr`` all three bits."""
    v = 0
    v = field_put(v, DW0, "fmt", fmt)
    v = field_put(v, DW0, "type", type_)
    v = field_put(v, DW0, "tc", tc)
    v = field_put(v, DW0, "tag9", (tag >> 9) & 1)
    v = field_put(v, DW0, "tag8", (tag >> 8) & 1)
    v = field_put(v, DW0, "attr2", (attr >> 2) & 1)
    v = field_put(v, DW0, "ln", int(ln))
    v = field_put(v, DW0, "th", int(th))
    v = field_put(v, DW0, "td", int(td))
    v = field_put(v, DW0, "ep", int(ep))
    v = field_put(v, DW0, "attr", attr & 3)
    v = field_put(v, DW0, "at", at)
    v = field_put(v, DW0, "length", length & 0x3FF)
    return v


def has_data(hdr: int) -> bool:
    """True when Fmt bit 1 (payload present) is set."""
    return bool(field_get(hdr & _MASK32, DW0, "fmt") & 0b10)


def length_dw(hdr: int) -> int:
    """Payload DWs per the Length field, with 0 meaning 1024 (meaningful only with data)."""
    n = field_get(hdr & _MASK32, DW0, "length")
    return n if n else 1024


def payload_bytes_of(hdr: int) -> int:
    """Payload bytes ``B`` of docs/protocol.md section 1: ``4*length`` if Fmt has data, +4 if TD."""
    d0 = hdr & _MASK32
    b = 4 * length_dw(d0) if has_data(d0) else 0
    return b + (4 if field_get(d0, DW0, "td") else 0)


def _req_dw1(requester_id: int, tag: int, first_be: int, last_be: int) -> int:
    v = field_put(0, REQ_DW1, "requester_id", requester_id)
    v = field_put(v, REQ_DW1, "tag", tag & 0xFF)
    v = field_put(v, REQ_DW1, "last_be", last_be)
    return field_put(v, REQ_DW1, "first_be", first_be)


def _addr_dws(addr: int, four_dw: bool) -> list[int]:
    if four_dw:
        return [(addr >> 32) & _MASK32, addr & 0xFFFF_FFFC]
    return [addr & 0xFFFF_FFFC]


# --------------------------------------------------------------------------------------------
# requests, completions, messages
# --------------------------------------------------------------------------------------------

def mem_hdr(addr: int, length: int = 1, *, write: bool = False, requester_id: int = 0,
            tag: int = 0, first_be: int = 0xF, last_be: int | None = None, tc: int = 0,
            attr: int = 0, td: bool = False, ep: bool = False, th: bool = False,
            at: int = 0, ph: int = 0, force_4dw: bool = False, type_: int = Type.MEM) -> int:
    """Memory request header (MRd / MWr; also MRdLk or AtomicOps with ``type_``).

    A 3-DW header is used when ``addr < 2**32`` and ``force_4dw`` is false, else a 4-DW header
    (DW2 = address[63:32], DW3 = address[31:2] << 2). ``ph`` fills the low two address bits.
    ``last_be`` defaults to 0 for a 1-DW request, else 0xF.
    """
    if not 0 <= addr < 1 << 64:
        raise ValueError(f"address {addr:#x} out of 64-bit range")
    four = force_4dw or addr >= 1 << 32
    fmt = (Fmt.DW4 if four else Fmt.DW3) | (0b10 if write else 0)
    if last_be is None:
        last_be = 0 if length == 1 else 0xF
    dws = [dw0(fmt, type_, length=length, tc=tc, attr=attr, tag=tag, td=td, ep=ep, th=th, at=at),
           _req_dw1(requester_id, tag, first_be, last_be)]
    a = _addr_dws(addr, four)
    a[-1] |= ph & 3
    return hdr_pack(dws + a)


def mrd_hdr(addr: int, length: int = 1, **kw) -> int:
    """Memory Read header (see :func:`mem_hdr`)."""
    return mem_hdr(addr, length, write=False, **kw)


def mwr_hdr(addr: int, length: int = 1, **kw) -> int:
    """Memory Write header (see :func:`mem_hdr`)."""
    return mem_hdr(addr, length, write=True, **kw)


def cpl_hdr(requester_id: int, tag: int = 0, *, completer_id: int = 0,
            status: int = CplStatus.SC, length: int | None = None, byte_count: int | None = None,
            lower_address: int = 0, bcm: bool = False, tc: int = 0, attr: int = 0,
            td: bool = False, ep: bool = False, locked: bool = False) -> int:
    """Completion header: Cpl when ``length`` is None, else CplD with ``length`` DWs.

    ``byte_count`` defaults to ``4*length`` (CplD) or 4 (Cpl). ``locked`` gives CplLk/CplDLk.
    The routing bus the switch uses is ``requester_id >> 8`` (DW2[31:24]).
    """
    data = length is not None
    fmt = Fmt.DW3_DATA if data else Fmt.DW3
    if byte_count is None:
        byte_count = (4 * (length or 1024)) & 0xFFF if data else 4
    d1 = field_put(0, CPL_DW1, "completer_id", completer_id)
    d1 = field_put(d1, CPL_DW1, "status", status)
    d1 = field_put(d1, CPL_DW1, "bcm", int(bcm))
    d1 = field_put(d1, CPL_DW1, "byte_count", byte_count & 0xFFF)
    d2 = field_put(0, CPL_DW2, "requester_id", requester_id)
    d2 = field_put(d2, CPL_DW2, "tag", tag & 0xFF)
    d2 = field_put(d2, CPL_DW2, "lower_address", lower_address)
    t = Type.CPL_LOCKED if locked else Type.CPL
    return hdr_pack([dw0(fmt, t, length=length or 0, tc=tc, attr=attr, tag=tag, td=td, ep=ep),
                     d1, d2])


def cpld_hdr(requester_id: int, tag: int = 0, length: int = 1, **kw) -> int:
    """Completion-with-data header (see :func:`cpl_hdr`)."""
    return cpl_hdr(requester_id, tag, length=length, **kw)


def msg_hdr(routing: int, code: int = 0x7F, *, length: int | None = None, requester_id: int = 0,
            tag: int = 0, address: int | None = None, target_id: int | None = None,
            dw2: int = 0, dw3: int = 0, tc: int = 0, attr: int = 0, td: bool = False,
            ep: bool = False) -> int:
    """Message header (always 4 DW): Msg when ``length`` is None, else MsgD with ``length`` DWs.

    Parameters
    ----------
    routing : MsgRouting
        Routing subfield r[2:0]; the type is ``0b10rrr``.
    code : int
        Message code (DW1[7:0]); default 0x7F (vendor-defined type 1).
    address : int, optional
        For by-address messages: DW2 = address[63:32], DW3 = address[31:2] << 2.
    target_id : int, optional
        For ID-routed messages: DW2[31:16]; the switch routes on its bus (DW2[31:24]).
    dw2, dw3 : int
        Raw values for DW2/DW3 when neither ``address`` nor ``target_id`` is given (or to OR in).
    """
    data = length is not None
    fmt = Fmt.DW4_DATA if data else Fmt.DW4
    d1 = field_put(0, MSG_DW1, "requester_id", requester_id)
    d1 = field_put(d1, MSG_DW1, "tag", tag & 0xFF)
    d1 = field_put(d1, MSG_DW1, "code", code)
    if address is not None:
        a2, a3 = _addr_dws(address, True)
        dw2 |= a2
        dw3 |= a3
    if target_id is not None:
        dw2 = (dw2 & 0xFFFF) | ((target_id & 0xFFFF) << 16)
    return hdr_pack([dw0(fmt, Type.MSG | routing, length=length or 0, tc=tc, attr=attr, tag=tag,
                         td=td, ep=ep), d1, dw2, dw3])


def msg_to_root_hdr(**kw) -> int:
    """Message routed to the root complex (type 10000)."""
    return msg_hdr(MsgRouting.TO_ROOT, **kw)


def msg_gather_hdr(**kw) -> int:
    """Gathered-and-routed-to-root message (type 10101)."""
    return msg_hdr(MsgRouting.GATHER, **kw)


def msg_by_addr_hdr(address: int, **kw) -> int:
    """Message routed by address (type 10001), address in DW2:DW3."""
    return msg_hdr(MsgRouting.BY_ADDRESS, address=address, **kw)


def msg_by_id_hdr(target_id: int, **kw) -> int:
    """Message routed by ID (type 10010), target ID in DW2[31:16]."""
    return msg_hdr(MsgRouting.BY_ID, target_id=target_id, **kw)


def msg_broadcast_hdr(**kw) -> int:
    """Broadcast-from-root message (type 10011)."""
    return msg_hdr(MsgRouting.BROADCAST, **kw)


def msg_local_hdr(**kw) -> int:
    """Local-terminate message (type 10100)."""
    return msg_hdr(MsgRouting.LOCAL, **kw)


def raw_hdr(fmt: int, type_: int, *, length: int = 0, dw1: int = 0, dw2: int = 0, dw3: int = 0,
            **dw0_fields) -> int:
    """Arbitrary header: any Fmt/Type (legal or not), raw DW1..DW3, DW0 fields by keyword
    (``tc``, ``attr``, ``tag``, ``td``, ``ep``, ``th``, ``ln``, ``at``; see :func:`dw0`)."""
    return hdr_pack([dw0(fmt, type_, length=length, **dw0_fields), dw1, dw2, dw3])


def prefix_dw(type_: int = 0b01110, body: int = 0, fmt: int = Fmt.PREFIX) -> int:
    """A TLP prefix DW; default a vendor-defined local prefix (Fmt 100, type 01110)."""
    return ((fmt & 7) << 29) | ((type_ & 0x1F) << 24) | (body & 0xFF_FFFF)


def rewrite_address(hdr: int, new_address: int) -> int:
    """Write a new address into a memory request header (docs/protocol.md section 8.4).

    The result has a 3-DW header when ``new_address < 2**32`` (DW2 = ``new_address[31:2]``,
    ``hdr[127:96] = 0``), else a 4-DW header (DW2 = ``new_address[63:32]``, DW3 =
    ``new_address[31:2]``). The low two bits of the new address DW are those of the original
    header's address DW (DW2 of a 3-DW header, DW3 of a 4-DW one); ``new_address``'s own low
    two bits are ignored. Fmt bit 0 (header size) follows the new size and Fmt bit 1 (data) is
    kept, so an MWr becomes Fmt 010 or 011 as section 8.4 says. Every other bit of DW0, and
    DW1, is copied.

    Parameters
    ----------
    hdr : int
        128-bit sideband header of the original (3- or 4-DW) request.
    new_address : int
        The 64-bit address A'.

    Returns
    -------
    int
        The rewritten 128-bit sideband header.
    """
    if not 0 <= new_address < 1 << 64:
        raise ValueError(f"address {new_address:#x} out of 64-bit range")
    d0 = hdr_dw(hdr, 0)
    fmt = field_get(d0, DW0, "fmt")
    low_bits = hdr_dw(hdr, 3 if fmt & 1 else 2) & 3
    four = new_address >= 1 << 32
    d0 = field_put(d0, DW0, "fmt", (fmt & 0b10) | (Fmt.DW4 if four else Fmt.DW3))
    a = _addr_dws(new_address, four)
    a[-1] |= low_bits
    return hdr_pack([d0, hdr_dw(hdr, 1)] + a)


# --------------------------------------------------------------------------------------------
# framing
# --------------------------------------------------------------------------------------------

def packet_beats(hdr: int, pfx: int, payload: bytes, data_width: int, td: bool | None = None,
                 ecrc: int | None = None):
    """Frame a TLP into beats per docs/protocol.md section 1.

    Parameters
    ----------
    hdr, pfx : int
        Sideband header and prefix; both are put on the first beat only (0 on later beats).
    payload : bytes
        Data bytes in TLP order (for a legal TLP, ``4*length`` bytes when Fmt has data, else
        empty). Not checked against the header, so mis-framed packets can be built on purpose.
    data_width : int
        W, bits per beat.
    td : bool, optional
        Append an ECRC DW after the payload. Default: the header's TD bit.
    ecrc : int, optional
        The ECRC DW value (big-endian on the wire). Default: a CRC-32 of header and payload
        bytes (a placeholder, not the spec's ECRC; the switch does not check it).

    Returns
    -------
    list of Beat
        ``E = max(1, ceil(B/L))`` beats; full ``keep`` on all but the last, the low
        ``B - (E-1)L`` bits on the last, ``keep == 0`` and ``data == 0`` when ``B == 0``.
    """
    from .switch_model import Beat  # local import: switch_model imports this module

    if td is None:
        td = bool(field_get(hdr & _MASK32, DW0, "td"))
    body = bytes(payload)
    if td:
        if ecrc is None:
            ecrc = zlib.crc32(hdr_to_bytes(hdr) + body) & _MASK32
        body += ecrc.to_bytes(4, "big")
    lanes = data_width // 8
    n = payload_beats(len(body), data_width)
    beats = []
    for k in range(n):
        chunk = body[k * lanes:(k + 1) * lanes]
        keep = keep_for_beat(len(body), data_width, k)
        beats.append(Beat(data=int.from_bytes(chunk, "little"), keep=keep, first=(k == 0),
                          last=(k == n - 1), hdr=hdr if k == 0 else 0,
                          pfx=pfx if k == 0 else 0))
    return beats


def split_beats_payload(beats: Iterable, data_width: int) -> bytes:
    """Concatenate the ``keep``-valid bytes of ``beats`` (inverse of :func:`packet_beats`;
    includes the ECRC DW when present). ``keep`` must be contiguous from lane 0."""
    lanes = data_width // 8
    out = bytearray()
    for b in beats:
        n = bin(b.keep).count("1")
        if b.keep != (1 << n) - 1:
            raise ValueError(f"keep {b.keep:#x} not contiguous from lane 0")
        out += b.data.to_bytes(lanes, "little")[:n]
    return bytes(out)


def tlp_to_bytes(hdr: int, pfx: int = 0, payload: bytes = b"") -> bytes:
    """Standard byte encoding: prefix DW (if ``pfx``), header (3/4 DW per Fmt), payload."""
    out = pfx.to_bytes(4, "big") if pfx else b""
    return out + hdr_to_bytes(hdr) + bytes(payload)


def tlp_from_bytes(b: bytes) -> tuple[int, int, bytes]:
    """Standard byte encoding -> ``(hdr, pfx, payload)``.

    Leading DWs with Fmt 0b100 are prefixes; the sideband carries one, so at most one prefix
    is accepted. The payload is every byte after the header (including an ECRC DW if present).
    """
    b = bytes(b)
    pfx = 0
    if len(b) >= 4 and (b[0] >> 5) == Fmt.PREFIX:
        pfx = int.from_bytes(b[0:4], "big")
        b = b[4:]
        if len(b) >= 4 and (b[0] >> 5) == Fmt.PREFIX:
            raise ValueError("more than one TLP prefix; the sideband carries one")
    hdr = hdr_from_bytes(b)
    return hdr, pfx, b[4 * header_ndw(hdr):]
