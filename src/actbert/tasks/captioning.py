"""Video captioning on YouCook2 (ActBERT 4.2.2, Table 1): BLEU-3, BLEU-4, METEOR, ROUGE-L, CIDEr.

As in the paper, the pretrained **action** stream is the video encoder and the region stream is not
used ("we do not use the regional object transformer"): a YouCook2 segment becomes its store clips
(``ClipAssembler.span_clips(..., regions=False)``) with the empty text ``[CLS] [SEP]``, and the
action-stream outputs ``[B, La, Dv]`` (``[ACT]`` per clip + ``[SEP]``, padding masked) are the
memory of a small transformer decoder (:class:`CaptionDecoder`):

* words: the tokenizer's WordPiece vocabulary; the decoder's word table is initialised from the
  model's text word embeddings when the widths agree (``width=0`` = the text width), and its
  output layer is tied to that table (+ a bias);
* memory: ``Linear(Dv -> width)``; ``layers`` x ``nn.TransformerDecoderLayer`` (pre-norm, GELU);
* sequence: ``[CLS] w1 .. wn [SEP]`` -- ``[CLS]`` starts a caption, ``[SEP]`` ends it.

Fine-tuning (``finetune``) trains decoder and encoder together with teacher-forced cross-entropy
(label smoothing optional) on the *training* segments, the encoder at a lower learning rate
(``encoder_lr``); evaluation (``evaluate``) decodes every *validation* segment (greedy for
``beam_size=1``, else beam search with length normalisation ``score / len**length_penalty``) and
scores the detokenised captions with pycocoevalcap (``actbert.metrics.caption_metrics``). Special
tokens other than ``[SEP]`` are never generated and ``[SEP]`` not as the first word (no empty
captions).

**Primary metric: CIDEr.** It is the paper's last column and the one that rewards getting the
content words (ingredient, action) right through its TF-IDF weighting; BLEU-4 needs a 4-gram match
and is 0 or near 0 for most clips of a small validation set, so it separates models less.

The fine-tuned model is the model + the decoder as its ``caption_decoder`` head
(:class:`~actbert.tasks.heads.FinetunedModel`): ``finetune`` returns it as the log's ``.model``;
``evaluate`` takes it; ``save_finetuned`` / ``load_for_evaluation`` (tasks/registry.py) keep it on
disk like every task's (the model's ``save_pretrained`` folder + ``heads.json`` / ``heads.safetensors``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from actbert.config import AT_LEAST_ONE, DROPOUT, Range
from actbert.data import readers
from actbert.metrics.captioning import caption_metrics
from actbert.data.clips import ClipAssembler
from actbert.models.generation import repeated_ngrams
from actbert.models.interface import capabilities_of, device_of, require
from actbert.models.processing import Item, VideoRef, processor_for
from actbert.tasks.common import Benchmark, TaskError, batched, make_record, on_device
from actbert.tasks.heads import FinetunedModel, TaskHead, base_model, heads_of, with_heads
from actbert.train.finetune import TrainLog, train_loop
from actbert.utils.precision import autocast

TASK = "captioning"
PRIMARY = "CIDEr"
REPORTED = ("BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")  # the columns of the paper's Table 1
REQUIRES = ("caption_memory",)  # the decoder route; a model with "caption_generation" may caption by itself
OWN = "caption_generation"
HEAD = "caption_decoder"  # the fine-tuned model's head name


@dataclass
class CaptioningSettings:
    # numeric settings not named here must be >= 0 (checked by tasks.registry)
    RANGES: ClassVar[dict[str, Range]] = {"batch_size": AT_LEAST_ONE, "layers": AT_LEAST_ONE, "heads": AT_LEAST_ONE, "ff_mult": AT_LEAST_ONE,
              "dropout": DROPOUT, "max_caption_len": AT_LEAST_ONE, "train_batch": AT_LEAST_ONE,
              "label_smoothing": DROPOUT, "beam_size": AT_LEAST_ONE}
    batch_size: int = 32  # clips per encoder forward pass when decoding
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    device: str = "auto"  # auto (a GPU if there is one) | cpu | cuda | cuda:N
    max_clips: int = 0  # 0 = every validation segment; else the first N (budgeted runs say so)
    # decoder
    width: int = 0  # 0 = the model's text width (word table copied from the text stream)
    layers: int = 2
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    max_caption_len: int = 20  # word pieces, [SEP] included
    init_word_embeddings: bool = True
    # fine-tuning on the training segments (paper: Adam, lr 1e-3, batch 128, 40k iterations)
    steps: int = 200
    lr: float = 1e-3  # decoder
    encoder_lr: float = 5e-5  # the pretrained encoder, fine-tuned gently
    train_batch: int = 16
    label_smoothing: float = 0.1
    seed: int = 0
    # decoding and scoring
    beam_size: int = 3  # 1 = greedy
    length_penalty: float = 0.6  # beam hypotheses ranked by log p / len**length_penalty
    # n > 0: no n-gram of word pieces twice in a caption (greedy and beam, and a model's own generation).
    # 0 = off, the papers' decoding. A weakly fine-tuned decoder can loop ("x x x ..."), docs/compare.md
    no_repeat_ngram: int = 0
    meteor: bool = True  # METEOR 1.5 runs in Java; without Java it is reported as None
    # auto: a model that captions by itself (the "caption_generation" capability, e.g. VLM's generation
    # mask) trains and decodes with its own head, greedy; any other model gets the decoder. decoder: always the decoder
    generator: str = "auto"
    num_examples: int = 5


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    width: int
    memory_width: int
    layers: int = 2
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    max_len: int = 20
    bos_id: int = 101
    eos_id: int = 102
    pad_id: int = 0


class CaptionDecoder(TaskHead):
    """``tokens [B, T]`` + ``memory [B, La, Dv]`` (+ ``memory_mask [B, La]`` True = real) -> logits ``[B, T, V]``.

    Causal self-attention over the caption so far, cross-attention to the projected video memory.
    """

    kind = "caption_decoder"

    def __init__(self, config: DecoderConfig):
        super().__init__()
        if config.width % config.heads:
            raise TaskError(f"captioning settings: heads={config.heads} does not divide the decoder width {config.width}")
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.width)
        self.position_embeddings = nn.Embedding(config.max_len + 1, config.width)
        self.embedding_norm = nn.LayerNorm(config.width)
        self.memory_projection = nn.Linear(config.memory_width, config.width)
        layer = nn.TransformerDecoderLayer(
            config.width, config.heads, config.ff_mult * config.width, config.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerDecoder(layer, config.layers, norm=nn.LayerNorm(config.width))
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.dropout = nn.Dropout(config.dropout)
        nn.init.normal_(self.word_embeddings.weight, std=0.02)
        nn.init.normal_(self.position_embeddings.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        T = tokens.shape[1]
        if T > self.config.max_len + 1:
            raise TaskError(f"caption decoder: {T} tokens exceed max_len+1={self.config.max_len + 1}")
        positions = torch.arange(T, device=tokens.device)
        x = self.word_embeddings(tokens) + self.position_embeddings(positions)[None]
        x = self.dropout(self.embedding_norm(x))
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), diagonal=1)  # True = may not attend
        mem = self.memory_projection(memory.to(self.memory_projection.weight.dtype))
        h = self.layers(
            x,
            mem,
            tgt_mask=causal,
            tgt_key_padding_mask=None if token_mask is None else ~token_mask.bool(),
            memory_key_padding_mask=~memory_mask.bool(),
        )
        return h @ self.word_embeddings.weight.T + self.output_bias  # tied output layer

    def head_config(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def from_head_config(cls, config: Any) -> "CaptionDecoder":
        return cls(DecoderConfig(**config))


def own_generation(model: Any, settings: CaptioningSettings) -> bool:
    """True when the model captions by itself (``generator=auto`` and the capability), not by a decoder."""
    if settings.generator not in ("auto", "decoder"):
        raise TaskError(f"captioning setting generator: expected auto or decoder, got {settings.generator!r}")
    if settings.generator == "decoder" or HEAD in heads_of(model):
        return False
    return OWN in capabilities_of(base_model(model))


def own_caption_loss(model: Any, assembler: ClipAssembler, clips: Sequence[CaptionClip]) -> torch.Tensor:
    """The model's own captioning loss on ``clips`` (rows: the segment's video + its sentence)."""
    model = base_model(model)
    batch = processor_for(model, assembler).batch([Item(VideoRef(c.video_id, c.start, c.end), c.sentence) for c in clips],
                                                  use_regions=False)
    return model.caption_loss(on_device(batch, model))


@torch.no_grad()
def own_generate(model: Any, assembler: ClipAssembler, clips: Sequence[CaptionClip], max_words: int, batch_size: int = 32,
                 dtype: str = "fp32", progress: bool = True, no_repeat_ngram: int = 0) -> list[str]:
    """Detokenised captions from the model's own generation (``generate_captions``), in clip order;
    ``no_repeat_ngram`` as for the decoder route."""
    model = base_model(model).eval()
    processor, tok = processor_for(model, assembler), assembler.tokenizer
    texts: list[str] = []
    for chunk in tqdm(list(batched(list(clips), batch_size)), desc="captioning decode", leave=False, disable=not progress):
        with autocast(dtype, device_of(model).type):
            ids = model.generate_captions(on_device(clip_batch(processor, chunk), model), max_words, no_repeat_ngram=no_repeat_ngram)
        texts.extend(tok.decode(row, skip_special_tokens=True).strip() for row in ids)
    return texts


def decoder_of(model: Any) -> CaptionDecoder:
    """The ``caption_decoder`` head of a fine-tuned model (a clear error for a bare model)."""
    if not isinstance(model, FinetunedModel) or HEAD not in model.heads:
        raise TaskError("captioning: the model has no caption decoder (run `actbert finetune captioning` first, "
                        "then `actbert evaluate captioning --model OUT/model`)")
    return model.heads[HEAD]


def encode(model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's caption memory ``[B, L, D]`` and its mask ``[B, L]`` (the ``caption_memory`` capability)."""
    model = base_model(model)
    return model.caption_memory(on_device(batch, model))


def caption_logits(model: Any, batch: Any, tokens: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced decoder logits ``[B, T, V]`` of a fine-tuned model for caption prefixes ``tokens [B, T]``."""
    memory, memory_mask = encode(model, batch)
    decoder = decoder_of(model)
    device = device_of(decoder)
    return decoder(tokens.to(device), memory, memory_mask, None if token_mask is None else token_mask.to(device))


def build_captioner(model: nn.Module, tokenizer: Any, settings: CaptioningSettings) -> FinetunedModel:
    """``model`` with a fresh ``caption_decoder`` head (word table copied from the model's, where widths agree)."""
    model = base_model(model)
    require(model, REQUIRES, TASK)
    words = model.word_embeddings() if callable(getattr(model, "word_embeddings", None)) else None
    if words is None and not settings.width:
        raise TaskError("captioning settings: width=0 means the model's word-table width, but the model has no word_embeddings(); set width")
    text_width = int(words.shape[1]) if words is not None else 0
    width = settings.width or text_width
    config = DecoderConfig(
        vocab_size=int(tokenizer.vocab_size),
        width=int(width),
        memory_width=int(model.caption_memory_dim),
        layers=settings.layers,
        heads=settings.heads,
        ff_mult=settings.ff_mult,
        dropout=settings.dropout,
        max_len=settings.max_caption_len,
        bos_id=int(tokenizer.cls_id),
        eos_id=int(tokenizer.sep_id),
        pad_id=int(tokenizer.pad_id),
    )
    torch.manual_seed(settings.seed)
    decoder = CaptionDecoder(config)
    if settings.init_word_embeddings and words is not None and width == text_width and words.shape[0] == config.vocab_size:
        with torch.no_grad():
            decoder.word_embeddings.weight.copy_(words.detach().float())
    return with_heads(model, **{HEAD: decoder.to(device_of(model))}).eval()


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CaptionClip:
    video_id: str
    start: float
    end: float
    sentence: str
    name: str


def youcook2_clips(bench: Benchmark, assembler: ClipAssembler, subset: str) -> tuple[list[CaptionClip], list[dict[str, str]]]:
    """Segments of ``subset`` ("training" / "validation") whose video has features; and the skipped ones."""
    videos = readers.read_youcook2(bench.require(bench.youcook2, "YouCook2"), subset=subset)
    clips, skipped = [], []
    for s in readers.youcook2_segments(videos):
        name = f"{s.video_id}#{s.segment_id}"
        if s.video_id in assembler:
            clips.append(CaptionClip(s.video_id, s.start, s.end, s.sentence, name))
        else:
            skipped.append({"clip": name, "error": "video not in the feature store"})
    return clips, skipped


def caption_targets(tokenizer: Any, sentences: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher forcing: inputs ``[CLS] w..`` and targets ``w.. [SEP]`` (long ``[B, T]``), mask ``[B, T]``.

    Captions are cut to ``max_len - 1`` pieces so that ``[SEP]`` always fits.
    """
    seqs = [tokenizer.encode(s)[: max_len - 1] for s in sentences]
    T = max(len(s) for s in seqs) + 1
    inputs = torch.full((len(seqs), T), int(tokenizer.pad_id), dtype=torch.long)
    targets = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        inputs[i, : len(s) + 1] = torch.tensor([tokenizer.cls_id] + s, dtype=torch.long)
        targets[i, : len(s) + 1] = torch.tensor(s + [tokenizer.sep_id], dtype=torch.long)
    return inputs, targets, targets != -100


def clip_batch(processor: Any, clips: Sequence[CaptionClip]):
    """Encoder input for ``clips``: the units of each span, no regions, no text."""
    return processor.batch([Item(VideoRef(c.video_id, c.start, c.end)) for c in clips], use_regions=False)


# ----------------------------------------------------------------------------- fine-tuning


def caption_loss(captioner: FinetunedModel, assembler: ClipAssembler, clips: Sequence[CaptionClip], label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean teacher-forced cross-entropy over the caption pieces of ``clips`` (``[SEP]`` included)."""
    tok = assembler.tokenizer
    inputs, targets, mask = caption_targets(tok, [c.sentence for c in clips], decoder_of(captioner).config.max_len)
    logits = caption_logits(captioner, clip_batch(processor_for(base_model(captioner), assembler), clips), inputs, mask)  # [B, T, V]
    targets = targets.to(logits.device)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, label_smoothing=label_smoothing)


def finetune(model: nn.Module, assembler: ClipAssembler, bench: Benchmark, settings: CaptioningSettings) -> TrainLog:
    """Train a decoder (and the encoder, at ``encoder_lr``) on the YouCook2 training segments.

    ``model``: a model (a fresh decoder is built) or a fine-tuned captioner (trained further).
    Returns the loss log with ``.model`` = the model with its ``caption_decoder``: pass it to :func:`evaluate`.
    """
    clips, _ = youcook2_clips(bench, assembler, "training")
    if not clips:
        raise TaskError(f"{bench.youcook2}: no training segment has features in {assembler.store_name}")
    if own_generation(model, settings):  # the model captions by itself: train its own loss, no decoder
        encoder = base_model(model)
        rng = np.random.default_rng(settings.seed)
        torch.manual_seed(settings.seed)

        def own_loss_at(step: int) -> torch.Tensor:
            idx = rng.choice(len(clips), size=min(settings.train_batch, len(clips)), replace=False)
            with autocast(settings.dtype, device_of(encoder).type):
                return own_caption_loss(encoder, assembler, [clips[i] for i in idx])

        log = train_loop(encoder.parameters(), own_loss_at, settings.steps, settings.encoder_lr,
                         desc="captioning fine-tune (own generation)", modules=[encoder])
        log.model = encoder.eval()
        return log
    has_decoder = isinstance(model, FinetunedModel) and HEAD in model.heads
    captioner = model if has_decoder else build_captioner(model, assembler.tokenizer, settings)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)

    def loss_at(step: int) -> torch.Tensor:
        idx = rng.choice(len(clips), size=min(settings.train_batch, len(clips)), replace=False)
        with autocast(settings.dtype, device_of(captioner).type):
            return caption_loss(captioner, assembler, [clips[i] for i in idx], settings.label_smoothing)

    groups = [
        {"params": list(decoder_of(captioner).parameters()), "lr": settings.lr},
        {"params": list(base_model(captioner).parameters()), "lr": settings.encoder_lr},
    ]
    log = train_loop(groups, loss_at, settings.steps, settings.lr, desc="captioning fine-tune", modules=[captioner])
    log.model = captioner.eval()
    return log


# ----------------------------------------------------------------------------- decoding


def _banned_ids(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """Ids never generated: every special token except ``[SEP]`` (which ends a caption)."""
    ids = set(int(i) for i in tokenizer.special_ids) | {int(getattr(tokenizer, "unk_id", tokenizer.pad_id))}
    ids.discard(int(tokenizer.sep_id))
    return torch.tensor(sorted(i for i in ids if 0 <= i < vocab_size), dtype=torch.long)


def _step_log_probs(decoder: CaptionDecoder, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, banned: torch.Tensor, first: bool,
                    no_repeat_ngram: int = 0) -> torch.Tensor:
    """Log-probabilities of the next piece ``[B, V]`` after ``tokens [B, t]``."""
    logp = F.log_softmax(decoder(tokens, memory, memory_mask)[:, -1].float(), dim=-1)
    logp[:, banned] = -torch.inf
    if no_repeat_ngram > 0:
        logp[repeated_ngrams(tokens, no_repeat_ngram, logp.shape[1]).to(logp.device)] = -torch.inf
    if first:  # no empty captions
        logp[:, decoder.config.eos_id] = -torch.inf
    return logp


@torch.no_grad()
def greedy_decode(decoder: CaptionDecoder, memory: torch.Tensor, memory_mask: torch.Tensor, banned: torch.Tensor, max_len: int | None = None,
                  no_repeat_ngram: int = 0) -> list[list[int]]:
    """Argmax decoding for a batch: piece ids per clip (no ``[CLS]``/``[SEP]``); ``no_repeat_ngram``
    as in :class:`CaptioningSettings`."""
    cfg = decoder.config
    max_len = max_len or cfg.max_len
    B = memory.shape[0]
    tokens = torch.full((B, 1), cfg.bos_id, dtype=torch.long, device=memory.device)
    done = torch.zeros(B, dtype=torch.bool, device=memory.device)
    for t in range(max_len):
        nxt = _step_log_probs(decoder, tokens, memory, memory_mask, banned, first=t == 0, no_repeat_ngram=no_repeat_ngram).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, cfg.eos_id), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == cfg.eos_id
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[: row.index(cfg.eos_id)] if cfg.eos_id in row else row)
    return out


@torch.no_grad()
def beam_decode_batch(decoder: CaptionDecoder, memory: torch.Tensor, memory_mask: torch.Tensor, banned: torch.Tensor, beam_size: int, length_penalty: float = 0.6, max_len: int | None = None,
                      no_repeat_ngram: int = 0) -> list[list[int]]:
    """Beam search for a batch of clips (``memory [B, La, Dv]``): the best hypothesis' piece ids per clip.

    Per clip, each step extends every live hypothesis and keeps the ``beam_size`` best of all
    extensions by total log-probability; those ending in ``[SEP]`` are finished and leave the beam
    (their slot is dead, score -inf). The answer is the finished (or, at ``max_len``, live)
    hypothesis with the highest ``log p / len**length_penalty`` (``len`` counts ``[SEP]``). With
    ``beam_size=1`` this is exactly greedy decoding.
    """
    cfg = decoder.config
    max_len = max_len or cfg.max_len
    if beam_size < 1:
        raise TaskError(f"captioning settings: beam_size must be >= 1, got {beam_size}")
    B, K = memory.shape[0], beam_size
    mem, mem_mask = memory.repeat_interleave(K, dim=0), memory_mask.repeat_interleave(K, dim=0)  # [B*K, La, Dv]
    tokens = torch.full((B * K, 1), cfg.bos_id, dtype=torch.long, device=memory.device)
    scores = torch.full((B, K), -torch.inf)
    scores[:, 0] = 0.0  # one live hypothesis ([CLS]) per clip at the start
    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(B)]
    for t in range(max_len):
        logp = _step_log_probs(decoder, tokens, mem, mem_mask, banned, first=t == 0, no_repeat_ngram=no_repeat_ngram).cpu()  # [B*K, V]
        vocab = logp.shape[1]
        total = (scores.reshape(-1, 1) + logp).reshape(B, K * vocab)
        top = torch.topk(total, K, dim=1)
        source, token = top.indices // vocab, top.indices % vocab  # [B, K]
        rows = (torch.arange(B)[:, None] * K + source).flatten()
        tokens = torch.cat([tokens[rows], token.flatten()[:, None].to(tokens.device)], dim=1)
        scores = top.values.clone()
        ended = (token == cfg.eos_id) & torch.isfinite(scores)
        for b, j in ended.nonzero().tolist():
            finished[b].append((tokens[b * K + j, 1:].tolist(), float(scores[b, j])))
        scores[token == cfg.eos_id] = -torch.inf
        if not torch.isfinite(scores).any():
            break
    for b, j in torch.isfinite(scores).nonzero().tolist():  # still live at max_len
        finished[b].append((tokens[b * K + j, 1:].tolist(), float(scores[b, j])))

    def normalised(h: tuple[list[int], float]) -> float:
        return h[1] / len(h[0]) ** length_penalty

    out = []
    for hyps in finished:
        seq = max(hyps, key=normalised)[0]
        out.append(seq[:-1] if seq and seq[-1] == cfg.eos_id else seq)
    return out


def beam_decode(decoder: CaptionDecoder, memory: torch.Tensor, memory_mask: torch.Tensor, banned: torch.Tensor, beam_size: int, length_penalty: float = 0.6, max_len: int | None = None) -> list[int]:
    """:func:`beam_decode_batch` for one clip (``memory [1, La, Dv]``)."""
    return beam_decode_batch(decoder, memory, memory_mask, banned, beam_size, length_penalty, max_len)[0]


@torch.no_grad()
def generate(captioner: FinetunedModel, assembler: ClipAssembler, clips: Sequence[CaptionClip], beam_size: int = 1, length_penalty: float = 0.6, batch_size: int = 32, dtype: str = "fp32", progress: bool = True,
             no_repeat_ngram: int = 0) -> list[str]:
    """Detokenised captions for ``clips`` (greedy for ``beam_size=1``, else beam search)."""
    captioner.eval()
    decoder = decoder_of(captioner)
    tok = assembler.tokenizer
    banned = _banned_ids(tok, decoder.config.vocab_size).to(device_of(decoder))
    texts: list[str] = []
    bar = tqdm(total=len(clips), desc="captioning decode", unit="clip", leave=False, disable=not progress)
    processor = processor_for(base_model(captioner), assembler)
    for chunk in batched(list(clips), batch_size):
        batch = clip_batch(processor, chunk)
        with autocast(dtype, device_of(decoder).type):
            memory, mask = encode(captioner, batch)
            memory = memory.float()
            if beam_size == 1:
                ids = greedy_decode(decoder, memory, mask, banned, no_repeat_ngram=no_repeat_ngram)
            else:
                ids = beam_decode_batch(decoder, memory, mask, banned, beam_size, length_penalty, no_repeat_ngram=no_repeat_ngram)
        texts.extend(tok.decode(row, skip_special_tokens=True).strip() for row in ids)
        bar.update(len(chunk))
    bar.close()
    return texts


# ----------------------------------------------------------------------------- evaluation


def evaluate(model: FinetunedModel, assembler: ClipAssembler, bench: Benchmark, settings: CaptioningSettings, variant: str = "") -> list[dict]:
    """One record: captions of the YouCook2 validation segments scored against their sentences.

    ``model`` must have a ``caption_decoder`` head (``finetune(...).model`` or ``load_for_evaluation``),
    or caption by itself (``caption_generation``, with ``generator=auto``).
    """
    own = own_generation(model, settings)
    if not own:
        decoder_of(model)
    start = time.perf_counter()
    clips, skipped = youcook2_clips(bench, assembler, "validation")
    if settings.max_clips:
        clips = clips[: settings.max_clips]
    if not clips:
        raise TaskError(f"{bench.youcook2}: no validation segment has features in {assembler.store_name}")
    if own:
        predictions = own_generate(model, assembler, clips, settings.max_caption_len - 1, settings.batch_size, settings.dtype,
                                   no_repeat_ngram=settings.no_repeat_ngram)
    else:
        predictions = generate(model, assembler, clips, settings.beam_size, settings.length_penalty, settings.batch_size, settings.dtype,
                               no_repeat_ngram=settings.no_repeat_ngram)
    scores = caption_metrics({c.name: p for c, p in zip(clips, predictions)}, {c.name: [c.sentence] for c in clips}, meteor=settings.meteor)
    all_scores = scores.to_dict()
    metrics = {name: all_scores[name] for name in REPORTED}
    notes = list(scores.notes)
    if settings.max_clips:
        notes.append(f"limited to the first {len(clips)} validation segments (max_clips={settings.max_clips})")
    if skipped:
        notes.append(f"{len(skipped)} segment(s) skipped: no features")
    decoding = "greedy" if (own or settings.beam_size == 1) else f"beam {settings.beam_size}"
    guard = f"; no {settings.no_repeat_ngram}-gram of word pieces twice (no_repeat_ngram)" if settings.no_repeat_ngram else ""
    if own:
        notes.append(f"the model's own generation ({type(base_model(model)).__name__}.generate_captions), greedy, "
                     f"at most {settings.max_caption_len - 1} words; no decoder; no region cues" + guard)
    else:
        notes.append(f"decoder: {decoder_of(model).config.layers} layers, width {decoder_of(model).config.width}; {decoding}; "
                     "action stream only (no regions)" + guard)
    return [
        make_record(
            TASK,
            "youcook2",
            f"validation segments, {decoding}",
            metrics,
            PRIMARY,
            variant=variant,
            settings=asdict(settings),
            seconds=time.perf_counter() - start,
            notes=notes,
            extra={
                "other_metrics": {k: all_scores[k] for k in ("BLEU-1", "BLEU-2")},
                "tokenizer": scores.tokenizer,
                "examples": [{"clip": c.name, "prediction": p, "reference": c.sentence} for c, p in list(zip(clips, predictions))[: settings.num_examples]],
                "predictions": {c.name: p for c, p in zip(clips, predictions)},
                "cider_per_item": {str(k): v for k, v in scores.cider_per_item.items()},  # metrics.statistics
                "skipped": skipped,
            },
        )
    ]
