"""Messages: accepted-to-sent latency next to a bare Celery no-op, and send throughput.

Latency: a private Redis, the sandbox with no added latency, 2 workers
(``SEND_RATE_PER_TENANT=0``) and the API (gunicorn), all real processes, with a
few seeded connected tenants. Each sample is a ``POST /api/whatsapp/messages``
timed until the message's ``sent`` is readable in Redis: the bench blocks on
the tenant's event stream (``XREAD BLOCK``, as the SSE endpoint does) for the
``message_status`` event the owner writes in the same Lua step as the status.
Each sample sits next to a bare Celery no-op round trip (``delay().get()``) on
the same broker, stock kombu and wapair's transport, in rotating order, so the
distributions come from the same minutes (as ``bench_pair_qr`` does).

Throughput: 1,000 seeded connected tenants on 2 workers with pacing off. The
bench first accepts messages the way the API does (``MessageStore.accept``, the
same Lua step) round-robin over the tenants, then sends one Celery kick per
tenant to its owner (as the API would for the first of them; the drain runs the
whole mailbox), and the clock runs from the first kick until every message has
left every outbox (finished). The bench is one Python process: accepting and
kicking at the API's pace would measure it, not the workers. The rate the
workers sustained is also read from the records' own ``sending_at`` /
``sent_at`` stamps; a message an owner's mailbox check found before its kick is
counted. CPU seconds per process show where the time goes.

Paced: the same with 300 tenants at the default ``SEND_RATE_PER_TENANT``: how
long their backlogs take against the (messages - 1) jittered gaps one tenant
alone needs, which is what it should be when no tenant's pacing holds another's.

Over 300 lines: the two measurements share the seeding, the wait for owners and
the reporting, and ``make bench`` runs one file per benchmark.

Run: ``python -m tests.bench.bench_messages`` (writes ``var/bench/messages.json``);
``BENCH_QUICK=1`` for small sizes; ``BENCH_PROFILE=1`` samples worker 0 with
py-spy during the throughput run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from http.client import HTTPConnection
from typing import Any

import redis

from shared import keys
from shared.config import load_settings
from shared.messages import FINISHED, MessageStore
from shared.taskqueue import create_celery, send_kick
from tests.bench.harness import (
    ProcStats,
    ProcTreeStats,
    activate,
    connected_owners,
    profile,
    quick,
    redis_cpu_s,
    seed_connected,
    size,
    stack_env,
    start_redis,
    stop_stack,
    store_dir,
    summary_ms,
    wait_for_event,
    write_result,
)
from tests.bench.noop_app import QUEUES, make_app
from tests.support.sandbox_proc import SandboxProcess
from tests.support.services import Api, Service, Worker
from workers.session.pacing import JITTER

LATENCY_SAMPLES = size(300, 40)
LATENCY_TENANTS = size(20, 4)
THROUGHPUT_TENANTS = size(1000, 200)
PACED_TENANTS = size(300, 100)
PER_TENANT = size(5, 3)
#: Kick each tenant (the bench's own Celery publishing, one process, then is part of the
#: clock), or let the owners' mailbox checks (every TTL/3) find the mail all at once.
KICKS = os.environ.get("BENCH_MESSAGES_KICKS", "") not in ("", "0")
CONNECT_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 180.0


def main() -> None:
    latency = _latency()
    throughput = _throughput()
    paced = _paced()
    write_result("messages", {"latency": latency, "throughput": throughput, "paced": paced})


# --- latency ------------------------------------------------------------------
def _latency() -> dict[str, Any]:
    ids = [f"ml{i:03d}" for i in range(LATENCY_TENANTS)]
    server, client = start_redis()
    store = store_dir()
    sandbox = SandboxProcess()
    jids = seed_connected(client, sandbox, store, ids)
    api_keys = _keys_of(client, ids)
    sandbox.start(ready_timeout=60)
    env = stack_env(server.url, sandbox.url, store, SEND_RATE_PER_TENANT="0")
    workers = [Worker(f"ml{i}", env) for i in range(2)]
    api = Api("ml-api", env)
    noop_workers = [Service(f"ml-noop-{kind}", [
        sys.executable, "-m", "celery", "-A", "tests.bench.noop_app", "worker",
        "--pool", "threads", "--concurrency", "4", "--queues", QUEUES[kind],
        "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
        {**env, "NOOP_TRANSPORT": kind}) for kind in QUEUES]
    services: list[Service] = [*workers, api, *noop_workers]
    try:
        for s in services:
            s.start()
        for w in workers:
            w.wait_ready(client)
        api.wait_ready()
        activate(client, ids)
        _wait_connected(client, ids)
        noops = {kind: make_app(kind, server.url)[1] for kind in QUEUES}
        for task in noops.values():
            task.delay().get(timeout=30)  # its worker is up
        http = HTTPConnection("127.0.0.1", api.port, timeout=10)
        for i, tenant in enumerate(ids):  # warm-up: each tenant's first send, not counted
            first = _send(http, client, tenant, api_keys[tenant], 10**6 + i)
            print(f"warm-up send of {tenant}: sent after {first[1] * 1000:.1f} ms", flush=True)
        sent_s, posted_s = [], []
        noop_s: dict[str, list[float]] = {kind: [] for kind in QUEUES}
        for i in range(LATENCY_SAMPLES):
            tenant = ids[i % len(ids)]
            steps: list[tuple[str, Any]] = [("send", None), *noops.items()]
            for kind, task in steps[i % 3:] + steps[:i % 3]:
                if task is None:
                    posted, sent = _send(http, client, tenant, api_keys[tenant], i)
                    posted_s.append(posted)
                    sent_s.append(sent)
                else:
                    noop_s[kind].append(_noop(task))
        assert len(jids) == len(ids)
    except BaseException:
        for w in workers:
            print(f"--- {w.worker_id}\n{w.log()[-6000:]}")
        raise
    finally:
        for s in services:
            s.stop()
        sandbox.cleanup()
        client.close()
        server.cleanup()
    p50 = statistics.median(sent_s)
    result = {
        "samples": LATENCY_SAMPLES, "tenants": LATENCY_TENANTS,
        "post_to_sent": summary_ms(sent_s), "post_answered": summary_ms(posted_s),
        "celery_noop_round_trip": summary_ms(noop_s["stock"]),
        "celery_noop_round_trip_wapair_transport": summary_ms(noop_s["wapair"]),
        "ratio_p50": round(p50 / statistics.median(noop_s["stock"]), 2),
        "ratio_p50_vs_wapair_transport": round(p50 / statistics.median(noop_s["wapair"]), 2),
    }
    s, n = result["post_to_sent"], result["celery_noop_round_trip"]
    w = result["celery_noop_round_trip_wapair_transport"]
    print(f"POST /messages -> sent over {LATENCY_SAMPLES} sends: p50 {s['p50_ms']} ms, "
          f"p99 {s['p99_ms']} ms (the POST answered at p50 "
          f"{result['post_answered']['p50_ms']} ms)")
    print(f"bare Celery no-op round trip:          p50 {n['p50_ms']} ms, p99 {n['p99_ms']} ms")
    print(f"  the same, wapair's broker transport: p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms")
    print(f"ratio of the medians: {result['ratio_p50']} (goal <= 3, issue 15); against the "
          f"no-op on wapair's transport: {result['ratio_p50_vs_wapair_transport']}"
          + (" (quick mode)" if quick() else ""), flush=True)
    return result


def _keys_of(client: redis.Redis, ids: list[str]) -> dict[str, str]:
    """seed_connected created the tenants with keys it does not return: make new ones."""
    from tests.bench.harness import create_tenants

    states = {t: client.hgetall(keys.session(t)) for t in ids}
    made = create_tenants(client, ids)  # resets each session hash to idle: put it back
    for tenant, state in states.items():
        client.hset(keys.session(tenant), mapping=state)
    return made


def _send(http: HTTPConnection, client: redis.Redis, tenant: str, api_key: str,
          i: int) -> tuple[float, float]:
    """(POST answered, 'sent' readable in Redis), seconds from the start of the POST."""
    stream = keys.events(tenant)
    newest = client.xrevrange(stream, count=1)
    last_id = newest[0][0] if newest else b"0-0"
    headers = {"X-Tenant-ID": tenant, "Authorization": f"Bearer {api_key}",
               "Content-Type": "application/json"}
    body = json.dumps({"to": f"+62811{i:07d}", "text": f"bench {i}"}).encode()
    started = time.perf_counter()
    try:
        http.request("POST", "/api/whatsapp/messages", body=body, headers=headers)
    except (BrokenPipeError, ConnectionResetError):
        # gunicorn closed the idle keep-alive connection (2 s): dial again, timed too.
        http.close()
        http.request("POST", "/api/whatsapp/messages", body=body, headers=headers)
    response = http.getresponse()
    answer = response.read()
    assert response.status == 202, answer
    posted = time.perf_counter() - started
    message_id = json.loads(answer)["id"]

    def sent(fields: dict[bytes, bytes]) -> bool:
        if fields[b"kind"] != b"message_status":
            return False
        data = json.loads(fields[b"data"])
        return bool(data["id"] == message_id and data["status"] == "sent")

    came = wait_for_event(client, stream, last_id, started + 10, sent,
                          f"{message_id} sent within 10 s")
    return posted, came - started


def _noop(task: Any) -> float:
    started = time.perf_counter()
    task.delay().get(timeout=10)
    return time.perf_counter() - started


def _wait_connected(client: redis.Redis, ids: list[str]) -> dict[str, str]:
    """Until every tenant is connected *through its owner*: the seeded hash already says
    connected, but only the owner's Connected writes the ``owner`` field."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    online: list[str] = []
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for tenant in ids:
            pipe.hmget(keys.session(tenant), "state", "owner")
        online = [t for t, (state, owner) in zip(ids, pipe.execute(), strict=True)
                  if state == b"connected" and owner]
        owners = connected_owners(client, online)
        if len(owners) == len(ids):
            return owners
        time.sleep(0.5)
    raise AssertionError(f"only {len(online)} of {len(ids)} connected through an owner")


# --- throughput -----------------------------------------------------------------
def _paced() -> dict[str, Any]:
    """Backlogs of many tenants at the default pacing: each tenant's sends take
    (PER_TENANT - 1) mean gaps, whatever the number of tenants, when no tenant's
    pacing holds another's (a drain that slept through its gaps held a thread)."""
    rate = load_settings({}, environ={}).send_rate_per_tenant
    result = _throughput(PACED_TENANTS, rate=rate, prefix="mp")
    ideal, longest = (PER_TENANT - 1) / rate, (PER_TENANT - 1) * JITTER[1] / rate
    span = round(result["messages"] / max(1e-9, result["worker_rate_per_s"]), 2)
    print(f"paced at the default {rate}/s: {PACED_TENANTS} tenants x {PER_TENANT} messages "
          f"sent in {span} s, first sending to last sent; one tenant alone needs "
          f"{PER_TENANT - 1} jittered gaps: {ideal:.1f} s on average, at most {longest:.1f} s",
          flush=True)
    return {**result, "rate_per_s": rate, "span_s": span, "mean_gaps_s": ideal,
            "longest_gaps_s": longest}


def _throughput(tenants: int = THROUGHPUT_TENANTS, *, rate: float = 0.0,
                prefix: str = "mt") -> dict[str, Any]:
    ids = [f"{prefix}{i:04d}" for i in range(tenants)]
    server, client = start_redis()
    store = store_dir()
    sandbox = SandboxProcess()
    workers: list[Worker] = []
    try:
        seed_connected(client, sandbox, store, ids)
        sandbox.start(ready_timeout=60)
        env = stack_env(server.url, sandbox.url, store, SEND_RATE_PER_TENANT=str(rate),
                        LEASE_TTL_S="15")
        workers = [Worker(f"{prefix}{i}", env).start() for i in range(2)]
        for worker in workers:
            worker.wait_ready(client, timeout=60)
        activate(client, ids)
        owners = _wait_connected(client, ids)
        time.sleep(2)  # the last resumes' writes settle
        result = _load(client, server.url, ids, owners, workers, sandbox)
    finally:
        stop_stack(workers, sandbox, server, client)
    if rate:
        return result
    print(f"throughput over {THROUGHPUT_TENANTS} tenants on 2 workers, pacing off: "
          f"{result['messages']} messages, the workers' rate from the records' stamps (first "
          f"sending to last sent): {result['worker_rate_per_s']}/s (goal >= 1000); "
          + (f"{result['messages_per_s']}/s from the first kick (kicking took "
             f"{result['kick_s']} s), " if KICKS else "found by the mailbox checks, ")
          + f"accepting took {result['accept_s']} s, {result['sent_before_loading_ended']} went "
          f"before it ended; owners {result['owners']}" + (" (quick mode)" if quick() else ""))
    print(f"  while both owners were sending: {result.get('rate_while_all_send_per_s')}/s "
          f"(their first sends {result.get('owners_start_apart_s')} s apart; each owner: "
          f"{result.get('per_owner_rate_per_s')})")
    print(f"  CPU seconds: {result['cpu_s']}; ms per message: {_cpu_ms(result)}", flush=True)
    return result


def _cpu_ms(result: dict[str, Any]) -> dict[str, float]:
    """CPU ms per message of each kind of process (over the whole loading and draining)."""
    cpu, n = result["cpu_s"], max(1, result["messages"])
    workers, trees = sum(cpu["workers_without_hosts"]), sum(cpu["workers_and_hosts"])
    per = {"workers": workers, "hosts": trees - workers, "sandbox": cpu["sandbox"],
           "redis": cpu["redis"]}
    per["total"] = sum(per.values())
    return {k: round(1000 * v / n, 2) for k, v in per.items()}


def _load(client: redis.Redis, url: str, ids: list[str], owners: dict[str, str],
          workers: list[Worker], sandbox: SandboxProcess) -> dict[str, Any]:
    messages = MessageStore(client)
    celery = create_celery(load_settings({"redis_url": url}, environ={}), name="bench-msg")
    trees = [ProcTreeStats(w.proc.pid) for w in workers]  # type: ignore[union-attr]
    parents = [ProcStats(w.proc.pid) for w in workers]  # type: ignore[union-attr]
    sandbox_stats = ProcStats(sandbox.proc.pid)  # type: ignore[union-attr]
    me = ProcStats(os.getpid())
    cpu0 = ([t.cpu_s() for t in trees], sandbox_stats.cpu_s(), redis_cpu_s(client), me.cpu_s(),
            [p.cpu_s() for p in parents])
    if os.environ.get("BENCH_PROFILE"):  # the worker and one of its hosts, CPU only
        for name, pid in (("messages-worker", trees[0].pid),
                          ("messages-host", trees[0].pids()[1])):
            threading.Thread(target=profile, args=(name, pid, 8.0), kwargs={"gil": True},
                             daemon=True).start()
    sent: dict[str, list[str]] = {t: [] for t in ids}
    loading = time.perf_counter()
    for n in range(PER_TENANT):
        for tenant in ids:
            record = {"to": f"+62812{n:02d}00000", "chat": f"62812{n:02d}00000@s.whatsapp.net",
                      "kind": "text", "text": f"bench {n}", "retry": "at_most_once"}
            sent[tenant].append(messages.accept(tenant, record).id)
    accept_s = time.perf_counter() - loading
    started, kicked_at = time.perf_counter(), time.time()
    if KICKS:
        for tenant in ids:  # one kick per tenant: its drain runs its whole mailbox
            send_kick(celery, tenant, owners[tenant])
    kick_s = time.perf_counter() - started
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for tenant in ids:
            pipe.zcard(keys.outbox(tenant))
        if not any(pipe.execute()):
            break
        time.sleep(0.25)  # 1,000 ZCARDs: polled often, they cost Redis and the bench CPU
    elapsed = time.perf_counter() - started
    cpu1 = ([t.cpu_s() for t in trees], sandbox_stats.cpu_s(), redis_cpu_s(client), me.cpu_s(),
            [p.cpu_s() for p in parents])
    statuses, first, last, early, spans = _stamps(client, sent, kicked_at, owners)
    total = sum(len(v) for v in sent.values())
    done = sum(statuses.get(s, 0) for s in FINISHED)
    return {
        "tenants": len(ids), "per_tenant": PER_TENANT, "messages": total, "finished": done,
        "statuses": statuses, "elapsed_s": round(elapsed, 2), "accept_s": round(accept_s, 2),
        "kick_s": round(kick_s, 2), "kicked": KICKS,
        "owners": {w: list(owners.values()).count(w) for w in sorted(set(owners.values()))},
        "sent_before_loading_ended": early,
        "messages_per_s": round(done / elapsed, 1) if KICKS else None,
        "worker_rate_per_s": round(done / max(1e-9, last - first), 1),
        **_overlap(spans),
        "cpu_s": {"workers_and_hosts": [round(b - a, 2) for a, b in zip(cpu0[0], cpu1[0],
                                                                         strict=True)],
                  "workers_without_hosts": [round(b - a, 2) for a, b in zip(cpu0[4], cpu1[4],
                                                                            strict=True)],
                  "sandbox": round(cpu1[1] - cpu0[1], 2), "redis": round(cpu1[2] - cpu0[2], 2),
                  "bench_client": round(cpu1[3] - cpu0[3], 2)},
    }


def _stamps(client: redis.Redis, sent: dict[str, list[str]], kicked_at: float,
            owners: dict[str, str]) -> tuple[dict[str, int], float, float, int,
                                             dict[str, list[float]]]:
    """Statuses, the first 'sending_at' and last 'sent_at' among the messages, how
    many went before the kicks (an owner's mailbox check found them first), and each
    owner's first 'sending_at', last 'sent_at' and its 'sent_at' stamps."""
    pipe = client.pipeline(transaction=False)
    order = []
    for tenant, message_ids in sent.items():
        for message_id in message_ids:
            pipe.hmget(keys.message(tenant, message_id), "status", "sending_at", "sent_at")
            order.append(owners.get(tenant, ""))
    statuses: dict[str, int] = {}
    first, last, early = float("inf"), 0.0, 0
    spans: dict[str, list[float]] = {}
    for owner, (status, sending_at, sent_at) in zip(order, pipe.execute(), strict=True):
        name = (status or b"missing").decode()
        statuses[name] = statuses.get(name, 0) + 1
        span = spans.setdefault(owner, [float("inf"), 0.0])
        if sending_at:
            first = min(first, float(sending_at))
            span[0] = min(span[0], float(sending_at))
            early += float(sending_at) < kicked_at
        if sent_at:
            last = max(last, float(sent_at))
            span[1] = max(span[1], float(sent_at))
            span.append(float(sent_at))
    return statuses, first, last, early, spans


def _overlap(spans: dict[str, list[float]]) -> dict[str, Any]:
    """Each owner's rate, and the rate while every owner was sending: their mailbox
    checks (every TTL/3) find the messages up to a check apart, and the headline
    span from the first 'sending' to the last 'sent' counts that gap too."""
    spans = {o: s for o, s in spans.items() if len(s) > 2}
    if not spans:
        return {}
    start = max(s[0] for s in spans.values())
    end = min(s[1] for s in spans.values())
    sent_within = sum(start <= t <= end for s in spans.values() for t in s[2:])
    return {"per_owner_rate_per_s": {o: round((len(s) - 2) / max(1e-9, s[1] - s[0]), 1)
                                     for o, s in spans.items()},
            "owners_start_apart_s": round(start - min(s[0] for s in spans.values()), 2),
            "rate_while_all_send_per_s": round(sent_within / (end - start), 1)
            if end > start else None}


if __name__ == "__main__":
    main()
