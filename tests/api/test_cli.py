"""The wapair command: tenant creation prints the key once, config errors name the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from shared import keys
from shared.tenants import TenantRegistry
from tests.support.services import ROOT


def wapair(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=30, env={**os.environ, **env})


def test_tenant_add_prints_a_working_key_once(
    redis_url: str, redis_client: redis.Redis, tenant_id: str
) -> None:
    result = wapair("tenant", "add", tenant_id, "--domain", f"{tenant_id}.example.net",
                    REDIS_URL=redis_url)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("wak_")
    assert TenantRegistry(redis_client).key_matches(tenant_id, key)
    assert redis_client.hget(keys.DOMAINS, f"{tenant_id}.example.net") == tenant_id.encode()
    again = wapair("tenant", "add", tenant_id, REDIS_URL=redis_url)
    assert again.returncode == 2 and "already exists" in again.stderr
    listed = wapair("tenant", "list", REDIS_URL=redis_url)
    assert tenant_id in listed.stdout.split()


def test_tenant_rotate_and_revoke(
    redis_url: str, redis_client: redis.Redis, tenant_id: str
) -> None:
    registry = TenantRegistry(redis_client)
    old_key = registry.create(tenant_id, f"{tenant_id}.example.net")
    rotated = wapair("tenant", "rotate", tenant_id, REDIS_URL=redis_url)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert new_key.startswith("wak_") and new_key != old_key
    assert registry.key_matches(tenant_id, new_key) and not registry.key_matches(tenant_id, old_key)
    listed = wapair("tenant", "list", "--long", REDIS_URL=redis_url)
    assert f"{tenant_id}\t{tenant_id}.example.net\tkey" in listed.stdout.splitlines()
    revoked = wapair("tenant", "revoke", tenant_id, REDIS_URL=redis_url)
    assert revoked.returncode == 0 and new_key not in revoked.stdout
    assert not registry.key_matches(tenant_id, new_key)
    missing = wapair("tenant", "rotate", "nobody-here", REDIS_URL=redis_url)
    assert missing.returncode == 2 and "unknown tenant" in missing.stderr


def test_bad_tenant_id_and_bad_settings_are_clear(redis_url: str) -> None:
    bad = wapair("tenant", "add", "Not Valid", REDIS_URL=redis_url)
    assert bad.returncode == 2 and "tenant id must match" in bad.stderr
    config = wapair("tenant", "list", REDIS_URL=redis_url, LEASE_TTL_S="soon")
    assert config.returncode == 2 and "LEASE_TTL_S" in config.stderr
    assert "Traceback" not in config.stderr


def test_services_refuse_to_start_on_a_bad_setting() -> None:
    result = subprocess.run([sys.executable, "-c", "import api.wsgi"], cwd=ROOT, text=True,
                            capture_output=True, timeout=30,
                            env={**os.environ, "WA_BACKEND": "carrier-pigeon"})
    assert result.returncode != 0 and "WA_BACKEND must be one of" in result.stderr


def test_sandbox_subcommand_passes_its_options_through() -> None:
    result = wapair("sandbox", "--help")
    assert result.returncode == 0 and "--qr-first-s" in result.stdout


def test_embedded_redis_on_a_new_data_dir_is_known_fresh(tmp_path) -> None:  # noqa: ANN001
    import signal

    import redis as redis_lib

    from tests.support.ports import free_port, wait_for

    port = free_port()
    data = tmp_path / "redis"
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "redis", "--port", str(port),
                             "--dir", str(data)], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        client = redis_lib.Redis(port=port, socket_connect_timeout=0.2)
        wait_for(lambda: client.get(keys.BOOT_MARKER), 10, "the boot marker")
        # the marker is what lets the first lease be granted without the grace
        assert client.exists(keys.LEASE_GRACE) == 0
        client.set("probe", "kept")  # AOF on: data survives a restart
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "redis", "--port", str(port),
                             "--dir", str(data)], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        client = redis_lib.Redis(port=port, socket_connect_timeout=0.2)
        assert wait_for(lambda: client.get("probe"), 10, "the AOF to be loaded") == b"kept"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
