"""List: held locks page by page (a bounded SCAN walk in Redis), with every
lock held for the whole listing on exactly one page, while others come and go."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

import bclient as bc
from bclient import pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def list_all(stub, prefix, limit=0, calls=None):
    keys, token = [], ""
    while True:
        r = stub.List(pb.ListRequest(prefix=prefix, limit=limit, page_token=token), timeout=30)
        if calls is not None:
            calls.append(len(r.locks))
        keys += list(r.locks)
        token = r.next_page_token
        if not token:
            return keys


def test_list_shows_holder_ttl_age_and_waiters(stub):
    prefix = bc.uniq("ls1") + "-"
    g = bc.grant(stub, prefix + "a", owner="ocr-7", ttl_ms=60000)
    w = bc.AcquireStream(stub, prefix + "a", "next", wait_ms=10000)
    w.wait_queued()
    g2 = bc.grant(stub, prefix + "b", owner="asr-1", ttl_ms=30000)
    bc.release(stub, prefix + "b", g2.token)
    time.sleep(0.2)
    (info,) = list_all(stub, prefix)
    assert (info.key, info.owner, info.fencing) == (prefix + "a", "ocr-7", g.fencing)
    assert 55000 < info.ttl_ms <= 60000, info.ttl_ms
    assert 150 <= info.held_for_ms < 10000, info.held_for_ms
    assert info.waiters == 1
    bc.release(stub, prefix + "a", g.token)
    w.wait_granted()
    w.wait_end()


def test_list_rejects_bad_requests(stub):
    for req, want in [
        (pb.ListRequest(limit=-1), "limit: must be between 0 (default 100) and 1000, got -1"),
        (pb.ListRequest(limit=1001), "limit: must be between 0 (default 100) and 1000, got 1001"),
        (pb.ListRequest(page_token="abc"), "page_token: not a next_page_token of List (got 3 bytes)"),
        (pb.ListRequest(page_token="01"), "page_token: not a next_page_token of List (got 2 bytes)"),
        (pb.ListRequest(page_token="1" * 21), "page_token: not a next_page_token of List (got 21 bytes)"),
    ]:
        code, details = bc.rpc_error(stub.List, req)
        assert (code, details) == (INVALID, want), (req, code, details)
    code, details = bc.rpc_error(stub.List, pb.ListRequest(prefix="bad key"))
    assert code == INVALID and details.startswith("prefix: "), details


def test_list_pages_over_10000_held_keys_while_others_come_and_go(stub):
    prefix = bc.uniq("ls10k") + "-"
    n = 10000
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as ex:
        grants = list(ex.map(lambda i: bc.grant(stub, "%ss%05d" % (prefix, i), owner="o%d" % i, ttl_ms=300000),
                             range(n)))
    setup = time.monotonic() - t0
    stable = {g.key: g.fencing for g in grants}

    stop = threading.Event()
    churned = [0]

    def churn():
        i = 0
        while not stop.is_set():
            key = "%sc%03d" % (prefix, i % 300)
            g = bc.grant(stub, key, owner="churn", ttl_ms=60000, wait_ms=1000)
            if i % 2:
                bc.release(stub, key, g.token)
            else:
                stub.ForceRelease(pb.ForceReleaseRequest(key=key, fencing=g.fencing), timeout=10)
            i += 1
            churned[0] = i

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert bc.wait_until(lambda: churned[0] >= 4), "churn started"
        calls = []
        c0 = churned[0]
        t1 = time.monotonic()
        infos = list_all(stub, prefix, limit=200, calls=calls)
        listing = time.monotonic() - t1
        c1 = churned[0]
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert c1 - c0 >= 2, "keys came and went during the listing: %d" % (c1 - c0)
    keys = [i.key for i in infos]
    dups = {k for k in keys if keys.count(k) > 1} if len(keys) != len(set(keys)) else set()
    assert not dups, "duplicates: %s" % sorted(dups)[:10]
    got = {i.key: i.fencing for i in infos if i.key in stable}
    missing = set(stable) - set(got)
    assert not missing, "gaps: %d held keys never listed, e.g. %s" % (len(missing), sorted(missing)[:5])
    assert got == stable, "fencing tokens as granted"
    assert all(k.startswith(prefix) for k in keys)
    assert max(calls) <= 200 + 100, "pages are bounded near the limit: %s" % max(calls)
    bc.record_timing("List 10,000 held keys, limit 200: %d pages, %d churn cycles meanwhile"
                     % (len(calls), c1 - c0), listing)
    bc.record_timing("  (granting them: %d locks)" % n, setup)
    # the whole database, no prefix: these are all there too
    every = {i.key for i in list_all(stub, "", limit=1000)}
    assert set(stable) <= every
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda g: bc.release(stub, g.key, g.token), grants))
    assert list_all(stub, prefix + "s") == []
