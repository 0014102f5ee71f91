"""Python model of the smartfabric register map, generated from ``hdl/smartfabric.rdl``.

Pure Python (through :mod:`models.regmap`; no Amaranth, nothing from ``hdl/``). Benches use it
to find registers by path and to pack and unpack field values; the RTL register block is built
from the same :func:`~models.regmap.register_table`, so the two agree on every address.

Example
-------
>>> model = RegisterModel(n_ports=8)
>>> hex(model.address("window[3].base_lo"))
'0x160'
>>> hex(model.encode("root_port", port=3, valid=1))
'0x103'
"""

__all__ = ["RegisterModel"]

from .regmap import DATA_WIDTH, compile_regmap, register_table


class RegisterModel:
    """Register map of one switch configuration.

    Parameters
    ----------
    n_ports : int
        Number of switch ports (``N_PORTS``).
    n_windows : int
        Number of address windows (``N_WINDOWS``).
    n_id_routes : int
        Number of ID-routing entries (``N_ID_ROUTES``).
    n_groups : int
        Entries of the Hypercast group table (``N_GROUPS``).
    n_rgroups : int
        Reduction groups (``N_RGROUPS``).
    capture_depth : int
        Entries of the header capture ring (``CAP_DEPTH``); 0: the switch has none
        (``models.regmap.compile_regmap``).
    rdl_path : str or Path, optional
        RDL source; the project's ``hdl/smartfabric.rdl`` when omitted.

    Attributes
    ----------
    n_ports, n_windows, n_id_routes, n_groups, n_rgroups, capture_depth : int
        The configuration.
    table : tuple of models.regmap.Register
        Every register, by ascending address.

    Register paths are relative to the top address map: ``"scratch"``, ``"window[3].base_lo"``,
    ``"port[2].rx_packets"``. An unknown path raises :class:`KeyError` naming it.
    """

    def __init__(self, n_ports, n_windows=16, n_id_routes=16, n_groups=1024, n_rgroups=64, *,
                 capture_depth=64, rdl_path=None):
        self.n_ports = n_ports
        self.n_windows = n_windows
        self.n_id_routes = n_id_routes
        self.n_groups = n_groups
        self.n_rgroups = n_rgroups
        self.capture_depth = capture_depth
        self.table = register_table(
            compile_regmap(n_ports, n_windows, n_id_routes, n_groups, n_rgroups,
                           capture_depth=capture_depth, rdl_path=rdl_path))
        self._by_path = {r.path: r for r in self.table}
        self._by_word = {}
        for r in self.table:
            for word in range(r.n_words):
                self._by_word[r.address + 4 * word] = (r, word)

    def register(self, path):
        """The :class:`~models.regmap.Register` record at ``path``."""
        try:
            return self._by_path[path]
        except KeyError:
            raise KeyError(f"no register {path!r} in the smartfabric register map") from None

    def registers(self):
        """All register paths, by ascending address."""
        return [r.path for r in self.table]

    def address(self, path):
        """Byte address of register ``path`` (of its low word, for a 64-bit register)."""
        return self.register(path).address

    def width(self, path):
        """Width of register ``path`` in bits (32 or 64)."""
        return self.register(path).width

    def is_64bit(self, path):
        """Whether register ``path`` is 64 bits wide, read as two words, low word first."""
        return self.register(path).width == 64

    def is_writable(self, path):
        """Whether a software write to register ``path`` has any effect."""
        return self.register(path).sw_writable

    def fields(self, path):
        """Fields of register ``path``: ``{name: (lsb, width, reset)}`` by ascending lsb."""
        return {f.name: (f.lsb, f.width, f.reset) for f in self.register(path).fields}

    def field_kinds(self, path):
        """Access kind of each field of register ``path``: ``{name: FieldKind}``."""
        return {f.name: f.kind for f in self.register(path).fields}

    def reset_value(self, path):
        """Value of register ``path`` after reset (hardware-driven fields count as their RDL
        reset value, 0 unless the RDL says otherwise)."""
        return self.register(path).reset

    def path_at(self, address):
        """``(path, word)`` of the register word at byte ``address`` (``word`` is 1 for the high
        word of a 64-bit register), or ``None`` where no register is mapped."""
        hit = self._by_word.get(address & ~(DATA_WIDTH // 8 - 1))
        return None if hit is None else (hit[0].path, hit[1])

    def encode(self, path, **fields):
        """Pack field values into a register value; fields not given are 0.

        Raises
        ------
        KeyError
            For a field the register does not have.
        ValueError
            For a value that does not fit its field.
        """
        reg = self.register(path)
        known = {f.name: f for f in reg.fields}
        value = 0
        for name, field_value in fields.items():
            if name not in known:
                raise KeyError(f"register {path!r} has no field {name!r} "
                               f"(fields: {', '.join(known)})")
            f = known[name]
            if not isinstance(field_value, int) or not 0 <= field_value < (1 << f.width):
                raise ValueError(f"{f.path} is {f.width} bits wide; {field_value!r} does not fit")
            value |= field_value << f.lsb
        return value

    def decode(self, path, value):
        """Unpack a register value into ``{field name: value}``; bits outside fields are
        ignored."""
        return {f.name: (value >> f.lsb) & ((1 << f.width) - 1)
                for f in self.register(path).fields}
