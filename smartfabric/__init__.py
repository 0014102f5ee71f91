"""smartfabric: an open smart fabric switch for AI scale-up clusters.

The package maps the repository's folders: ``smartfabric.hdl`` (Amaranth RTL, ``hdl/``),
``smartfabric.models`` (golden reference, ``models/``), ``smartfabric.verif`` (cocotb benches,
``verif/``), ``smartfabric.synth`` (Verilog and FPGA flows, ``synth/``), ``smartfabric.bench``
(benchmarks, ``bench/``). This folder holds only the command-line tool.
"""
