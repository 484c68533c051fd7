"""What each kind of fake model returns: file URLs with their bytes, tokens, or a transcript.

Outputs are deterministic in the input (given a seed) so tests and demos can assert on them; files
are returned as bytes keyed by name for the sandbox to serve under `/files/{prediction_id}/`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from PIL import Image

from bot.sandbox.models import FakeModel
from bot.sandbox.render import (
    CONTENT_TYPES,
    LONG_SIDE,
    aspect_size,
    render_image,
    scaled_size,
    upscale_image,
)

Files = dict[str, tuple[bytes, str]]  # filename -> (bytes, content type)

_SENTENCES = (
    "Thanks for calling the Conjure sandbox.",
    "This transcript was made up, because no audio was decoded.",
    "The quick brown fox jumps over the lazy dog.",
    "Every recording gets the same words, so tests can rely on them.",
)


def file_url(base_url: str, prediction_id: str, filename: str) -> str:
    """Where the sandbox serves an output file (its stand-in for replicate.delivery)."""
    return f"{base_url}/files/{prediction_id}/{filename}"


def image_outputs(
    model: FakeModel,
    inputs: dict[str, Any],
    prediction_id: str,
    base_url: str,
    source: Image.Image | None = None,
    side: int = LONG_SIDE,
) -> tuple[list[str], Files]:
    """Render every requested image; returns the output URL list and the files behind it.

    Image to image (`source` given) keeps the source's size (at most `side` a side), as flux-dev
    keeps its aspect ratio, and lets the source show through by `prompt_strength`.
    """
    if source is not None:
        size = scaled_size(*source.size, side=side)
        fmt = inputs.get("output_format", "png")
    elif model.param("aspect_ratio") is not None:
        size = aspect_size(inputs["aspect_ratio"], inputs.get("megapixels", "1"), side)
        fmt = inputs["output_format"]
    else:
        size = scaled_size(inputs["width"], inputs["height"], side)
        fmt = "png"
    total = inputs["num_outputs"]
    urls: list[str] = []
    files: Files = {}
    for index in range(total):
        name = f"out-{index}.{fmt}"
        files[name] = (
            render_image(
                inputs["prompt"],
                seed=inputs["seed"],
                index=index,
                total=total,
                size=size,
                fmt=fmt,
                quality=inputs.get("output_quality", 80),
                source=source,
                strength=inputs.get("prompt_strength", 1.0),
            ),
            CONTENT_TYPES[fmt],
        )
        urls.append(file_url(base_url, prediction_id, name))
    return urls, files


def upscale_output(
    inputs: dict[str, Any], source: Image.Image, prediction_id: str, base_url: str
) -> tuple[str, Files]:
    """Real-ESRGAN's output: one PNG URL, the source scaled by `scale`."""
    name = "output.png"
    data = upscale_image(source, inputs["scale"])
    return file_url(base_url, prediction_id, name), {name: (data, "image/png")}


def llama_tokens(inputs: dict[str, Any], *, thinks: bool = False) -> list[str]:
    """A short fixed answer that quotes the prompt, as tokens (words with leading spaces); a
    reasoning model's (`thinks`, DeepSeek R1) first writes its reasoning in `<think>...</think>`."""
    prompt = " ".join(str(inputs["prompt"]).split())
    if len(prompt) > 80:
        prompt = prompt[:77] + "..."
    answer = (
        f'You asked: "{prompt}". This is a canned reply from the Replicate sandbox, '
        "so it is quick, free and the same every time."
    )
    if thinks:
        reasoning = (
            "<think>\nThe person wants an answer about this. I am the sandbox, so I will "
            "think briefly and then reply with the canned text.\n</think>\n\n"
        )
        answer = reasoning + answer
    words = answer.split(" ")
    tokens = [words[0]] + [f" {w}" for w in words[1:]]
    return tokens[: inputs["max_tokens"]]


_COLOURS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "orange": (250, 140, 20),
    "purple": (130, 50, 170),
    "pink": (240, 130, 190),
    "brown": (130, 80, 40),
}


def main_colour(image: Image.Image) -> str:
    """The named colour nearest the image's average: what a test can check the model saw."""
    r, g, b = image.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    return min(
        _COLOURS,
        key=lambda n: sum((x - y) ** 2 for x, y in zip(_COLOURS[n], (r, g, b), strict=True)),
    )


def vision_tokens(inputs: dict[str, Any], source: Image.Image) -> list[str]:
    """LLaVA's answer: what it saw of the image (its size and main colour, so a test proves
    the bytes arrived), then the canned reply quoting the question, as tokens."""
    width, height = source.size
    seen = f"I see a {width}x{height} image, mostly {main_colour(source)}."
    tokens = llama_tokens({**inputs, "max_tokens": 10**6})
    words = seen.split(" ")
    head = [words[0]] + [f" {w}" for w in words[1:]]
    return [*head, " " + tokens[0], *tokens[1:]][: inputs["max_tokens"]]


def whisper_output(
    inputs: dict[str, Any], prediction_id: str, base_url: str, heard: bytes | None = None
) -> tuple[dict[str, Any], Files]:
    """A transcript object shaped like openai/whisper's, with its .txt and .srt files; when the
    audio's bytes were read (`heard`), its first sentence gives their size, so a test can tell
    the file arrived."""
    digest = hashlib.sha256(str(inputs["audio"]).encode()).digest()
    first = digest[0] % len(_SENTENCES)
    texts = [_SENTENCES[(first + i) % len(_SENTENCES)] for i in range(3)]
    if heard is not None:
        texts = [f"The sandbox heard {len(heard):,} bytes of audio.", *texts[:2]]
    segments = [
        {
            "id": i,
            "seek": 0,
            "start": i * 3.0,
            "end": i * 3.0 + 2.5,
            "text": f" {text}",
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": -0.25,
            "compression_ratio": 1.2,
            "no_speech_prob": 0.01,
        }
        for i, text in enumerate(texts)
    ]
    plain = " ".join(texts)
    srt = _subtitles(segments, vtt=False)
    formatted = {"plain text": plain, "srt": srt, "vtt": _subtitles(segments, vtt=True)}
    language = inputs.get("language") or "auto"
    output = {
        "segments": segments,
        "transcription": formatted[inputs["transcription"]],
        "translation": plain if inputs.get("translate") else None,
        "txt_file": file_url(base_url, prediction_id, "transcription.txt"),
        "srt_file": file_url(base_url, prediction_id, "transcription.srt"),
        "detected_language": "english" if language == "auto" else language,
    }
    files: Files = {
        "transcription.txt": (plain.encode(), "text/plain; charset=utf-8"),
        "transcription.srt": (srt.encode(), "application/x-subrip; charset=utf-8"),
    }
    return output, files


def _subtitles(segments: list[dict[str, Any]], vtt: bool) -> str:
    sep = "." if vtt else ","
    blocks = []
    for seg in segments:
        start, end = _timestamp(seg["start"], sep), _timestamp(seg["end"], sep)
        cue = f"{start} --> {end}\n{seg['text'].strip()}\n"
        blocks.append(cue if vtt else f"{seg['id'] + 1}\n{cue}")
    body = "\n".join(blocks)
    return f"WEBVTT\n\n{body}" if vtt else body


def _timestamp(seconds: float, sep: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"
