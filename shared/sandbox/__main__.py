"""Run the sandbox WhatsApp network: ``python -m shared.sandbox --port 8070``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from shared.limits import raise_open_files_limit
from shared.sandbox.network import Network, Settings
from shared.sandbox.server import SandboxServer

_OPTIONS = [  # (flag, type, default)
    ("host", str, "127.0.0.1"),
    ("port", int, 8070),
    ("qr_first_s", float, 60.0),
    ("qr_next_s", float, 20.0),
    ("qr_count", int, 6),
    ("removal_delay_s", float, 60.0),
    ("latency_s", float, 0.0),
    ("state", str, ""),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options from the command line, else ``SANDBOX_<NAME>`` from the environment."""
    parser = argparse.ArgumentParser(prog="python -m shared.sandbox", description=__doc__)
    for name, kind, default in _OPTIONS:
        env = os.environ.get(f"SANDBOX_{name.upper()}")
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=kind(env) if env else default,
            help=f"env SANDBOX_{name.upper()}, default {default!r}",
        )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = Settings(
        qr_first_s=args.qr_first_s,
        qr_next_s=args.qr_next_s,
        qr_count=args.qr_count,
        removal_delay_s=args.removal_delay_s,
        latency_s=args.latency_s,
    )
    server = SandboxServer(Network(settings), state_path=args.state or None)
    host, port = await server.start(args.host, args.port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"sandbox listening on http://{host}:{port}", flush=True)
    await stopping.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    raise_open_files_limit()  # one socket per connected client
    logging.basicConfig(
        level=os.environ.get("SANDBOX_LOG_LEVEL", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
