"""The verb stop-list is a setting (paper 4.1 keeps "go", HowTo100M's most frequent verb; the default list drops it)."""

from __future__ import annotations

import json

import pytest

from actbert.text.verbs import (
    AUXILIARY_VERBS,
    DEFAULT_STOP_VERBS,
    ActionVocabulary,
    VerbMiner,
    VocabularyError,
    mine_action_vocabulary,
    stop_verb_list,
)


def test_stop_verb_lists_by_name_and_by_hand():
    assert "go" in stop_verb_list(None) and stop_verb_list("default") == DEFAULT_STOP_VERBS
    assert stop_verb_list("auxiliary") == AUXILIARY_VERBS and "go" not in AUXILIARY_VERBS
    assert stop_verb_list("none") == frozenset()
    assert stop_verb_list(" Be, have ,go") == frozenset({"be", "have", "go"})
    with pytest.raises(VocabularyError, match="stop verbs"):
        stop_verb_list("be,go!")


def test_mined_vocabulary_keeps_go_with_auxiliary_list_and_records_it(tmp_path):
    narrations = tmp_path / "narrations.json"
    texts = ["now go and whisk the eggs", "go to the sink and rinse", "then go ahead and whisk it", "we go back and chop"]
    narrations.write_text(json.dumps({"v1": {"start": [0, 4, 8, 12], "end": [4, 8, 12, 16], "text": texts}}))
    default = mine_action_vocabulary(narrations, tmp_path / "default.json", min_count=2, log=lambda _m: None)
    paper_like = mine_action_vocabulary(narrations, tmp_path / "aux.json", min_count=2, stop_verbs="auxiliary",
                                        log=lambda _m: None)
    assert "go" not in default.verbs and "whisk" in default.verbs
    assert paper_like.verbs[0] == "go" and paper_like.counts["go"] == 4  # the most frequent verb, as in the paper
    # the file records the list; a miner for the vocabulary uses it, a file without it means the default
    loaded = ActionVocabulary.load(tmp_path / "aux.json")
    assert loaded.stop_verbs == sorted(AUXILIARY_VERBS)
    assert "go" in VerbMiner.for_vocabulary(loaded).verbs("go and whisk")
    assert ActionVocabulary.from_dict({"verbs": ["whisk"]}).stop_verbs is None
    assert "go" not in VerbMiner.for_vocabulary(ActionVocabulary(["whisk"])).verbs("go and whisk")
