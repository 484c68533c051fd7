"""The built-in catalog, in the same raw form as conjure.toml, so it passes the same validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.catalog.specs import OUTPUTS_FIELD

_ASPECT_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]

BUILTIN: Mapping[str, Any] = {
    "models": {
        "flux-schnell": {
            "ref": "black-forest-labs/flux-schnell",
            "route": "official",
            "kind": "image",
            "price_per_output": 0.003,
            "outputs_field": "num_outputs",
            "description": "FLUX.1 [schnell]: fast images from text",
        },
        "flux-dev": {
            "ref": "black-forest-labs/flux-dev",
            "route": "official",
            "kind": "image",
            "price_per_output": 0.025,
            "outputs_field": "num_outputs",
            "description": "FLUX.1 [dev]: slower, more detailed images",
        },
        "sdxl": {
            "ref": "stability-ai/sdxl:"
            "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
            "route": "version",
            "kind": "image",
            "price_per_second": 0.0023,  # A40
            "expected_seconds": 8,
            "outputs_field": "num_outputs",
            "description": "Stable Diffusion XL",
            "translate": {"aspect_ratio": "megapixel_size"},  # SDXL takes width/height
        },
        # Replicate bills its official language models per token (input and output, per
        # million); the answer is stopped at max_tokens, which Conjure always sends.
        "llama-3-8b": {
            "ref": "meta/meta-llama-3-8b-instruct",
            "route": "official",
            "kind": "text",
            "price_per_million_input_tokens": 0.05,
            "price_per_million_output_tokens": 0.25,
            "max_output_tokens": 512,  # Replicate's own default for this model
            "description": "Meta Llama 3 8B Instruct",
        },
        "llama-3-70b": {
            "ref": "meta/meta-llama-3-70b-instruct",
            "route": "official",
            "kind": "text",
            "price_per_million_input_tokens": 0.65,
            "price_per_million_output_tokens": 2.75,
            "max_output_tokens": 512,
            "description": "Meta Llama 3 70B Instruct",
        },
        "deepseek-r1": {
            "ref": "deepseek-ai/deepseek-r1",
            "route": "official",
            "kind": "text",
            "price_per_million_input_tokens": 3.75,
            "price_per_million_output_tokens": 10.00,
            # Its reasoning counts as output: Replicate's default of 2048 leaves room for it.
            "max_output_tokens": 2048,
            "expected_output_tokens": 1200,
            "description": "DeepSeek R1: reasons before it answers (the reasoning folded away)",
        },
        "whisper": {
            "ref": "openai/whisper:"
            "8099696689d249cf8b122d833c36ac3f75505c666a395ca40ef26f68e7d3d16e",
            "route": "version",
            "kind": "transcript",
            "price_per_second": 0.0012,  # T4
            "expected_seconds": 20,
            "description": "OpenAI Whisper speech recognition",
        },
        "llava-13b": {
            "ref": "yorickvp/llava-13b:"
            "80537f9eead1a5bfa72d5ac6ea6414379be41d4d4f6679fd776e9535d1eb58bb",
            "route": "version",
            "kind": "text",
            "price_per_second": 0.000725,  # A40 (Large), as Replicate lists it for this model
            "expected_seconds": 4,
            # A community model may queue or boot first, and the deadline counts from the create.
            "max_seconds": 30,
            "description": "LLaVA 13B: answers questions about an image (/ask with an image)",
        },
        "real-esrgan": {
            "ref": "nightmareai/real-esrgan:"
            "42fed1c4974146d4d2414e2be2c5277c7fcf05fcc3a73abf41610695738c1d7b",
            "route": "version",
            "kind": "image",
            "price_per_second": 0.0012,  # T4
            "expected_seconds": 3,
            # A community model may queue or boot first, and the deadline counts from the create:
            # 20 s (2.4 cents) rather than 3 x 3 s, so a slow start is not stopped unfinished.
            "max_seconds": 20,
            "description": "Real-ESRGAN upscaler (the Upscale follow-up)",
        },
        "video-01": {
            "ref": "minimax/video-01",
            "route": "official",
            "kind": "video",
            # Replicate bills this official model per output: $0.50 a video (6 s, 720p, 25 fps),
            # however long it takes to make (a few minutes).
            "price_per_output": 0.50,
            "expected_seconds": 180,
            "description": "MiniMax Video-01 (Hailuo): 6-second videos from text",
        },
    },
    "commands": {
        "imagine": {
            "description": "Make images from a text prompt",
            "model": "flux-schnell",
            "models": ["flux-schnell", "flux-dev", "sdxl"],
            "options": [
                {
                    "name": "image",
                    "field": "image",
                    "type": "image",
                    "model": "flux-dev",  # image to image; FLUX.1 [schnell] takes no image
                    "description": "An image to start from (image to image)",
                },
                {
                    "name": "ar",
                    "aliases": ["aspect-ratio"],
                    "field": "aspect_ratio",
                    "type": "choice",
                    "choices": _ASPECT_RATIOS,
                    "description": "Aspect ratio, width:height",
                },
                {
                    "name": "seed",
                    "field": "seed",
                    "type": "int",
                    "minimum": 0,
                    "maximum": 2**31 - 1,
                    "description": "Random seed, to repeat a result",
                },
                {
                    "name": "n",
                    "field": OUTPUTS_FIELD,
                    "type": "int",
                    "minimum": 1,
                    "maximum": 4,
                    "description": "How many images to make",
                },
                {
                    "name": "no",
                    "field": "negative_prompt",
                    "type": "str",
                    "models": ["sdxl"],  # when the schemas are unknown; else they decide
                    "description": "What to keep out of the image (a negative prompt)",
                },
                {"name": "model", "type": "model", "description": "Which model to use"},
            ],
            "followups": {
                "reroll": True,
                "variations": {
                    "model": "flux-dev",
                    "image_field": "image",
                    "strength_field": "prompt_strength",
                    "strength": 0.75,
                },
                "upscale": {"model": "real-esrgan", "image_field": "image", "inputs": {"scale": 2}},
            },
        },
        "ask": {
            "description": "Ask a language model",
            "model": "llama-3-8b",
            "models": ["llama-3-8b", "llama-3-70b", "deepseek-r1"],
            "options": [
                {
                    "name": "max-tokens",
                    "field": "max_tokens",
                    "type": "int",
                    "minimum": 1,
                    "maximum": 4096,
                    "description": "Longest answer, in tokens",
                },
                {"name": "model", "type": "model", "description": "Which model to use"},
                {
                    "name": "image",
                    "field": "image",
                    "type": "image",
                    "model": "llava-13b",
                    "description": "An image to ask about (answered by LLaVA 13B)",
                },
            ],
        },
        "transcribe": {
            "description": "Transcribe speech from an audio URL",
            "model": "whisper",
            "prompt_field": "audio",
            "prompt_label": "audio URL",
            "prompt_type": "url",
            "options": [
                {
                    "name": "file",
                    "field": "audio",
                    "type": "audio",
                    "description": "An audio file to transcribe, instead of a URL",
                },
            ],
        },
        "video": {
            "description": "Make a short video from a text prompt",
            "model": "video-01",
            "followups": {"reroll": True},
        },
    },
}


# --------------------------------------------------------------------------- loading
