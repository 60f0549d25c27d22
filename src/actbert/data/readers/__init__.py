"""Readers for the five downstream benchmarks, in their real release formats (the synthetic
benchmark writes the same files; see docs/architecture.md "Synthetic benchmark layout").

| benchmark | file(s) | reader → type |
| --- | --- | --- |
| YouCook2 | ``youcookii_annotations_trainval.json`` | ``read_youcook2`` → ``YouCook2Video`` (``Segment``s) |
| MSR-VTT | ``MSRVTT_JSFUSION_test.csv`` | ``read_jsfusion_test`` → ``RetrievalPair`` |
| MSR-VTT | ``MSRVTT_train.9k.csv`` / ``MSRVTT_data.json`` | ``read_train_ids`` / ``read_msrvtt_data`` → ``MsrvttData`` |
| MSR-VTT | ``MSR_MC_test.csv`` | ``read_multiple_choice`` → ``MultipleChoiceItem`` |
| LSMDC | ``LSMDC16_FIB_*.csv`` | ``read_fill_in_blank`` → ``BlankItem`` |
| COIN | ``COIN.json`` | ``read_coin`` → ``CoinVideo`` (``CoinStep``s) |
| CrossTask | ``crosstask_release/`` | ``read_crosstask`` → ``CrossTaskRelease`` (``CrossTaskTask``, ``CrossTaskAnnotation``) |

Every reader raises ``ReaderError`` (a ``ValueError``) naming the file and the line / column (CSV)
or the key path (JSON, e.g. ``database.abc.annotations[2].segment``) of the first problem.
"""

from .coin import CoinStep, CoinVideo, frame_step_ids, read_coin
from .crosstask import (
    CrossTaskAnnotation,
    CrossTaskRelease,
    CrossTaskTask,
    CrossTaskVideo,
    annotation_path,
    read_annotation,
    read_crosstask,
    read_tasks,
    read_videos,
)
from .errors import ReaderError
from .lsmdc import BLANK, BlankItem, parse_lsmdc_time, read_fill_in_blank
from .msrvtt import (
    MsrvttCaption,
    MsrvttData,
    MsrvttVideo,
    MultipleChoiceItem,
    RetrievalPair,
    read_jsfusion_test,
    read_msrvtt_data,
    read_multiple_choice,
    read_train_ids,
)
from .youcook2 import Segment, YouCook2Video, read_youcook2, youcook2_segments

__all__ = [
    "BLANK",
    "BlankItem",
    "CoinStep",
    "CoinVideo",
    "CrossTaskAnnotation",
    "CrossTaskRelease",
    "CrossTaskTask",
    "CrossTaskVideo",
    "MsrvttCaption",
    "MsrvttData",
    "MsrvttVideo",
    "MultipleChoiceItem",
    "ReaderError",
    "RetrievalPair",
    "Segment",
    "YouCook2Video",
    "annotation_path",
    "frame_step_ids",
    "parse_lsmdc_time",
    "read_annotation",
    "read_coin",
    "read_crosstask",
    "read_fill_in_blank",
    "read_jsfusion_test",
    "read_msrvtt_data",
    "read_multiple_choice",
    "read_tasks",
    "read_train_ids",
    "read_videos",
    "read_youcook2",
    "youcook2_segments",
]
