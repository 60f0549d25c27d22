"""``actbert <command>``: one entry point; each command lives in ``actbert.commands.<module>``.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Only the running command's arguments are built, so ``actbert --help`` stays fast.

Expected errors (``ActBertError``: a bad file, field or setting; ``OSError``: a missing file, a full
disk) end the command with one line on stderr -- ``actbert COMMAND: <file>: <field>: <what to do>`` --
and exit status 1; ``--debug`` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under actbert.commands
COMMANDS: dict[str, str] = {
    "synth": "synth",
    "mine-verbs": "mine_verbs",
    "train-action-encoder": "train_action_encoder",
    "train-object-classifier": "train_object_classifier",
    "extract": "extract",
    "pack": "pack",
    "pretrain": "pretrain",
    "finetune": "finetune",
    "evaluate": "evaluate",
    "search": "search",
    "convert-paddle": "convert_paddle",
    "check-parity": "check_parity",
    "build-visual-vocab": "build_visual_vocab",
    "demo": "demo",
    "compare": "compare",
}


DESCRIPTION = "ActBERT and the models it is compared with: raw narrated video to downstream results."
DEBUG_HELP = "add --debug to any command to see the full traceback of an error"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actbert", description=DESCRIPTION, epilog=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"actbert.commands.{module_name}")
        if only is not None and name != only:
            sub.add_parser(name, help=module.HELP, add_help=False)
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=DEBUG_HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from actbert.errors import ActBertError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command is None:
        # top-level help: every command with its one line (no command's arguments are built)
        build_parser(only="").parse_args(argv or ["--help"])
        return 2
    args = build_parser(only=command).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ActBertError, OSError) as exc:
        if debug:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"actbert {command}: {first} (--debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
