"""The built-in fake models: refs, versions, inputs, and how a request names one of them.

The bot's catalog names exactly these refs; official models run by name (version "hidden"),
the others only by version, and a deployment maps onto one of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

COG_VERSION = "0.9.13"
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")


@dataclass(frozen=True)
class Param:
    """One model input, enough to emit its schema and to check a value against it."""

    name: str
    type: str  # "string" | "integer" | "number" | "boolean"
    description: str = ""
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    format: str | None = None


@dataclass(frozen=True)
class FakeModel:
    """A model the sandbox can run; `kind` picks how it produces output."""

    owner: str
    name: str
    kind: str  # "image" | "upscale" | "text" | "speech" | "video"
    official: bool
    version_id: str
    description: str
    params: tuple[Param, ...]
    output_schema: dict[str, Any]
    version_created_at: str = "2024-08-01T12:00:00.000000Z"
    step_seconds: float = 0.1
    thinks: bool = False  # a reasoning model: its output opens with <think>...</think>

    @property
    def ref(self) -> str:
        """`owner/name`."""
        return f"{self.owner}/{self.name}"

    def param(self, name: str) -> Param | None:
        """The input called `name`, if the model has one."""
        return next((p for p in self.params if p.name == name), None)


class ModelNotFound(LookupError):
    """A model, version or deployment the sandbox does not know; the message is the 404 detail."""


def _official_version(ref: str) -> str:
    """A stable 64-hex id for an official model (Replicate shows these as "hidden")."""
    return hashlib.sha256(f"sandbox:{ref}".encode()).hexdigest()


def _flux_params(
    max_steps: int, default_steps: int, guidance: bool, img2img: bool = False
) -> tuple[Param, ...]:
    params = [
        Param("prompt", "string", "Prompt for generated image", required=True),
        Param(
            "aspect_ratio",
            "string",
            "Aspect ratio for the generated image",
            "1:1",
            choices=ASPECT_RATIOS,
        ),
    ]
    if img2img:  # flux-dev's image-to-image inputs, named and ordered as Replicate lists them
        params += [
            Param(
                "image",
                "string",
                "Input image for image to image mode. "
                "The aspect ratio of your output will match this image",
                format="uri",
            ),
            Param(
                "prompt_strength",
                "number",
                "Prompt strength when using img2img. "
                "1.0 corresponds to full destruction of information in image",
                0.8,
                minimum=0,
                maximum=1,
            ),
        ]
    params += [
        Param("num_outputs", "integer", "Number of outputs to generate", 1, minimum=1, maximum=4),
        Param("seed", "integer", "Random seed. Set for reproducible generation"),
        Param(
            "output_format",
            "string",
            "Format of the output images",
            "webp",
            choices=("webp", "jpg", "png"),
        ),
        Param(
            "output_quality",
            "integer",
            "Quality when saving the output images",
            80,
            minimum=0,
            maximum=100,
        ),
        Param(
            "num_inference_steps",
            "integer",
            "Number of denoising steps",
            default_steps,
            minimum=1,
            maximum=max_steps,
        ),
        Param("go_fast", "boolean", "Run faster predictions with optimised models", True),
        Param(
            "megapixels",
            "string",
            "Approximate number of megapixels for generated image",
            "1",
            choices=("1", "0.25"),
        ),
        Param(
            "disable_safety_checker",
            "boolean",
            "Disable safety checker for generated images",
            False,
        ),
    ]
    if guidance:
        params.append(
            Param("guidance", "number", "Guidance for generated image", 3.0, minimum=0, maximum=10)
        )
    return tuple(params)


_IMAGE_OUTPUT = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}

FLUX_SCHNELL = FakeModel(
    "black-forest-labs",
    "flux-schnell",
    "image",
    True,
    _official_version("black-forest-labs/flux-schnell"),
    "The fastest image generation model tailored for local development and personal use",
    _flux_params(4, 4, guidance=False),
    _IMAGE_OUTPUT,
)
FLUX_DEV = FakeModel(
    "black-forest-labs",
    "flux-dev",
    "image",
    True,
    _official_version("black-forest-labs/flux-dev"),
    "A 12 billion parameter rectified flow transformer capable of generating images from text",
    _flux_params(50, 28, guidance=True, img2img=True),
    _IMAGE_OUTPUT,
)
SDXL = FakeModel(
    "stability-ai",
    "sdxl",
    "image",
    False,
    "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
    "A text-to-image generative AI model that creates beautiful images",
    (
        Param("prompt", "string", "Input prompt", required=True),
        Param("negative_prompt", "string", "Input Negative Prompt", ""),
        Param("width", "integer", "Width of output image", 1024, minimum=128, maximum=1536),
        Param("height", "integer", "Height of output image", 1024, minimum=128, maximum=1536),
        Param("num_outputs", "integer", "Number of images to output.", 1, minimum=1, maximum=4),
        Param("seed", "integer", "Random seed. Leave blank to randomize the seed"),
        Param(
            "num_inference_steps",
            "integer",
            "Number of denoising steps",
            25,
            minimum=1,
            maximum=500,
        ),
    ),
    _IMAGE_OUTPUT,
    version_created_at="2023-07-26T17:53:09.882651Z",
)
LLAMA = FakeModel(
    "meta",
    "meta-llama-3-8b-instruct",
    "text",
    True,
    _official_version("meta/meta-llama-3-8b-instruct"),
    "An 8 billion parameter language model from Meta, fine tuned for chat completions",
    (
        Param("prompt", "string", "Prompt", required=True),
        Param(
            "system_prompt",
            "string",
            "System prompt to send to the model.",
            "You are a helpful assistant",
        ),
        Param(
            "max_tokens",
            "integer",
            "The maximum number of tokens the model should generate",
            512,
            minimum=1,
        ),
        Param(
            "temperature",
            "number",
            "The value used to modulate the next token probabilities",
            0.7,
            minimum=0,
            maximum=5,
        ),
    ),
    {
        "type": "array",
        "items": {"type": "string"},
        "title": "Output",
        "x-cog-array-type": "iterator",
        "x-cog-array-display": "concatenate",
    },
    step_seconds=0.03,
)
WHISPER = FakeModel(
    "openai",
    "whisper",
    "speech",
    False,
    "8099696689d249cf8b122d833c36ac3f75505c666a395ca40ef26f68e7d3d16e",
    "Convert speech in audio to text",
    (
        Param("audio", "string", "Audio file", required=True, format="uri"),
        Param("language", "string", "Language spoken in the audio, 'auto' for detection", "auto"),
        Param(
            "transcription",
            "string",
            "Choose the format for the transcription",
            "plain text",
            choices=("plain text", "srt", "vtt"),
        ),
        Param("translate", "boolean", "Translate the text to English when set to True", False),
    ),
    {
        "type": "object",
        "title": "Output",
        "required": ["detected_language", "transcription"],
        "properties": {
            "segments": {"title": "Segments"},
            "srt_file": {"type": "string", "title": "Srt File", "format": "uri"},
            "txt_file": {"type": "string", "title": "Txt File", "format": "uri"},
            "translation": {"type": "string", "title": "Translation"},
            "transcription": {"type": "string", "title": "Transcription"},
            "detected_language": {"type": "string", "title": "Detected Language"},
        },
    },
    version_created_at="2023-11-03T16:32:54.614036Z",
)

REAL_ESRGAN = FakeModel(
    "nightmareai",
    "real-esrgan",
    "upscale",
    False,
    "42fed1c4974146d4d2414e2be2c5277c7fcf05fcc3a73abf41610695738c1d7b",
    "Real-ESRGAN with optional face correction and adjustable upscale",
    (
        Param("image", "string", "Input image", required=True, format="uri"),
        Param("scale", "number", "Factor to scale image by", 4, minimum=0, maximum=10),
        Param(
            "face_enhance",
            "boolean",
            "Run GFPGAN face enhancement along with upscaling",
            False,
        ),
    ),
    {"type": "string", "title": "Output", "format": "uri"},
    version_created_at="2023-09-11T13:38:31.911624Z",
    step_seconds=0.3,  # x UPSCALE_STEPS: about 3 s a run on a T4, billed by the second
)

VIDEO_01 = FakeModel(
    "minimax",
    "video-01",
    "video",
    True,
    _official_version("minimax/video-01"),
    "Generate 6s videos with prompts or images. (Also known as Hailuo).",
    (
        Param("prompt", "string", "Text prompt for generation", required=True),
        Param("prompt_optimizer", "boolean", "Use prompt optimizer", True),
        Param(
            "first_frame_image",
            "string",
            "First frame image for video generation",
            format="uri",
        ),
    ),
    {"type": "string", "title": "Output", "format": "uri"},
    step_seconds=0.1,  # x VIDEO_STEPS; billed per video, not by the second
)

LLAMA_70B = dataclasses.replace(
    LLAMA,
    name="meta-llama-3-70b-instruct",
    version_id=_official_version("meta/meta-llama-3-70b-instruct"),
    description="A 70 billion parameter language model from Meta, fine tuned for chat completions",
    step_seconds=0.05,
)
DEEPSEEK_R1 = FakeModel(
    "deepseek-ai",
    "deepseek-r1",
    "text",
    True,
    _official_version("deepseek-ai/deepseek-r1"),
    "A reasoning model trained with reinforcement learning; it thinks before it answers",
    (
        Param("prompt", "string", "Prompt", required=True),
        Param(
            "max_tokens",
            "integer",
            "The maximum number of tokens the model should generate",
            2048,
            minimum=1,
        ),
        Param("temperature", "number", "Sampling temperature", 0.1, minimum=0, maximum=1),
        Param("top_p", "number", "Top-p (nucleus) sampling", 1, minimum=0, maximum=1),
    ),
    LLAMA.output_schema,
    version_created_at="2025-01-29T12:00:00.000000Z",
    step_seconds=0.05,
    thinks=True,
)

LLAVA = FakeModel(
    "yorickvp",
    "llava-13b",
    "text",
    False,
    "80537f9eead1a5bfa72d5ac6ea6414379be41d4d4f6679fd776e9535d1eb58bb",
    "Visual instruction tuning towards large language and vision models with GPT-4 level "
    "capabilities",
    (
        Param("image", "string", "Input image", required=True, format="uri"),
        Param("prompt", "string", "Prompt to use for text generation", required=True),
        Param(
            "top_p",
            "number",
            "When decoding text, samples from the top p percentage",
            1,
            minimum=0,
            maximum=1,
        ),
        Param(
            "max_tokens",
            "integer",
            "Maximum number of tokens to generate",
            1024,
            minimum=0,
        ),
        Param("temperature", "number", "Adjusts randomness of outputs", 0.2, minimum=0),
    ),
    LLAMA.output_schema,
    version_created_at="2024-02-05T12:00:00.000000Z",
    step_seconds=0.03,
)

MODELS: dict[str, FakeModel] = {
    m.ref: m
    for m in (
        FLUX_SCHNELL,
        FLUX_DEV,
        SDXL,
        LLAMA,
        LLAMA_70B,
        DEEPSEEK_R1,
        LLAVA,
        WHISPER,
        REAL_ESRGAN,
        VIDEO_01,
    )
}
VERSIONS: dict[str, FakeModel] = {m.version_id: m for m in MODELS.values()}
DEPLOYMENTS: dict[str, FakeModel] = {
    "conjure/flux": FLUX_SCHNELL,
    "conjure/flux-dev": FLUX_DEV,
    "conjure/sdxl": SDXL,
    "conjure/llama": LLAMA,
    "conjure/whisper": WHISPER,
    "conjure/llava": LLAVA,
    "conjure/real-esrgan": REAL_ESRGAN,
    "conjure/video-01": VIDEO_01,
}


def find_model(owner: str, name: str) -> FakeModel:
    """The model `owner/name`, or ModelNotFound."""
    model = MODELS.get(f"{owner}/{name}")
    if model is None:
        raise ModelNotFound(f"Model {owner}/{name} not found.")
    return model


def find_official(owner: str, name: str) -> FakeModel:
    """A model that may be run without a version (`/v1/models/.../predictions`)."""
    model = find_model(owner, name)
    if not model.official:
        raise ModelNotFound(
            f"Model {model.ref} is not an official model: run it by version "
            f"({model.ref}:{model.version_id})."
        )
    return model


def find_deployment(owner: str, name: str) -> FakeModel:
    """The model a deployment runs: a known deployment, or any `<owner>/<model name>`."""
    model = DEPLOYMENTS.get(f"{owner}/{name}")
    if model is None:
        model = next((m for m in MODELS.values() if m.name == name), None)
    if model is None:
        raise ModelNotFound(f"Deployment {owner}/{name} not found.")
    return model


def resolve_version(value: str) -> tuple[FakeModel, str]:
    """A create body's `version` (id, `owner/name:id` or official `owner/name`) -> model, shown."""
    ref, _, version_id = value.partition(":")
    if "/" not in ref:
        model = VERSIONS.get(value)
        if model is None:
            raise ModelNotFound(f"Version {value} not found.")
        return model, value
    owner, _, name = ref.partition("/")
    if not version_id:
        return find_official(owner, name), "hidden"
    model = find_model(owner, name)
    if version_id != model.version_id:
        raise ModelNotFound(f"Version {version_id} of {model.ref} not found.")
    return model, version_id
