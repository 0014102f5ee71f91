"""Register access by path for cocotb benches, over cocotbext-axi's AXI4-Lite master.

Example
-------
::

    from cocotbext.axi import AxiLiteBus, AxiLiteMaster
    from smartfabric.models.regmodel import RegisterModel
    from smartfabric.verif.regaccess import RegisterAccess

    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    regs = RegisterAccess(RegisterModel(n_ports=8), axil)
    await regs.write("window[0].ctrl", enable=1, port=3)
    await regs.write("root_port", port=2)            # read-modify-write: valid is kept
    rx = await regs.read("port[3].rx_packets")       # 64-bit, low word then high word
"""

__all__ = ["RegisterAccessError", "RegisterAccess"]

import cocotb
from cocotbext.axi.constants import AxiResp

_WORD_BYTES = 4
_WORD_MASK = (1 << 32) - 1


class RegisterAccessError(RuntimeError):
    """An AXI4-Lite access to a register answered with something other than OKAY."""


class RegisterAccess:
    """Read and write smartfabric registers by path.

    Parameters
    ----------
    model : models.regmodel.RegisterModel
        Register map of the device under test.
    axil_master : cocotbext.axi.AxiLiteMaster
        Master on the device's ``s_axil`` port (32-bit data).

    Every access is a single 32-bit word transfer; a 64-bit register is two of them, low word
    first, which the register block makes atomic for reads. A response other than OKAY raises
    :class:`RegisterAccessError` naming the register, address and response.
    """

    def __init__(self, model, axil_master):
        self.model = model
        self.axil = axil_master

    async def read_word(self, address, *, what=None):
        """Read one 32-bit word at byte ``address``; returns it as an ``int``."""
        resp = await self.axil.read(address, _WORD_BYTES)
        self._check(resp.resp, "read", address, what)
        return int.from_bytes(resp.data, "little")

    async def write_word(self, address, value, *, what=None):
        """Write one 32-bit word at byte ``address``."""
        resp = await self.axil.write(address, (value & _WORD_MASK).to_bytes(_WORD_BYTES, "little"))
        self._check(resp.resp, "write", address, what)

    async def read(self, path):
        """Read register ``path``; a 64-bit register is read low word then high word (two ARs
        back to back, in one command of the master) and returned as one 64-bit value."""
        address = self.model.address(path)
        resp = await self.axil.read(address, self.model.width(path) // 8)
        self._check(resp.resp, "read", address, path)
        return int.from_bytes(resp.data, "little")

    async def read_many(self, paths):
        """Read every register of ``paths`` with the reads in flight together (the register
        block takes one AR every other cycle); returns ``{path: value}``. Each 64-bit
        register's two words stay adjacent, so each is read atomically."""
        paths = list(paths)
        tasks = [cocotb.start_soon(self.read(path)) for path in paths]
        return {path: await task for path, task in zip(paths, tasks)}

    async def mismatches(self, expect):
        """Read every register of ``expect`` (``{path: value}``, all reads in flight together)
        and return one line per register that reads otherwise (empty: all equal)."""
        got = await self.read_many(expect)
        return [f"{path}: switch {got[path]}, expected {value}"
                for path, value in expect.items() if got[path] != value]

    async def read_fields(self, path):
        """Read register ``path`` and return ``{field name: value}``."""
        return self.model.decode(path, await self.read(path))

    async def write(self, path, value=None, **fields):
        """Write register ``path``: either a whole ``value``, or named fields.

        When only some of the register's fields are named, the other stored fields keep the
        value read from the register first (read-modify-write); unnamed write-1-to-clear fields
        are written 0, so they are left alone. A 64-bit value is written low word first.

        Raises
        ------
        TypeError
            When both or neither of ``value`` and fields are given.
        KeyError, ValueError
            For an unknown field or a field value that does not fit (from the model).
        RegisterAccessError
            For a response other than OKAY.
        """
        if (value is None) == (not fields):
            raise TypeError(f"write({path!r}) takes either a value or fields, "
                            f"not {'both' if fields else 'neither'}")
        if value is None:
            value = self.model.encode(path, **fields)
            # Keep the stored fields not named. Fields software cannot write are written as 0
            # (ignored), and so are write-1-to-clear fields not named: writing back a 1 read
            # from one would clear it.
            kept = [name for name, kind in self.model.field_kinds(path).items()
                    if name not in fields and kind.has_storage]
            if kept:
                current = self.model.decode(path, await self.read(path))
                value = self.model.encode(path, **{n: current[n] for n in kept}, **fields)
        address = self.model.address(path)
        for word in range(self.model.width(path) // 32):
            await self.write_word(address + _WORD_BYTES * word, value >> (32 * word), what=path)

    @staticmethod
    def _check(resp, kind, address, what):
        if resp != AxiResp.OKAY:
            name = f" (register {what!r})" if what else ""
            raise RegisterAccessError(
                f"AXI4-Lite {kind} at 0x{address:04X}{name} answered "
                f"{AxiResp(resp).name}, not OKAY")
