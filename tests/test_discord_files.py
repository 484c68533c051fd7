"""Discord attachment options end to end: a file attached to /imagine, /ask or /transcribe is
read from the (fake) CDN and reaches the model's input at the sandbox, inline as a `data:` URL
or through the Files API; a wrong type or a file too big is answered privately, and nothing is
created, run or charged."""

from __future__ import annotations

import base64
import io
import os

from PIL import Image

from tests.discord_harness import AttachmentOption, DiscordConjure, running_discord_conjure
from tests.fakes.discord_api import APP_ID, EPHEMERAL, FakeDiscord
from tests.sandbox_fixtures import SandboxServer

MP3 = b"ID3\x03\x00" + bytes(range(256)) * 40


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def noisy_png(side: int) -> bytes:
    """A PNG that does not compress (over 256 KiB at 320 a side): it goes by the Files API."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def attach(fake: FakeDiscord, name: str, data: bytes, mime: str | None) -> AttachmentOption:
    return AttachmentOption(fake.host_attachment(name, data, mime))


def the_input(sandbox: SandboxServer) -> dict:
    [prediction] = sandbox.sandbox.predictions.values()
    return prediction["input"]


def sent_bytes(sandbox: SandboxServer, url: str) -> bytes:
    """The bytes behind a model input: a data: URL's, or the sandbox Files API upload's."""
    if url.startswith("data:"):
        return base64.b64decode(url.split(",", 1)[1])
    assert url.startswith(f"{sandbox.url}/v1/files/"), url
    upload = sandbox.sandbox.uploads.get(url.rsplit("/", 1)[1])
    assert upload is not None
    return upload.content


def private_answer(fake: FakeDiscord, token: str) -> str:
    [told] = [c for c in fake.find("POST", f"^/webhooks/{APP_ID}/") if token in c.path]
    assert told.payload["flags"] == EPHEMERAL
    return told.payload["content"]


async def nothing_spent(conjure: DiscordConjure) -> bool:
    """No job (so nothing reserved or charged), no prediction, no upload."""
    sandbox = conjure.sandbox.sandbox
    return (
        await conjure.runtime.store.count() == 0
        and sandbox.create_count == 0
        and not sandbox.uploads.newest_first()
    )


async def test_an_image_on_imagine_goes_to_flux_dev_and_one_on_ask_to_llava(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    red = png((64, 48), (220, 30, 30))
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        image = attach(fake, "fox.png", red, "image/png")
        await conjure.interact("ask", {"prompt": "what is this?", "image": image})
        await conjure.settle()
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["model"] == "yorickvp/llava-13b"
        assert sent_bytes(sandbox_server, prediction["input"]["image"]) == red
        answer = "".join(prediction["output"])
        assert answer.startswith("I see a 64x48 image, mostly red.")
        [message] = [m for m in fake.messages.values() if "asked /ask" in m["content"]]
        assert "✅ done" in message["content"] and "mostly red" in message["content"]

        big = noisy_png(320)
        assert len(big) > 256 * 1024
        sandbox_server.sandbox.predictions.clear()
        sent = await conjure.interact(
            "imagine", {"prompt": "a fox", "image": attach(fake, "big.png", big, "image/png")}
        )
        await conjure.settle()
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["model"] == "black-forest-labs/flux-dev"
        assert sent_bytes(sandbox_server, prediction["input"]["image"]) == big  # Files API
        done = fake.original(sent.token)
        assert done is not None and "✅ done" in done["content"] and done["attachments"]


async def test_an_audio_file_on_transcribe_reaches_whisper_without_a_url(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        audio = attach(fake, "memo.mp3", MP3, None)  # no content_type: its name says mp3
        sent = await conjure.interact("transcribe", {"file": audio})
        await conjure.settle()
        assert sent_bytes(sandbox_server, the_input(sandbox_server)["audio"]) == MP3
        assert the_input(sandbox_server)["audio"].startswith("data:audio/mpeg;base64,")
        message = fake.original(sent.token)
        assert message is not None and "✅ done" in message["content"]
        assert "“memo.mp3”" in message["content"]
        assert f"The sandbox heard {len(MP3):,} bytes of audio." in message["content"]

        neither = await conjure.interact("transcribe", {})
        answer = neither.payload and fake.find("POST", f"/{neither.token}/callback$")
        assert answer and answer[0].payload["data"]["flags"] == EPHEMERAL
        said = answer[0].payload["data"]["content"]
        assert said.startswith("The audio URL is missing: give one, or an audio file")
        assert "attach it as `file`" in said


async def test_a_wrong_type_or_a_file_too_big_is_refused_and_nothing_is_spent(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        pdf = attach(fake, "notes.pdf", b"%PDF-1.7\n", "application/pdf")
        sent = await conjure.interact("transcribe", {"file": pdf})
        said = private_answer(fake, sent.token)
        assert said.startswith("That file is a PDF; /transcribe takes audio: mp3, wav, m4a")

        huge = fake.host_attachment("huge.png", png((8, 8), (0, 0, 0)), "image/png")
        huge["size"] = 30 * 1024 * 1024  # Discord's word for it: refused before any download
        sent = await conjure.interact(
            "imagine", {"prompt": "a fox", "image": AttachmentOption(huge)}
        )
        assert private_answer(fake, sent.token) == "The image is 30 MB; the limit is 10 MB."

        await conjure.settle()
        assert await nothing_spent(conjure)
        assert fake.original(sent.token) is None  # the public "thinking" was taken back
        assert not fake.find("GET", "/attachments/")  # neither file was even read


async def test_a_file_whose_contents_are_another_type_is_refused_once_read_and_nothing_spent(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    """Discord's word (and the name) said PNG; the bytes are a PDF's. Sent on, the model would
    fail on them after Replicate had billed its start. A format the option takes under another
    name (an m4a in an MP4 container Discord calls audio/mp4) still goes through."""
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        pdf = attach(fake, "photo.png", b"%PDF-1.7\n" + bytes(64), "image/png")
        sent = await conjure.interact("imagine", {"prompt": "a fox", "image": pdf})
        await conjure.settle()
        said = private_answer(fake, sent.token)
        assert said == (
            "That file (photo.png) is a PDF, by its contents; /imagine takes images: "
            "PNG, JPEG, WebP, GIF."
        )
        assert fake.find("GET", "/attachments/")  # it was read: that is how it was found out
        assert await nothing_spent(conjure)

        m4a = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41" + bytes(256)
        audio = attach(fake, "memo.m4a", m4a, "audio/mp4")
        sent = await conjure.interact("transcribe", {"file": audio})
        await conjure.settle()
        assert sent_bytes(sandbox_server, the_input(sandbox_server)["audio"]) == m4a


async def test_a_file_bigger_than_its_platform_said_is_stopped_while_it_downloads(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    """The stated size is not trusted: the cap is counted as the bytes arrive."""
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        liar = fake.host_attachment(
            "liar.png", png((8, 8), (0, 0, 0)) + bytes(11_000_000), "image/png"
        )
        liar["size"] = 8 * 1024  # what Discord said; the CDN sends 11 MB
        sent = await conjure.interact(
            "imagine", {"prompt": "a fox", "image": AttachmentOption(liar)}
        )
        await conjure.settle()
        said = private_answer(fake, sent.token)
        assert said == "The image is larger than 10 MB, the limit."
        assert fake.find("GET", "/attachments/")  # it was read, and cut off at the cap
        assert await nothing_spent(conjure)
