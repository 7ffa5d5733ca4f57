"""Development only: prints each message, code included, so a developer can follow the flow.

Production refuses this transport at start-up.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .base import Message, Receipt, Transport


class ConsoleTransport(Transport):
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: Message) -> Receipt:
        stream = self._stream or sys.stderr
        banner = f"[otpguard console transport] {message.channel.value} to {message.to}"
        stream.write(f"\n{banner}\n    {message.render_text()}\n\n")
        stream.flush()
        return Receipt(provider="console", provider_id=message.verification_id)
