"""The options of the formal checks, shared by ``smartfabric formal`` and ``python -m
smartfabric.verif.formal`` (this module imports nothing of the HDL, so building the command
line stays fast)."""

from pathlib import Path

__all__ = ["add_formal_arguments"]


def add_formal_arguments(parser):
    """Add the check names, ``--out`` and ``--depth`` to ``parser``."""
    parser.add_argument("checks", nargs="*",
                        help="checks to run (default: all; an unknown name lists them)")
    parser.add_argument("--out", type=Path, default=Path("build/formal"),
                        help="where the SymbiYosys runs are kept (default build/formal)")
    parser.add_argument("--depth", type=int, default=None,
                        help="override every selected check's depth (cycles)")
    return parser
