"""Pagination: `after` cursors, truthful `has_more`, limits, and walks under writes."""

from __future__ import annotations

import threading

import httpx

from tests.helpers import make_requests, new_batch, wait_for, walk


def test_walking_batches_returns_each_once_newest_first(client: httpx.Client) -> None:
    ids = [new_batch(client, f"b{i}")["id"] for i in range(53)]
    items = walk(client, "/batches", limit=7)
    assert [b["id"] for b in items] == ids[::-1]


def test_batches_filtered_by_name_prefix_walk_like_the_rest(client: httpx.Client) -> None:
    mine = [new_batch(client, f"job--a1--s{i:04d}")["id"] for i in range(12)]
    new_batch(client, "job--a2--s0000")
    new_batch(client, "other--a1--s0000")
    items = walk(client, "/batches", limit=5, name_prefix="job--a1--")
    assert [b["id"] for b in items] == mine[::-1]
    assert walk(client, "/batches", limit=5, name_prefix="%") == []  # a prefix, not a pattern


def test_walk_sees_each_batch_once_while_batches_are_created(server) -> None:
    with httpx.Client(base_url=server.url) as http:
        before = [new_batch(http, f"old{i}")["id"] for i in range(120)]
        stop = threading.Event()

        def create() -> None:
            with httpx.Client(base_url=server.url) as other:
                while not stop.is_set():
                    new_batch(other, "new")

        creator = threading.Thread(target=create)
        creator.start()
        try:
            items = walk(http, "/batches", limit=5)
        finally:
            stop.set()
            creator.join()
    seen = [b["id"] for b in items]
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in set(before)] == before[::-1]


def test_default_and_maximum_limit(client: httpx.Client, server) -> None:
    limits = server.app.state.settings.limits
    batch = new_batch(client)
    for start in range(0, 150, 50):
        client.post(
            f"/batches/{batch['id']}/requests", json={"requests": make_requests(50, start=start)}
        ).raise_for_status()
    page = client.get(f"/batches/{batch['id']}/requests").json()
    assert len(page["data"]) == limits.page_default == 100
    assert page["has_more"] is True
    for bad in (0, -1, limits.page_max + 1, "ten"):
        response = client.get(f"/batches/{batch['id']}/requests", params={"limit": bad})
        assert response.status_code == 422, bad
        assert "limit" in response.json()["error"]["message"]
    page = client.get(f"/batches/{batch['id']}/requests", params={"limit": limits.page_max})
    assert len(page.json()["data"]) == 150 and page.json()["has_more"] is False


def test_has_more_is_false_on_an_exact_last_page(client: httpx.Client) -> None:
    batch = new_batch(client, n=10)
    first = client.get(f"/batches/{batch['id']}/requests", params={"limit": 5}).json()
    assert first["has_more"] is True
    second = client.get(
        f"/batches/{batch['id']}/requests", params={"limit": 5, "after": first["data"][-1]["id"]}
    ).json()
    assert len(second["data"]) == 5 and second["has_more"] is False


def test_requests_walk_with_a_small_limit(client: httpx.Client) -> None:
    batch = new_batch(client)
    client.post(
        f"/batches/{batch['id']}/requests", json={"requests": make_requests(437)}
    ).raise_for_status()
    items = walk(client, f"/batches/{batch['id']}/requests", limit=13)
    assert [r["custom_id"] for r in items] == [f"r-{i}" for i in range(437)]
    assert len({r["id"] for r in items}) == 437


def test_results_walk_while_results_are_written(server_factory) -> None:
    server = server_factory(faults={"processing_rate": 2000})
    with httpx.Client(base_url=server.url) as http:
        batch = new_batch(http, n=600)
        http.post(f"/batches/{batch['id']}/start").raise_for_status()
        seen: list[str] = []
        after = None
        walks_during_processing = 0
        while True:
            status = http.get(f"/batches/{batch['id']}").json()["status"]
            query = {"limit": 17, **({"after": after} if after else {})}
            page = http.get(f"/batches/{batch['id']}/results", params=query).json()
            seen += [r["custom_id"] for r in page["data"]]
            if page["data"]:
                after = page["data"][-1]["id"]
            if status == "processing":
                walks_during_processing += 1
            elif not page["has_more"]:
                break
        assert walks_during_processing > 3
    assert len(seen) == len(set(seen)) == 600


def test_bad_cursor_is_a_clear_400(client: httpx.Client) -> None:
    a = new_batch(client, n=2)
    b = new_batch(client, n=2)
    other = client.get(f"/batches/{b['id']}/requests").json()["data"][0]["id"]
    for path, after in [
        ("/batches", "batch_missing"),
        (f"/batches/{a['id']}/requests", "req_zzz"),
        (f"/batches/{a['id']}/requests", "req_fffffffffffffffff"),
        (f"/batches/{a['id']}/results", "req_fffffffffffffffffffffff"),
        (f"/batches/{a['id']}/requests", "req_ 1 "),
        (f"/batches/{a['id']}/requests", other),
        (f"/batches/{a['id']}/results", other),
    ]:
        response = client.get(path, params={"after": after})
        assert response.status_code == 400, (path, after)
        assert "after" in response.json()["error"]["message"]
    pending = client.get(f"/batches/{a['id']}/requests").json()["data"][0]["id"]
    response = client.get(f"/batches/{a['id']}/results", params={"after": pending})
    assert response.status_code == 400  # not a result (yet)


def test_results_pages_cover_a_finished_batch(client: httpx.Client) -> None:
    batch = new_batch(client, n=250)
    client.post(f"/batches/{batch['id']}/start").raise_for_status()
    wait_for(client, batch["id"])
    items = walk(client, f"/batches/{batch['id']}/results", limit=9)
    assert sorted(r["custom_id"] for r in items) == sorted(f"r-{i}" for i in range(250))
