"""A bare litestar hello world served like PiCloud serves (granian embedded, ASGI, one loop)."""

from __future__ import annotations

import asyncio
import sys

from granian.constants import Interfaces
from granian.server.embed import Server
from litestar import Litestar, get


@get("/fn/hello", sync_to_thread=False)
def hello() -> str:
    return "ok"


async def main(port: int) -> None:
    app = Litestar([hello], openapi_config=None, logging_config=None)
    server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.ASGINL,
                    log_enabled=False, backlog=1024)
    await server.serve()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
