"""The sandbox's models read the files they are given: LLaVA says what it saw of the image,
Whisper how many bytes of audio it heard, so a test can prove a file's bytes arrived."""

from __future__ import annotations

from tests.sandbox_fixtures import SandboxServer
from tests.test_sandbox import api, data_url, png, run_to_end

LLAVA_VERSION = "80537f9eead1a5bfa72d5ac6ea6414379be41d4d4f6679fd776e9535d1eb58bb"
WHISPER_VERSION = "8099696689d249cf8b122d833c36ac3f75505c666a395ca40ef26f68e7d3d16e"
MP3 = b"ID3\x03\x00" + bytes(range(256)) * 10


async def test_llava_reads_its_image_and_streams_what_it_saw(sandbox_server: SandboxServer):
    image = data_url(png((64, 48), (220, 30, 30)))
    body = {"version": LLAVA_VERSION, "input": {"image": image, "prompt": "What is this?"}}
    async with api(sandbox_server) as http:
        done = await run_to_end(http, "/v1/predictions", body)
        missing = await http.post(
            "/v1/predictions", json={"version": LLAVA_VERSION, "input": {"prompt": "x"}}
        )
        broken = await run_to_end(
            http,
            "/v1/predictions",
            {"version": LLAVA_VERSION, "input": {"image": data_url(b"no"), "prompt": "x"}},
        )
    answer = "".join(done["output"])
    assert done["status"] == "succeeded" and "stream" in done["urls"]
    assert answer.startswith("I see a 64x48 image, mostly red.")
    assert 'You asked: "What is this?"' in answer
    assert missing.status_code == 422
    assert broken["status"] == "failed" and "cannot identify image file" in broken["error"]


async def test_whisper_hears_data_urls_and_files_api_uploads(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        upload = await http.post("/v1/files", files={"content": ("a.mp3", MP3, "audio/mpeg")})
        by_file = await run_to_end(
            http,
            "/v1/predictions",
            {"version": WHISPER_VERSION, "input": {"audio": upload.json()["urls"]["get"]}},
        )
        inline = await run_to_end(
            http,
            "/v1/predictions",
            {"version": WHISPER_VERSION, "input": {"audio": data_url(MP3[:100], "audio/mpeg")}},
        )
        made_up = await run_to_end(
            http,
            "/v1/predictions",
            {"version": WHISPER_VERSION, "input": {"audio": "https://example.com/a.mp3"}},
        )
    heard = f"The sandbox heard {len(MP3):,} bytes of audio."
    assert by_file["output"]["transcription"].startswith(heard)
    assert inline["output"]["transcription"].startswith("The sandbox heard 100 bytes of audio.")
    assert "heard" not in made_up["output"]["transcription"]  # not fetched: offline-friendly
