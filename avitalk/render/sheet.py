"""Contact sheets: a grid of labelled renders, for looking at a head or a clip at a glance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_path


def grid_image(images: Sequence[np.ndarray], labels: Sequence[str] | None = None, cols: int = 3) -> np.ndarray:
    """Tile [H, W, 3] uint8 images into one image, with a caption strip under each when labels are given."""
    if not images:
        raise ValueError("no images to tile")
    h, w = images[0].shape[:2]
    cap = max(18, h // 14) if labels else 0
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * (h + cap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=max(12, cap * 3 // 4))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        sheet.paste(Image.fromarray(np.asarray(img, np.uint8)), (c * w, r * (h + cap)))
        if labels:
            draw.text((c * w + 6, r * (h + cap) + h + 1), labels[i], fill=(20, 20, 20), font=font)
    return np.asarray(sheet)


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")
    return Path(path)
