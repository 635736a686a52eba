"""A small authoritative DNS server on 127.0.0.1 for tests: the stand-in for the internet's DNS.

Built on dnspython's message classes; it answers over UDP (and TCP, for answers too large
for UDP) from a dict of records that the test can change while it runs::

    with DnsServer({"remote.test": {"MX": ["10 mx.remote.test."]},
                    "mx.remote.test": {"A": ["127.0.0.1"]}}) as dns:
        config = make_config(..., relay={"nameservers": [dns.address]})

A name not in the dict gets NXDOMAIN; a known name without the asked type gets an empty
NOERROR answer. ``servfail`` names answer SERVFAIL; ``silent`` names get no answer at all.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Mapping
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = Mapping[str, Mapping[str, list[str]]]


class DnsServer:
    def __init__(self, records: Zone | None = None, ttl: int = 1) -> None:
        self.records: dict[str, dict[str, list[str]]] = {
            _key(name): dict(types) for name, types in (records or {}).items()
        }
        self.servfail: set[str] = set()
        self.silent: set[str] = set()
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                head = conn.recv(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                data = b""
                while len(data) < length:
                    chunk = conn.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data, tcp=True)
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

        # The same port number for UDP and TCP: take a free UDP port until its TCP twin is free.
        for _ in range(50):
            self._udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            port = self._udp.server_address[1]
            try:
                self._tcp = socketserver.ThreadingTCPServer(("127.0.0.1", port), Tcp)
            except OSError:
                self._udp.server_close()
                continue
            break
        else:
            raise OSError("no free port for both UDP and TCP on 127.0.0.1")
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self._threads = [
            threading.Thread(target=s.serve_forever, daemon=True) for s in (self._udp, self._tcp)
        ]

    def set(self, name: str, rdtype: str, values: list[str]) -> None:
        self.records.setdefault(_key(name), {})[rdtype] = list(values)

    def answer(self, data: bytes, tcp: bool = False) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.silent:
            return None
        if name in self.servfail:
            reply.set_rcode(dns.rcode.SERVFAIL)
            return reply.to_wire()
        types = self.records.get(name)
        if types is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            return reply.to_wire()
        values = types.get(rdtype, [])
        if values:
            rrset = dns.rrset.from_text_list(
                question.name, self.ttl, dns.rdataclass.IN, question.rdtype, values
            )
            reply.answer.append(rrset)
        wire = reply.to_wire()
        if not tcp and len(wire) > 512:
            reply.answer.clear()
            reply.flags |= dns.flags.TC
            wire = reply.to_wire()
        return wire

    def __enter__(self) -> DnsServer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()


def _key(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()
