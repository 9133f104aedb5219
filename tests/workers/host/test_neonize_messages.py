"""Messages through real neonize in a connection host, offline: ``send_message`` answered by
the Go stand-in, and ``MessageEv`` / ``ReceiptEv`` fed as serialized protobuf through
neonize's own dispatch, into a SessionHost writing to a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.config import load_settings
from shared.errors import NotFound
from shared.messages import MessageStore
from shared.state import SessionStore
from tests.support.fake_go import MEDIA, SENT_ID
from tests.support.ports import wait_for
from workers.session_host import SessionHost

from .test_neonize_hosts import neonize_pool

pytestmark = pytest.mark.slow


@contextmanager
def paired_host(booted_redis: redis.Redis, redis_url: str, tenant_id: str, store: Path,
                script: str, worker_id: str, **pool: int
                ) -> Iterator[tuple[MessageStore, SessionHost]]:
    """A SessionHost over connection hosts running the Go stand-in's ``script``, with
    ``tenant_id`` paired and claimed; yields the message store and the host. Afterwards
    nothing of the tenant is left for another test's SessionHost (same Redis) to claim."""
    settings = load_settings({"redis_url": redis_url, "redis_loss_window_s": 0,
                              "pairing_timeout_s": 60, "wa_backend": "neonize"}, environ={})
    hosts = neonize_pool(store, script=script, **pool)
    host = SessionHost(redis.Redis.from_url(redis_url), settings, hosts, worker_id,
                       send_kick=lambda *a: None)
    assert host.register()  # the first heartbeat, as start() writes it
    try:
        SessionStore(booted_redis).begin_pairing(tenant_id, "qr", 60)
        assert host.kick(tenant_id) == "claimed"
        host.start()
        yield MessageStore(booted_redis), host
    finally:
        host.shutdown(3)
        hosts.shutdown()
        booted_redis.srem(keys.ACTIVE, tenant_id)
        for key in booted_redis.scan_iter(f"wa:{{{tenant_id}}}:*"):
            booted_redis.delete(key)


def test_send_receive_and_a_read_receipt_through_neonize(
        booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path) -> None:
    with paired_host(booted_redis, redis_url, tenant_id, tmp_path, "pair:message,receipt",
                     "w-neonize") as (messages, host):
        wait_for(lambda: SessionStore(booted_redis).status(tenant_id)["state"] == "connected",
                 15, "connected")
        inbound = wait_for(lambda: messages.recent(tenant_id, "in", 5), 10, "the MessageEv")
        assert [(m["id"], m["from"], m["text"]) for m in inbound] == [
            ("in_3AINBOUND1", "628111@s.whatsapp.net", "hello from a contact")]
        message_id = messages.accept(tenant_id, {
            "to": "+628222", "chat": "628222@s.whatsapp.net", "kind": "text", "text": "hi",
            "retry": "at_most_once"}).id
        host.kick(tenant_id)
        # The stand-in's ReceiptEv (read) came before the send: applied once it is sent.
        done = wait_for(lambda: (m := messages.get(tenant_id, message_id))["status"] == "read"
                        and m, 10, "the message read")
        assert done["wa_message_id"] == SENT_ID and done["read_at"] == 1700000001.0


def test_an_inbound_image_is_downloaded_through_neonize_and_served_as_media(
        booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path) -> None:
    """A MessageEv with an imageMessage: the host calls neonize's ``download_any`` (the
    stand-in's DownloadAny answers ``MEDIA``), and the bytes land beside the record."""
    with paired_host(booted_redis, redis_url, tenant_id, tmp_path, "pair:image",
                     "w-neonize-media") as (messages, _):
        [inbound] = wait_for(lambda: messages.recent(tenant_id, "in", 5), 15, "the image")
        assert inbound["id"] == "in_3AIMAGE1" and inbound["kind"] == "image"
        assert inbound["text"] == "a photo"
        assert inbound["media"] == {"mime_type": "image/jpeg", "size": len(MEDIA),
                                    "filename": None}
        record, data = messages.media(tenant_id, "in_3AIMAGE1")
        assert data == MEDIA and record["mime_type"] == "image/jpeg"


def test_an_inbound_image_over_the_media_limit_is_recorded_without_its_bytes(
        booted_redis: redis.Redis, redis_url: str, tenant_id: str, tmp_path: Path) -> None:
    """MESSAGE_MAX_MEDIA_BYTES holds for inbound media too: over it, the message is
    recorded with its metadata (so the backend knows it came) and nothing is downloaded."""
    with paired_host(booted_redis, redis_url, tenant_id, tmp_path, "pair:image",
                     "w-neonize-big", media_max_bytes=len(MEDIA) - 1) as (messages, _):
        [inbound] = wait_for(lambda: messages.recent(tenant_id, "in", 5), 15, "the image")
        assert inbound["id"] == "in_3AIMAGE1" and inbound["kind"] == "image"
        # The size is the sender's fileLength (the stand-in's says 9), and why no bytes.
        assert inbound["media"] == {"mime_type": "image/jpeg", "size": 9, "filename": None,
                                    "omitted": "too_large"}
        with pytest.raises(NotFound):
            messages.media(tenant_id, "in_3AIMAGE1")
        assert not booted_redis.exists(keys.message_media(tenant_id, "in_3AIMAGE1"))
