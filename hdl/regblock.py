"""AXI4-Lite register block of the smartfabric switch, generated from ``hdl/smartfabric.rdl``.

The block is built at elaboration time from the compiled register map
(:func:`models.regmap.compile_regmap` / :func:`models.regmap.register_table`, which walk the
systemrdl tree with arrays unrolled): there is no hand-written per-register logic, so the RTL,
the Python register model (``models/regmodel.py``) and ``docs/registers.md`` cannot drift apart.
"""

__all__ = ["RegisterBlock", "ReadWindow", "parity_error"]

import re
from pathlib import Path

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..models.regmap import DATA_WIDTH, FieldKind, compile_regmap, register_table

_OKAY = 0b00
_SLVERR = 0b10


def _signal_name(path):
    """``"window[3].base_lo.value"`` -> ``"window_3_base_lo_value"``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", path).strip("_")


def _address_mux(addr, leaves):
    """Multiplexer keyed directly on the bits of ``addr``: ``leaves[addr]`` where mapped.

    A binary trie over the address bits, most significant first, in which a subtree holding a
    single leaf is that leaf and a bit with one empty side costs nothing: ``len(leaves) - 1``
    two-way multiplexers, no address decoder. The value at an address outside ``leaves`` is one
    of the leaves (callers qualify it with :func:`_address_set`).

    Parameters
    ----------
    addr : Value
        Word address.
    leaves : dict of int to Value
        Word address -> value read there.
    """
    def node(bit, items):
        if len(items) == 1:
            return items[0][1]
        low = [(a, v) for a, v in items if not (a >> bit) & 1]
        high = [(a, v) for a, v in items if (a >> bit) & 1]
        if not low:
            return node(bit - 1, high)
        if not high:
            return node(bit - 1, low)
        return Mux(addr[bit], node(bit - 1, high), node(bit - 1, low))

    assert leaves
    return node(len(addr) - 1, sorted(leaves.items()))


def _cut(addresses, bits, radix):
    """Split sorted word ``addresses`` into the largest subtrees of the address trie (most
    significant bit first, over ``bits`` bits) that hold at most ``radix`` addresses each."""
    groups = []

    def node(bit, items):
        if len(items) <= radix:
            groups.append(items)
            return
        for side in ([a for a in items if not (a >> bit) & 1],
                     [a for a in items if (a >> bit) & 1]):
            if side:
                node(bit - 1, side)

    node(bits - 1, list(addresses))
    return groups


def _mux_stages(addresses, bits, radix):
    """Number of registered stages :func:`_pipelined_address_mux` needs for ``addresses``."""
    stages, items = 0, sorted(addresses)
    while len(items) > radix:
        items = [group[0] for group in _cut(items, bits, radix)]
        stages += 1
    return stages


def _pipelined_address_mux(m, addrs, leaves, radix, name):
    """:func:`_address_mux` cut into ``len(addrs) - 1`` registered stages of at most ``radix``
    inputs each (``log2(radix)`` levels of two-way multiplexers).

    ``addrs[k]`` is the address as seen by stage *k* (the address delayed by *k* cycles); the
    returned value is combinational from ``addrs[-1]`` and the last stage's registers. With
    more stages than needed, the extra ones are plain delay registers.
    """
    items = sorted(leaves.items())
    for stage, addr in enumerate(addrs[:-1]):
        by_address = dict(items)
        groups = _cut([a for a, _ in items], len(addr), radix)
        items = []
        for index, group in enumerate(groups):
            value = by_address[group[0]]
            reg = Signal(len(value), name=f"{name}_s{stage}_{index}")
            m.d.sync += reg.eq(_address_mux(addr, {a: by_address[a] for a in group}))
            items.append((group[0], reg))
    return _address_mux(addrs[-1], dict(items))


def _top_name(reg):
    """The first name of a register's path, without indexes (``"window[3].base_lo"`` ->
    ``"window"``)."""
    return re.split(r"[\[.]", reg.path, maxsplit=1)[0]


def _address_set(addr, members):
    """One-bit function of ``addr``: whether it is in the set ``members`` of word addresses.

    Built as a reduced ordered decision diagram over the address bits (identical subtrees,
    such as the blocks of the per-port registers, are shared), so it stays small however many
    registers the map has.
    """
    memo = {}

    def node(bit, suffixes):
        # suffixes: the members below this node, as the values of their bits [0, bit].
        key = (bit, suffixes)
        if key not in memo:
            if not suffixes:
                memo[key] = Const(0)
            elif len(suffixes) == 1 << (bit + 1):
                memo[key] = Const(1)
            else:
                low = frozenset(a for a in suffixes if not (a >> bit) & 1)
                high = frozenset(a & ~(1 << bit) for a in suffixes if (a >> bit) & 1)
                low_node, high_node = node(bit - 1, low), node(bit - 1, high)
                memo[key] = (low_node if low_node is high_node
                             else Mux(addr[bit], high_node, low_node))
        return memo[key]

    return node(len(addr) - 1, frozenset(members))


def parity_error(word):
    """1 when ``word`` (register bits, then their even-parity bit) fails its parity check."""
    return word.xor()


class ReadWindow:
    """The parent's side of a read window (:attr:`RegisterBlock.read_windows`).

    Attributes
    ----------
    index : Signal(range(depth))
        Index into the window, driven by the block: for 32-bit registers the flat word index
        (row-major for an array of several dimensions: ``latency_hist[q][k]`` is
        ``16 * q + k``); for 64-bit registers the register's offset from the first one in
        8-byte units (``port[q].<counter at offset c>`` is ``32 * q + c / 8`` when ports are
        0x100 apart), so holes in the address map are indexes that are never read.
    en : Signal(1)
        High in the cycle the block presents ``index``, driven by the block.
    data : Signal(width)
        The register at ``index``, driven by the parent ``latency`` cycles after ``index``
        and ``en``. For a 64-bit window, reading the low word returns ``data[:32]`` and puts
        ``data[32:]`` in the block's snapshot, as for any 64-bit register.
    depth : int
        Registers in the window (indexes ``0 .. depth - 1``: the first register to the one
        at the constructor's ``last_address``).
    width : int
        32 or 64.
    latency : int
        Cycles from ``en`` to ``data`` (1: a synchronous read port).
    base_address : int
        Byte address of the window's first register (index 0).
    """

    def __init__(self, name, base_address, last_address, width=32, latency=1):
        self.width = width
        self.latency = latency
        self.base_address = base_address
        self.depth = depth = self.index_of(last_address) + 1
        self.index = Signal(range(depth), name=f"{name}_index")
        self.en = Signal(name=f"{name}_en")
        self.data = Signal(width, name=f"{name}_data")

    def index_of(self, address):
        """The index of the window's register at byte ``address``."""
        return (address - self.base_address) // (self.width // 8)


class RegisterBlock(wiring.Component):
    """AXI4-Lite slave holding the switch's control and status registers.

    Generated from the RDL register map at elaboration time. 32-bit data bus; the two low
    address bits are ignored (every access is a whole aligned word); ``awprot``/``arprot`` are
    ignored.

    Contract
    --------
    * **Read latency**: ``rvalid`` rises :attr:`read_latency` cycles after the cycle of the
      ``arvalid & arready`` handshake (when no earlier response waits): one cycle to register
      the address, then :attr:`read_stages` registered stages of the read multiplexer and a
      last stage that also decodes the address and writes ``rdata``/``rresp`` into a response
      queue (``rvalid`` the cycle after); each stage chooses among at most
      :attr:`READ_MUX_RADIX` inputs, and there are at least *L* - 1 stages for a read window
      of latency *L*. For 2 to 8 ports that is 4 cycles (2 stages). ``rvalid``/``rdata``/
      ``rresp`` then hold until ``rready``. Hardware values are sampled on the cycle of the
      first multiplexer stage.
    * **Pipelined reads**: a new AR is accepted every other cycle while fewer than
      :attr:`read_latency` reads are outstanding (accepted, their R not yet taken), so a
      master that keeps several reads in flight reads one word every two cycles; responses
      come back in the order of the ARs. (Not every cycle: a read window's memory, such as
      ``hdl.counters.CounterBank``, may take at most one read in any two cycles.)
    * **Write latency**: AW and W are accepted independently, in either order or together
      (``awready``/``wready`` are high while the block holds no address/data). The write takes
      effect, and ``bvalid`` rises, 2 cycles after the later of the two handshakes, and not
      before the previous ``bvalid`` was accepted. The new value is on ``hw_r`` in the same
      cycle as ``bvalid`` rises. One write is outstanding at a time (a second AW/W is taken
      and held while ``bvalid`` waits for ``bready``). ``wstrb`` selects the bytes written.
    * **Writes applied later** (``applied_writes``): a write to a register of one of those
      arrays is stored (``hw_r``, ``swmod``) as above, but its ``bvalid`` rises only at the
      first clock edge, from the cycle after (when ``hw_r`` shows the new value) on, where
      :attr:`write_applied` is high. The parent raises it in the cycle before the write
      takes effect in its own copy of the configuration. :attr:`write_held` is high in the
      cycle after such a write is stored (with its ``swmod`` strobes), so the parent can
      start that work for any register of those arrays.
    * **Responses**: OKAY for every address that maps a register word, including writes to
      read-only registers and fields, which are ignored. SLVERR for an address that maps no
      register; such a read returns 0, such a write changes nothing.
    * **64-bit registers** (``regwidth = 64``, ``accesswidth = 32``, e.g. the port counters):
      low word at the register address, high word at +4. Reading the low word returns bits
      31..0 of the hardware value *and* copies bits 63..32, sampled in the same cycle, into one
      snapshot register shared by the whole block; reading the high word returns that snapshot.
      Reading low then high therefore gives an atomic 64-bit value, provided no other 64-bit
      low word is read in between (one software agent, or a lock, per block). Reading a high
      word alone returns the snapshot of the last low word read. Writes to them are ignored.
    * ``valid`` never depends combinationally on ``ready``: ``rvalid``/``bvalid``/``arready``/
      ``awready``/``wready`` are functions of flip-flops only (``rvalid``: the response
      queue is not empty; ``arready``: no AR in the previous cycle and fewer than
      :attr:`read_latency` in flight).

    Implementation: the read multiplexer is a trie over the address bits (no address decoder
    and no register index; ``n - 1`` two-way multiplexers per bit for ``n`` readable words),
    cut into registered stages; "is this address mapped" is a reduced decision diagram over
    the address bits. Its size is set by the bits software can read (about one LUT4 per bit),
    which is why the per-port counters are a read window onto a block-RAM counter bank
    (``hdl.counters.CounterBank``) rather than ``hw_w`` inputs.

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
        Fields with ``sw=rw, hw=r, swmod`` (e.g. ``"mc_ctrl.enable"``): stored like any
        ``hw_r`` field, and this 1-bit strobe is high in the cycle ``bvalid`` rises after a
        write to the register (whatever ``wstrb``), when ``hw_r`` shows the new value; the
        parent uses it to apply several registers at once.
    ``pulse[path]``
        Fields with ``sw=rw, hw=r, singlepulse`` (e.g. ``"cap_cmd.arm"``): nothing is stored
        and reads return 0; a software write drives this field-wide signal for one cycle with
        the bits written as 1 (after ``wstrb``), in the cycle ``bvalid`` rises.
    ``memories[name]``
        RDL ``external`` arrays of ``sw=rw, hw=r`` registers (e.g. ``"hc_group"``): a
        :class:`Memory` of one word per array entry, holding the register's bits up to its
        highest field. The block owns the write port and one read port; the parent may add read
        ports (``memories[name].read_port()``) before elaboration. A software write must have
        all byte strobes set (else SLVERR and nothing written) and is written in the cycle
        ``bvalid`` rises, so a synchronous read port enabled in any later cycle returns it.
        For the names in ``parity_memories`` the memory is one bit wider: its top bit is
        even parity over the register bits (the XOR of all the bits of the word is 0),
        inverted when ``parity_invert[name]`` is high in the cycle of the write; software
        reads see only the register bits. Readers check it (:func:`parity_error`).
    ``memory_written[name]``
        One-cycle strobe, high in the cycle a software write is made into that memory.
    ``read_windows[name]``
        RDL ``external`` arrays of ``sw=r, hw=w`` registers (e.g. ``"latency_hist"``,
        ``"cap_entry"``), or ``external`` arrays of register files of them (``"port"``, the
        64-bit port counters): a :class:`ReadWindow` through which the parent answers reads
        with the timing of a read port of latency *L* (``window_latency[name]``, default 1):
        the block drives ``index`` and ``en`` *L* cycles before its last read stage, and takes
        ``data`` *L* cycles later (a synchronous read port, or a 1-cycle table read, fits
        *L* = 1). Writes are ignored (OKAY, like any read-only register).
        :meth:`window_index` gives a register's index.

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
    n_groups, n_rgroups, capture_depth : int
        ``N_GROUPS``, ``N_RGROUPS``, ``CAP_DEPTH`` (see :func:`models.regmap.compile_regmap`).
    parity_memories : iterable of str
        External register arrays stored with a parity bit (see ``memories`` above).
    window_latency : dict of str to int, optional
        Read latency of read windows (see ``read_windows`` above), 1 to 4 each; the read
        multiplexer gets at least that many stages.
    applied_writes : iterable of str
        Registers or register arrays, by the first name of their path (``"window"`` for
        every ``window[k].*``), whose writes are applied later by the parent: their write
        response waits for :attr:`write_applied`. Not for external registers.
    rdl_path : str or Path, optional
        Register map source; ``smartfabric.rdl`` beside this module when omitted.

    Attributes
    ----------
    ADDR_WIDTH : int
        Width of ``awaddr``/``araddr`` in bits (16: the map must fit in 64 KiB).
    READ_MUX_RADIX : int
        Most inputs one stage of the read multiplexer chooses among (16: four levels).
    read_stages : int
        Registered stages of the read multiplexer for this configuration.
    read_latency : int
        Cycles from the AR handshake to ``rvalid`` (``2 + read_stages``).
    registers : tuple of models.regmap.Register
        The register table the block was generated from, by ascending address.
    hw_r, hw_w, swmod, pulse : dict of str to Signal
        See above.
    parity_invert, memory_written : dict of str to Signal
        See above (``parity_invert``: driven by the parent, for ``parity_memories`` only).
    write_applied : Signal
        Driven by the parent when ``applied_writes`` is not empty (see "Writes applied later"
        above); not a port of the signature.
    write_held : Signal
        Output: a write of ``applied_writes`` was stored at the last edge and its response
        waits for :attr:`write_applied`.
    memories : dict of str to Memory
    read_windows : dict of str to ReadWindow

    Members
    -------
    s_axil_aw* / s_axil_w* / s_axil_b* / s_axil_ar* / s_axil_r*
        AXI4-Lite slave port, flat, named as AXI spells them (``s_axil_awaddr`` ...
        ``s_axil_rready``), so the Verilog ports match ``AxiLiteBus.from_prefix(dut, "s_axil")``.
    """

    ADDR_WIDTH = 16
    DATA_WIDTH = DATA_WIDTH
    READ_MUX_RADIX = 16

    def __init__(self, *, n_ports, n_windows=16, n_id_routes=16, n_groups=1024, n_rgroups=64,
                 capture_depth=64, parity_memories=(), window_latency=None,
                 applied_writes=(), rdl_path=None):
        if rdl_path is None:
            rdl_path = Path(__file__).resolve().parent / "smartfabric.rdl"
        self.n_ports = n_ports
        self.n_windows = n_windows
        self.n_id_routes = n_id_routes
        self.n_groups = n_groups
        self.n_rgroups = n_rgroups
        self.capture_depth = capture_depth
        try:
            self.registers = register_table(
                compile_regmap(n_ports, n_windows, n_id_routes, n_groups, n_rgroups,
                               capture_depth=capture_depth, rdl_path=rdl_path))
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
        word_bits = aw - 2
        window_latency = dict(window_latency or {})
        windows = {r.array_name for r in self.registers if r.read_window}
        for name, latency in window_latency.items():
            if name not in windows or not isinstance(latency, int) or not 1 <= latency <= 4:
                self._MustUse__silence = True
                raise ValueError(f"window_latency: {name!r}: {latency!r} (read windows: "
                                 f"{sorted(windows)}; latency 1 to 4)")
        arrays = {_top_name(r) for r in self.registers if not r.external}
        self.applied_writes = tuple(applied_writes)
        for name in self.applied_writes:
            if name not in arrays:
                self._MustUse__silence = True
                raise ValueError(f"applied_writes: {name!r} is not a register array of the map")
        self.write_applied = Signal()
        self.write_held = Signal()
        low_words = [r.address >> 2 for r in self.registers if not r.external]
        high_halves = [r.address >> 2 for r in self.registers
                       if r.width == 2 * dw and not r.external]
        self.read_stages = max(_mux_stages(low_words, word_bits, self.READ_MUX_RADIX),
                               _mux_stages(high_halves, word_bits, self.READ_MUX_RADIX),
                               max(window_latency.values(), default=1) - 1)
        self.read_latency = 2 + self.read_stages
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
        self.pulse = {}
        self._scratch = {}
        self.memories = {}
        self.read_windows = {}
        self._external = {}     # array name -> its registers, by index
        for reg in self.registers:
            if reg.external:
                self._external.setdefault(reg.array_name, []).append(reg)
                continue
            for f in reg.fields:
                name = _signal_name(f.path)
                if f.kind is FieldKind.HW_READ:
                    self.hw_r[f.path] = Signal(f.width, init=f.reset, name=name)
                elif f.kind is FieldKind.SCRATCH:
                    self._scratch[f.path] = Signal(f.width, init=f.reset, name=name)
                elif f.kind in (FieldKind.HW_WRITE, FieldKind.CLEAR_ON_WRITE):
                    self.hw_w[f.path] = Signal(f.width, init=f.reset, name=name)
                if f.kind is FieldKind.PULSE:
                    self.pulse[f.path] = Signal(f.width, name=f"pulse_{name}")
                elif f.kind is FieldKind.CLEAR_ON_WRITE:
                    self.swmod[f.path] = Signal(f.width, name=f"swmod_{name}")
                elif f.swmod:
                    self.swmod[f.path] = Signal(name=f"swmod_{name}")
        self.parity_memories = frozenset(parity_memories)
        unknown = self.parity_memories - {name for name, regs in self._external.items()
                                          if not regs[0].read_window}
        if unknown:
            self._MustUse__silence = True
            raise ValueError(f"parity_memories {sorted(unknown)} are not external sw=rw "
                             f"register arrays of the map (memories)")
        self.parity_invert = {}
        self.memory_written = {}
        self._data_width = {}
        for name, regs in self._external.items():
            assert regs[0].read_window or \
                all(r.address == regs[0].address + 4 * k for k, r in enumerate(regs))
            if regs[0].read_window:
                assert all(r.read_window and r.width == regs[0].width for r in regs)
                self.read_windows[name] = ReadWindow(
                    f"window_{_signal_name(name)}", regs[0].address, regs[-1].address,
                    width=regs[0].width, latency=window_latency.get(name, 1))
                continue
            width = max(f.lsb + f.width for f in regs[0].fields)
            self._data_width[name] = width
            if name in self.parity_memories:
                self.parity_invert[name] = Signal(name=f"parity_invert_{name}")
                width += 1
            self.memory_written[name] = Signal(name=f"memory_written_{name}")
            self.memories[name] = Memory(shape=width, depth=len(regs), init=[])

    def window_index(self, path):
        """The index of register ``path`` in its read window (``read_windows[name].index``)."""
        reg = next(r for r in self.registers if r.path == path)
        return self.read_windows[reg.array_name].index_of(reg.address)

    def _field_value(self, f):
        if f.kind in (FieldKind.CONST, FieldKind.PULSE):
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

    def elaborate(self, platform):
        m = Module()
        word_bits = self.ADDR_WIDTH - 2
        dw = self.DATA_WIDTH

        # What is read at each word address (word address = byte address >> 2).
        low_words = {}    # 32-bit registers, and the low words of 64-bit ones
        high_halves = {}  # low word of a 64-bit register -> its high half, for the snapshot
        high_words = set()
        for reg in self.registers:
            if reg.external:
                continue
            value, word = self._read_value(reg), reg.address >> 2
            low_words[word] = value[:dw]
            if reg.width == 2 * dw:
                high_halves[word] = value[dw:]
                high_words.add(word + 1)
        # (external arrays: the low word of every register; a 64-bit window's high words
        # read the snapshot like those of any 64-bit register)
        external_words = {name: [r.address >> 2 for r in regs]
                          for name, regs in self._external.items()}
        mapped = set(low_words) | high_words
        for name, words in external_words.items():
            mapped |= set(words)
            if name in self.read_windows and self.read_windows[name].width == 2 * dw:
                high_words |= {w + 1 for w in words}
                mapped |= {w + 1 for w in words}

        # ---- read path: AR -> address register -> pipelined read multiplexer -> R ----------
        # Each of the READ_STAGES stages multiplexes at most READ_MUX_RADIX inputs and
        # registers its outputs; the last one also decodes the address and queues the response.
        stages = self.read_stages
        rd_addr = [Signal(word_bits, name=f"rd_addr_s{k}") for k in range(stages + 1)]
        rd_pending = [Signal(name=f"rd_pending_s{k}") for k in range(stages + 1)]
        snapshot = Signal(dw)   # high half of the last 64-bit register whose low word was read
        # Reads in flight (AR taken, R not yet taken) never exceed the response queue's
        # depth, so a read that reaches the last stage always has room there.
        rd_queue = m.submodules.rd_queue = SyncFIFO(width=dw + 2, depth=self.read_latency)
        rd_in_flight = Signal(range(self.read_latency + 1))
        rd_taken = Signal()     # an AR was taken in the previous cycle
        ar_go = Signal()
        r_go = self.s_axil_rvalid & self.s_axil_rready
        m.d.comb += [self.s_axil_arready.eq(~rd_taken & (rd_in_flight < self.read_latency)),
                     ar_go.eq(self.s_axil_arvalid & self.s_axil_arready)]
        m.d.sync += [rd_taken.eq(ar_go), rd_in_flight.eq(rd_in_flight + ar_go - r_go),
                     rd_pending[0].eq(ar_go)]
        with m.If(ar_go):
            m.d.sync += rd_addr[0].eq(self.s_axil_araddr[2:])
        for k in range(stages):   # one copy of the address per stage: less fan-out per copy
            m.d.sync += [rd_addr[k + 1].eq(rd_addr[k]), rd_pending[k + 1].eq(rd_pending[k])]

        addr = rd_addr[-1]
        # (Built outside any m.If: their stage registers load every cycle.)
        low_mux = _pipelined_address_mux(m, rd_addr, low_words, self.READ_MUX_RADIX, "rd_low")
        if high_halves:
            high_mux = _pipelined_address_mux(m, rd_addr, high_halves, self.READ_MUX_RADIX,
                                              "rd_high")
        # External memories and read windows: the read is issued one cycle before the last
        # stage.
        external_data = {}
        external_high = {}      # 64-bit windows: the high half, for the snapshot
        for name, words in external_words.items():
            if name in self.read_windows:
                port = self.read_windows[name]
                addr_of, en_of, latency = port.index, port.en, port.latency
                shift = port.width // dw - 1        # word offset -> register index
            else:
                memory = self.memories[name]
                m.submodules[f"memory_{name}"] = memory
                port = memory.read_port()
                addr_of, en_of, latency, shift = port.addr, port.en, 1, 0
            # The read is issued `latency` cycles before the last stage.
            if stages >= latency:
                m.d.comb += [addr_of.eq((rd_addr[stages - latency] - words[0]) >> shift),
                             en_of.eq(rd_pending[stages - latency])]
            else:
                assert stages == latency - 1
                m.d.comb += [addr_of.eq((self.s_axil_araddr[2:] - words[0]) >> shift),
                             en_of.eq(ar_go)]
            external_data[name] = port.data[:self._data_width.get(name, dw)]
            if len(port.data) == 2 * dw and name in self.read_windows:
                external_high[name] = port.data[dw:]

        rd_data = Signal(dw)
        rd_resp = Signal(2)
        with m.If(~_address_set(addr, mapped)):
            m.d.comb += [rd_data.eq(0), rd_resp.eq(_SLVERR)]
        with m.Elif(_address_set(addr, high_words)):
            m.d.comb += [rd_data.eq(snapshot), rd_resp.eq(_OKAY)]
        for name, words in external_words.items():
            with m.Elif(_address_set(addr, set(words))):
                m.d.comb += [rd_data.eq(external_data[name]), rd_resp.eq(_OKAY)]
                if name in external_high:
                    with m.If(rd_pending[-1]):
                        m.d.sync += snapshot.eq(external_high[name])
        with m.Else():
            m.d.comb += [rd_data.eq(low_mux), rd_resp.eq(_OKAY)]
            if high_halves:
                with m.If(rd_pending[-1] & _address_set(addr, high_halves)):
                    m.d.sync += snapshot.eq(high_mux)
        m.d.comb += [rd_queue.w_data.eq(Cat(rd_data, rd_resp)),
                     rd_queue.w_en.eq(rd_pending[-1]),
                     self.s_axil_rvalid.eq(rd_queue.r_rdy),
                     self.s_axil_rdata.eq(rd_queue.r_data[:dw]),
                     self.s_axil_rresp.eq(rd_queue.r_data[dw:]),
                     rd_queue.r_en.eq(self.s_axil_rready)]

        # ---- write path: AW and W held independently -> write -> B --------------------------
        aw_held = Signal()
        wr_addr = Signal(word_bits)
        w_held = Signal()
        w_data = Signal(dw)
        w_strb = Signal(dw // 8)

        m.d.comb += [self.s_axil_awready.eq(~aw_held), self.s_axil_wready.eq(~w_held)]
        with m.If(self.s_axil_awvalid & ~aw_held):
            m.d.sync += [aw_held.eq(1), wr_addr.eq(self.s_axil_awaddr[2:])]
        with m.If(self.s_axil_wvalid & ~w_held):
            m.d.sync += [w_held.eq(1), w_data.eq(self.s_axil_wdata), w_strb.eq(self.s_axil_wstrb)]

        wr_go = Signal()        # both held, and the previous response was taken
        b_waiting = Signal()    # a write of ``applied_writes`` waits for ``write_applied``
        m.d.comb += wr_go.eq(aw_held & w_held & ~self.s_axil_bvalid & ~b_waiting)
        applied_words = {r.address >> 2 for r in self.registers
                         if not r.external and _top_name(r) in self.applied_writes}
        wr_applied_later = _address_set(wr_addr, applied_words) if applied_words else Const(0, 1)
        # A memory word is written whole: partial strobes are refused.
        memory_words = [words for name, words in external_words.items() if name in self.memories]
        wr_external = _address_set(wr_addr, set().union(*memory_words))
        wr_ok = _address_set(wr_addr, mapped) & ~(wr_external & (w_strb != 0b1111))
        with m.If(wr_go):
            m.d.sync += [aw_held.eq(0), w_held.eq(0),
                         self.s_axil_bresp.eq(Mux(wr_ok, _OKAY, _SLVERR))]
            with m.If(wr_applied_later):
                m.d.sync += b_waiting.eq(1)
            with m.Else():
                m.d.sync += self.s_axil_bvalid.eq(1)
        m.d.sync += self.write_held.eq(wr_go & wr_applied_later)
        with m.If(b_waiting & self.write_applied):
            m.d.sync += [b_waiting.eq(0), self.s_axil_bvalid.eq(1)]
        for name, words in external_words.items():
            if name not in self.memories:
                continue
            memory = self.memories[name]
            port = memory.write_port()
            value = w_data[:self._data_width[name]]
            if name in self.parity_memories:
                value = Cat(value, value.xor() ^ self.parity_invert[name])
            m.d.comb += [port.addr.eq(wr_addr - words[0]),
                         port.data.eq(value),
                         port.en.eq(wr_go & wr_ok & _address_set(wr_addr, set(words))),
                         self.memory_written[name].eq(port.en)]
        with m.If(self.s_axil_bvalid & self.s_axil_bready):
            m.d.sync += self.s_axil_bvalid.eq(0)

        for strobe in (*self.swmod.values(), *self.pulse.values()):
            m.d.sync += strobe.eq(0)
        for reg in self.registers:
            writable = [f for f in reg.fields if f.kind.sw_writable]
            if not writable or reg.external:
                continue
            we = Signal(name=f"we_{_signal_name(reg.path)}")
            m.d.comb += we.eq(wr_go & (wr_addr == reg.address >> 2))
            for f in writable:
                if f.swmod and f.kind is FieldKind.HW_READ:
                    m.d.sync += self.swmod[f.path].eq(we)
                if f.kind in (FieldKind.CLEAR_ON_WRITE, FieldKind.PULSE):
                    written = Cat(w_data[b] & w_strb[b // 8]
                                  for b in range(f.lsb, f.lsb + f.width))
                    strobe = (self.pulse if f.kind is FieldKind.PULSE else self.swmod)[f.path]
                    with m.If(we):
                        m.d.sync += strobe.eq(written)
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
