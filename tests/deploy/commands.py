"""Checks that a command line from a deploy file runs something that exists in the code.

Each program is parsed by its own parser (gunicorn's argparse, Celery's click
commands, Flower's tornado options, ``wapair``'s argparse), so an unknown
option or subcommand fails here rather than at 3 a.m. on a server.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from pathlib import Path

from api.cli import build_parser
from shared.config import Settings

SETTINGS_ENV = {name.upper() for name in Settings.__dataclass_fields__}
#: Variables wapair processes may get that are not settings: read by libraries.
LIBRARY_ENV = {"PROMETHEUS_MULTIPROC_DIR", "FLOWER_BASIC_AUTH", "PYTHONUNBUFFERED", "PATH"}
#: Programs that are not ours (images of their own, shell utilities).
EXTERNAL = {"redis-server", "redis-cli", "pg_isready", "python", "/bin/kill"}
_ENV_REF = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")


def env_refs(text: str) -> set[str]:
    """Names of the environment variables ``text`` expands."""
    return set(_ENV_REF.findall(text))


def _module_exists(dotted: str) -> Path:
    spec = importlib.util.find_spec(dotted)
    assert spec is not None and spec.origin, f"no module {dotted}"
    return Path(spec.origin)


def _module_defines(dotted: str, name: str) -> None:
    tree = ast.parse(_module_exists(dotted).read_text())
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert name in assigned, f"{dotted} has no module-level {name}"


def _gunicorn(args: list[str]) -> None:
    from gunicorn.config import Config

    parsed = Config().parser().parse_args(args)
    if parsed.config:
        assert parsed.config.startswith("python:"), parsed.config
        _module_exists(parsed.config.removeprefix("python:"))
    (app,) = parsed.args
    module, _, attr = app.partition(":")
    _module_defines(module, attr)


def _celery(args: list[str]) -> None:
    import click
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery as celery_cli

    assert args[:2] == ["-A", "workers.app"], args
    _module_defines("workers.app", "celery")
    from workers.app import celery as app

    sub, rest = args[2], args[3:]
    assert sub in ("worker", "beat", "flower"), sub
    command = celery_cli.commands[sub]
    obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    try:
        ctx = command.make_context(sub, list(rest), obj=obj)
    except click.ClickException as e:
        raise AssertionError(f"celery {sub}: {e.format_message()}") from None
    if sub == "worker":
        assert ctx.params["queues"] and "wapair.claims" in ctx.params["queues"]
        assert ctx.params["pool"].__name__ == "TaskPool" and "thread" in \
            ctx.params["pool"].__module__, "workers need the threads pool"
        assert ctx.params["hostname"], "every worker needs its own --hostname"
    if sub == "flower":
        import flower.options  # noqa: F401  (defines Flower's options)
        from tornado.options import options

        for option in ctx.args:
            name = option.lstrip("-").split("=", 1)[0].replace("_", "-")
            assert name in options._options, f"flower has no option --{name}"
            assert name != "basic-auth", "the Flower password belongs in FLOWER_BASIC_AUTH"


def _wapair(args: list[str]) -> None:
    if args[:1] == ["sandbox"]:
        from shared.sandbox.__main__ import parse_args

        try:
            parse_args(args[1:])
        except SystemExit:
            raise AssertionError(f"wapair {' '.join(args)}: bad sandbox options") from None
        return
    try:
        build_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"wapair {' '.join(args)}: not a valid command") from None


def check_command(argv: list[str]) -> str:
    """Assert that ``argv`` names our code correctly; return the program it runs."""
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
        name = argv.pop(0).split("=", 1)[0]
        assert name in SETTINGS_ENV | LIBRARY_ENV, f"unknown variable {name}"
    program = Path(argv[0]).name if argv[0].startswith("/opt/") else argv[0]
    if program in ("sh", "/bin/sh") and argv[1] == "-c":
        for part in argv[2].split("&&"):
            check_command(shlex.split(part))
        return "sh"
    checks = {"gunicorn": _gunicorn, "celery": _celery, "wapair": _wapair}
    if program in checks:
        checks[program](argv[1:])
    else:
        assert program in EXTERNAL, f"unknown program {argv[0]}"
    return program


def check_shell_line(line: str) -> list[str]:
    """A Procfile line: every ``&&`` part is a command; returns the programs."""
    return [check_command(shlex.split(part)) for part in line.split("&&")]

