"""The server driven in-process, with no socket: an ASGI transport over the app."""

from __future__ import annotations

import asyncio

import httpx

from tablebatch.server import ServerSettings, create_app
from tests.helpers import make_requests


def test_async_asgi_transport() -> None:
    app = create_app(ServerSettings())

    async def main() -> int:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://local/v1") as http:
                batch = (await http.post("/batches", json={"name": "x"})).json()
                await http.post(
                    f"/batches/{batch['id']}/requests", json={"requests": make_requests(3)}
                )
                await http.post(f"/batches/{batch['id']}/start")
                while True:
                    got = (await http.get(f"/batches/{batch['id']}")).json()
                    if got["status"] == "completed":
                        return got["completed_count"]
                    await asyncio.sleep(0.01)

    assert asyncio.run(asyncio.wait_for(main(), 20)) == 3
