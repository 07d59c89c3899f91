"""The ``leadio`` command, and what every leadio command line shares: help that shows defaults, one-line errors.

    leadio synth|catalog|buckets|shard|verify|inspect|report [arguments]     (leadio <command> --help)

Each subcommand is the ``main(argv)`` of its module (``python -m leadio.catalog`` etc. stay the same), imported
only when chosen: ``leadio synth`` never pays for torch.

A user error (a missing root, an unknown dataset config or collection, a malformed ``--part``, an incomplete or
stale shard set, a missing optional package) prints ``error: <what and how to fix it>`` on one line and exits
with 2; ``--verbose`` shows the traceback instead. The trade-off: user errors are recognised by type
(``ValueError``, ``OSError``, ``KeyError``, ``ImportError``, and leadio's errors, which derive from those), so
a bug raising one of these also prints one line; rerun with ``--verbose`` to see where it came from. Any other
exception is a bug and keeps its traceback.

Ctrl-C prints one line and exits with 130 (the shell's code for SIGINT): for the commands that write (synth,
catalog, buckets, shard) it says that rerunning the same command resumes, which holds because each writes its
files atomically and a rerun keeps what is complete; a command that only reads passes its own line.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "DEFAULT_ROOT", "INTERRUPTED", "INTERRUPTED_EXIT", "HelpFormatter", "USER_ERRORS", "add_root",
           "main", "make_parser", "one_line", "run_guarded"]

#: LEAD's dataset root, relative to the working directory (what LEAD's scripts use when given no argument).
DEFAULT_ROOT = "data/carla_leaderboard2"

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError, ImportError)

#: What a writing command prints on Ctrl-C (see the module docstring), and the exit code.
INTERRUPTED = "interrupted; rerun the same command to resume (nothing written is lost)"
INTERRUPTED_EXIT = 130

#: subcommand -> (module whose main(argv) runs it, leading arguments, one-line description)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "synth": ("leadio.synth", (), "write synthetic LEAD routes"),
    "catalog": ("leadio.catalog", (), "scan the raw routes into <root>/catalog.zarr"),
    "buckets": ("leadio.buckets.__main__", (), "build or reuse a bucket collection under <root>/buckets/"),
    "shard": ("leadio.shard.__main__", (), "preprocess a collection into bucket-grouped tar shards"),
    "verify": ("leadio.shard.__main__", ("verify",), "check a shard set byte for byte"),
    "inspect": ("leadio.inspect", (), "look at samples of a shard set"),
    "report": ("leadio.report", (), "summarise a dataset root or shard set"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option with a value shows its default (flags and ``None`` do not)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def make_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with `HelpFormatter` and ``--verbose``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="on an error, show the full traceback")
    return parser


def add_root(parser: argparse.ArgumentParser, what: str = "dataset root holding data/<Scenario>/<Route>/") -> None:
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"{what}; relative to the working directory")


def workers_help(what: str = "parallel processes") -> str:
    return f"{what} (default: one per CPU, here %(default)s)"


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's without the quotes repr adds)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(error).__name__
    if isinstance(error, ModuleNotFoundError) and error.name and "pip install" not in text:
        text += f"; install the package that provides {error.name!r}"
    return text


def run_guarded(fn: Callable[[], int | None], verbose: bool, prog: str | None = None, *,
                interrupted: str = INTERRUPTED) -> int:
    """``fn()``'s exit code; a user error prints one line and gives 2, Ctrl-C prints ``interrupted`` and gives 130
    (both re-raised when ``verbose``)."""
    try:
        return fn() or 0
    except USER_ERRORS as e:
        if verbose:
            raise
        print(f"{prog + ': ' if prog else ''}error: {one_line(e)} (--verbose shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if verbose:
            raise
        print(f"{prog + ': ' if prog else ''}{interrupted}", file=sys.stderr)
        return INTERRUPTED_EXIT


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    return "usage: leadio <command> [arguments]   (leadio <command> --help)\n\ncommands:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``leadio <command> ...``: run the command's module ``main`` with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from leadio import __version__

        print(f"leadio {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"leadio: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)} (leadio --help)",
              file=sys.stderr)
        return 2
    module_name, lead, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        print(f"leadio: error: command {name!r} is not part of this leadio version ({module_name} is missing); "
              f"update leadio", file=sys.stderr)
        return 2
    entry = getattr(module, "main", None) or importlib.import_module(f"{module_name}.__main__").main  # a package
    kwargs = {"prog": f"leadio {name}"} if "prog" in inspect.signature(entry).parameters else {}
    return entry([*lead, *rest], **kwargs) or 0


if __name__ == "__main__":
    raise SystemExit(main())
