"""Development only: appends each message as a JSON line to a file (the "file outbox").

Lets tests and benchmarks read codes from a server running in another process,
the way a phone would. Production refuses this transport at start-up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .base import Message, Receipt, Transport


class FileTransport(Transport):
    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    async def send(self, message: Message) -> Receipt:
        line = json.dumps(
            {
                "verification_id": message.verification_id,
                "to": message.to,
                "channel": message.channel.value,
                "code": message.code,
                "locale": message.locale,
            }
        )
        # One write of a short line to an O_APPEND file: atomic across worker processes.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        return Receipt(provider="file", provider_id=message.verification_id)


def read_outbox(path: Path) -> list[dict[str, str]]:
    """Every message in a file outbox, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
