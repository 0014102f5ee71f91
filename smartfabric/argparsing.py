"""The argument parser of every command line of the project."""

import argparse

__all__ = ["OneLineParser"]


class OneLineParser(argparse.ArgumentParser):
    """argparse that answers a bad argument with one line, ``<program>: error: <message>``
    (the program being the first word of ``prog``: ``smartfabric`` for its sub-commands too),
    and exit status 2, instead of the usage text followed by the message."""

    def error(self, message):
        self.exit(2, f"{self.prog.split()[0]}: error: {message}\n")
