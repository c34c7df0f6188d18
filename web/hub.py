"""The WebSocket hub: connected clients, each with a bounded queue and its own sender task.

A slow or dead client is dropped without delaying the minute cycle or the other clients.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Client:
    """One connected WebSocket with its outgoing queue and sender task."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    peer: str
    queue: asyncio.Queue[str]
    sender: asyncio.Task[None] | None = field(default=None)

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class Hub:
    """The connected WebSocket clients and the fan-out of messages to them."""

    def __init__(self, send_timeout_s: float, queue_size: int, close_timeout_s: float) -> None:
        self.send_timeout_s = send_timeout_s
        self.queue_size = queue_size
        self.close_timeout_s = close_timeout_s
        self.clients: set[Client] = set()

    def join(self, client: Client, first: str) -> None:
        """Queue the client's first message and start sending it everything broadcast."""
        client.queue.put_nowait(first)
        self.clients.add(client)
        client.sender = asyncio.create_task(self._send_loop(client), name=f"ws:{client.peer}")

    async def leave(self, client: Client) -> None:
        """Forget a client and end its sender task."""
        self.clients.discard(client)
        if client.sender is not None:
            client.sender.cancel()
            await asyncio.wait([client.sender])

    def broadcast(self, text: str) -> None:
        """Queue a message for every client; a client whose queue is full is dropped."""
        for client in list(self.clients):
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
                log.warning("dropping WebSocket client %s: %d messages not taken",
                            client.peer, self.queue_size)
                self.clients.discard(client)
                client.abort()

    async def _send_loop(self, client: Client) -> None:
        while True:
            text = await client.queue.get()
            try:
                await asyncio.wait_for(client.ws.send_str(text), self.send_timeout_s)
            except TimeoutError:
                log.warning("dropping WebSocket client %s: a send took over %.1f s",
                            client.peer, self.send_timeout_s)
            except Exception as exc:  # closed or reset connection: nothing more to send
                log.debug("WebSocket client %s gone: %s", client.peer, exc)
            else:
                continue
            self.clients.discard(client)
            client.abort()
            return

    async def close_all(self) -> None:
        """Close every connection with "going away"; abort those that do not finish in time."""
        clients = list(self.clients)
        self.clients.clear()
        for c in clients:
            if c.sender is not None:
                c.sender.cancel()

        async def close(c: Client) -> None:
            try:
                await asyncio.wait_for(
                    c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping"),
                    self.close_timeout_s)
            except Exception:
                c.abort()

        await asyncio.gather(*(close(c) for c in clients))
