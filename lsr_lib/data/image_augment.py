"""Style augmentations for the embedded default's LiT projection (issue: "what an image shows,
not how the set's artists draw").

All work on an RGBA rendering (transparent background) with PIL only (no torchvision):
colour (hue rotation, saturation, grayscale), stroke (thicker / thinner outlines through
min / max filters), scale and position (shrink and move on the canvas), background tint and a
small rotation. ``random_view`` draws a training view; ``EVAL_TRANSFORMS`` are fixed, named
transforms used to report R@k on transformed test images beside clean ones. ``render_view``
turns a view id (``<image>@clean``, ``@view<k>``, ``@<transform>``; ``view_ids``) into the image
stage 01's image tower reads.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps


def hue_rotate(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate the hue of an RGBA image, keeping alpha."""
    alpha = img.getchannel("A")
    hsv = np.asarray(img.convert("RGB").convert("HSV")).copy()  # (H, W, 3) uint8
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(degrees / 360 * 255)) % 256
    out = Image.fromarray(hsv, "HSV").convert("RGB").convert("RGBA")
    out.putalpha(alpha)
    return out


def saturate(img: Image.Image, factor: float) -> Image.Image:
    """Scale saturation (0 = grayscale), keeping alpha."""
    alpha = img.getchannel("A")
    hsv = np.asarray(img.convert("RGB").convert("HSV")).astype(np.float32)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 255)
    out = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB").convert("RGBA")
    out.putalpha(alpha)
    return out


def grayscale(img: Image.Image) -> Image.Image:
    """Grayscale with alpha kept."""
    alpha = img.getchannel("A")
    out = ImageOps.grayscale(img.convert("RGB")).convert("RGBA")
    out.putalpha(alpha)
    return out


def stroke(img: Image.Image, width: int) -> Image.Image:
    """Thicker (width > 0) or thinner (width < 0) dark outlines, via min / max filters on RGB."""
    if width == 0:
        return img
    size = 2 * abs(width) + 1
    filt = ImageFilter.MinFilter(size) if width > 0 else ImageFilter.MaxFilter(size)
    rgb = on_background(img, (255, 255, 255)).filter(filt)
    alpha = img.getchannel("A").filter(ImageFilter.MaxFilter(size) if width > 0 else ImageFilter.MinFilter(size))
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def place(img: Image.Image, scale: float, dx: float, dy: float, angle: float = 0.0) -> Image.Image:
    """Shrink by ``scale``, rotate by ``angle`` degrees and move by (dx, dy) x free space."""
    w, h = img.size
    small = img.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BICUBIC)
    if angle:
        small = small.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    canvas = Image.new("RGBA", img.size, (0, 0, 0, 0))
    fx, fy = w - small.size[0], h - small.size[1]
    canvas.alpha_composite(small, (int(fx / 2 + dx * fx / 2), int(fy / 2 + dy * fy / 2)))
    return canvas


def on_background(img: Image.Image, rgb: tuple[int, int, int]) -> Image.Image:
    """Composite RGBA on a solid colour -> RGB."""
    bg = Image.new("RGBA", img.size, rgb + (255,))
    bg.alpha_composite(img.convert("RGBA"))
    return bg.convert("RGB")


def random_view(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random training view of an RGBA rendering -> RGB."""
    if rng.random() < 0.5:
        img = hue_rotate(img, float(rng.uniform(-180, 180)))
    if rng.random() < 0.15:
        img = grayscale(img)
    elif rng.random() < 0.3:
        img = saturate(img, float(rng.uniform(0.3, 1.5)))
    if rng.random() < 0.4:
        img = stroke(img, int(rng.choice([-1, 1, 2])))
    if rng.random() < 0.7:
        img = place(
            img,
            float(rng.uniform(0.45, 1.0)),
            float(rng.uniform(-1, 1)),
            float(rng.uniform(-1, 1)),
            float(rng.uniform(-20, 20)),
        )
    bg = (255, 255, 255)
    if rng.random() < 0.4:
        bg = tuple(int(v) for v in rng.integers(150, 256, size=3))
    return on_background(img, bg)


EVAL_TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "clean": lambda im: on_background(im, (255, 255, 255)),
    "grayscale": lambda im: on_background(grayscale(im), (255, 255, 255)),
    "small_offset": lambda im: on_background(place(im, 0.55, 0.8, -0.8), (255, 255, 255)),
    "thick_stroke": lambda im: on_background(stroke(im, 2), (255, 255, 255)),
    "hue_shift": lambda im: on_background(hue_rotate(im, 120), (255, 255, 255)),
    "tinted_background": lambda im: on_background(im, (190, 215, 240)),
}


def eval_transform(name: str) -> Callable[[Image.Image], Image.Image]:
    """A named, deterministic test-time transform (RGBA -> RGB)."""
    if name not in EVAL_TRANSFORMS:
        raise KeyError(f"unknown eval transform {name!r}; known: {', '.join(EVAL_TRANSFORMS)}")
    return EVAL_TRANSFORMS[name]


def view_ids(collection, n_train_views: int, eval_transforms: tuple[str, ...]) -> list[str]:
    """Ids ``<image>@clean``, ``<image>@view<k>`` (train) and ``<image>@<transform>`` (test)."""
    ids = [f"{i}@clean" for i in collection.images["image_id"]]
    train = collection.images.loc[collection.images["split"] == "train", "image_id"]
    ids += [f"{i}@view{k}" for k in range(n_train_views) for i in train]
    test = collection.images.loc[collection.images["split"] == "test", "image_id"]
    ids += [f"{i}@{t}" for t in eval_transforms for i in test]
    return ids


def render_view(path: str, view: str, seed: int, image_id: str) -> Image.Image:
    """The RGB image for a view id suffix; random views are seeded by (seed, image id, view).

    Never by the file's path: a path includes the checkout's folder, and seeding by it gave every
    clone its own training views and so its own teacher (issue 13).
    """
    import zlib

    try:
        rgba = Image.open(path)
        rgba.load()
        rgba = rgba.convert("RGBA")
    except Exception as e:
        raise ValueError(
            f"image {path} is missing or unreadable ({e}); delete it and re-run stage 01 to render it again"
        ) from e
    if view.startswith("view"):
        rng = np.random.default_rng([seed, zlib.crc32(f"{image_id}@{view}".encode())])
        return random_view(rgba, rng)
    return eval_transform(view)(rgba)
