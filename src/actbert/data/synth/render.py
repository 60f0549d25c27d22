"""Numpy frame rendering of the synthetic kitchen and PyAV mp4 writing.

Layout of a 128×96 frame: the left and right 32-px columns hold 2–3 static distractor objects
(two slots per column); the middle 64 px are the work area where the acted-on object performs the
step's motion. Active drawing is clipped to the work area, so the acted object never covers a
distractor and every reported box is the tight box of the pixels actually drawn for that object.

Each action is a distinct motion (``MOTIONS``): cut = a knife line then two halves part, rotate =
a full turn, pour = tilt ~110° with a falling stream, shake = fast horizontal oscillation, lift =
rise and hold, drop = fall with gravity and a bounce, slide = translation, squeeze = squash and
stretch twice, roll = translation with matching rotation, flip = mirror through a hop, stir =
circles, open = the lid (top 40%) lifts off, wash = jitter + brightness shimmer + droplets.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .world import ObjectKind

WIDTH, HEIGHT = 128, 96
WORK_X = (32, 96)  # the work area's columns [lo, hi)
DISTRACTOR_SLOTS: tuple[tuple[int, int], ...] = ((16, 24), (16, 72), (112, 24), (112, 72))
WORK_CENTRE = (64, 54)
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((96, 84, 72), (76, 84, 96), (86, 96, 82), (100, 92, 98), (90, 90, 90))
KNIFE = np.array([205, 205, 215], np.float32)
WATER = np.array([165, 205, 240], np.float32)


@dataclass
class Sprite:
    """An object's appearance: colours ``rgb`` [h, w, 3] float32 and coverage ``mask`` [h, w] bool."""

    kind: ObjectKind
    rgb: np.ndarray
    mask: np.ndarray
    base: np.ndarray  # [3] the instance's main colour (after jitter)

    def part_mask(self, part: str | None) -> np.ndarray:
        """[h, w] bool: which sprite pixels belong to ``part`` (None = all)."""
        h, w = self.mask.shape
        if part is None:
            return self.mask
        rows, cols = np.mgrid[0:h, 0:w]
        split_row = int(round(0.4 * h))
        sel = {"left": cols < w // 2, "right": cols >= w // 2, "top": rows < split_row, "bottom": rows >= split_row}[part]
        return self.mask & sel


def shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """[h, w] bool coverage of ``shape`` in a w×h box (pixel centres in [-1, 1])."""
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    y, x = y[:, None], x[None, :]
    if shape in ("circle", "ellipse"):
        return x**2 + y**2 <= 1.0
    if shape in ("square", "rect"):
        ax, ay = np.abs(x), np.abs(y)
        corner = (ax > 0.7) & (ay > 0.7) & ((ax - 0.7) ** 2 + (ay - 0.7) ** 2 > 0.09)
        return ~corner & (ax <= 1) & (ay <= 1)
    if shape == "triangle":  # apex up
        return np.abs(x) <= (y + 1) / 2 + 1e-6
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0
    if shape == "semicircle":  # a bowl: flat rim on top, round bottom
        return x**2 + ((y + 1) / 2) ** 2 <= 1.0
    raise ValueError(f"unknown shape {shape!r}")


def make_sprite(kind: ObjectKind, rng: np.random.Generator) -> Sprite:
    """Draw one instance of ``kind``: jittered base colour, texture in a darker shade, a highlight."""
    w, h = kind.size
    mask = shape_mask(kind.shape, w, h)
    base = np.clip(np.array(kind.colour, np.float32) + rng.integers(-8, 9, 3), 0, 255)
    dark = base * 0.65
    rows, cols = np.mgrid[0:h, 0:w]
    if kind.texture == "stripes":
        tex = (rows // 3) % 2 == 1
    elif kind.texture == "dots":
        tex = ((rows % 6) - 2) ** 2 + ((cols % 6) - 2) ** 2 <= 2
    elif kind.texture == "border":
        inner = mask.copy()
        for dy, dx in ((2, 0), (-2, 0), (0, 2), (0, -2)):
            inner &= np.roll(mask, (dy, dx), axis=(0, 1))
        inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
        tex = mask & ~inner
    else:
        tex = np.zeros_like(mask)
    rgb = np.broadcast_to(base, (h, w, 3)).copy()
    rgb[tex] = dark
    # highlight at the upper left: gives rotations and flips a visible orientation
    yn = (rows + 0.5) / h * 2 - 1
    xn = (cols + 0.5) / w * 2 - 1
    shine = (xn + 0.4) ** 2 + (yn + 0.4) ** 2 <= 0.06
    rgb[shine] = base * 0.5 + 127
    return Sprite(kind, rgb, mask, base)


def make_background(rng: np.random.Generator, index: int) -> np.ndarray:
    """[H, W, 3] float32 table top: a low-saturation tint with smooth low-frequency shading."""
    base = np.array(BACKGROUNDS[index % len(BACKGROUNDS)], np.float32)
    coarse = rng.uniform(-8, 8, (4, 5)).astype(np.float32)
    ys = np.linspace(0, coarse.shape[0] - 1, HEIGHT)
    xs = np.linspace(0, coarse.shape[1] - 1, WIDTH)
    y0 = np.floor(ys).astype(int).clip(0, coarse.shape[0] - 2)
    x0 = np.floor(xs).astype(int).clip(0, coarse.shape[1] - 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    shade = (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1][:, x0] * fy * (1 - fx)
             + coarse[y0][:, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1][:, x0 + 1] * fy * fx)
    bg = base[None, None, :] + shade[:, :, None]
    bg[:, WORK_X[0] - 1 : WORK_X[0]] -= 6  # faint edges of the work mat
    bg[:, WORK_X[1] : WORK_X[1] + 1] -= 6
    return np.clip(bg, 0, 255).astype(np.float32)


def draw_sprite(frame: np.ndarray, sprite: Sprite, cx: float, cy: float, angle: float = 0.0, sx: float = 1.0,
                sy: float = 1.0, gain: float = 1.0, part: str | None = None,
                clip_x: tuple[int, int] = (0, WIDTH)) -> list[int] | None:
    """Paint ``sprite`` into ``frame`` [H, W, 3] float32, centred at (cx, cy), rotated by ``angle``
    (radians) and scaled by (sx, sy) (negative = mirrored). Only columns in ``clip_x`` are painted.

    Returns the tight pixel box [x1, y1, x2, y2] (x2, y2 exclusive) of the painted pixels, or None.
    """
    h, w = sprite.mask.shape
    ca, sa = math.cos(angle), math.sin(angle)
    hw, hh = abs(sx) * w / 2, abs(sy) * h / 2
    ex, ey = abs(ca) * hw + abs(sa) * hh, abs(sa) * hw + abs(ca) * hh
    x0, x1 = max(int(math.floor(cx - ex)), clip_x[0]), min(int(math.ceil(cx + ex)) + 1, clip_x[1])
    y0, y1 = max(int(math.floor(cy - ey)), 0), min(int(math.ceil(cy + ey)) + 1, frame.shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    u = (ca * dx + sa * dy) / sx + w / 2  # inverse map: frame pixel -> sprite pixel
    v = (-sa * dx + ca * dy) / sy + h / 2
    col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    col, row = col.clip(0, w - 1), row.clip(0, h - 1)
    painted = inside & sprite.part_mask(part)[row, col]
    if not painted.any():
        return None
    region = frame[y0:y1, x0:x1]
    region[painted] = np.minimum(sprite.rgb[row[painted], col[painted]] * gain, 255)
    ys, xs = np.nonzero(painted)
    return [int(x0 + xs.min()), int(y0 + ys.min()), int(x0 + xs.max() + 1), int(y0 + ys.max() + 1)]


def _smooth(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _ramp(q: float, a: float, b: float) -> float:
    return _smooth((q - a) / (b - a))


@dataclass
class Piece:
    """One drawn piece of the acted object in one frame (offsets relative to the step's centre)."""

    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0
    sx: float = 1.0
    sy: float = 1.0
    gain: float = 1.0
    part: str | None = None


@dataclass
class Pose:
    """What the acted object looks like at one instant: its pieces plus decorations (not boxed)."""

    pieces: list[Piece]
    knife_y: float | None = None  # a knife line through the object, offset from centre
    drops: list[tuple[float, float, np.ndarray]] | None = None  # (dx, dy, colour) small dots


# A motion maps (progress q in [0, 1], seconds since the step began t, step direction ±1,
# frame rng, sprite) to a Pose. Every motion holds still for the first and last ~10% of the step.
Motion = Callable[[float, float, int, np.random.Generator, Sprite], Pose]


def _cut(q, t, d, rng, s):
    h = s.mask.shape[0]
    knife = -h / 2 - 6 + (h + 8) * _ramp(q, 0.1, 0.45) if q < 0.5 else None
    sep = 7.0 * _ramp(q, 0.45, 0.85)
    if sep < 1.0:
        return Pose([Piece()], knife_y=knife)
    return Pose([Piece(dx=-sep, part="left"), Piece(dx=sep, part="right")], knife_y=knife)


def _rotate(q, t, d, rng, s):
    return Pose([Piece(angle=d * 2 * math.pi * _ramp(q, 0.1, 0.9))])


def _pour(q, t, d, rng, s):
    tilt = _ramp(q, 0.1, 0.35) * (1 - _ramp(q, 0.7, 0.92))
    w, h = s.kind.size
    pose = Pose([Piece(dy=-8 * tilt, angle=d * 1.9 * tilt)])
    if tilt > 0.9:  # a stream falls from the lower side of the tilted object
        x = d * (w / 2 + 2)
        pose.drops = [(x + rng.uniform(-1, 1), -8 + k * 4 + (t * 24) % 4, WATER) for k in range(1, 6)]
    return pose


def _shake(q, t, d, rng, s):
    env = _ramp(q, 0.05, 0.15) * (1 - _ramp(q, 0.85, 0.95))
    return Pose([Piece(dx=6 * env * math.sin(2 * math.pi * 3.0 * t), dy=1.5 * env * math.sin(2 * math.pi * 6.0 * t))])


def _lift(q, t, d, rng, s):
    return Pose([Piece(dy=-22 * _ramp(q, 0.1, 0.6))])


def _drop(q, t, d, rng, s):
    if q < 0.15:
        dy = -26.0
    elif q < 0.5:
        f = (q - 0.15) / 0.35
        dy = -26.0 * (1 - f * f)
    elif q < 0.7:
        f = (q - 0.5) / 0.2
        dy = -24.0 * f * (1 - f)
    else:
        dy = 0.0
    return Pose([Piece(dy=dy)])


def _slide(q, t, d, rng, s):
    return Pose([Piece(dx=d * (-14 + 28 * _ramp(q, 0.1, 0.9)))])


def _squeeze(q, t, d, rng, s):
    k = _ramp(q, 0.1, 0.9)
    amount = math.sin(2 * math.pi * k) ** 2  # two squeezes
    return Pose([Piece(sx=1 + 0.3 * amount, sy=1 - 0.45 * amount, dy=0.45 * amount * s.mask.shape[0] / 2)])


def _roll(q, t, d, rng, s):
    x = d * (-14 + 28 * _ramp(q, 0.1, 0.9))
    radius = min(s.kind.size) / 2
    return Pose([Piece(dx=x, angle=x / radius)])


def _flip(q, t, d, rng, s):
    k = _ramp(q, 0.15, 0.75)
    sx = math.cos(math.pi * k)
    sx = math.copysign(max(abs(sx), 0.12), sx if sx != 0 else 1.0)
    return Pose([Piece(sx=sx, dy=-10 * math.sin(math.pi * k))])


def _stir(q, t, d, rng, s):
    env = _ramp(q, 0.05, 0.15) * (1 - _ramp(q, 0.85, 0.95))
    phase = 2 * math.pi * 0.8 * t * d
    return Pose([Piece(dx=9 * env * math.cos(phase), dy=7 * env * math.sin(phase))])


def _open(q, t, d, rng, s):
    lid = _ramp(q, 0.15, 0.6)
    if lid * 12 < 1.0:
        return Pose([Piece()])
    return Pose([Piece(dx=d * 5 * lid, dy=-12 * lid, part="top"), Piece(part="bottom")])


def _wash(q, t, d, rng, s):
    env = 1.0 if 0.1 <= q <= 0.9 else 0.0
    w, h = s.kind.size
    pose = Pose([Piece(dx=env * rng.integers(-2, 3), dy=env * rng.integers(-2, 3),
                       gain=1 + 0.15 * env * math.sin(2 * math.pi * 2.0 * t))])
    if env:
        pose.drops = [(rng.uniform(-w / 2 - 4, w / 2 + 4), rng.uniform(-h / 2 - 6, -h / 2 + 4), WATER) for _ in range(4)]
    return pose


MOTIONS: dict[str, Motion] = {
    "cut": _cut, "rotate": _rotate, "pour": _pour, "shake": _shake, "lift": _lift, "drop": _drop, "slide": _slide,
    "squeeze": _squeeze, "roll": _roll, "flip": _flip, "stir": _stir, "open": _open, "wash": _wash,
}


@dataclass
class StepScene:
    """One step as drawn: the acted object's sprite, where, when (frame range) and how."""

    verb: str
    sprite: Sprite
    first_frame: int
    end_frame: int  # exclusive
    centre: tuple[float, float]
    direction: int  # ±1: slide/roll/rotate/pour direction


@dataclass
class Scene:
    """A whole video: a background with distractors painted in, and the steps in time order."""

    background: np.ndarray  # [H, W, 3] float32, distractors included
    distractor_boxes: list[list[int]]
    distractor_labels: list[str]
    steps: list[StepScene]
    num_frames: int
    fps: int


def build_background(rng: np.random.Generator, background_index: int,
                     distractors: Sequence[tuple[ObjectKind, int]]) -> tuple[np.ndarray, list[list[int]], list[str]]:
    """Table top with static distractors painted in their slots. Returns (image, boxes, labels)."""
    bg = make_background(rng, background_index)
    boxes, labels = [], []
    for kind, slot in distractors:
        sx, sy = DISTRACTOR_SLOTS[slot]
        sprite = make_sprite(kind, rng)
        box = draw_sprite(bg, sprite, sx + float(rng.integers(-1, 2)), sy + float(rng.integers(-2, 3)))
        if box is not None:
            boxes.append(box)
            labels.append(kind.name)
    return bg, boxes, labels


def render(scene: Scene, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, list[list[int]], list[str]]]:
    """Yield (frame uint8 [H, W, 3], boxes, labels) for every frame of ``scene``."""
    by_frame: dict[int, StepScene] = {}
    for step in scene.steps:
        for f in range(step.first_frame, step.end_frame):
            by_frame[f] = step
    for f in range(scene.num_frames):
        frame = scene.background.copy()
        boxes = [list(b) for b in scene.distractor_boxes]
        labels = list(scene.distractor_labels)
        step = by_frame.get(f)
        if step is not None:
            length = max(step.end_frame - step.first_frame - 1, 1)
            q = (f - step.first_frame) / length
            t = (f - step.first_frame) / scene.fps
            pose = MOTIONS[step.verb](q, t, step.direction, rng, step.sprite)
            cx, cy = step.centre
            for piece in pose.pieces:
                box = draw_sprite(frame, step.sprite, cx + piece.dx, cy + piece.dy, piece.angle, piece.sx, piece.sy,
                                  piece.gain, piece.part, clip_x=WORK_X)
                if box is not None:
                    boxes.append(box)
                    labels.append(step.sprite.kind.name)
            if pose.knife_y is not None:
                ky = int(round(cy + pose.knife_y))
                hx = step.sprite.kind.size[0] // 2 + 4
                x_lo, x_hi = int(cx) - 1, int(cx) + 1
                frame[max(ky - hx, 0) : max(ky, 0), max(x_lo, WORK_X[0]) : min(x_hi, WORK_X[1])] = KNIFE
            for ddx, ddy, colour in pose.drops or ():
                x, y = int(round(cx + ddx)), int(round(cy + ddy))
                if WORK_X[0] <= x < WORK_X[1] - 1 and 0 <= y < HEIGHT - 1:
                    frame[y : y + 2, x : x + 2] = colour
        yield np.clip(frame, 0, 255).astype(np.uint8), boxes, labels


def pick_codec() -> str:
    """H.264 (libx264) where this PyAV build has it, else MPEG-4 part 2 (always present in PyAV wheels)."""
    import av

    return "libx264" if "libx264" in av.codec.codecs_available else "mpeg4"


class Mp4Writer:
    """Write RGB frames to ``path`` as yuv420p H.264/MPEG-4 with PyAV; atomic (temp file + rename).

    Single-threaded encoding keeps output deterministic and leaves the other core free.
    """

    def __init__(self, path: str | Path, fps: int, width: int = WIDTH, height: int = HEIGHT, codec: str | None = None):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}.mp4")
        self.container = av.open(str(self.tmp), mode="w", format="mp4")
        codec = codec or pick_codec()
        self.stream = self.container.add_stream(codec, rate=Fraction(fps, 1))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            self.stream.codec_context.options = {"preset": "veryfast", "crf": "20", "threads": "1", "g": str(2 * fps)}
        else:
            self.stream.codec_context.options = {"qscale": "3", "g": str(2 * fps)}
            self.stream.codec_context.thread_count = 1
        self._av = av

    def write(self, frame: np.ndarray) -> None:
        """frame: uint8 [H, W, 3] RGB."""
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self.stream.encode(vf):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass
        if self.tmp.exists():
            os.unlink(self.tmp)
