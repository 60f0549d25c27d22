"""``actbert convert-paddle CHECKPOINT OUT_DIR``: PaddleVideo ActBERT weights -> from_pretrained folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "convert PaddleVideo ActBERT weights (.pdparams or .npz) into a from_pretrained folder"

# CLI option -> config field the checkpoint's shapes cannot tell (defaults: upstream / released model).
_INT_OPTIONS = {
    "--num-attention-heads": ("num_attention_heads", "text heads (released model: 12)"),
    "--v-num-attention-heads": ("v_num_attention_heads", "region heads (released model: 8)"),
    "--a-num-attention-heads": ("a_num_attention_heads", "action heads (released model: 12)"),
    "--bi-num-attention-heads": ("bi_num_attention_heads", "connection-layer heads (released model: 8)"),
    "--fixed-t-layer": ("fixed_t_layer", "text layers below this id train without gradient (default 0)"),
    "--fixed-v-layer": ("fixed_v_layer", "region layers below this id train without gradient (default 0)"),
}
_LIST_OPTIONS = {
    "--t-ent-attention-id": ("t_ent_attention_id", "text layer ids of the connection layers (default: the last ones, [10, 11] for 12 layers)"),
    "--v-ent-attention-id": ("v_ent_attention_id", "region layer ids of the connection layers (default: 0 1 ...)"),
    "--a-ent-attention-id": ("a_ent_attention_id", "action layer ids of the connection layers (default: 0 1 ...)"),
}
_STR_OPTIONS = {
    "--hidden-act": ("hidden_act", "text activation (default gelu)"),
    "--v-hidden-act": ("v_hidden_act", "region activation (default gelu)"),
    "--a-hidden-act": ("a_hidden_act", "action activation (default gelu)"),
    "--fusion-method": ("fusion_method", "pooled fusion: mul (released) or sum"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="ActBERT.pdparams (paddle.save pickle, read safely) or .npz")
    parser.add_argument("out_dir", type=Path, help="folder to write config.json + model.safetensors")
    parser.add_argument(
        "--paddle-config",
        type=Path,
        help="JSON with BertForMultiModalPreTraining kwargs (a plain mapping or {'kwargs': {...}}); CLI options win",
    )
    for flag, (_, text) in _INT_OPTIONS.items():
        parser.add_argument(flag, type=int, help=text)
    for flag, (_, text) in _LIST_OPTIONS.items():
        parser.add_argument(flag, type=int, nargs="+", help=text)
    for flag, (_, text) in _STR_OPTIONS.items():
        parser.add_argument(flag, type=str, help=text)
    parser.add_argument(
        "--allow-missing", action="store_true", help="keep freshly initialised values for parameters the checkpoint lacks"
    )


def _overrides(args: argparse.Namespace) -> dict:
    from actbert.utils.io import read_json

    overrides: dict = {}
    if args.paddle_config is not None:
        data = read_json(args.paddle_config, "Paddle config")
        if isinstance(data, dict) and isinstance(data.get("kwargs"), dict):
            data = data["kwargs"]
        if not isinstance(data, dict):
            raise ValueError(f"{args.paddle_config}: expected a JSON mapping of constructor arguments")
        overrides.update(data)
    for table in (_INT_OPTIONS, _LIST_OPTIONS, _STR_OPTIONS):
        for flag, (name, _) in table.items():
            value = getattr(args, flag.lstrip("-").replace("-", "_"))
            if value is not None:
                overrides[name] = value
    return overrides


def run(args: argparse.Namespace) -> int:
    from actbert.errors import CheckpointError
    from actbert.models.paddlevideo.convert import convert_paddle_checkpoint

    try:
        report = convert_paddle_checkpoint(args.checkpoint, args.out_dir, _overrides(args), args.allow_missing)
    except (CheckpointError, ValueError) as exc:
        print(f"convert-paddle: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"wrote {args.out_dir}/config.json, model.safetensors, conversion_report.json")
    if report.assumed:
        print("assumed defaults (pass options to change): " + json.dumps(report.assumed))
    return 0
