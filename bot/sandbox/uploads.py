"""Files uploaded through the Files API (`POST /v1/files`), kept in memory until they expire.

A file object has Replicate's shape: `{id, name, content_type, size, etag, checksums, metadata,
created_at, expires_at, urls: {get}}`. `urls.get` is the file's API URL, which is what a
prediction input names; its bytes are served at `.../download`, with the token.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.sandbox.predictions import new_id, rfc3339

MAX_FILE_BYTES = 100 * 1024 * 1024
"""Largest upload accepted (Replicate's documented limit is 100 MiB); tests lower it."""
FILE_LIFETIME = timedelta(hours=24)
"""How long an upload is kept (Replicate expires uploads; the exact period is unverified)."""


@dataclass
class Upload:
    """One uploaded file: its bytes and what `GET /v1/files/{id}` says about it."""

    id: str
    name: str
    content_type: str
    content: bytes
    metadata: dict[str, Any]
    created: datetime
    expires_monotonic: float
    md5: str = field(init=False)
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.md5 = hashlib.md5(self.content, usedforsecurity=False).hexdigest()
        self.sha256 = hashlib.sha256(self.content).hexdigest()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.expires_monotonic

    def to_json(self, base_url: str) -> dict[str, Any]:
        """The file object as Replicate returns it; `urls.get` points at this sandbox."""
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.content),
            "etag": self.md5,
            "checksums": {"sha256": self.sha256, "md5": self.md5},
            "metadata": self.metadata,
            "created_at": rfc3339(self.created),
            "expires_at": rfc3339(self.created + FILE_LIFETIME),
            "urls": {"get": f"{base_url}/v1/files/{self.id}"},
        }


class Uploads:
    """The uploads of one sandbox, oldest first; an expired file is gone as if deleted."""

    def __init__(self) -> None:
        self._files: dict[str, Upload] = {}

    def add(self, name: str, content_type: str, content: bytes, metadata: dict[str, Any]) -> Upload:
        upload = Upload(
            id=new_id(),
            name=name,
            content_type=content_type,
            content=content,
            metadata=metadata,
            created=datetime.now(UTC),
            expires_monotonic=time.monotonic() + FILE_LIFETIME.total_seconds(),
        )
        self._files[upload.id] = upload
        return upload

    def get(self, file_id: str) -> Upload | None:
        upload = self._files.get(file_id)
        if upload is not None and upload.expired:
            del self._files[file_id]
            return None
        return upload

    def delete(self, file_id: str) -> bool:
        """Forget the file; False when there was none (or it had expired)."""
        return self.get(file_id) is not None and self._files.pop(file_id) is not None

    def newest_first(self) -> list[Upload]:
        for file_id in [i for i, u in self._files.items() if u.expired]:
            del self._files[file_id]
        return list(self._files.values())[::-1]
