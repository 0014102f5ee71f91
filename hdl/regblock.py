"""AXI4-Lite register block of the smartfabric switch, generated from ``hdl/smartfabric.rdl``.

The block is built at elaboration time from the compiled register map
(:func:`models.regmap.compile_regmap` / :func:`models.regmap.register_table`, which walk the
systemrdl tree with arrays unrolled): there is no hand-written per-register logic, so the RTL,
the Python register model (``models/regmodel.py``) and ``docs/registers.md`` cannot drift apart.
"""

__all__ = ["RegisterBlock"]

import re
from pathlib import Path

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..models.regmap import DATA_WIDTH, FieldKind, compile_regmap, register_table

_OKAY = 0b00
_SLVERR = 0b10


def _signal_name(path):
    """``"window[3].base_lo.value"`` -> ``"window_3_base_lo_value"``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", path).strip("_")


def _mux_tree(sel, values):
    """Binary multiplexer tree: ``values[sel]``, built level by level on the bits of ``sel``.

    Indices at or beyond ``len(values)`` select one of the values (callers never use them).
    """
    level = list(values)
    bit = 0
    while len(level) > 1:
        level = [Mux(sel[bit], level[j + 1], level[j]) if j + 1 < len(level) else level[j]
                 for j in range(0, len(level), 2)]
        bit += 1
    return level[0]


class RegisterBlock(wiring.Component):
    """AXI4-Lite slave holding the switch's control and status registers.

    Generated from the RDL register map at elaboration time. 32-bit data bus; the two low
    address bits are ignored (every access is a whole aligned word); ``awprot``/``arprot`` are
    ignored.

    Contract
    --------
    * **Read latency**: ``rvalid`` rises 3 cycles after the cycle in which ``arvalid & arready``
      (handshake in cycle *t*, ``rvalid`` high from cycle *t* + 3: address register, registered
      decode to a register index, registered read multiplexer). ``rdata``/``rresp`` then hold
      until ``rready``; ``arready`` is low from the AR handshake until the R handshake, so one
      read is outstanding at a time.
    * **Write latency**: AW and W are accepted independently, in either order or together
      (``awready``/``wready`` are high while the block holds no address/data). The write takes
      effect, and ``bvalid`` rises, in cycle max(*t_aw* + 3, *t_w* + 2), and not before the
      previous ``bvalid`` was accepted. The new value is on ``hw_r`` in the same cycle as
      ``bvalid`` rises. One write is outstanding at a time. ``wstrb`` selects the bytes written.
    * **Responses**: OKAY for every address that maps a register word, including writes to
      read-only registers and fields, which are ignored. SLVERR for an address that maps no
      register; such a read returns 0, such a write changes nothing.
    * **64-bit registers** (``regwidth = 64``, ``accesswidth = 32``, e.g. the port counters):
      low word at the register address, high word at +4. Reading the low word returns bits
      31..0 of the hardware value *and*, in the same cycle, copies bits 63..32 into one snapshot
      register shared by the whole block; reading the high word returns that snapshot. Reading
      low then high therefore gives an atomic 64-bit value, provided no other 64-bit low word is
      read in between (one software agent, or a lock, per block). Writes to them are ignored.
    * ``valid`` never depends combinationally on ``ready``: ``rvalid``/``bvalid``/``arready``/
      ``awready``/``wready`` all come straight from flip-flops.

    Field access for the datapath
    -----------------------------
    Paths are field paths relative to the top address map: ``"port_enable.enable"``,
    ``"window[3].base_lo.value"``, ``"port[2].rx_packets.count"``, ``"err_status.valid"``.

    ``hw_r[path]``
        Fields with ``sw=rw, hw=r``: a :class:`Signal` driven by the block, holding the stored
        value; its ``init`` is the RDL reset value.
    ``hw_w[path]``
        Fields with ``hw=w``: a :class:`Signal` the *parent* drives; software reads it.
    ``swmod[path]``
        Fields with ``sw=rw, hw=w, onwrite=woclr, swmod`` (e.g. ``"err_status.valid"``): the
        block stores nothing (reads return ``hw_w[path]``); a software write pulses this
        field-wide signal for one cycle with the bits written as 1 (the bits the parent must
        clear; for a 1-bit field, a clear strobe). It is high in the cycle ``bvalid`` rises.

    Fields with ``sw=r, hw=na`` are constants (their reset value); fields with ``sw=rw, hw=na``
    (e.g. ``scratch``) are storage that only software sees.

    Parameters
    ----------
    n_ports : int
        Number of switch ports (``N_PORTS``, 1..32).
    n_windows : int
        Number of address windows (``N_WINDOWS``).
    n_id_routes : int
        Number of ID-routing entries (``N_ID_ROUTES``).
    rdl_path : str or Path, optional
        Register map source; ``smartfabric.rdl`` beside this module when omitted.

    Attributes
    ----------
    ADDR_WIDTH : int
        Width of ``awaddr``/``araddr`` in bits (16: the map must fit in 64 KiB).
    registers : tuple of models.regmap.Register
        The register table the block was generated from, by ascending address.
    hw_r, hw_w, swmod : dict of str to Signal
        See above.

    Members
    -------
    s_axil_aw* / s_axil_w* / s_axil_b* / s_axil_ar* / s_axil_r*
        AXI4-Lite slave port, flat, named as AXI spells them (``s_axil_awaddr`` ...
        ``s_axil_rready``), so the Verilog ports match ``AxiLiteBus.from_prefix(dut, "s_axil")``.
    """

    ADDR_WIDTH = 16
    DATA_WIDTH = DATA_WIDTH

    def __init__(self, *, n_ports, n_windows=16, n_id_routes=16, rdl_path=None):
        if rdl_path is None:
            rdl_path = Path(__file__).resolve().parent / "smartfabric.rdl"
        self.n_ports = n_ports
        self.n_windows = n_windows
        self.n_id_routes = n_id_routes
        try:
            self.registers = register_table(
                compile_regmap(n_ports, n_windows, n_id_routes, rdl_path=rdl_path))
            end = max(r.address + r.width // 8 for r in self.registers)
            if end > (1 << self.ADDR_WIDTH):
                raise ValueError(f"the register map ends at 0x{end:X}, beyond the "
                                 f"{self.ADDR_WIDTH}-bit AXI4-Lite address space")
        except (TypeError, ValueError):
            # A block that failed to construct is never elaborated: as Amaranth does for its
            # own such objects, silence the "created but never used" warning.
            self._MustUse__silence = True
            raise

        aw, dw = self.ADDR_WIDTH, self.DATA_WIDTH
        super().__init__({
            "s_axil_awaddr": In(aw),
            "s_axil_awprot": In(3),
            "s_axil_awvalid": In(1),
            "s_axil_awready": Out(1),
            "s_axil_wdata": In(dw),
            "s_axil_wstrb": In(dw // 8),
            "s_axil_wvalid": In(1),
            "s_axil_wready": Out(1),
            "s_axil_bresp": Out(2),
            "s_axil_bvalid": Out(1),
            "s_axil_bready": In(1),
            "s_axil_araddr": In(aw),
            "s_axil_arprot": In(3),
            "s_axil_arvalid": In(1),
            "s_axil_arready": Out(1),
            "s_axil_rdata": Out(dw),
            "s_axil_rresp": Out(2),
            "s_axil_rvalid": Out(1),
            "s_axil_rready": In(1),
        })

        self.hw_r = {}
        self.hw_w = {}
        self.swmod = {}
        self._scratch = {}
        for reg in self.registers:
            for f in reg.fields:
                name = _signal_name(f.path)
                if f.kind is FieldKind.HW_READ:
                    self.hw_r[f.path] = Signal(f.width, init=f.reset, name=name)
                elif f.kind is FieldKind.SCRATCH:
                    self._scratch[f.path] = Signal(f.width, init=f.reset, name=name)
                elif f.kind in (FieldKind.HW_WRITE, FieldKind.CLEAR_ON_WRITE):
                    self.hw_w[f.path] = Signal(f.width, init=f.reset, name=name)
                if f.kind is FieldKind.CLEAR_ON_WRITE:
                    self.swmod[f.path] = Signal(f.width, name=f"swmod_{name}")

    def _field_value(self, f):
        if f.kind is FieldKind.CONST:
            return Const(f.reset, f.width)
        if f.kind is FieldKind.HW_READ:
            return self.hw_r[f.path]
        if f.kind is FieldKind.SCRATCH:
            return self._scratch[f.path]
        return self.hw_w[f.path]

    def _read_value(self, reg):
        """The register as software reads it: fields at their bit positions, gaps 0."""
        parts, pos = [], 0
        for f in reg.fields:
            if f.lsb > pos:
                parts.append(Const(0, f.lsb - pos))
            parts.append(self._field_value(f))
            pos = f.lsb + f.width
        if pos < reg.width:
            parts.append(Const(0, reg.width - pos))
        return Cat(*parts)

    def _decode(self, m, word_addr, prefix):
        """Registered decode of a word address into ``(ok, index, high_word, is_64bit)``.

        ``ok`` is 0 where no register is mapped; ``index`` is the register's position in
        :attr:`registers`.
        """
        idx_width = max(1, (len(self.registers) - 1).bit_length())
        ok = Signal(name=f"{prefix}_ok")
        idx = Signal(idx_width, name=f"{prefix}_idx")
        high = Signal(name=f"{prefix}_high")
        is64 = Signal(name=f"{prefix}_is64")
        m.d.sync += [ok.eq(0), idx.eq(0), high.eq(0), is64.eq(0)]
        with m.Switch(word_addr):
            for i, reg in enumerate(self.registers):
                for word in range(reg.n_words):
                    with m.Case((reg.address >> 2) + word):
                        m.d.sync += [ok.eq(1), idx.eq(i), high.eq(word),
                                     is64.eq(reg.width == 64)]
        return ok, idx, high, is64

    def elaborate(self, platform):
        m = Module()
        word_bits = self.ADDR_WIDTH - 2
        dw = self.DATA_WIDTH

        # ---- read path: AR -> address register -> decode -> read mux -> R -------------------
        rd_busy = Signal()     # from the AR handshake until the R handshake
        rd_addr = Signal(word_bits)
        rd_decoding = Signal()  # rd_addr is new; the decode registers it this cycle
        rd_muxing = Signal()    # the decode is valid; the read mux registers rdata this cycle
        snapshot = Signal(dw)   # high word of the last 64-bit register whose low word was read

        m.d.comb += self.s_axil_arready.eq(~rd_busy)
        m.d.sync += [rd_decoding.eq(0), rd_muxing.eq(rd_decoding)]
        with m.If(self.s_axil_arvalid & ~rd_busy):
            m.d.sync += [rd_busy.eq(1), rd_decoding.eq(1), rd_addr.eq(self.s_axil_araddr[2:])]

        rd_ok, rd_idx, rd_high, rd_is64 = self._decode(m, rd_addr, "rd")

        values = [self._read_value(reg) for reg in self.registers]
        low_words = _mux_tree(rd_idx, [v[:dw] for v in values])
        high_words = _mux_tree(rd_idx, [v[dw:2 * dw] if reg.width > dw else Const(0, dw)
                                        for reg, v in zip(self.registers, values)])
        with m.If(rd_muxing):
            m.d.sync += self.s_axil_rvalid.eq(1)
            with m.If(~rd_ok):
                m.d.sync += [self.s_axil_rdata.eq(0), self.s_axil_rresp.eq(_SLVERR)]
            with m.Elif(rd_high):
                m.d.sync += [self.s_axil_rdata.eq(snapshot), self.s_axil_rresp.eq(_OKAY)]
            with m.Else():
                m.d.sync += [self.s_axil_rdata.eq(low_words), self.s_axil_rresp.eq(_OKAY)]
                with m.If(rd_is64):
                    m.d.sync += snapshot.eq(high_words)
        with m.If(self.s_axil_rvalid & self.s_axil_rready):
            m.d.sync += [self.s_axil_rvalid.eq(0), rd_busy.eq(0)]

        # ---- write path: AW and W held independently -> decode -> write -> B ---------------
        aw_held = Signal()
        aw_decoded = Signal()   # aw_held, and the decode of wr_addr is valid
        wr_addr = Signal(word_bits)
        w_held = Signal()
        w_data = Signal(dw)
        w_strb = Signal(dw // 8)

        m.d.comb += [self.s_axil_awready.eq(~aw_held), self.s_axil_wready.eq(~w_held)]
        m.d.sync += aw_decoded.eq(aw_held)
        with m.If(self.s_axil_awvalid & ~aw_held):
            m.d.sync += [aw_held.eq(1), wr_addr.eq(self.s_axil_awaddr[2:])]
        with m.If(self.s_axil_wvalid & ~w_held):
            m.d.sync += [w_held.eq(1), w_data.eq(self.s_axil_wdata), w_strb.eq(self.s_axil_wstrb)]

        wr_ok, wr_idx, wr_high, _ = self._decode(m, wr_addr, "wr")
        wr_go = Signal()
        m.d.comb += wr_go.eq(aw_decoded & w_held & ~self.s_axil_bvalid)
        with m.If(wr_go):
            m.d.sync += [aw_held.eq(0), aw_decoded.eq(0), w_held.eq(0),
                         self.s_axil_bvalid.eq(1),
                         self.s_axil_bresp.eq(Mux(wr_ok, _OKAY, _SLVERR))]
        with m.If(self.s_axil_bvalid & self.s_axil_bready):
            m.d.sync += self.s_axil_bvalid.eq(0)

        for strobe in self.swmod.values():
            m.d.sync += strobe.eq(0)
        for i, reg in enumerate(self.registers):
            writable = [f for f in reg.fields if f.kind.sw_writable]
            if not writable:
                continue
            we = Signal(name=f"we_{_signal_name(reg.path)}")
            m.d.comb += we.eq(wr_go & wr_ok & (wr_idx == i) & ~wr_high)
            for f in writable:
                if f.kind is FieldKind.CLEAR_ON_WRITE:
                    written = Cat(w_data[b] & w_strb[b // 8]
                                  for b in range(f.lsb, f.lsb + f.width))
                    with m.If(we):
                        m.d.sync += self.swmod[f.path].eq(written)
                    continue
                storage = self.hw_r.get(f.path)
                if storage is None:
                    storage = self._scratch[f.path]
                # One enable per byte lane the field overlaps.
                for lane in range(f.lsb // 8, (f.lsb + f.width - 1) // 8 + 1):
                    lo = max(f.lsb, 8 * lane)
                    hi = min(f.lsb + f.width, 8 * lane + 8)
                    with m.If(we & w_strb[lane]):
                        m.d.sync += storage[lo - f.lsb:hi - f.lsb].eq(w_data[lo:hi])

        return m
