"""A query against an empty or mismatched gallery (another model family, other feature dims, a changed
store, a damaged index folder) is a GalleryIndexError naming the file (and the field)."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch

from actbert.data.clips import ClipAssembler
from actbert.data.store import FeatureStore, FeatureStoreWriter
from actbert.models import registry as model_registry
from actbert.models.hero import HeroForPretraining
from actbert.models.vlm import VLMForPretraining
from actbert.tasks import index as gindex

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(synth_tiny, tmp_path_factory):
    from helpers_planted_store import write_planted_store
    from test_hero import tiny_config

    from actbert.text.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("gallery_errors")
    tokenizer = load_tokenizer()
    store = write_planted_store(synth_tiny, root / "store")
    narrow = write_planted_store(synth_tiny, root / "narrow", action_dim=32, region_dim=32)

    def hero(schema):
        config = tiny_config(vocab_size=30524, mask_token_id=103, pad_token_id=0, cls_token_id=101, sep_token_id=102)
        torch.manual_seed(0)
        return HeroForPretraining(HeroForPretraining.fill_config_from_data(config, schema, tokenizer)).eval()

    torch.manual_seed(0)
    vlm = model_registry.create_model(
        VLMForPretraining.fill_config_from_data(model_registry.load_model_config("vlm_tiny"), store.schema, tokenizer), verbose=False).eval()
    assembler = ClipAssembler(store, tokenizer)
    folder = gindex.open_index(hero(store.schema), assembler, root / "hero_index")  # built and saved
    return {"root": root, "tokenizer": tokenizer, "store": store, "narrow": narrow, "hero": hero(store.schema),
            "hero_narrow": hero(narrow.schema), "vlm": vlm, "assembler": assembler, "folder": folder.path}


def test_another_model_family_is_refused(setup):
    manifest = setup["folder"] / "manifest.json"
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest}: field 'architecture' is 'hero', the model has 'vlm'"):
        gindex.load_index(setup["folder"], setup["vlm"], setup["assembler"])
    # the search path (actbert search) goes through the same check
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest}: field 'architecture'"):
        gindex.open_index(setup["vlm"], setup["assembler"], setup["folder"])


def test_other_feature_dims_are_refused(setup):
    """A model for 32-wide features against the 64-wide index (and the 64-wide model on a 32-wide store)."""
    manifest = setup["folder"] / "manifest.json"
    assert setup["hero_narrow"].config.vfeat_dim == 32 and setup["hero"].config.vfeat_dim == 64
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest}: field 'config_digest'"):
        gindex.load_index(setup["folder"], setup["hero_narrow"], setup["assembler"])
    narrow = ClipAssembler(setup["narrow"], setup["tokenizer"])
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest}: field 'store_digest'.*other feature dims"):
        gindex.open_index(setup["hero"], narrow, setup["folder"])


def test_empty_store_is_refused_naming_it(setup):
    empty_root = setup["root"] / "empty"
    FeatureStoreWriter(empty_root, setup["store"].schema)
    empty = ClipAssembler(FeatureStore(empty_root), setup["tokenizer"])
    with pytest.raises(gindex.GalleryIndexError, match=rf"{empty_root}: field 'clips' is empty"):
        gindex.open_index(setup["hero"], empty, setup["root"] / "empty_index")
    assert not (setup["root"] / "empty_index").exists()


def test_empty_index_is_refused_naming_its_manifest(setup, tmp_path):
    gallery = gindex.GalleryIndex(faiss.IndexFlatIP(4), [], {}, tmp_path)
    with pytest.raises(gindex.GalleryIndexError, match=rf"{tmp_path / 'manifest.json'}: field 'clips' is empty"):
        gallery.search(np.zeros((1, 4), np.float32), 3)
    with pytest.raises(gindex.GalleryIndexError, match=rf"{tmp_path / 'manifest.json'}: field 'clips' is empty"):
        gindex.search(setup["hero"], setup["assembler"], gallery, "cut the onion")


def test_a_store_that_changed_asks_for_a_rebuild(setup, tmp_path):
    import shutil

    changed_root = tmp_path / "store"
    shutil.copytree(setup["store"].root, changed_root, ignore=shutil.ignore_patterns("index"))
    first = sorted((changed_root / "videos").iterdir())[0]
    first.unlink()  # the store lost a video: its clips are no longer the index's
    changed = ClipAssembler(FeatureStore(changed_root), setup["tokenizer"])
    manifest = setup["folder"] / "manifest.json"
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest}: field 'clips' lists \d+ clips.*rebuild"):
        gindex.open_index(setup["hero"], changed, setup["folder"])


def test_damaged_index_folder_names_the_file(setup, tmp_path):
    import shutil

    folder = tmp_path / "idx"
    shutil.copytree(setup["folder"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["clips"] = manifest["clips"][:-1]  # one clip fewer than the faiss file holds
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(gindex.GalleryIndexError, match=rf"{folder / 'index.faiss'}: holds \d+ vectors, field 'clips' of {folder / 'manifest.json'}"):
        gindex.load_index(folder)
    (folder / "index.faiss").unlink()
    with pytest.raises(gindex.GalleryIndexError, match=rf"{folder / 'index.faiss'}: no such file"):
        gindex.load_index(folder)
