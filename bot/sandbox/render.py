"""Pillow stand-ins for generated images: small, real files that show what was asked for.

Each image carries its prompt (wrapped) and its output index over a background derived from the
seed and prompt, so a human looking at the demo can tell results apart and tests can decode them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import unicodedata

from PIL import Image, ImageDraw, ImageFont

CONTENT_TYPES = {"webp": "image/webp", "jpg": "image/jpeg", "png": "image/png"}
LONG_SIDE = 512  # pixels at megapixels "1"; tiny on purpose so the sandbox stays fast
_PIL_FORMATS = {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}


def aspect_size(aspect_ratio: str, megapixels: str = "1", side: int = LONG_SIDE) -> tuple[int, int]:
    """Pixel size for a flux aspect ratio like "16:9" (long side `side`, half that at 0.25 MP)."""
    wide, _, high = aspect_ratio.partition(":")
    w, h = int(wide), int(high)
    long_side = side // 2 if megapixels == "0.25" else side
    if w >= h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side


def scaled_size(width: int, height: int, side: int = LONG_SIDE) -> tuple[int, int]:
    """An explicit width/height shrunk (keeping its ratio) so the long side is at most `side`."""
    factor = min(1.0, side / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def render_image(
    prompt: str,
    *,
    seed: int,
    index: int,
    total: int,
    size: tuple[int, int],
    fmt: str = "webp",
    quality: int = 80,
    source: Image.Image | None = None,
    strength: float = 1.0,
) -> bytes:
    """Encoded image bytes (`fmt` is webp, jpg or png) showing the prompt and output index.

    With a `source` (image to image), the new background is laid over it at `strength` (1.0 keeps
    nothing of the source, as a prompt strength of 1.0 does), so a variation shows its origin.
    """
    width, height = size
    image = _background(prompt, seed, index, size)
    if source is not None:
        under = source.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        image = Image.blend(under, image, max(0.0, min(float(strength), 1.0)))
    draw = ImageDraw.Draw(image)
    margin = max(4, width // 20)
    font = _font(max(10, min(width, height) // 14))
    text = _printable(prompt) or "(empty prompt)"
    lines = _wrap(draw, text, font, width - 2 * margin, max_lines=_max_lines(font, height))
    line_height = _line_height(font)
    # The prompt is rasterised once, into a mask over its lines only, and stamped twice: a
    # shadow one pixel down and right, then the white text. Drawn twice, it was a fifth of the
    # sandbox's CPU in the bench's burst, on the two cores the server being measured shares.
    mask = Image.new("L", (width, min(height, margin + (len(lines) + 1) * line_height)))
    stencil = ImageDraw.Draw(mask)
    y = margin
    for line in lines:
        stencil.text((margin, y), line, font=font, fill=255)
        y += line_height
    image.paste((0, 0, 0), (1, 1), mask.crop((0, 0, width - 1, min(mask.height, height - 1))))
    image.paste((255, 255, 255), (0, 0), mask)
    label = f"#{index + 1}/{total}  seed {seed}"
    small = _font(max(9, min(width, height) // 24))
    draw.text((margin, height - margin - _line_height(small)), label, font=small, fill=(255,) * 3)
    buffer = io.BytesIO()
    options: dict[str, int] = {} if fmt == "png" else {"quality": max(1, min(quality, 100))}
    if fmt == "webp":
        options["method"] = 0  # libwebp's fastest effort: ~5 ms instead of ~20 ms an image
    image.save(buffer, _PIL_FORMATS[fmt], **options)
    return buffer.getvalue()


MAX_UPSCALED_SIDE = 2048
"""Longest side of an upscaled output: a 512-pixel image at x4, and no bigger, so a large scale
cannot make the sandbox encode a huge PNG (a larger result is shrunk to fit, keeping its shape)."""


def upscaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """`size` x `scale` (at least one pixel a side), shrunk to fit MAX_UPSCALED_SIDE."""
    width, height = (max(1, round(side * scale)) for side in size)
    factor = min(1.0, MAX_UPSCALED_SIDE / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def upscale_image(source: Image.Image, scale: float) -> bytes:
    """The source resized by `scale` (Lanczos, standing in for Real-ESRGAN), as PNG bytes."""
    image = source.convert("RGB").resize(
        upscaled_size(source.size, scale), Image.Resampling.LANCZOS
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)  # fast: outputs can be 2048 pixels a side
    return buffer.getvalue()


def _background(prompt: str, seed: int, index: int, size: tuple[int, int]) -> Image.Image:
    """A top-to-bottom ramp between two colours taken from the seed, index and prompt: one
    column of pixels, stretched sideways (a third of the CPU of colorizing a greyscale ramp)."""
    digest = hashlib.sha256(f"{seed}:{index}:{prompt}".encode("utf-8", "replace")).digest()
    top = (digest[0] // 2, digest[1] // 2, digest[2] // 2)  # dark enough for white text
    bottom = (digest[3], digest[4], digest[5])
    height = size[1]
    steps = max(1, height - 1)
    column = Image.new("RGB", (1, height))
    column.putdata(
        [
            (
                top[0] + (bottom[0] - top[0]) * y // steps,
                top[1] + (bottom[1] - top[1]) * y // steps,
                top[2] + (bottom[2] - top[2]) * y // steps,
            )
            for y in range(height)
        ]
    )
    return column.resize(size, Image.Resampling.NEAREST)


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    _left, top, _right, bottom = font.getbbox("Ag")
    return int(bottom - top) + 4


def _max_lines(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, height: int) -> int:
    return max(1, (height * 3 // 4) // _line_height(font))


def _printable(text: str) -> str:
    """One line of text without control, format or surrogate characters (they break layout)."""
    kept = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or _visible(ch))
    return " ".join(kept.split())


def _visible(ch: str) -> bool:
    return not unicodedata.category(ch).startswith("C")


def _wrap(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    max_width: int,
    max_lines: int,
) -> list[str]:
    """Greedy word wrap by pixel width; overlong words are split, overflow ends in an ellipsis."""

    def fits(candidate: str) -> bool:
        return draw.textlength(candidate, font=font) <= max_width

    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        if len(lines) > max_lines:
            break  # enough to know it overflows
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for ch in word:
            if len(lines) > max_lines:
                break
            if fits(current + ch):
                current += ch
            else:
                lines.append(current)
                current = ch
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and not fits(last + "…"):
            last = last[:-1]
        lines[-1] = last + "…"
    return lines
