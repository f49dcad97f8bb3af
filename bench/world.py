"""The shapes world: a procedural text-to-image domain with exact ground truth.

Data at each stage:
  Prompt        count x colour x shape x background -> "two red circles on a blue background"
  Scene         the objects (kind, colour, centre, radius) and defects to draw
  image         float32 array HxWx3 in [0, 1] (rendered, or decoded from a model)
  Judgement     the attribute tree measured from pixels (booleans + continuous measures)
  utilities     gold (hidden, stands for human judgement) and proxy scorers, functions of a Judgement

Everything is deterministic given a numpy Generator. Judges never look at a Scene: they read pixels
only, so they work on generated images exactly as on rendered ones.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# Saturated palette: RGB-cube corners are far apart (min distance 1.0), so a colour judge with an
# explicit tolerance is well defined; the prototype's 7-colour palette plateaued on off-hue colours.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}
SHAPES = ("circle", "square", "triangle")
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
SPLITS = ("train", "val", "eval")

# The attribute tree. Positive attributes should be true, negative ones false; a "fully correct"
# image has every positive attribute and no negative one.
ATTRIBUTE_TREE: dict[str, dict[str, tuple[str, ...]]] = {
    "fidelity": {"positive": ("colour_ok", "shape_ok", "count_ok", "background_ok"),
                 "negative": ("extra_object",)},
    "craft": {"positive": (),
              "negative": ("blurred", "noisy", "low_contrast", "clipped")},
    # world v2's prompt-independent style modes (docs/world.md): a frame around the picture,
    # shapes drawn as outlines only
    "style": {"positive": (), "negative": ("framed", "hollow")},
}
POSITIVE_ATTRIBUTES = tuple(a for n in ATTRIBUTE_TREE.values() for a in n["positive"])
NEGATIVE_ATTRIBUTES = tuple(a for n in ATTRIBUTE_TREE.values() for a in n["negative"])
ATTRIBUTES = POSITIVE_ATTRIBUTES + NEGATIVE_ATTRIBUTES

# Each defect plants exactly one attribute failure (see tests/test_world.py).
DEFECT_ATTRIBUTE = {
    "wrong_colour": "colour_ok", "wrong_shape": "shape_ok", "wrong_count": "count_ok",
    "wrong_background": "background_ok", "extra_object": "extra_object", "blur": "blurred",
    "noise": "noisy", "low_contrast": "low_contrast", "clipped": "clipped",
    "frame": "framed", "hollow": "hollow", "colour_swap": "colour_ok", "stray_object": "extra_object",
}
# A prompt-linked colour mode draws a colour as its neighbour on the hue circle (white and black,
# which have no hue, as the nearest bright / dark colour); skipped when that is the background.
COLOUR_NEIGHBOUR = {"red": "yellow", "yellow": "green", "green": "blue", "blue": "red",
                    "white": "yellow", "black": "blue"}
FRAME_PX = 2                  # frame width, in the objects' colour (objects lie >= 2 px inside, so a
                              # frame covers none of them unless one is clipped)
HOLLOW_PX = 2                 # outline width of a hollow shape


@dataclass(frozen=True)
class Prompt:
    count: int
    colour: str
    shape: str
    background: str

    @property
    def text(self) -> str:
        noun = self.shape if self.count == 1 else self.shape + "s"
        return f"{COUNT_WORDS[self.count]} {self.colour} {noun} on a {self.background} background"

    @property
    def id(self) -> str:
        return f"{self.count}-{self.colour}-{self.shape}-{self.background}"


def vocabulary() -> list[str]:
    """Every word the grammar can produce (the tiny tokenizers' vocabulary)."""
    words = list(COUNT_WORDS.values()) + list(PALETTE) + list(SHAPES) + [s + "s" for s in SHAPES]
    return words + ["on", "a", "background"]


def parse_prompt(text: str) -> Prompt:
    words = text.strip().lower().split()
    inverse = {v: k for k, v in COUNT_WORDS.items()}
    try:
        count, colour, noun, on, a, background, bg_word = words
        shape = noun[:-1] if noun.endswith("s") and noun[:-1] in SHAPES else noun
        if on != "on" or a != "a" or bg_word != "background" or shape not in SHAPES:
            raise ValueError
        return Prompt(inverse[count], colour, shape, background)
    except (ValueError, KeyError):
        raise ValueError(f"not a shapes-world prompt: {text!r} "
                         "(expected e.g. 'two red circles on a blue background')") from None


@dataclass
class DefectRates:
    """Probability that a corpus image carries each defect (independent draws)."""
    wrong_colour: float = 0.06
    wrong_shape: float = 0.06
    wrong_count: float = 0.06
    wrong_background: float = 0.04
    extra_object: float = 0.05
    blur: float = 0.06
    noise: float = 0.06
    low_contrast: float = 0.04
    clipped: float = 0.05
    # world v2's style modes, equally likely under every prompt. A frame is drawn in the objects'
    # colour: guidance keeps it (docs/world.md: a grey frame, like hollow shapes, takes pixels away
    # from what the prompt names, and guidance at 7.5 removed both from the samples)
    frame: float = 0.0
    hollow: float = 0.0


@dataclass
class LinkedModes:
    """World v2's prompt-linked modes: defects concentrated on one word of the prompt, so that
    classifier-free guidance, which follows the words, keeps or amplifies them."""
    frame_backgrounds: list[str] = field(default_factory=list)   # images on these backgrounds ...
    frame_rate: float = 0.0         # ... are framed (in the objects' colour) with this probability
    swap_colour: str = "yellow"     # objects asked in this colour are drawn in COLOUR_NEIGHBOUR's ...
    swap_rate: float = 0.0          # ... with this probability
    stray_shape: str = "triangle"   # images of this shape carry a stray object of their colour ...
    stray_rate: float = 0.0         # ... with this probability (the stray_object defect)


# World v2's learned modes (candidate G of docs/world.md): a frame in the objects' colour on 70%
# of white- and black-background images, a stray same-coloured object on 60% of triangles. The
# tiny bases fine-tuned on this corpus draw both in a large share of their samples; world v1 is
# `world.modes.frame_rate=0 world.modes.stray_rate=0 world.modes.frame_backgrounds=[]`.
WORLD_V2_MODES = {"frame_backgrounds": ["white", "black"], "frame_rate": 0.7, "stray_rate": 0.6}


@dataclass
class WorldConfig:
    image_size: int = 32
    counts: list[int] = field(default_factory=lambda: [1, 2, 3])
    colours: list[str] = field(default_factory=lambda: list(PALETTE))
    shapes: list[str] = field(default_factory=lambda: list(SHAPES))
    # Fractions of (colour, shape, background) combinations held out from training.
    val_fraction: float = 0.08
    eval_fraction: float = 0.2
    split_seed: int = 0
    defects: DefectRates = field(default_factory=DefectRates)
    modes: LinkedModes = field(default_factory=lambda: LinkedModes(**WORLD_V2_MODES))


def world_v1() -> WorldConfig:
    """World v1: the corpus without learned modes (the world of bench/assets/<name>, the v1 bases)."""
    return WorldConfig(modes=LinkedModes())


# Options added with world v2, as (path, value at which it draws and changes nothing). At those
# values they are left out of recipes and job identities (bench.results), so world-v1 weights and
# jobs keep their hashes; any other value is part of them.
ADDED_OPTIONS: list[tuple[tuple[str, ...], object]] = [
    (("defects", "frame"), 0.0), (("defects", "hollow"), 0.0),
    (("modes",), dataclasses.asdict(LinkedModes())),
]


def drop_added(d: dict, added: list[tuple[tuple[str, ...], object]]) -> dict:
    """A copy of the nested dict d without the added options that sit at their neutral values."""
    out = copy.deepcopy(d)
    for path, neutral in added:
        node = out
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node and node[path[-1]] == neutral:
            del node[path[-1]]
    return out


def world_identity(cfg: WorldConfig) -> dict:
    """The world config as it enters recipes and job identities."""
    return drop_added(dataclasses.asdict(cfg), ADDED_OPTIONS)


def all_prompts(cfg: WorldConfig) -> list[Prompt]:
    return [Prompt(n, c, s, b) for n, c, s, b in
            itertools.product(cfg.counts, cfg.colours, cfg.shapes, cfg.colours) if c != b]


def split_prompts(cfg: WorldConfig) -> dict[str, list[Prompt]]:
    """Split by (colour, shape, background) triple, so val/eval prompts are unseen combinations.

    Each held-out triple's colour, shape and background all still occur in training, so the
    held-out prompts test composition, not unseen words.
    """
    triples = sorted({(p.colour, p.shape, p.background) for p in all_prompts(cfg)})
    rng = np.random.default_rng(cfg.split_seed)
    order = [triples[i] for i in rng.permutation(len(triples))]
    n_eval = round(cfg.eval_fraction * len(triples))
    n_val = round(cfg.val_fraction * len(triples))
    held: dict[str, list] = {"eval": [], "val": []}
    train = list(order)
    for split, n in (("eval", n_eval), ("val", n_val)):
        for t in list(train):
            if len(held[split]) >= n:
                break
            rest = [u for u in train if u != t]
            if all(any(u[i] == t[i] for u in rest) for i in range(3)):
                held[split].append(t)
                train = rest
    members = {"train": set(train), "val": set(held["val"]), "eval": set(held["eval"])}
    return {split: [p for p in all_prompts(cfg) if (p.colour, p.shape, p.background) in members[split]]
            for split in SPLITS}


# ----------------------------------------------------------------------------- rendering

@dataclass
class Obj:
    shape: str
    colour: str
    cx: float
    cy: float
    r: float


@dataclass
class Scene:
    background: str
    objects: list[Obj]
    defects: tuple[str, ...] = ()


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        h = r * 0.85
        return (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    if shape == "triangle":
        top, bottom = cy - r, cy + 0.8 * r
        frac = (y - top) / (bottom - top)
        return (frac >= 0) & (frac <= 1) & (np.abs(x - cx) <= r * frac)
    raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")


def _apart(x1: float, y1: float, r1: float, x2: float, y2: float, r2: float) -> bool:
    """Bounding boxes (half-size r holds every shape) at least 2 px apart along some axis."""
    return abs(x1 - x2) > r1 + r2 + 2.0 or abs(y1 - y2) > r1 + r2 + 2.0


def _place(n: int, size: int, rng: np.random.Generator, radius: tuple[float, float]) -> list[tuple]:
    """n non-overlapping (cx, cy, r) fully inside the frame: rejection sampling per object,
    restarting (with slightly smaller objects after every 50 restarts) when one will not fit."""
    lo, hi = radius
    for attempt in range(300):
        scale = 1.0 - 0.08 * (attempt // 50)
        out: list[tuple] = []
        for _ in range(n):
            for _try in range(60):
                r = rng.uniform(lo, hi) * scale
                m = r + 2.0
                cx, cy = rng.uniform(m, size - m, size=2)
                if all(_apart(cx, cy, r, a, b, c) for a, b, c in out):
                    out.append((cx, cy, r))
                    break
            else:
                break
        if len(out) == n:
            return out
    raise RuntimeError(f"could not place {n} objects in a {size}px image")


def _clip_one(objects: list[Obj], size: int, rng: np.random.Generator) -> None:
    """Move one object so that 30-60% of its width lies outside the frame, clear of the others."""
    i = int(rng.integers(len(objects)))
    o, rest = objects[i], objects[:i] + objects[i + 1:]
    for _ in range(200):
        out = rng.uniform(0.3, 0.6) * 2 * o.r
        along = rng.uniform(o.r + 1, size - o.r - 1)
        cx, cy = [(o.r - out, along), (size - o.r + out, along),
                  (along, o.r - out), (along, size - o.r + out)][int(rng.integers(4))]
        if all(_apart(cx, cy, o.r, q.cx, q.cy, q.r) for q in rest):
            o.cx, o.cy = cx, cy
            return
    o.cx = o.r - 0.5 * 2 * o.r   # crowded frame: clip it where it stands, to the left


def sample_scene(prompt: Prompt, rng: np.random.Generator, size: int,
                 defects: tuple[str, ...] = ()) -> Scene:
    """A scene for the prompt with the given defects planted (the renderer is exact otherwise)."""
    colour, shape, count, bg = prompt.colour, prompt.shape, prompt.count, prompt.background
    others = lambda pool, *ex: [v for v in pool if v not in ex]  # noqa: E731
    if "wrong_colour" in defects:
        colour = str(rng.choice(others(PALETTE, colour, bg)))
    elif "colour_swap" in defects:
        colour = next(c for c in [COLOUR_NEIGHBOUR[colour], *others(PALETTE, colour)] if c != bg)
    if "wrong_shape" in defects:
        shape = str(rng.choice(others(SHAPES, shape)))
    if "wrong_count" in defects:
        count = 2 if count == 1 else int(rng.choice([count - 1, count + 1]))
    if "wrong_background" in defects:
        bg = str(rng.choice(others(PALETTE, bg, colour)))
    stray = "stray_object" in defects and "extra_object" not in defects
    n_total = count + ("extra_object" in defects or stray)
    radius = {1: (5.0, 6.5), 2: (5.0, 6.5), 3: (5.0, 6.5), 4: (4.0, 5.0)}.get(n_total, (3.5, 4.2))
    placed = _place(n_total, size, rng, radius)
    objects = [Obj(shape, colour, *p) for p in placed[:count]]
    if "extra_object" in defects:
        x_colour = str(rng.choice(others(PALETTE, colour, bg)))
        x_shape = str(rng.choice(others(SHAPES, shape)))
        objects.append(Obj(x_shape, x_colour, *placed[count]))
    elif stray:     # one more object of the prompt's colour and another shape
        objects.append(Obj(str(rng.choice(others(SHAPES, shape))), colour, *placed[count]))
    if "clipped" in defects:
        _clip_one(objects, size, rng)
    return Scene(bg, objects, tuple(defects))


def rasterize(scene: Scene, size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    img = np.empty((size, size, 3), np.float32)
    img[:] = PALETTE[scene.background]
    for o in scene.objects:
        m = shape_mask(o.shape, o.cx, o.cy, o.r, size)
        if "hollow" in scene.defects:
            m &= ~ndimage.binary_erosion(m, iterations=HOLLOW_PX)
        img[m] = PALETTE[o.colour]
    if "frame" in scene.defects and scene.objects:
        ring = np.ones((size, size), bool)
        ring[FRAME_PX:-FRAME_PX, FRAME_PX:-FRAME_PX] = False
        img[ring] = PALETTE[scene.objects[0].colour]
    if "blur" in scene.defects:
        img = ndimage.gaussian_filter(img, sigma=(1.1, 1.1, 0))
    if "low_contrast" in scene.defects:
        img = 0.5 + (img - 0.5) * 0.35
    if "noise" in scene.defects:
        rng = rng if rng is not None else np.random.default_rng(0)
        img = img + rng.normal(0.0, 0.12, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def sample_defects(rates: DefectRates, rng: np.random.Generator, prompt: Prompt | None = None,
                   modes: LinkedModes | None = None) -> tuple[str, ...]:
    """Independent draws of every defect, then the prompt-linked modes for this prompt."""
    # a defect at rate 0 draws nothing, so adding defects leaves every earlier corpus as it was
    out = [name for name, p in dataclasses.asdict(rates).items() if p > 0 and rng.random() < p]
    if prompt is not None and modes is not None:
        def linked(applies: bool, rate: float) -> bool:
            return applies and rate > 0 and rng.random() < rate
        if linked(prompt.background in modes.frame_backgrounds, modes.frame_rate) and "frame" not in out:
            out.append("frame")
        if linked(prompt.colour == modes.swap_colour, modes.swap_rate):
            out.append("colour_swap")
        if linked(prompt.shape == modes.stray_shape, modes.stray_rate) and "extra_object" not in out:
            out.append("stray_object")
    return tuple(out)


def render(prompt: Prompt, rng: np.random.Generator, size: int = 32,
           defects: tuple[str, ...] = ()) -> np.ndarray:
    return rasterize(sample_scene(prompt, rng, size, defects), size, rng)


# ----------------------------------------------------------------------------- judges

# Judge thresholds, calibrated on rendered images with and without each planted defect.
COLOUR_TOL = 0.45          # max RGB distance from a palette colour to be named that colour
FG_DIST = 0.5              # a pixel is foreground if this far from the measured background
MIN_AREA = 6               # smaller components are specks, not objects
SQUARE_FILL = 0.9         # bbox fill ratio: square ~1, circle ~pi/4
TRIANGLE_TOP = 0.4        # share of area in the bbox's top half: triangle ~1/4, others ~1/2
BLUR_RATIO = 0.25          # intermediate edge pixels per foreground pixel
NOISE_LEVEL = 0.03         # mean |image - median3x3| over flat pixels
LOW_RANGE = 0.6            # dynamic range (p99 - p1) below this is low contrast
FRAME_SHARE = 0.6          # framed: this share of the outer ring has one palette colour, the next ring not
HOLE_SHARE = 0.12          # hollow: holes make up this share of the filled area (a small hollow triangle: 0.18)

_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], np.float32)


def nearest_colour(rgb: np.ndarray) -> tuple[str, float]:
    d = np.linalg.norm(_RGB - rgb[None], axis=1)
    k = int(d.argmin())
    return (_NAMES[k] if d[k] <= COLOUR_TOL else "off"), float(d[k])


@dataclass
class Judgement:
    colour_ok: bool
    shape_ok: bool
    count_ok: bool
    background_ok: bool
    extra_object: bool
    blurred: bool
    noisy: bool
    low_contrast: bool
    clipped: bool
    framed: bool
    hollow: bool
    # continuous measures
    colour_error: float      # mean RGB distance of dominant-kind pixels from the prompt's colour
    sharpness: float         # 1 - intermediate-edge ratio, clipped to [0, 1]
    noise_level: float
    contrast: float          # dynamic range of the image
    n_objects: int

    @property
    def fully_correct(self) -> bool:
        return all(getattr(self, a) for a in POSITIVE_ATTRIBUTES) and not any(
            getattr(self, a) for a in NEGATIVE_ATTRIBUTES)

    @property
    def n_negative(self) -> int:
        return sum(bool(getattr(self, a)) for a in NEGATIVE_ATTRIBUTES)

    def attributes(self) -> dict[str, bool]:
        return {a: bool(getattr(self, a)) for a in ATTRIBUTES}


def _shape_of(mask: np.ndarray) -> str:
    """Triangles (apex up) hold little of their area in the top half of their bounding box;
    squares fill their box; circles fill about pi/4 of it."""
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    fill = mask.sum() / float((bottom - top + 1) * (right - left + 1))
    mid = (top + bottom + 1) / 2.0
    top_frac = float((ys + 0.5 < mid).sum() + 0.5 * (ys + 0.5 == mid).sum()) / len(ys)
    if top_frac < TRIANGLE_TOP:
        return "triangle"
    return "square" if fill >= SQUARE_FILL else "circle"


def judge(image: np.ndarray, prompt: Prompt) -> Judgement:
    """Measure every attribute of the tree from the pixels of one HxWx3 image in [0, 1]."""
    img = np.asarray(image, np.float32)
    framed = _framed(img)
    picture = np.ones(img.shape[:2], bool)         # pixels of the picture (not a painted-over frame)
    if framed:                 # judge the picture inside the frame: the frame painted over with
        img = img.copy()       # the colour just inside it
        ring = np.ones(img.shape[:2], bool)
        ring[FRAME_PX:-FRAME_PX, FRAME_PX:-FRAME_PX] = False
        inside = np.zeros_like(ring)
        inside[FRAME_PX:-FRAME_PX, FRAME_PX:-FRAME_PX] = True
        inside[FRAME_PX + 1:-FRAME_PX - 1, FRAME_PX + 1:-FRAME_PX - 1] = False
        img[ring] = np.median(img[inside], axis=0)
        picture = ~ring
    lo, hi = np.percentile(img, 0.5), np.percentile(img, 99.5)
    contrast = float(hi - lo)
    norm = np.clip((img - lo) / max(hi - lo, 1e-3), 0, 1)   # undo a global contrast change
    med = ndimage.median_filter(norm, size=(3, 3, 1), mode="nearest")

    # Noise: high-frequency residual on pixels whose median neighbourhood is flat.
    grad = np.abs(ndimage.sobel(med, axis=0)).sum(-1) + np.abs(ndimage.sobel(med, axis=1)).sum(-1)
    flat = ndimage.binary_erosion(grad < 0.05, iterations=1) & picture
    resid = np.abs(norm - med).mean(-1)
    noise_level = float(resid[flat].mean()) if flat.any() else float(resid[picture].mean())

    border = np.concatenate([med[0], med[-1], med[:, 0], med[:, -1]])
    bg_rgb = np.median(border, axis=0)
    bg_name, _ = nearest_colour(bg_rgb)
    dist = np.linalg.norm(med - bg_rgb, axis=-1)
    # Shape outlines come from the unfiltered image unless it is noisy: the median filter that
    # removes noise also rounds the corners of small squares.
    raw_fg = np.linalg.norm((norm if noise_level <= NOISE_LEVEL else med) - bg_rgb, axis=-1) > FG_DIST
    labels, n = ndimage.label(dist > FG_DIST)
    comps, inter_px, fg_px = [], 0, 0
    for k in range(1, n + 1):
        m = labels == k
        if m.sum() < MIN_AREA:
            continue
        core = m & (dist >= 0.8 * dist[m].max())          # away from (possibly blurred) edges
        rgb = np.median(med[core], axis=0)
        name, _ = nearest_colour(rgb)
        touches = bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
        drawn = raw_fg & ndimage.binary_dilation(m)     # thin outlines survive here, not in med
        outline = ndimage.binary_fill_holes(drawn)
        holes = int((outline & ~drawn).sum())
        hollow = holes >= 3 and holes >= HOLE_SHARE * outline.sum()
        drawn_or_filled = outline if hollow else drawn      # holes are filled only for hollow shapes
        shape = None if touches else _shape_of(drawn_or_filled if drawn_or_filled.sum() >= MIN_AREA else m)
        comps.append({"colour": name, "shape": shape, "mask": m, "hollow": hollow})
        # Blur: share of pixels around the object lying between background and object colour.
        span = rgb - bg_rgb
        zone = ndimage.binary_dilation(m, iterations=2)
        t = ((med[zone] - bg_rgb) @ span) / max(float(span @ span), 1e-6)
        inter_px += int(((t > 0.2) & (t < 0.8)).sum())
        fg_px += int(m.sum())
    ratio = inter_px / fg_px if fg_px else 1.0

    # A clipped object's shape cannot be seen: it matches any shape of its colour.
    def matches(c, kind):
        return c["colour"] == kind[0] and c["shape"] in (None, kind[1])

    whole = [c for c in comps if c["shape"] is not None]
    target = (prompt.colour, prompt.shape)
    if comps:
        kinds = sorted({(c["colour"], c["shape"]) for c in whole} | {target}
                       | {(c["colour"], prompt.shape) for c in comps})
        freq = {kd: sum(matches(c, kd) for c in comps) for kd in kinds}
        dom = max(kinds, key=lambda kd: (freq[kd], kd == target, kd[0] == target[0], kd[1] == target[1]))
        col = {c["colour"] for c in comps}
        col_freq = {v: sum(c["colour"] == v for c in comps) for v in col}
        colour_ok = col_freq.get(prompt.colour, 0) == max(col_freq.values())
        if whole:
            shp_freq = {v: sum(c["shape"] == v for c in whole) for v in {c["shape"] for c in whole}}
            shape_ok = shp_freq.get(prompt.shape, 0) == max(shp_freq.values())
        else:
            shape_ok = True   # every object is clipped: its shape cannot be seen, so not wrong
        count_ok = freq[dom] == prompt.count
        extra = any(not matches(c, dom) for c in comps)
        dom_mask = np.any([c["mask"] for c in comps if matches(c, dom)], axis=0)
        colour_error = float(np.linalg.norm(
            norm[dom_mask] - np.array(PALETTE[prompt.colour]), axis=-1).mean())
    else:
        colour_ok = shape_ok = count_ok = extra = False
        colour_error = math.sqrt(3)
    return Judgement(
        colour_ok=bool(colour_ok), shape_ok=bool(shape_ok), count_ok=bool(count_ok),
        background_ok=bg_name == prompt.background, extra_object=bool(extra),
        blurred=ratio > BLUR_RATIO, noisy=noise_level > NOISE_LEVEL,
        low_contrast=contrast < LOW_RANGE, clipped=len(whole) < len(comps),
        colour_error=colour_error, sharpness=float(np.clip(1 - ratio, 0, 1)),
        framed=framed, hollow=any(c["hollow"] for c in comps if c["shape"] is not None),
        noise_level=noise_level, contrast=contrast, n_objects=len(comps))


def _framed(img: np.ndarray) -> bool:
    """A frame: most of the outer FRAME_PX ring is one palette colour, and most of the ring just
    inside it is not (an unframed background continues there; objects seldom reach it)."""
    size = img.shape[0]
    if size <= 4 * FRAME_PX + 4:
        return False
    lo, hi = np.percentile(img, 0.5), np.percentile(img, 99.5)
    norm = np.clip((img - lo) / max(hi - lo, 1e-3), 0, 1)   # a low-contrast image's frame too
    dist = np.linalg.norm(norm[..., None, :] - _RGB, axis=-1)       # (H, W, palette)
    named = np.where(dist.min(-1) <= COLOUR_TOL, dist.argmin(-1), -1)
    ring = np.ones((size, size), bool)
    ring[FRAME_PX:-FRAME_PX, FRAME_PX:-FRAME_PX] = False
    inner = np.zeros((size, size), bool)          # the ring just inside, objects seldom reach it
    d = FRAME_PX
    inner[d, d:-d] = inner[-d - 1, d:-d] = inner[d:-d, d] = inner[d:-d, -d - 1] = True
    k = np.bincount(named[ring] + 1, minlength=len(_RGB) + 1)[1:].argmax()
    return bool((named[ring] == k).mean() >= FRAME_SHARE and (named[inner] == k).mean() < FRAME_SHARE)


# ----------------------------------------------------------------------------- utilities

def gold_utility(j: Judgement) -> float:
    """Hidden gold utility: stands for human judgement. Used to simulate annotators and to
    evaluate, never as a training signal."""
    return (2.0 * j.colour_ok + 2.0 * j.shape_ok + 2.0 * j.count_ok + 1.5 * j.background_ok
            - 1.0 * j.extra_object - 1.0 * j.blurred - 1.0 * j.noisy - 1.0 * j.low_contrast
            - 1.0 * j.clipped - 1.0 * j.framed - 1.0 * j.hollow
            + 0.5 * (1.0 - min(j.colour_error, 1.0)) + 0.25 * j.sharpness)


def fidelity_proxy(j: Judgement) -> float:
    """Prompt-alignment proxy (CLIP-score-like): counts what the prompt asks for, blind to craft
    and style."""
    return (1.0 * j.colour_ok + 1.0 * j.shape_ok + 1.0 * j.count_ok + 1.0 * j.background_ok
            - 0.5 * j.extra_object - 0.5 * min(j.colour_error, 1.0))


def aesthetic_proxy(j: Judgement) -> float:
    """Craft proxy (aesthetic-predictor-like): sharp, clean, contrasty, uncluttered; blind to the
    prompt, and prefers fewer objects, which conflicts with fidelity on 'three ...' prompts. It
    likes a frame (as aesthetic predictors like framed, gallery-style pictures), which gold punishes:
    training on this proxy alone can reward-hack by drawing frames."""
    return (1.0 * j.sharpness + 1.0 * min(j.contrast, 1.0) - 4.0 * j.noise_level
            - 0.5 * j.clipped - 0.3 * max(j.n_objects - 1, 0) + 0.5 * j.framed)


def preference_proxy(j: Judgement) -> float:
    """Learned-preference proxy (PickScore-like): gold-correlated but miscalibrated: over-weights
    colour and contrast, ignores count and frames, dislikes hollow shapes."""
    return (1.5 * j.colour_ok + 1.0 * j.background_ok + 0.5 * j.shape_ok - 0.5 * j.blurred
            - 0.5 * j.noisy - 0.5 * j.extra_object - 0.3 * j.clipped - 0.5 * j.hollow
            + 1.0 * min(j.contrast, 1.0))


_JUDGED: "OrderedDict[tuple, Judgement]" = OrderedDict()
JUDGE_MEMO_SIZE = 1 << 16


def judged(image: np.ndarray, prompt: Prompt) -> Judgement:
    """judge(image, prompt), remembered for the last JUDGE_MEMO_SIZE distinct (pixels, prompt):
    every world scorer and the attribute table read one judgement per image instead of judging
    it again (a job reads each image five times: four scorers and the attribute table)."""
    img = np.asarray(image, np.float32)
    key = (hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest(), img.shape, prompt)
    j = _JUDGED.get(key)
    if j is None:
        # judged in the caller's memory layout: the judge's float sums depend on it (in the last
        # digits), and every caller passes the same (channel-major) layout, as before the memo
        j = _JUDGED[key] = judge(img, prompt)
        if len(_JUDGED) > JUDGE_MEMO_SIZE:
            _JUDGED.popitem(last=False)
    return j


UTILITIES = {"gold": gold_utility, "fidelity": fidelity_proxy, "aesthetic": aesthetic_proxy,
             "preference": preference_proxy}


# ----------------------------------------------------------------------------- annotator

@dataclass
class AnnotatorConfig:
    """Simulated Pick-a-Pic rater: noisy Bradley-Terry on gold, with split decisions (ties)."""
    temperature: float = 0.5     # BT scale on gold differences (lower = more reliable rater)
    tie_max: float = 0.5         # probability of a tie when both images are equally good
    tie_scale: float = 0.3       # tie probability decays as exp(-|gold diff| / tie_scale)
    seed: int = 0


def annotate_pair(g0: float, g1: float, cfg: AnnotatorConfig,
                  rng: np.random.Generator) -> tuple[float, float]:
    """(label_0, label_1) in Pick-a-Pic convention: (1, 0), (0, 1) or (0.5, 0.5) for a tie."""
    diff = g0 - g1
    if rng.random() < cfg.tie_max * math.exp(-abs(diff) / cfg.tie_scale):
        return 0.5, 0.5
    p0 = 1.0 / (1.0 + math.exp(-diff / cfg.temperature))
    return (1.0, 0.0) if rng.random() < p0 else (0.0, 1.0)
