"""The argument parser of every command line of the project, and the switch's build options
that several of them share."""

import argparse
from pathlib import Path

__all__ = ["OneLineParser", "add_switch_arguments", "switch_params"]


class OneLineParser(argparse.ArgumentParser):
    """argparse that answers a bad argument with one line, ``<program>: error: <message>``
    (the program being the first word of ``prog``: ``smartfabric`` for its sub-commands too),
    and exit status 2, instead of the usage text followed by the message."""

    def error(self, message):
        self.exit(2, f"{self.prog.split()[0]}: error: {message}\n")


#: (option, SwitchParams field) of the build options on the command line.
_SWITCH_OPTIONS = (("ports", "n_ports"), ("data_width", "data_width"),
                   ("max_payload", "max_payload"), ("voq_depth", "voq_depth"),
                   ("windows", "n_windows"), ("id_routes", "n_id_routes"))


def add_switch_arguments(parser, *, ports=8, width=256):
    """Add the switch's build options to ``parser``: ``--ports``, ``--data-width``,
    ``--max-payload``, ``--voq-depth``, ``--windows``, ``--id-routes`` and ``--config``.
    ``ports`` and ``width`` are this command's defaults; the other fields default to
    SwitchParams'. :func:`switch_params` makes the build from the parsed arguments."""
    parser.set_defaults(switch_defaults={"n_ports": ports, "data_width": width})
    parser.add_argument("--ports", type=int, help=f"number of ports, 2-32 (default {ports})")
    parser.add_argument("--data-width", type=int,
                        help=f"beat width in bits: 64, 128, 256, 512 (default {width})")
    parser.add_argument("--max-payload", type=int, help="max payload bytes (default 256)")
    parser.add_argument("--voq-depth", type=int, help="VOQ depth in beats (default 32)")
    parser.add_argument("--windows", type=int, help="address windows (default 16)")
    parser.add_argument("--id-routes", type=int, help="ID-routing entries (default 16)")
    parser.add_argument("--config", type=Path,
                        help="TOML file with a [switch] table of SwitchParams fields; the "
                             "options above, where given, override it")
    return parser


def switch_params(args):
    """The SwitchParams of arguments parsed with :func:`add_switch_arguments`: the command's
    defaults, then the ``--config`` file, then the options given. ValueError (one line) for a
    build the parameters refuse or a config file that cannot be read."""
    from .hdl.params import SwitchParams, load_config
    fields = dict(args.switch_defaults)
    if args.config is not None:
        fields.update(load_config(args.config))
    for option, field in _SWITCH_OPTIONS:
        if getattr(args, option) is not None:
            fields[field] = getattr(args, option)
    return SwitchParams(**fields)
