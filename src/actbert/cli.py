"""``actbert <command>``: one entry point; each command lives in ``actbert.commands.<module>``.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``actbert --help`` stays fast.
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
    "pretrain": "pretrain",
    "finetune": "finetune",
    "evaluate": "evaluate",
    "convert-paddle": "convert_paddle",
    "check-parity": "check_parity",
    "build-visual-vocab": "build_visual_vocab",
    "demo": "demo",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actbert", description="ActBERT: raw narrated video to downstream results.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, add_help=False)
            continue
        module = importlib.import_module(f"actbert.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command is None:
        # top-level help: list commands without importing their modules
        parser = argparse.ArgumentParser(prog="actbert", description="ActBERT: raw narrated video to downstream results.")
        parser.add_argument("command", choices=sorted(COMMANDS), help="see `actbert COMMAND --help`")
        parser.parse_args(argv or ["--help"])
        return 2
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
