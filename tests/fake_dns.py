"""A tiny authoritative DNS server on 127.0.0.1 (UDP) for the MX check's tests, speaking
the real wire format with dnspython's message codec.

    with FakeDns({"mail.example": ["mx1.mail.example"], "null.example": ["."]}) as dns:
        settings = make_settings(tmp_path, email_mx_nameservers=[dns.address], ...)

A listed domain answers its MX records (``"."``: a null MX, RFC 7505); a domain in
``empty`` exists with no MX (NOERROR, no answer); every other name is NXDOMAIN.
``dns.mode = "servfail"`` answers SERVFAIL. The port is fixed per server; dnspython's
resolver takes ``address`` as ``127.0.0.1`` and the port separately (``port``).
"""

from __future__ import annotations

import socket
import threading
from typing import Literal

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class FakeDns:
    def __init__(self, mx: dict[str, list[str]], empty: frozenset[str] = frozenset()) -> None:
        self.mx = mx
        self.empty = empty
        self.mode: Literal["normal", "servfail"] = "normal"
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        self.queries.append(name)
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in self.mx and question.rdtype == dns.rdatatype.MX:
            records = [f"{10 * (i + 1)} {h.rstrip('.')}." if h != "." else "0 ."
                       for i, h in enumerate(self.mx[name])]  # fmt: skip
            response.answer.append(
                dns.rrset.from_text_list(question.name, 300, "IN", "MX", records)
            )
        elif name not in self.mx and name not in self.empty:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            self.sock.sendto(self._answer(wire), peer)

    def __enter__(self) -> FakeDns:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
