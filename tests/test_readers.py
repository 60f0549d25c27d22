"""Benchmark readers on files in the real release formats, and on malformed variants of them."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from actbert.data.readers import (
    BlankItem,
    CoinStep,
    CrossTaskTask,
    MultipleChoiceItem,
    ReaderError,
    Segment,
    frame_step_ids,
    parse_lsmdc_time,
    read_annotation,
    read_coin,
    read_crosstask,
    read_fill_in_blank,
    read_jsfusion_test,
    read_msrvtt_data,
    read_multiple_choice,
    read_tasks,
    read_train_ids,
    read_videos,
    read_youcook2,
    youcook2_segments,
)

REAL_MSRVTT = Path(__file__).parent / "fixtures" / "real" / "MSRVTT_JSFUSION_test.csv"
REAL_MSRVTT_MD5 = "612aec578f1324a550ecc552b3bdbf6c"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, obj) -> Path:
    return write(path, json.dumps(obj))


def assert_reader_error(fn, path: Path, *fragments: str) -> ReaderError:
    with pytest.raises(ReaderError) as info:
        fn(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, ValueError)
    return info.value


# ---------------------------------------------------------------------------------------------
# YouCook2

YOUCOOK2 = {
    "database": {
        "GLd3aX16zBg": {
            "duration": 241.62,
            "subset": "training",
            "recipe_type": "113",
            "video_url": "https://www.youtube.com/watch?v=GLd3aX16zBg",
            "annotations": [
                {"segment": [90, 102], "id": 0, "sentence": "spread margarine on two slices of white bread"},
                {"segment": [114, 127], "id": 1, "sentence": "place a slice of cheese on the bread"},
            ],
        },
        "xHr8X2Wpmno": {
            "duration": 182.0,
            "subset": "validation",
            "recipe_type": "201",
            "annotations": [{"segment": [10.5, 20.25], "id": 0, "sentence": "boil water in a pot"}],
        },
    }
}


def test_youcook2_reads_real_layout(tmp_path):
    path = write_json(tmp_path / "youcookii_annotations_trainval.json", YOUCOOK2)
    videos = read_youcook2(path)
    assert [v.video_id for v in videos] == ["GLd3aX16zBg", "xHr8X2Wpmno"]
    first = videos[0]
    assert (first.duration, first.subset, first.recipe_type) == (241.62, "training", "113")
    assert first.segments[1] == Segment("GLd3aX16zBg", 114.0, 127.0, "place a slice of cheese on the bread", 1)
    validation = read_youcook2(path, subset="validation")
    assert [v.video_id for v in validation] == ["xHr8X2Wpmno"]
    assert youcook2_segments(validation) == [Segment("xHr8X2Wpmno", 10.5, 20.25, "boil water in a pot", 0)]
    assert len(youcook2_segments(videos)) == 3


@pytest.mark.parametrize(
    "mutate, where, reason",
    [
        (lambda d: d["database"]["GLd3aX16zBg"]["annotations"][1].pop("segment"), "database.GLd3aX16zBg.annotations[1].segment", "missing key"),
        (lambda d: d["database"]["GLd3aX16zBg"]["annotations"][1].update(segment=[90, "x"]), "database.GLd3aX16zBg.annotations[1].segment[1]", "expected int or float"),
        (lambda d: d["database"]["GLd3aX16zBg"]["annotations"][0].update(segment=[50, 40]), "database.GLd3aX16zBg.annotations[0].segment", "before start"),
        (lambda d: d["database"]["GLd3aX16zBg"]["annotations"][0].update(segment=[50]), "database.GLd3aX16zBg.annotations[0].segment", "expected [start, end]"),
        (lambda d: d["database"]["GLd3aX16zBg"]["annotations"][0].update(segment=[50, 400]), "database.GLd3aX16zBg.annotations[0].segment", "past the video duration"),
        (lambda d: d["database"]["GLd3aX16zBg"]["annotations"][0].update(sentence=7), "database.GLd3aX16zBg.annotations[0].sentence", "expected str"),
        (lambda d: d["database"]["GLd3aX16zBg"]["annotations"][0].update(sentence="  "), "database.GLd3aX16zBg.annotations[0].sentence", "empty text"),
        (lambda d: d["database"]["GLd3aX16zBg"].update(duration="long"), "database.GLd3aX16zBg.duration", "expected int or float"),
        (lambda d: d["database"]["GLd3aX16zBg"].update(subset="train"), "database.GLd3aX16zBg.subset", "unknown subset"),
        (lambda d: d["database"]["xHr8X2Wpmno"].pop("annotations"), "database.xHr8X2Wpmno.annotations", "missing key"),
        (lambda d: d.pop("database"), "database", "missing key"),
    ],
)
def test_youcook2_malformed(tmp_path, mutate, where, reason):
    data = copy.deepcopy(YOUCOOK2)
    mutate(data)
    path = write_json(tmp_path / "youcookii_annotations_trainval.json", data)
    error = assert_reader_error(read_youcook2, path, where, reason)
    assert error.where == where


def test_youcook2_bad_json_and_missing_file(tmp_path):
    path = write(tmp_path / "yc.json", '{"database": {"a": ')
    assert_reader_error(read_youcook2, path, "invalid JSON", "line 1")
    assert_reader_error(read_youcook2, tmp_path / "absent.json", "file not found")


# ---------------------------------------------------------------------------------------------
# MSR-VTT


def test_real_msrvtt_jsfusion_test_file():
    assert hashlib.md5(REAL_MSRVTT.read_bytes()).hexdigest() == REAL_MSRVTT_MD5
    pairs = read_jsfusion_test(REAL_MSRVTT)
    assert len(pairs) == 1000
    assert len({p.video_id for p in pairs}) == 1000
    assert len({p.key for p in pairs}) == 1000
    assert pairs[0].key == "ret0" and pairs[0].vid_key == "msr9770" and pairs[0].video_id == "video9770"
    assert pairs[0].sentence == "a person is connecting something to system"
    assert all(p.video_id.startswith("video") and p.vid_key == "msr" + p.video_id[5:] for p in pairs)
    assert all(p.sentence for p in pairs)


def test_jsfusion_malformed(tmp_path):
    header = "key,vid_key,video_id,sentence\n"
    good = "ret0,msr1,video1,a man sings\n"
    assert_reader_error(read_jsfusion_test, write(tmp_path / "a.csv", "key,vid_key,sentence\n" + "ret0,msr1,a man\n"), "line 1", "video_id")
    assert_reader_error(read_jsfusion_test, write(tmp_path / "b.csv", header + good + "ret1,msr1,video1,again\n"), "line 3", "duplicate video id")
    assert_reader_error(read_jsfusion_test, write(tmp_path / "c.csv", header + good + "ret1,msr2,video2\n"), "line 3", "expected 4 fields")
    assert_reader_error(read_jsfusion_test, write(tmp_path / "d.csv", header + "ret1,msr2,video2,\n"), "line 2", "'sentence'", "empty")
    assert_reader_error(read_jsfusion_test, write(tmp_path / "e.csv", header), "no rows")
    assert_reader_error(read_jsfusion_test, write(tmp_path / "f.csv", ""), "empty file")


def test_msrvtt_train_ids_and_data_json(tmp_path):
    ids = read_train_ids(write(tmp_path / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo1\n\nvideo7\n"))
    assert ids == ["video0", "video1", "video7"]
    assert_reader_error(read_train_ids, write(tmp_path / "bad.csv", "vid\nvideo0\n"), "line 1", "video_id")
    data = {
        "info": {"year": 2016},
        "videos": [
            {"category": 9, "url": "u", "video_id": "video0", "start time": 137.72, "end time": 149.44, "split": "train", "id": 0},
            {"category": 16, "url": "u", "video_id": "video1", "start time": 184.33, "end time": 206.89, "split": "test", "id": 1},
        ],
        "sentences": [
            {"caption": "a car is shown", "video_id": "video0", "sen_id": 0},
            {"caption": "a man talks about a car", "video_id": "video0", "sen_id": 1},
            {"caption": "a woman cooks", "video_id": "video1", "sen_id": 2},
        ],
    }
    parsed = read_msrvtt_data(write_json(tmp_path / "MSRVTT_data.json", data))
    assert set(parsed.videos) == {"video0", "video1"}
    assert parsed.videos["video1"].start == 184.33 and parsed.videos["video1"].split == "test"
    assert parsed.captions_of("video0") == ["a car is shown", "a man talks about a car"]
    bad = copy.deepcopy(data)
    bad["sentences"][2]["video_id"] = "video9"
    assert_reader_error(read_msrvtt_data, write_json(tmp_path / "b1.json", bad), "sentences[2].video_id", "unknown video")
    bad = copy.deepcopy(data)
    del bad["videos"][1]["end time"]
    assert_reader_error(read_msrvtt_data, write_json(tmp_path / "b2.json", bad), "videos[1].end time", "missing key")
    bad = copy.deepcopy(data)
    bad["sentences"][0]["sen_id"] = "0"
    assert_reader_error(read_msrvtt_data, write_json(tmp_path / "b3.json", bad), "sentences[0].sen_id", "expected int")


MC_HEADER = "key\tvid_key\tvideo_id\ta1\ta2\ta3\ta4\ta5\tanswer\n"
MC_ROWS = (
    "mc0\tmsr7020\tvideo7020\ta woman creating a fondant baby\ta man plays guitar\tcars race\t\"quoted\" dog\ta cat eats\t0\n"
    "mc1\tmsr7021\tvideo7021\tpeople dance\ta chef cuts onions\tkids swim\ta bird sings\tsoccer, goal\t1\n"
)


def test_multiple_choice_reads_jsfusion_layout(tmp_path):
    items = read_multiple_choice(write(tmp_path / "MSR_MC_test.csv", MC_HEADER + MC_ROWS))
    assert items[0] == MultipleChoiceItem(
        "video7020", ("a woman creating a fondant baby", "a man plays guitar", "cars race", '"quoted" dog', "a cat eats"), 0, "mc0", "msr7020"
    )
    assert items[1].answer == 1 and items[1].candidates[4] == "soccer, goal"
    # columns are found by name, not position
    reordered = "answer\tvideo_id\tkey\tvid_key\ta1\ta2\ta3\ta4\ta5\n" + "4\tvideo9\tmc9\tmsr9\tq\tw\te\tr\tt\n"
    (item,) = read_multiple_choice(write(tmp_path / "r.csv", reordered))
    assert (item.video_id, item.answer, item.candidates[item.answer]) == ("video9", 4, "t")


@pytest.mark.parametrize(
    "text, fragments",
    [
        (MC_HEADER + MC_ROWS.replace("\t0\n", "\t5\n"), ("line 2", "'answer'", "outside 0..4")),
        (MC_HEADER + MC_ROWS.replace("\t1\n", "\t-1\n"), ("line 3", "outside 0..4")),
        (MC_HEADER + MC_ROWS.replace("\t0\n", "\tzero\n"), ("line 2", "'answer'", "expected an integer")),
        (MC_HEADER.replace("\ta5", "") + "mc0\tmsr1\tvideo1\ta\tb\tc\td\t0\n", ("line 1", "a5")),
        (MC_HEADER + "mc0\tmsr1\tvideo1\ta\tb\tc\td\t0\n", ("line 2", "expected 9 fields, got 8")),
        (MC_HEADER + "mc0\tmsr1\tvideo1\ta\t\tc\td\te\t0\n", ("line 2", "'a2'", "empty")),
        (MC_HEADER, ("no rows",)),
    ],
)
def test_multiple_choice_malformed(tmp_path, text, fragments):
    assert_reader_error(read_multiple_choice, write(tmp_path / "MSR_MC_test.csv", text), *fragments)


# ---------------------------------------------------------------------------------------------
# LSMDC fill-in-the-blank


def test_lsmdc_time_parsing():
    assert parse_lsmdc_time("12.5") == 12.5
    assert parse_lsmdc_time("00.01.02.500") == pytest.approx(62.5)
    assert parse_lsmdc_time("01.00.00.05") == pytest.approx(3600.05)
    for bad in ("00.61.00.000", "abc", "nan", "1.2.3"):
        with pytest.raises(ValueError):
            parse_lsmdc_time(bad)


def test_lsmdc_fill_in_blank_both_layouts(tmp_path):
    five = "synth_0001\t0.0\t6.5\tsomeone _____ the onion on the board .\tchops\n"
    eight = (
        "0001_American_Beauty_00.00.51.926-00.00.54.129\t00.00.51.926\t00.00.54.129\t00.00.51.000\t00.00.55.000\t"
        "SOMEONE glances at the \"clock\".\tSOMEONE _____ at the \"clock\".\tglances\n"
    )
    items = read_fill_in_blank(write(tmp_path / "LSMDC16_FIB_test.csv", five + "\n" + eight))
    assert items[0] == BlankItem("synth_0001", 0.0, 6.5, "someone _____ the onion on the board .", "chops", None)
    second = items[1]
    assert second.video_id.startswith("0001_American_Beauty")
    assert second.start == pytest.approx(51.926) and second.end == pytest.approx(54.129)
    assert second.sentence == 'SOMEONE _____ at the "clock".' and second.answer == "glances"
    assert second.full_sentence == 'SOMEONE glances at the "clock".'


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("v1\t0\t5\tsomeone _____ it\n", ("line 1", "expected 5 fields")),
        ("v1\t0\tfive\tsomeone _____ it\tcuts\n", ("line 1", "'end'", "expected seconds")),
        ("v1\t6\t5\tsomeone _____ it\tcuts\n", ("line 1", "before start")),
        ("v1\t0\t5\tsomeone cuts it\tcuts\n", ("line 1", "'sentence'", "no blank")),
        ("v1\t0\t5\tsomeone _____ it\tcuts\nv2\t0\t5\tsomeone _____ it\t \n", ("line 2", "'answer'", "empty")),
        ("", ("no questions",)),
    ],
)
def test_lsmdc_malformed(tmp_path, text, fragments):
    assert_reader_error(read_fill_in_blank, write(tmp_path / "LSMDC16_FIB_test.csv", text), *fragments)


# ---------------------------------------------------------------------------------------------
# COIN

COIN = {
    "database": {
        "-0og5HfWwfs": {
            "recipe_type": 116,
            "class": "MakeCoffee",
            "subset": "training",
            "start": 10.0,
            "end": 60.0,
            "duration": 75.5,
            "url": "https://www.youtube.com/embed/-0og5HfWwfs",
            "annotation": [
                {"id": "3232", "segment": [12.0, 20.0], "label": "pour water"},
                {"id": "3233", "segment": [20.0, 31.5], "label": "add coffee"},
            ],
        },
        "abc": {
            "recipe_type": 7,
            "class": "ChangeTire",
            "subset": "testing",
            "start": 0.0,
            "end": 30.0,
            "annotation": [{"id": 12, "segment": [1.0, 9.0], "label": "loosen nuts"}],
        },
    }
}


def test_coin_reads_real_layout_and_labels_frames(tmp_path):
    path = write_json(tmp_path / "COIN.json", COIN)
    videos = read_coin(path)
    first = videos[0]
    assert (first.video_id, first.recipe_type, first.class_name, first.subset) == ("-0og5HfWwfs", 116, "MakeCoffee", "training")
    assert (first.start, first.end, first.duration) == (10.0, 60.0, 75.5)
    assert first.steps == (CoinStep("3232", 12.0, 20.0, "pour water"), CoinStep("3233", 20.0, 31.5, "add coffee"))
    assert videos[1].duration is None and videos[1].steps[0].step_id == "12"
    assert [v.video_id for v in read_coin(path, subset="testing")] == ["abc"]
    # [start, end): the boundary frame belongs to the step that starts there
    assert frame_step_ids(first, [0.0, 12.0, 19.9, 20.0, 31.4, 31.5]) == [None, "3232", "3232", "3233", "3233", None]


@pytest.mark.parametrize(
    "mutate, where, reason",
    [
        (lambda d: d["database"]["abc"]["annotation"][0].pop("label"), "database.abc.annotation[0].label", "missing key"),
        (lambda d: d["database"]["abc"]["annotation"][0].update(segment="1-9"), "database.abc.annotation[0].segment", "expected list or tuple"),
        (lambda d: d["database"]["abc"]["annotation"][0].update(segment=[1.0, None]), "database.abc.annotation[0].segment[1]", "got NoneType"),
        (lambda d: d["database"]["abc"].update(recipe_type="7"), "database.abc.recipe_type", "expected int"),
        (lambda d: d["database"]["abc"].update(end=-1.0), "database.abc.end", "before start"),
        (lambda d: d["database"]["-0og5HfWwfs"]["annotation"][1].update(segment=[20.0, 90.0]), "database.-0og5HfWwfs.annotation[1].segment", "past the video duration"),
        (lambda d: d["database"]["abc"].pop("class"), "database.abc.class", "missing key"),
        (lambda d: d.update(database=[]), "database", "expected dict"),
    ],
)
def test_coin_malformed(tmp_path, mutate, where, reason):
    data = copy.deepcopy(COIN)
    mutate(data)
    error = assert_reader_error(read_coin, write_json(tmp_path / "COIN.json", data), where, reason)
    assert error.where == where


# ---------------------------------------------------------------------------------------------
# CrossTask

TASKS = """23521
Make Jello Shots
http://www.wikihow.com/Make-Jello-Shots
6
pour water,pour juice,pour jello powder,pour alcohol,stir mixture,pour mixture into cup

59684
Build Floating Shelves
http://www.wikihow.com/Build-Floating-Shelves
3
cut shelf,assemble shelf,sand shelf
"""


def make_release(root: Path, tasks: str = TASKS) -> Path:
    release = root / "crosstask_release"
    write(release / "tasks_primary.txt", tasks)
    write(
        release / "videos.csv",
        "23521,yRLs9kSIVXg,https://www.youtube.com/watch?v=yRLs9kSIVXg\n"
        "23521,a_b-c,https://www.youtube.com/watch?v=a_b-c\n"
        "59684,zzz,https://www.youtube.com/watch?v=zzz\n"
        "99999,related,https://www.youtube.com/watch?v=related\n",
    )
    write(release / "annotations" / "23521_yRLs9kSIVXg.csv", "1,6.49,14.23\n3,20.0,25.5\n1,40.0,42.0\n")
    write(release / "annotations" / "23521_a_b-c.csv", "6,0.0,3.0\n")
    return release


def test_crosstask_release(tmp_path):
    release = make_release(tmp_path)
    tasks = read_tasks(release / "tasks_primary.txt")
    assert tasks["23521"] == CrossTaskTask(
        "23521",
        "Make Jello Shots",
        ("pour water", "pour juice", "pour jello powder", "pour alcohol", "stir mixture", "pour mixture into cup"),
        "http://www.wikihow.com/Make-Jello-Shots",
    )
    assert tasks["59684"].steps == ("cut shelf", "assemble shelf", "sand shelf")
    data = read_crosstask(release)
    assert [v.video_id for v in data.videos] == ["yRLs9kSIVXg", "a_b-c", "zzz"]  # task 99999 is not primary
    annotation = data.annotations[("23521", "yRLs9kSIVXg")]
    assert annotation.steps == ((0, 6.49, 14.23), (2, 20.0, 25.5), (0, 40.0, 42.0))  # 1-based → 0-based
    assert data.annotations[("23521", "a_b-c")].steps == ((5, 0.0, 3.0),)
    assert [v.video_id for v in data.unannotated] == ["zzz"]
    assert read_videos(release / "videos.csv")[3].task_id == "99999"


@pytest.mark.parametrize(
    "rows, fragments",
    [
        ("7,1.0,2.0\n", ("line 1", "'step'", "outside 1..6")),
        ("0,1.0,2.0\n", ("line 1", "outside 1..6")),
        ("1,1.0,2.0\n2,abc,3.0\n", ("line 2", "'start'", "expected a number")),
        ("1,1.0\n", ("line 1", "expected 3 fields")),
        ("1,5.0,2.0\n", ("line 1", "before start")),
        ("x,1.0,2.0\n", ("line 1", "'step'", "expected an integer")),
    ],
)
def test_crosstask_annotation_malformed(tmp_path, rows, fragments):
    path = write(tmp_path / "annotations" / "23521_v.csv", rows)
    assert_reader_error(lambda p: read_annotation(p, "23521", "v", 6), path, *fragments)


def test_crosstask_tasks_malformed(tmp_path):
    wrong_count = TASKS.replace("\n3\ncut shelf", "\n4\ncut shelf")
    assert_reader_error(read_tasks, write(tmp_path / "t1.txt", wrong_count), "line 11", "3 step names but the block declares 4")
    short_block = TASKS.replace("http://www.wikihow.com/Build-Floating-Shelves\n", "")
    assert_reader_error(read_tasks, write(tmp_path / "t2.txt", short_block), "line 7", "4 lines; expected 5")
    bad_number = TASKS.replace("\n6\n", "\nsix\n")
    assert_reader_error(read_tasks, write(tmp_path / "t3.txt", bad_number), "line 4", "expected an integer")
    assert_reader_error(read_tasks, write(tmp_path / "t4.txt", "\n\n"), "no task blocks")
    release = make_release(tmp_path / "r")
    write(release / "videos.csv", "23521\n")
    assert_reader_error(lambda p: read_crosstask(p), release, "videos.csv", "line 1", "expected 2 or 3 fields")


# ---------------------------------------------------------------------------------------------
# the synthetic benchmark writes the same formats: every reader accepts its files


@pytest.fixture(scope="module")
def synthetic_annotations(synth_tiny) -> Path:
    return synth_tiny  # shared session fixture (tests/conftest.py)


def test_readers_accept_the_synthetic_benchmark(synthetic_annotations):
    root = synthetic_annotations
    ann = root / "annotations"
    video_ids = {p.stem for p in (root / "videos").glob("*.mp4")}
    youcook = read_youcook2(ann / "youcook2" / "youcookii_annotations_trainval.json")
    assert youcook and {v.subset for v in youcook} <= {"training", "validation"}
    pairs = read_jsfusion_test(ann / "msrvtt" / "MSRVTT_JSFUSION_test.csv")
    train_ids = read_train_ids(ann / "msrvtt" / "MSRVTT_train.9k.csv")
    data = read_msrvtt_data(ann / "msrvtt" / "MSRVTT_data.json")
    choices = read_multiple_choice(ann / "msrvtt" / "MSR_MC_test.csv")
    blanks = read_fill_in_blank(ann / "lsmdc" / "LSMDC16_FIB_test.csv")
    coin = read_coin(ann / "coin" / "COIN.json")
    crosstask = read_crosstask(ann / "crosstask" / "crosstask_release")
    used = (
        {v.video_id for v in youcook}
        | {p.video_id for p in pairs}
        | set(train_ids)
        | set(data.videos)
        | {c.video_id for c in choices}
        | {b.video_id for b in blanks}
        | {v.video_id for v in coin}
        | {v.video_id for v in crosstask.videos}
    )
    assert used <= video_ids, sorted(used - video_ids)[:5]
    assert {p.video_id for p in pairs} <= set(data.videos) and not set(train_ids) & {p.video_id for p in pairs}
    assert all(len(c.candidates) == 5 for c in choices)
    assert crosstask.annotations and not crosstask.unannotated
    for annotation in crosstask.annotations.values():
        steps = crosstask.tasks[annotation.task_id].steps
        assert all(0 <= step < len(steps) for step, _, _ in annotation.steps)
