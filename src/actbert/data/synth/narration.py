"""ASR-like narrations (the pretraining text) and human captions (the downstream labels).

Narrations imitate HowTo100M's YouTube ASR: lower case, no punctuation, first-person spoken
templates, fillers ("um", "so"), verb and noun synonyms, off-topic chatter, steps narrated early
or late or not at all, and time jitter. Segments are a few seconds long and do not overlap.

Captions imitate human annotators: other templates (imperative for recipes, descriptive third
person for clips), other synonyms, and a caption always names both the action and the object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .world import ACTIONS_BY_NAME, OBJECTS_BY_NAME, VerbForms

# Rates of the narration noise (the tests check the generated data against these).
P_UNNARRATED = 0.2  # a step nobody talks about
P_EARLY = 0.15  # narrated 1.5–4 s before the step starts ("now we're going to ...")
P_LATE = 0.15  # narrated just after the step ends ("so i just ...")
P_PRONOUN = 0.12  # the object is said as "it"
P_FILLER = 0.4  # a filler word opens the segment
CHATTER_PER_SECOND = 1 / 12  # off-topic segments per second of video (plus a frequent intro line)
JITTER_SD = 0.6  # seconds, for on-time narrations

FILLERS: tuple[str, ...] = ("um", "uh", "so", "okay", "alright", "you know", "like")

STEP_TEMPLATES: tuple[str, ...] = (
    "now we're going to {base} the {noun}",
    "{base} the {noun}",
    "next you want to {base} your {noun}",
    "i'm just {ing} the {noun} here",
    "and then we {base} the {noun} like this",
    "let me {base} this {noun}",
    "you can {base} the {noun} a little bit",
    "go ahead and {base} the {noun}",
    "we {base} the {noun} nice and slow",
)
PRONOUN_TEMPLATES: tuple[str, ...] = ("now {verb_it}", "and just {verb_it} like that", "then you {verb_it}")
LATE_TEMPLATES: tuple[str, ...] = ("so i just {past} the {noun}", "okay we've {past} the {noun}", "there the {noun} is {past}")

CHATTER: tuple[str, ...] = (
    "hi everyone welcome back to my kitchen",
    "don't forget to like and subscribe",
    "this is one of my favorite recipes",
    "my kids absolutely love this one",
    "i got all of this at the market this morning",
    "let me know in the comments what you think",
    "it already smells so good",
    "that's pretty much it for today",
    "you can find the full recipe in the description",
    "i've been making this for years",
    "the weather has been so nice lately",
    "thanks so much for watching",
)
CHATTER_WITH_NOUN: tuple[str, ...] = (
    "i really love {noun} in the summer",
    "you can use any kind of {noun} you like",
    "my grandmother always had {noun} at home",
)
INTRO = "hi everyone welcome back to my kitchen"

# Human captions: recipe steps (YouCook2-style imperative) and clip descriptions (MSR-VTT-style).
RECIPE_CAPTION_TEMPLATES: tuple[str, ...] = (
    "{base} the {noun}",
    "{base} the {noun} on the board",
    "carefully {base} the {noun}",
    "{base} a {noun}",
    "{base} the {noun} with both hands",
)
CLIP_SUBJECTS: tuple[str, ...] = ("a person", "someone", "a cook", "a man", "a woman", "the chef")
CLIP_CLAUSES: tuple[str, ...] = (
    "{subj} {third} the {noun}",
    "{subj} is {ing} a {noun}",
    "{subj} {third} a {noun} on the table",
)
CLIP_PASSIVE: tuple[str, ...] = ("a {noun} is being {past}", "the {noun} gets {past}")


@dataclass(frozen=True)
class StepSpan:
    """A ground-truth step in seconds."""

    verb: str
    obj: str
    start: float
    end: float


def _articles(text: str) -> str:
    """'a onion' -> 'an onion'."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _verb_it(forms: VerbForms) -> str:
    """'chop' -> 'chop it'; 'pick up' -> 'pick it up' (particle after the pronoun)."""
    head, _, particle = forms.base.partition(" ")
    return f"{head} it {particle}" if particle else f"{head} it"


def narrate_step(rng: np.random.Generator, verb: str, obj: str, late: bool) -> str:
    """One spoken sentence about doing ``verb`` to ``obj`` (narration synonyms, maybe a filler)."""
    forms = _pick(rng, ACTIONS_BY_NAME[verb].narration_verbs)
    noun = _pick(rng, OBJECTS_BY_NAME[obj].narration_words)
    if late:
        text = _pick(rng, LATE_TEMPLATES).format(past=forms.past, noun=noun)
    elif rng.random() < P_PRONOUN:
        text = _pick(rng, PRONOUN_TEMPLATES).format(verb_it=_verb_it(forms))
    else:
        text = _pick(rng, STEP_TEMPLATES).format(base=forms.base, ing=forms.ing, noun=noun)
    if rng.random() < P_FILLER:
        text = f"{_pick(rng, FILLERS)} {text}"
    return text


def chatter_line(rng: np.random.Generator, object_names: list[str]) -> str:
    if rng.random() < 0.3:
        noun = OBJECTS_BY_NAME[_pick(rng, object_names)].narration_words[0]
        return _pick(rng, CHATTER_WITH_NOUN).format(noun=noun)
    return _pick(rng, CHATTER)


def narrate_video(rng: np.random.Generator, steps: list[StepSpan], duration: float,
                  object_names: list[str]) -> dict[str, list]:
    """HowTo100M caption.json entry ``{"start": [..], "end": [..], "text": [..]}`` for one video.

    Segments are sorted, non-overlapping, inside [0, duration], each ≥ 1 s; at least one exists.
    """
    raw: list[tuple[float, float, str]] = []
    for i, step in enumerate(steps):
        if rng.random() < P_UNNARRATED and not (i == len(steps) - 1 and not raw):
            continue
        r = rng.random()
        late = False
        if r < P_EARLY:
            start = step.start - rng.uniform(1.5, 4.0)
        elif r < P_EARLY + P_LATE:
            start = step.end + rng.uniform(-0.5, 1.0)
            late = True
        else:
            start = step.start + rng.normal(0.0, JITTER_SD)
        length = rng.uniform(2.0, 4.5)
        raw.append((start, start + length, narrate_step(rng, step.verb, step.obj, late)))
    n_chatter = int(rng.poisson(duration * CHATTER_PER_SECOND))
    if rng.random() < 0.5 and duration > 12:
        raw.append((rng.uniform(0.0, 0.5), rng.uniform(2.0, 3.0), INTRO))
    for _ in range(n_chatter):
        start = rng.uniform(0.0, max(duration - 2.0, 0.5))
        raw.append((start, start + rng.uniform(1.5, 3.5), chatter_line(rng, object_names)))
    raw.sort(key=lambda seg: seg[0])
    out: dict[str, list] = {"start": [], "end": [], "text": []}
    for start, end, text in raw:
        start = round(max(start, 0.0), 2)
        if out["text"] and start < out["end"][-1]:
            if start - out["start"][-1] >= 1.0:
                out["end"][-1] = start  # the speaker moved on: cut the previous segment short
            else:
                start = out["end"][-1]
        end = round(min(max(end, start + 1.0), duration), 2)
        if end - start < 1.0:
            continue  # no room left: the ASR missed it
        out["start"].append(start)
        out["end"].append(end)
        out["text"].append(_articles(text))
    if not out["text"]:  # a video always has some speech
        step = steps[0]
        out = {"start": [round(step.start, 2)], "end": [round(min(step.end, duration), 2)],
               "text": [_articles(narrate_step(rng, step.verb, step.obj, late=False))]}
    return out


def recipe_caption(rng: np.random.Generator, verb: str, obj: str) -> str:
    """YouCook2-style imperative sentence with caption synonyms."""
    forms = _pick(rng, ACTIONS_BY_NAME[verb].caption_verbs)
    noun = _pick(rng, OBJECTS_BY_NAME[obj].caption_words)
    return _articles(_pick(rng, RECIPE_CAPTION_TEMPLATES).format(base=forms.base, noun=noun))


def clip_caption(rng: np.random.Generator, steps: list[tuple[str, str]]) -> str:
    """MSR-VTT-style description of a one- or two-step clip (names every verb and object)."""
    first_verb, first_obj = steps[0]
    forms = _pick(rng, ACTIONS_BY_NAME[first_verb].caption_verbs)
    noun = _pick(rng, OBJECTS_BY_NAME[first_obj].caption_words)
    subj = _pick(rng, CLIP_SUBJECTS)
    if len(steps) == 1 and rng.random() < 0.3:
        return _articles(_pick(rng, CLIP_PASSIVE).format(noun=noun, past=forms.past))
    text = _pick(rng, CLIP_CLAUSES).format(subj=subj, third=forms.third, ing=forms.ing, noun=noun)
    for verb, obj in steps[1:]:
        forms = _pick(rng, ACTIONS_BY_NAME[verb].caption_verbs)
        noun = _pick(rng, OBJECTS_BY_NAME[obj].caption_words)
        text += f" and then {forms.third} the {noun}"
    return _articles(text)


def fill_in_blank(rng: np.random.Generator, steps: list[tuple[str, str]], blank: str) -> tuple[str, str]:
    """LSMDC-style (sentence with ``_____``, answer). ``blank`` is "verb" or "noun"; the answer is
    the canonical word (verb in third person) of a randomly chosen step; other words use caption synonyms.
    """
    target = int(rng.integers(len(steps)))
    clauses = []
    answer = ""
    for i, (verb, obj) in enumerate(steps):
        action, kind = ACTIONS_BY_NAME[verb], OBJECTS_BY_NAME[obj]
        forms = _pick(rng, action.caption_verbs)
        noun = _pick(rng, kind.caption_words)
        if i == target and blank == "verb":
            answer, forms = action.caption_verbs[0].third, VerbForms("_____", "_____", "_____", "_____")
        if i == target and blank == "noun":
            answer, noun = kind.name, "_____"
        clauses.append(f"{forms.third} the {noun}")
    return "SOMEONE " + " and then ".join(clauses) + " .", answer
