"""Write the register documentation (``docs/registers.md``) from ``hdl/smartfabric.rdl``.

Usage::

    python -m smartfabric.hdl.regdoc docs/registers.md [--ports N] [--windows N] [--id-routes N]

The document is exported by PeakRDL-markdown from the same compiled map
(:func:`models.regmap.compile_regmap`) as the RTL register block and the Python register model,
for the default configuration unless told otherwise (8 ports, 16 windows, 16 ID routes), except
that the Hypercast group table is shown with 8 entries (``--groups``), the reduction groups
with 2 (``--rgroups``) and the capture ring with 2 entries (``--capture-depth``): 1,024
identical group entries, 64 identical 14-register reduction groups and 512 capture words would
bury the rest of the map.
``docs/registers.md`` is committed; ``tests/test_regmodel.py`` fails when it is stale.
"""

__all__ = ["DEFAULT_CONFIG", "write_register_doc", "main"]

import argparse
import sys

from peakrdl_markdown import MarkdownExporter

from ..models.regmap import compile_regmap

#: Configuration documented in ``docs/registers.md``.
DEFAULT_CONFIG = {"n_ports": 8, "n_windows": 16, "n_id_routes": 16, "n_groups": 8,
                  "n_rgroups": 2, "capture_depth": 2}

# Named in the "generated from" header instead of an absolute path, so the output does not
# depend on where the work tree is.
_SOURCE_NAME = "hdl/smartfabric.rdl"


def write_register_doc(output_path, *, n_ports=DEFAULT_CONFIG["n_ports"],
                       n_windows=DEFAULT_CONFIG["n_windows"],
                       n_id_routes=DEFAULT_CONFIG["n_id_routes"],
                       n_groups=DEFAULT_CONFIG["n_groups"],
                       n_rgroups=DEFAULT_CONFIG["n_rgroups"],
                       capture_depth=DEFAULT_CONFIG["capture_depth"]):
    """Export the register map of one configuration as Markdown.

    Parameters
    ----------
    output_path : str or Path
        File to write; must end in ``.md``. Its folder is created if needed.
    n_ports, n_windows, n_id_routes, n_groups, n_rgroups, capture_depth : int
        Switch configuration (see :func:`models.regmap.compile_regmap`).

    Raises
    ------
    ValueError
        For a path not ending in ``.md`` or a configuration the map cannot hold.
    """
    root = compile_regmap(n_ports, n_windows, n_id_routes, n_groups, n_rgroups,
                          capture_depth=capture_depth)
    config = (f"N_PORTS={n_ports}, N_WINDOWS={n_windows}, N_ID_ROUTES={n_id_routes}, "
              f"N_GROUPS={n_groups}, N_RGROUPS={n_rgroups}, CAP_DEPTH={capture_depth}")
    MarkdownExporter().export(root.top, str(output_path),
                              input_files=[f"{_SOURCE_NAME} ({config})"])


def main(argv=None):
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m smartfabric.hdl.regdoc",
        description="Write the smartfabric register documentation (Markdown) from the RDL.")
    parser.add_argument("output", help="Markdown file to write, e.g. docs/registers.md")
    parser.add_argument("--ports", type=int, default=DEFAULT_CONFIG["n_ports"],
                        help="number of switch ports (default: %(default)s)")
    parser.add_argument("--windows", type=int, default=DEFAULT_CONFIG["n_windows"],
                        help="number of address windows (default: %(default)s)")
    parser.add_argument("--id-routes", type=int, default=DEFAULT_CONFIG["n_id_routes"],
                        help="number of ID-routing entries (default: %(default)s)")
    parser.add_argument("--groups", type=int, default=DEFAULT_CONFIG["n_groups"],
                        help="Hypercast group table entries shown (default: %(default)s; "
                             "the hardware default is 1024)")
    parser.add_argument("--rgroups", type=int, default=DEFAULT_CONFIG["n_rgroups"],
                        help="reduction groups shown (default: %(default)s; "
                             "the hardware default is 64)")
    parser.add_argument("--capture-depth", type=int, default=DEFAULT_CONFIG["capture_depth"],
                        help="capture ring entries shown (default: %(default)s; "
                             "the hardware default is 64)")
    args = parser.parse_args(argv)
    try:
        write_register_doc(args.output, n_ports=args.ports, n_windows=args.windows,
                           n_id_routes=args.id_routes, n_groups=args.groups,
                           n_rgroups=args.rgroups, capture_depth=args.capture_depth)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
