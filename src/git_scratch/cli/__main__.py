"""The `git-scratch` command line: thin subcommands over the library.

    git-scratch caption MODEL FILE...               one caption per image or video, in input order
    git-scratch vqa MODEL FILE --question Q ...     answers about one image or video, encoded once
    git-scratch convert SRC DST [--force]           any official layout -> config.json + model.safetensors
    git-scratch info MODEL_OR_PRESET                config summary and parameter counts
    git-scratch init --preset NAME DIR              a random-weight checkpoint with a tokenizer, offline

A command is a module of this package with `add_args(parser)` and `run(args) -> int`, listed in
COMMANDS; the first line of its `run`'s docstring is its help. To add one, write the module and
list it. What commands share (loading a checkpoint, devices, shared flags) is in common.py.

User mistakes are raised as ValueError, FileNotFoundError or FileExistsError and printed by
`main` as one line, `git-scratch: error: ...`, on stderr, as is any other OSError (permissions,
a full disk). Any other exception is a bug and keeps its traceback (docs/errors.md lists the
errors). Exit codes: 0 success, 1 some files of a caption batch failed (the others were
captioned) or a parity stage failed, 2 a user error (nothing done), 130 interrupted.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from types import ModuleType

from . import attention, caption, convert, demo, explore, export, info, init, manifest, mask, parity, train, vqa
from . import eval as eval_
from .common import one_line

# --- the table and the entry point -------------------------------------------------------------

# name -> the module that parses the command's flags (add_args) and runs it (run)
COMMANDS: dict[str, ModuleType] = {
    "caption": caption,
    "vqa": vqa,
    "convert": convert,
    "info": info,
    "demo": demo,
    "train": train,
    "eval": eval_,
    "mask": mask,
    "parity": parity,
    "attention": attention,
    "init": init,
    "manifest": manifest,
    "export": export,
    "explore": explore,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="git-scratch", description="GIT (GenerativeImage2Text) from scratch.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show progress messages (logging)")
    # --verbose is accepted after the subcommand too; SUPPRESS keeps an absent one from
    # overwriting a --verbose given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="show progress messages (logging)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        doc = inspect.cleandoc(command.run.__doc__ or "")
        sub = subparsers.add_parser(name, parents=[common], help=doc.splitlines()[0] if doc else None,
                                    description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_args(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has already printed
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("git_scratch").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("git-scratch: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # OSError: FileNotFoundError, FileExistsError, permissions, a full disk
        print(f"git-scratch: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
