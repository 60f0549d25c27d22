"""The synthetic kitchen world: object kinds, actions, their words, and tasks ("recipes").

Everything the renderer draws and the narrator says is defined here, so the vocabulary and the
visuals cannot drift apart. Narrations (ASR-like, what the pretraining corpus hears) and human
captions (what the downstream sets are labelled with) deliberately use overlapping but different
synonym sets: the canonical word is in both, each side also has words the other never uses.

A task is an ordered list of (verb, object) steps. Tasks are drawn from the seed so that every verb
is done to several objects and every object undergoes several verbs: neither the verb nor the
object alone identifies a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ObjectKind:
    """One kind of object: how it looks (colour × shape × texture × size) and what it is called.

    ``size`` is (width, height) in pixels at 128×96; every kind is at least 16 px on each side so
    that a 1 FPS crop can be classified.
    """

    name: str
    colour: tuple[int, int, int]
    shape: str  # circle | ellipse | square | rect | triangle | diamond | semicircle
    size: tuple[int, int]
    texture: str  # solid | stripes | dots | border
    narration_words: tuple[str, ...]  # what a YouTube narrator says (first is canonical)
    caption_words: tuple[str, ...]  # what a human annotator writes (first is canonical)


@dataclass(frozen=True)
class VerbForms:
    """A verb (possibly a phrasal verb) with the inflections the templates need."""

    base: str
    third: str  # "cuts"
    ing: str  # "cutting"
    past: str  # past participle: "cut"


def _v(base: str, third: str, ing: str, past: str) -> VerbForms:
    return VerbForms(base, third, ing, past)


@dataclass(frozen=True)
class Action:
    """One action: a distinct motion of the acted-on object (see ``render.MOTIONS``)."""

    name: str  # canonical verb, also the motion name
    narration_verbs: tuple[VerbForms, ...]  # first is canonical
    caption_verbs: tuple[VerbForms, ...]  # first is canonical


OBJECT_KINDS: tuple[ObjectKind, ...] = (
    ObjectKind("tomato", (215, 35, 35), "circle", (22, 22), "solid", ("tomato", "tomatoes"), ("tomato", "red tomato")),
    ObjectKind("orange", (245, 145, 25), "circle", (24, 24), "dots", ("orange", "oranges"), ("orange", "tangerine")),
    ObjectKind("lemon", (240, 220, 40), "ellipse", (28, 18), "solid", ("lemon", "lemons"), ("lemon", "yellow lemon")),
    ObjectKind("lime", (110, 215, 60), "circle", (18, 18), "solid", ("lime", "limes"), ("lime", "green lime")),
    ObjectKind("cucumber", (30, 140, 45), "ellipse", (30, 16), "stripes", ("cucumber", "cuke"), ("cucumber", "gherkin")),
    ObjectKind("carrot", (250, 120, 20), "triangle", (20, 28), "stripes", ("carrot", "carrots"), ("carrot", "orange carrot")),
    ObjectKind("egg", (240, 238, 225), "ellipse", (18, 24), "solid", ("egg", "eggs"), ("egg", "white egg")),
    ObjectKind("onion", (160, 70, 180), "circle", (22, 22), "stripes", ("onion", "red onion"), ("onion", "purple onion")),
    ObjectKind("potato", (200, 160, 95), "ellipse", (26, 20), "dots", ("potato", "spud"), ("potato", "brown potato")),
    ObjectKind("bread", (225, 185, 130), "square", (24, 24), "border", ("bread", "loaf"), ("bread", "slice of bread")),
    ObjectKind("cheese", (250, 215, 70), "triangle", (26, 22), "dots", ("cheese", "wedge of cheese"), ("cheese", "cheese wedge")),
    ObjectKind("bowl", (45, 85, 225), "semicircle", (30, 18), "solid", ("bowl", "blue bowl"), ("bowl", "dish")),
    ObjectKind("cup", (40, 205, 215), "rect", (18, 24), "stripes", ("cup", "mug"), ("cup", "teacup")),
    ObjectKind("bottle", (20, 150, 125), "rect", (16, 30), "solid", ("bottle", "water bottle"), ("bottle", "flask")),
    ObjectKind("jar", (215, 50, 150), "rect", (20, 26), "border", ("jar", "pot"), ("jar", "container")),
    ObjectKind("fish", (250, 130, 115), "diamond", (30, 18), "solid", ("fish", "salmon"), ("fish", "fillet")),
)

ACTIONS: tuple[Action, ...] = (
    Action("cut",
           (_v("cut", "cuts", "cutting", "cut"), _v("chop", "chops", "chopping", "chopped"), _v("slice", "slices", "slicing", "sliced")),
           (_v("cut", "cuts", "cutting", "cut"), _v("slice", "slices", "slicing", "sliced"), _v("halve", "halves", "halving", "halved"))),
    Action("rotate",
           (_v("rotate", "rotates", "rotating", "rotated"), _v("spin", "spins", "spinning", "spun"), _v("twist", "twists", "twisting", "twisted")),
           (_v("rotate", "rotates", "rotating", "rotated"), _v("spin", "spins", "spinning", "spun"), _v("turn around", "turns around", "turning around", "turned around"))),
    Action("pour",
           (_v("pour", "pours", "pouring", "poured"), _v("tip", "tips", "tipping", "tipped")),
           (_v("pour", "pours", "pouring", "poured"), _v("tilt", "tilts", "tilting", "tilted"), _v("empty", "empties", "emptying", "emptied"))),
    Action("shake",
           (_v("shake", "shakes", "shaking", "shaken"), _v("jiggle", "jiggles", "jiggling", "jiggled")),
           (_v("shake", "shakes", "shaking", "shaken"), _v("rattle", "rattles", "rattling", "rattled"))),
    Action("lift",
           (_v("lift", "lifts", "lifting", "lifted"), _v("pick up", "picks up", "picking up", "picked up"), _v("raise", "raises", "raising", "raised")),
           (_v("lift", "lifts", "lifting", "lifted"), _v("raise", "raises", "raising", "raised"), _v("hoist", "hoists", "hoisting", "hoisted"))),
    Action("drop",
           (_v("drop", "drops", "dropping", "dropped"), _v("toss down", "tosses down", "tossing down", "tossed down")),
           (_v("drop", "drops", "dropping", "dropped"), _v("release", "releases", "releasing", "released"))),
    Action("slide",
           (_v("slide", "slides", "sliding", "slid"), _v("push", "pushes", "pushing", "pushed"), _v("move", "moves", "moving", "moved")),
           (_v("slide", "slides", "sliding", "slid"), _v("shift", "shifts", "shifting", "shifted"), _v("push", "pushes", "pushing", "pushed"))),
    Action("squeeze",
           (_v("squeeze", "squeezes", "squeezing", "squeezed"), _v("press", "presses", "pressing", "pressed"), _v("squish", "squishes", "squishing", "squished")),
           (_v("squeeze", "squeezes", "squeezing", "squeezed"), _v("squash", "squashes", "squashing", "squashed"), _v("compress", "compresses", "compressing", "compressed"))),
    Action("roll",
           (_v("roll", "rolls", "rolling", "rolled"),),
           (_v("roll", "rolls", "rolling", "rolled"), _v("tumble", "tumbles", "tumbling", "tumbled"))),
    Action("flip",
           (_v("flip", "flips", "flipping", "flipped"), _v("turn over", "turns over", "turning over", "turned over")),
           (_v("flip", "flips", "flipping", "flipped"), _v("invert", "inverts", "inverting", "inverted"))),
    Action("stir",
           (_v("stir", "stirs", "stirring", "stirred"), _v("mix", "mixes", "mixing", "mixed"), _v("whisk", "whisks", "whisking", "whisked")),
           (_v("stir", "stirs", "stirring", "stirred"), _v("mix", "mixes", "mixing", "mixed"), _v("swirl", "swirls", "swirling", "swirled"))),
    Action("open",
           (_v("open", "opens", "opening", "opened"), _v("unwrap", "unwraps", "unwrapping", "unwrapped")),
           (_v("open", "opens", "opening", "opened"), _v("uncover", "uncovers", "uncovering", "uncovered"))),
    Action("wash",
           (_v("wash", "washes", "washing", "washed"), _v("rinse", "rinses", "rinsing", "rinsed"), _v("clean", "cleans", "cleaning", "cleaned")),
           (_v("wash", "washes", "washing", "washed"), _v("rinse", "rinses", "rinsing", "rinsed"), _v("scrub", "scrubs", "scrubbing", "scrubbed"))),
)

OBJECTS_BY_NAME: dict[str, ObjectKind] = {o.name: o for o in OBJECT_KINDS}
ACTIONS_BY_NAME: dict[str, Action] = {a.name: a for a in ACTIONS}

DISHES: tuple[str, ...] = (
    "salad", "soup", "sandwich", "juice", "smoothie", "stew", "toast", "pie", "curry", "pasta", "tart", "omelette",
    "platter", "skewers", "salsa", "casserole", "wrap", "bowl", "pickle", "snack",
)


@dataclass(frozen=True)
class Task:
    """A "recipe": an ordered list of (verb, object) steps.

    ``task_id`` is a numeric string like CrossTask's; ``label(i)`` is the COIN/CrossTask step name.
    """

    task_id: str
    name: str
    steps: tuple[tuple[str, str], ...]

    @staticmethod
    def step_label(verb: str, obj: str) -> str:
        return f"{verb} {obj}"


@dataclass
class World:
    """Objects, actions and the seed-drawn tasks of one benchmark."""

    objects: tuple[ObjectKind, ...] = OBJECT_KINDS
    actions: tuple[Action, ...] = ACTIONS
    tasks: list[Task] = field(default_factory=list)

    @property
    def object_names(self) -> list[str]:
        return [o.name for o in self.objects]

    @property
    def action_names(self) -> list[str]:
        return [a.name for a in self.actions]

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.task_id == task_id:
                return t
        raise KeyError(task_id)


def build_world(rng: np.random.Generator, num_tasks: int, min_steps: int, max_steps: int) -> World:
    """Draw ``num_tasks`` tasks of ``min_steps..max_steps`` distinct steps.

    Each task works mostly on 2–4 "core" objects; verbs are drawn favouring the least used so far,
    so across tasks every verb meets many objects and every object many verbs.
    """
    if not 3 <= min_steps <= max_steps <= 8:
        raise ValueError(f"task length must be within 3..8 steps, got {min_steps}..{max_steps}")
    verb_use = {a.name: 0 for a in ACTIONS}
    object_use = {o.name: 0 for o in OBJECT_KINDS}
    names_taken: set[str] = set()
    tasks: list[Task] = []
    for t in range(num_tasks):
        # core objects: prefer the least used, ties broken at random
        obj_order = sorted(object_use, key=lambda n: (object_use[n], rng.random()))
        core = obj_order[: int(rng.integers(2, 5))]
        n_steps = int(rng.integers(min_steps, max_steps + 1))
        steps: list[tuple[str, str]] = []
        while len(steps) < n_steps:
            verb = min(verb_use, key=lambda n: (verb_use[n] + 2.0 * rng.random()))
            if rng.random() < 0.15:
                obj = str(rng.choice(list(object_use)))
            else:
                obj = str(rng.choice(core))
            if (verb, obj) in steps or (steps and steps[-1][1] == obj and steps[-1][0] == verb):
                continue
            steps.append((verb, obj))
            verb_use[verb] += 1
            object_use[obj] += 1
        main = max(core, key=lambda n: sum(1 for _, o in steps if o == n))
        dish_order = list(rng.permutation(len(DISHES)))
        name = next(f"make {main} {DISHES[d]}" for d in dish_order if f"make {main} {DISHES[d]}" not in names_taken)
        names_taken.add(name)
        tasks.append(Task(task_id=str(101 + t), name=name, steps=tuple(steps)))
    return World(tasks=tasks)
