"""The capture-dump decoder (verif/capture.py) and the telemetry format tables
(models/capture_format.py) on handmade entries; no simulator."""

import subprocess
import sys

import pytest

from smartfabric.models import capture_format as CF
from smartfabric.models import tlp_build as tb
from smartfabric.models.capture_format import CaptureKind, capture_filter, capture_key_of
from smartfabric.models.formats import DropReason, SfKind, inc_prefix, sf_prefix
from smartfabric.verif.capture import (
    bdf, decode_capture, decode_entry, format_capture_table, prefix_text, reason_name,
    ring_order,
)


def entry(ts, port, kind, reason, hdr, pfx=0, trig=0, gap=0):
    return {"timestamp": ts, "port": port, "kind": int(kind), "reason": int(reason),
            "hdr": hdr, "pfx": pfx, "trig": trig, "gap": gap}


ENTRIES = [
    entry(100, 0, CaptureKind.INGRESS, 0, tb.mwr_hdr(0x8000_1000, 16, requester_id=0x0100, tag=5),
          pfx=sf_prefix(SfKind.HC_SET, mask=0b1011)),
    entry(103, 2, CaptureKind.EGRESS, 0,
          tb.mwr_hdr(0x1_2345_6780, 2, requester_id=0x0300, tag=0x123),
          pfx=sf_prefix(SfKind.HC_GROUP, group=42, xs=True)),
    entry(103, 1, CaptureKind.DROP, DropReason.NO_ROUTE,
          tb.mrd_hdr(0xC000_0000, 8, requester_id=0x0208, tag=0x7F)),
    entry(110, 3, CaptureKind.EGRESS, 0, tb.cpld_hdr(0x0100, 5, 4, completer_id=0x0400)),
    entry(111, 3, CaptureKind.UR, 0, tb.cpl_hdr(0x0101, 6, status=1, completer_id=0x0000),
          trig=1),
    entry(0xFFFF_FFF0, 1, CaptureKind.INC_REJECT, DropReason.INC_MISMATCH,
          tb.mwr_hdr(0x9000_0000, 4, requester_id=0x0200), pfx=inc_prefix(3, "fp32", "sum"),
          gap=1),
    entry(5, 0, CaptureKind.CONSUMED, DropReason.MSG_LOCAL, tb.msg_local_hdr()),
    entry(6, 0, CaptureKind.EGRESS, 0, tb.msg_by_id_hdr(0x0500)),
    entry(7, 4, CaptureKind.CUT, 31, tb.raw_hdr(0b111, 0b11111), pfx=0x7E00_0001),
]


def pack_entry(e):
    return CF.pack(CF.CAPTURE_ENTRY, e)


def words_of(value):
    return [(value >> (32 * k)) & 0xFFFF_FFFF for k in range(CF.ENTRY_WORDS)]


def test_table_layout_is_word_aligned():
    """The entry is 7 words: timestamp, meta, hdr DW0..DW3, pfx; the key's word 5 uses the
    meta word's positions; fields never overlap."""
    e, k = CF.CAPTURE_ENTRY, CF.CAPTURE_KEY
    assert e["timestamp"] == (0, 32) and e["hdr"] == (64, 128) and e["pfx"] == (192, 32)
    for name in ("reason", "kind", "port"):
        assert k[name][0] - 160 == e[name][0] - 32 and k[name][1] == e[name][1]
    for table, size in ((e, CF.ENTRY_BITS), (k, CF.KEY_BITS), (CF.LINK_STATUS, 32)):
        used = 0
        for lsb, width in table.values():
            bits = ((1 << width) - 1) << lsb
            assert used & bits == 0 and lsb + width <= size
            used |= bits


def test_dict_int_and_words_decode_alike():
    as_dicts = decode_capture(ENTRIES)
    as_ints = decode_capture([pack_entry(e) for e in ENTRIES])
    as_words = decode_capture([words_of(pack_entry(e)) for e in ENTRIES])
    assert as_dicts == as_ints == as_words
    assert [r.index for r in decode_capture(ENTRIES, first_index=10)][:2] == [10, 11]


def test_decoded_fields():
    r = decode_capture(ENTRIES)
    assert [x.tlp for x in r] == ["MWr", "MWr64", "MRd", "CplD", "Cpl", "MWr", "MsgLocal",
                                  "MsgById", "MALFORMED(fmt=111/type=11111)"]
    assert [x.kind_name for x in r] == ["INGRESS", "EGRESS", "DROP", "EGRESS", "UR",
                                        "INC_REJECT", "CONSUMED", "EGRESS", "CUT"]
    assert [x.reason_name for x in r] == ["-", "-", "NO_ROUTE", "-", "-", "INC_MISMATCH",
                                          "MSG_LOCAL", "-", "?31"]
    assert [x.delta for x in r[:6]] == [None, 3, 0, 7, 1, (0xFFFF_FFF0 - 111) % (1 << 32)]
    assert r[6].delta == 21                                    # wrapped timestamp
    assert r[0].length == 16 and r[2].length == 8 and r[4].length is None
    assert r[0].requester_id == 0x0100 and r[0].tag == 5
    assert r[1].tag == 0x123 and r[1].address == 0x1_2345_6780
    assert r[2].address == 0xC000_0000 and r[2].requester_id == 0x0208
    assert r[3].requester_id == 0x0100 and r[3].tag == 5       # from DW2 of the completion
    assert r[3].target == "SC from 04:00.0" and r[4].target == "UR from 00:00.0"
    assert r[7].target == "to 05:00.0"
    assert r[4].trig and not r[4].gap and r[5].gap
    assert r[0].address == 0x8000_1000 and r[3].address is None


def test_prefix_decoding():
    assert prefix_text(0) == "-"
    assert prefix_text(sf_prefix(SfKind.HC_SET, mask=0b1011)) == "HC set 0x0000b"
    assert prefix_text(sf_prefix(SfKind.HC_GROUP, group=42, xs=True)) == "HC group 42 xs"
    assert prefix_text(sf_prefix(SfKind.NONE)) == "SF none"
    assert prefix_text(inc_prefix(3, "fp32", "sum")) == "INC g=3 fp32 sum"
    assert prefix_text(0x8F00_0001) == "pfx VendL1 0x8f000001"
    assert prefix_text(0x7E00_0001).endswith("BAD-FMT")


def test_table_text():
    table = format_capture_table(decode_capture(ENTRIES))
    print(table)
    lines = table.splitlines()
    assert len(lines) == 2 + len(ENTRIES)
    head = lines[0].split()
    assert head[:6] == ["idx", "timestamp", "delta", "port", "kind", "reason"]
    assert "prefix" in head and "flags" in head
    row = lines[2 + 2].split()
    assert row[:8] == ["2", "103", "+0", "1", "DROP", "NO_ROUTE", "MRd", "8"]
    assert "02:01.0" in row and "0xc0000000" in row
    assert "HC group 42 xs" in lines[3] and "INC g=3 fp32 sum" in lines[7]
    assert lines[6].rstrip().endswith("T") and lines[7].rstrip().endswith("G")
    assert lines[2].split()[2] == "-"          # no delta for the first record


def test_decoder_rejects_bad_entries():
    with pytest.raises(ValueError, match="unknown"):
        decode_entry({"timestamp": 1, "bogus": 2})
    with pytest.raises(ValueError, match="7 words"):
        decode_entry([1, 2, 3])
    with pytest.raises(ValueError, match="224 bits"):
        decode_entry(1 << 224)
    with pytest.raises(ValueError):
        ring_order(5, 4, 4)


def test_helpers():
    assert ring_order(2, 4, 4) == [2, 3, 0, 1]
    assert ring_order(0, 0, 8) == []
    assert bdf(0x0208) == "02:01.0"
    assert reason_name(0) == "-" and reason_name(3) == "NO_ROUTE"


def test_capture_filter_and_key():
    """The key rule used by RTL and model: named fields (also DW0/DW1 sub-fields) select, the
    4-DW address's low DW is ``addr_lo``."""
    hdr64 = tb.mwr_hdr(0x2_0000_0040, 4, requester_id=0x0200, tag=7)
    hdr32 = tb.mrd_hdr(0x40, 1, requester_id=0x0201, tag=7)
    k64 = capture_key_of(hdr=hdr64, port=1, kind=CaptureKind.EGRESS)
    k32 = capture_key_of(hdr=hdr32, port=2, kind=CaptureKind.DROP, reason=3)
    match, mask = capture_filter(addr_lo=0x40)
    assert CF.key_matches(k64, match, mask) and CF.key_matches(k32, match, mask)
    match, mask = capture_filter(**{"dw0.fmt": 0b011})
    assert CF.key_matches(k64, match, mask) and not CF.key_matches(k32, match, mask)
    match, mask = capture_filter(tag=7, kind=CaptureKind.DROP)
    assert not CF.key_matches(k64, match, mask) and CF.key_matches(k32, match, mask)
    with pytest.raises(KeyError):
        capture_filter(bogus=1)
    with pytest.raises(ValueError):
        capture_filter(port=32)
    assert CF.DEFAULT_TRIGGER_KINDS == (1 << 2) | (1 << 3) | (1 << 6)


def test_modules_do_not_import_amaranth():
    """The format tables and the decoder stay usable without the HDL toolchain."""
    code = ("import sys; import smartfabric.models.capture_format, smartfabric.verif.capture; "
            "assert 'amaranth' not in sys.modules, 'amaranth imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
