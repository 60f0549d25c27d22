"""Every bad-input error of the package derives from ``actbert.errors.ActBertError`` (a ValueError)."""

from __future__ import annotations

import pytest

from actbert.config import ConfigError
from actbert.data.corpus import CorpusError
from actbert.data.readers.errors import ReaderError
from actbert.data.store import FeatureValidationError, StoreSchemaError
from actbert.errors import ActBertError, CheckpointError
from actbert.metrics.errors import MetricInputError
from actbert.text.tokenizer import TokenizerError
from actbert.text.verbs import NarrationError, VocabularyError
from actbert.train import checkpoint
from actbert.utils.io import read_json
from actbert.utils.schedule import lr_factor
from actbert.video import regions
from actbert.video.action_encoder import ActionEncoderError
from actbert.video.boxes import RegionInputError
from actbert.video.decode import VideoDecodeError
from actbert.video.extract import ShardError, parse_shard
from actbert.video.object_classifier import ObjectClassifierError

ERRORS = [
    ConfigError,
    CorpusError,
    ReaderError,
    FeatureValidationError,
    StoreSchemaError,
    MetricInputError,
    TokenizerError,
    NarrationError,
    VocabularyError,
    checkpoint.CheckpointError,
    ActionEncoderError,
    RegionInputError,
    regions.DetectorWeightsError,
    VideoDecodeError,
    ShardError,
    ObjectClassifierError,
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_error_derives_from_the_package_base(error):
    assert issubclass(error, ActBertError)
    assert issubclass(error, ValueError)  # callers that catch ValueError keep working


def test_one_checkpoint_error_and_one_region_input_error():
    assert checkpoint.CheckpointError is CheckpointError
    assert regions.RegionInputError is RegionInputError


def test_plain_raises_use_the_base(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ActBertError, match="bad.json"):
        read_json(bad)
    with pytest.raises(ActBertError, match="schedule"):
        lr_factor(0, 0, 10, "zigzag", 0.0)
    with pytest.raises(ShardError, match="3/2"):
        parse_shard("3/2")
