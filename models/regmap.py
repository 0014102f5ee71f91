"""The register map of smartfabric, compiled from its one source ``hdl/smartfabric.rdl``.

Pure Python (systemrdl-compiler only; no Amaranth, nothing from ``hdl/``), so that the RTL
register block (``hdl/regblock.py``), the Python register model (``models/regmodel.py``) and the
documentation generator (``hdl/regdoc.py``) all elaborate the same map the same way.

:func:`compile_regmap` compiles the RDL with the switch parameters and returns the elaborated
root node. :func:`register_table` walks it (arrays unrolled) into plain :class:`Register` /
:class:`Field` records and classifies every field into one of the access kinds the register
block implements (:class:`FieldKind`); a field the block does not implement is an error here,
so the RTL and the model cannot disagree about it.

Paths are relative to the top address map, as systemrdl spells them: ``"window[3].base_lo"``
for a register, ``"window[3].base_lo.value"`` for a field.
"""

__all__ = [
    "DEFAULT_RDL_PATH", "TOP_NAME", "DATA_WIDTH", "FieldKind", "Field", "Register",
    "compile_regmap", "register_table",
]

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from systemrdl import RDLCompiler, RDLCompileError
from systemrdl.node import FieldNode, RegNode, RegfileNode, RootNode
from systemrdl.rdltypes import AccessType, OnWriteType

#: The register map source. ``models/`` and ``hdl/`` are sibling folders both in the work tree
#: and in an installed ``smartfabric`` package (``smartfabric/models``, ``smartfabric/hdl``).
DEFAULT_RDL_PATH = Path(__file__).resolve().parent.parent / "hdl" / "smartfabric.rdl"

#: Name of the top address map in the RDL source.
TOP_NAME = "smartfabric_regs"

#: Width of the AXI4-Lite data bus, and the access width of every register.
DATA_WIDTH = 32


class FieldKind(enum.Enum):
    """How the register block implements a field (SystemRDL ``sw``/``hw``/``onwrite``).

    ``CONST``
        ``sw=r, hw=na``: a constant; reads return the RDL reset value.
    ``HW_WRITE``
        ``sw=r, hw=w``: a status input driven by the hardware; reads return it.
    ``HW_READ``
        ``sw=rw, hw=r``: software-written storage, visible to the hardware.
    ``SCRATCH``
        ``sw=rw, hw=na``: software-written storage the hardware never sees.
    ``CLEAR_ON_WRITE``
        ``sw=rw, hw=w, onwrite=woclr, swmod``: the hardware holds the state and drives it in;
        reads return it; a software write of 1 to a bit asks the hardware to clear that bit.
    ``PULSE``
        ``sw=rw, hw=r, singlepulse``: a command; nothing is stored, reads return 0, a software
        write of 1 to a bit pulses that bit for the hardware for one cycle.
    """
    CONST = "const"
    HW_WRITE = "hw_w"
    HW_READ = "hw_r"
    SCRATCH = "scratch"
    CLEAR_ON_WRITE = "woclr"
    PULSE = "singlepulse"

    @property
    def sw_writable(self):
        """Whether a software write has any effect on this field."""
        return self in (FieldKind.HW_READ, FieldKind.SCRATCH, FieldKind.CLEAR_ON_WRITE,
                        FieldKind.PULSE)

    @property
    def has_storage(self):
        """Whether the register block holds this field in flip-flops."""
        return self in (FieldKind.HW_READ, FieldKind.SCRATCH)


@dataclass(frozen=True)
class Field:
    """One field of a register.

    Attributes
    ----------
    name : str
        Field instance name, e.g. ``"value"``.
    path : str
        Field path relative to the top, e.g. ``"window[3].base_lo.value"``.
    lsb : int
        Lowest bit of the field within its register.
    width : int
        Width in bits.
    reset : int
        RDL reset value (0 when the RDL gives none).
    kind : FieldKind
        How the register block implements the field.
    swmod : bool
        (``HW_READ`` fields only) the RDL ``swmod`` property: the block pulses a strobe when
        software writes the register, so the hardware can apply several registers at once.
    """
    name: str
    path: str
    lsb: int
    width: int
    reset: int
    kind: FieldKind
    swmod: bool = False

    @property
    def mask(self):
        """Mask of the field's bits within its register."""
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """One register, arrays unrolled.

    Attributes
    ----------
    path : str
        Register path relative to the top, e.g. ``"port[2].rx_packets"``.
    address : int
        Byte address of the register (of its low word, for a 64-bit register).
    width : int
        Register width in bits: 32, or 64 for a register read as two 32-bit words (low word at
        ``address``, high word at ``address + 4``).
    fields : tuple of Field
        Fields, by ascending ``lsb``.
    external : bool
        RDL ``external``: the register is a word of an array the block does not hold in
        flip-flops. An array of ``sw=rw, hw=r`` registers is a memory of the block, indexed by
        the array index; an array of ``sw=r, hw=w`` registers (32 or 64 bits), or an
        ``external`` array of register files holding only such registers, is a *read
        window*: reads go through a read port the parent provides (:attr:`read_window`),
        writes are ignored. A multi-dimensional array is one memory or window, indexed by the
        flat (row-major) index.
    external_root : str
        (External registers) path of the external instance the register belongs to: the
        register array itself, or the array of register files that holds it.
    """
    path: str
    address: int
    width: int
    fields: tuple
    external: bool = False
    external_root: str = ""

    @property
    def array_name(self):
        """Name of the memory or window an external register belongs to: the path of its
        external instance without indexes (``"hc_group[5]"`` -> ``"hc_group"``,
        ``"latency_hist[2][7]"`` -> ``"latency_hist"``, ``"port[3].rx_beats"`` -> ``"port"``
        when ``port`` is an external array of register files)."""
        return re.sub(r"\[\d+\]", "", self.external_root or self.path)

    @property
    def read_window(self):
        """Whether the register is a word of a read window (external, every field
        ``sw=r, hw=w``)."""
        return self.external and all(f.kind is FieldKind.HW_WRITE for f in self.fields)

    @property
    def n_words(self):
        """Number of 32-bit bus words the register occupies."""
        return self.width // DATA_WIDTH

    @property
    def sw_writable(self):
        """Whether a software write to the register has any effect."""
        return any(f.kind.sw_writable for f in self.fields)

    @property
    def reset(self):
        """Reset value of the whole register (what software reads after reset, for fields the
        hardware does not drive)."""
        value = 0
        for f in self.fields:
            value |= f.reset << f.lsb
        return value


def _check_count(name, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, not {value}")


def compile_regmap(n_ports, n_windows=16, n_id_routes=16, n_groups=1024, n_rgroups=64, *,
                   capture_depth=64, rdl_path=None):
    """Compile the register map for one switch configuration.

    Parameters
    ----------
    n_ports : int
        ``N_PORTS`` (1..32: port numbers are 5-bit fields, ``port_enable`` has 32 bits).
    n_windows : int
        ``N_WINDOWS`` (at least 1; the RDL compiler rejects a count whose windows overlap the
        ID-route table).
    n_id_routes : int
        ``N_ID_ROUTES`` (at least 1; likewise limited by the port counters that follow).
    n_groups : int
        ``N_GROUPS``, entries of the Hypercast group table (1 to 4096).
    n_rgroups : int
        ``N_RGROUPS``, reduction groups (1 to 256).
    capture_depth : int
        Entries of the header capture ring (a power of two, 2 to 256: its window
        ``cap_entry`` has 8 words per entry below the reduction statistics), or 0 for a
        switch without one, whose ``cap_entry`` keeps one entry (``CAP_DEPTH`` = 1) that
        reads 0.
    rdl_path : str or Path, optional
        RDL source; :data:`DEFAULT_RDL_PATH` when omitted.

    Returns
    -------
    systemrdl.node.RootNode
        The elaborated root; ``.top`` is the ``smartfabric_regs`` address map.

    Raises
    ------
    TypeError, ValueError
        For a bad parameter, or when the RDL does not compile with it (the compiler's own
        messages are printed to stderr).
    """
    _check_count("n_ports", n_ports, 1, 32)
    _check_count("n_windows", n_windows, 1, 1 << 16)
    _check_count("n_id_routes", n_id_routes, 1, 1 << 16)
    _check_count("n_groups", n_groups, 1, 4096)
    _check_count("n_rgroups", n_rgroups, 1, 256)
    _check_count("capture_depth", capture_depth, 0, 256)
    if capture_depth == 1 or capture_depth & (capture_depth - 1):
        raise ValueError(f"capture_depth must be 0 or a power of two, not {capture_depth}")
    cap_entries = max(capture_depth, 1)
    path = Path(DEFAULT_RDL_PATH if rdl_path is None else rdl_path)
    compiler = RDLCompiler()
    try:
        compiler.compile_file(str(path))
        return compiler.elaborate(TOP_NAME, parameters={
            "N_PORTS": n_ports, "N_WINDOWS": n_windows, "N_ID_ROUTES": n_id_routes,
            "N_GROUPS": n_groups, "N_RGROUPS": n_rgroups, "CAP_DEPTH": cap_entries,
        })
    except RDLCompileError as error:
        raise ValueError(
            f"{path} does not compile with N_PORTS={n_ports}, N_WINDOWS={n_windows}, "
            f"N_ID_ROUTES={n_id_routes}, N_GROUPS={n_groups}, N_RGROUPS={n_rgroups}, "
            f"CAP_DEPTH={cap_entries}: "
            f"{error}") from error


def _field_kind(node):
    sw = node.get_property("sw")
    hw = node.get_property("hw")
    onwrite = node.get_property("onwrite")
    swmod = node.get_property("swmod")
    special = [p for p in ("onread", "rclr", "rset", "singlepulse", "counter", "hwclr",
                           "hwset", "swacc", "we", "wel", "intr")
               if node.get_property(p)]
    kind = None
    if special == ["singlepulse"] and onwrite is None and not swmod:
        if sw in (AccessType.rw, AccessType.w) and hw == AccessType.r:
            kind = FieldKind.PULSE
    elif not special and onwrite is None and swmod:
        if sw == AccessType.rw and hw == AccessType.r:
            kind = FieldKind.HW_READ    # with a write strobe (Field.swmod)
    elif not special and onwrite is None:
        if sw == AccessType.r and hw == AccessType.na:
            kind = FieldKind.CONST
        elif sw == AccessType.r and hw == AccessType.w:
            kind = FieldKind.HW_WRITE
        elif sw == AccessType.rw and hw == AccessType.r:
            kind = FieldKind.HW_READ
        elif sw == AccessType.rw and hw == AccessType.na:
            kind = FieldKind.SCRATCH
    elif (not special and onwrite == OnWriteType.woclr and swmod
          and sw == AccessType.rw and hw == AccessType.w):
        kind = FieldKind.CLEAR_ON_WRITE
    if kind is None:
        raise ValueError(
            f"field {node.get_path()}: sw={sw.name}, hw={hw.name}, "
            f"onwrite={getattr(onwrite, 'name', None)}, swmod={swmod}, other={special} is not "
            f"an access kind the register block implements ({[k.value for k in FieldKind]})")
    return kind


def register_table(root):
    """Flatten an elaborated register map into :class:`Register` records.

    Parameters
    ----------
    root : systemrdl.node.RootNode or AddrmapNode
        As returned by :func:`compile_regmap`.

    Returns
    -------
    tuple of Register
        Every register, arrays unrolled, by ascending address.

    Raises
    ------
    ValueError
        For a register that is not 32 bits, or 64 bits with an access width of 32, or a field
        whose access kind the register block does not implement.
    """
    top = root.top if isinstance(root, RootNode) else root
    registers = []
    for node in top.descendants(unroll=True):
        if not isinstance(node, RegNode):
            continue
        width = node.get_property("regwidth")
        if node.get_property("accesswidth") != DATA_WIDTH or width not in (32, 64):
            raise ValueError(
                f"register {node.get_path()}: regwidth {width}, accesswidth "
                f"{node.get_property('accesswidth')}; only 32 or 64 with accesswidth "
                f"{DATA_WIDTH} are implemented")
        fields = []
        for f in node.fields():
            assert isinstance(f, FieldNode)
            fields.append(Field(
                name=f.inst_name, path=f.get_rel_path(top), lsb=f.lsb, width=f.width,
                reset=f.get_property("reset") or 0, kind=_field_kind(f),
                swmod=bool(f.get_property("swmod")) and f.get_property("onwrite") is None))
        if width == 64 and any(f.kind.sw_writable for f in fields):
            raise ValueError(f"register {node.get_path()}: 64-bit registers may only hold "
                             f"fields software cannot write")
        external = bool(node.external)
        memory_word = all(f.kind is FieldKind.HW_READ and not f.swmod for f in fields) \
            and width == DATA_WIDTH
        window_word = all(f.kind is FieldKind.HW_WRITE for f in fields)
        if external and not (memory_word or window_word):
            raise ValueError(f"register {node.get_path()}: an external register must be 32 bits "
                             f"of plain sw=rw, hw=r fields (a memory) or of sw=r, hw=w fields "
                             f"(a read window, 32 or 64 bits)")
        root = node
        while external and isinstance(root.parent, RegfileNode) and root.parent.external:
            root = root.parent
        registers.append(Register(path=node.get_rel_path(top), address=node.absolute_address,
                                  width=width, fields=tuple(sorted(fields, key=lambda f: f.lsb)),
                                  external=external,
                                  external_root=root.get_rel_path(top) if external else ""))
    registers.sort(key=lambda r: r.address)
    return tuple(registers)
