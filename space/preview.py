"""A PNG card of a neuron's top examples, for the Open Graph image of a short link (Pillow, no browser)."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from hub_sync.records import Example
from space.render import CONTEXT_AFTER, CONTEXT_BEFORE, ColourScale
from space.text import visible_token

WIDTH, HEIGHT = 1200, 630
MARGIN = 40
LINE_HEIGHT = 44
EXAMPLES_SHOWN = 9
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
POSITIVE = (255, 112, 0)
NEGATIVE = (28, 126, 214)
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu",)


@lru_cache(maxsize=4)
def _font(size: int, mono: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu when the system has it (it draws ↵ and ·), Pillow's bundled font otherwise."""
    name = "DejaVuSansMono.ttf" if mono else "DejaVuSans-Bold.ttf"
    for folder in FONT_DIRS:
        path = Path(folder) / name
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def tint(value: float, scale: ColourScale) -> tuple[int, int, int]:
    """The token's background: white blended toward orange (positive) or blue (negative), by its sign's range."""
    colour = POSITIVE if value >= 0 else NEGATIVE
    alpha = scale.share(value)
    return tuple(round(255 + (c - 255) * alpha) for c in colour)


def _draw_example(draw: ImageDraw.ImageDraw, example: Example, scale: ColourScale, top: int) -> None:
    font = _font(22, mono=True)
    draw.text((MARGIN, top + 8), f"{example.score:6.2f}", font=_font(18, mono=True), fill=MUTED)
    x = MARGIN + 90
    for position in example.around_peak(CONTEXT_BEFORE, CONTEXT_AFTER):
        text = visible_token(example.tokens[position])
        width = draw.textlength(text, font=font)
        if x + width > WIDTH - MARGIN:
            draw.text((x, top + 6), "…", font=font, fill=MUTED)
            break
        fill = tint(float(example.activations[position]), scale)
        draw.rectangle([x, top + 4, x + width, top + LINE_HEIGHT - 8], fill=fill)
        if position == example.max_position:
            draw.rectangle([x, top + 4, x + width, top + LINE_HEIGHT - 8], outline=(200, 60, 0), width=2)
        draw.text((x, top + 6), text, font=font, fill=INK)
        x += width


def neuron_card_png(title: str, subtitle: str, examples: list[Example]) -> bytes:
    """A 1200x630 PNG: title, one line of stats, and the top examples around their peak token."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, MARGIN - 10), title, font=_font(34, mono=False), fill=INK)
    draw.text((MARGIN, MARGIN + 36), subtitle, font=_font(20, mono=True), fill=MUTED)
    top_examples = [example for example in examples if example.kind == "top"][:EXAMPLES_SHOWN]
    scale = ColourScale.of_examples(examples)
    for i, example in enumerate(top_examples):
        _draw_example(draw, example, scale, MARGIN + 90 + i * LINE_HEIGHT)
    draw.text((MARGIN, HEIGHT - MARGIN - 4), "Neuroscope Hub", font=_font(18, mono=False), fill=MUTED)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # optimize=True: 2% fewer bytes for 5x the time (195 against 41 ms)
    return buffer.getvalue()
