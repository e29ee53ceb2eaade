"""The HTTP API on the ASGI transport: every route, its status codes and bodies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.api_flows import attempts
from tests.api.conftest import wait_status

pytestmark = pytest.mark.anyio


async def start(client: httpx.AsyncClient, flow: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/flows/{flow}/runs", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_flows_lists_startable_flows_with_input_schemas(client: httpx.AsyncClient) -> None:
    flows = {f["name"]: f for f in (await client.get("/api/flows")).json()}
    assert sorted(flows) == ["approval", "counter", "editorial", "fragile", "review"]
    schema = flows["review"]["input_schema"]
    assert schema["required"] == ["title"]
    assert schema["properties"]["reviewers"] == {
        "default": 1,
        "title": "reviewers",
        "type": "integer",
    }
    assert schema["additionalProperties"] is False
    assert flows["approval"]["doc"].startswith("Draft a text")


async def test_start_wait_answer_complete(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/flows/approval/runs", json={"input": {"topic": "q3"}})
    assert response.status_code == 201
    run = response.json()
    assert response.headers["location"].endswith(f"/api/runs/{run['id']}")
    assert run["flow"] == "approval"
    assert run["input"] == {"topic": "q3"}
    info = await wait_status(client, run["id"], "waiting")
    assert info["pending_wait"] == {
        "topic": "input",
        "question": "Publish this?\ndraft about q3",
        "schema": {"type": "boolean"},
        "deadline": None,
    }
    sent = await client.post(f"/api/runs/{run['id']}/messages", json={"payload": True})
    assert sent.status_code == 202
    assert sent.json() == {
        "run_id": run["id"],
        "message_id": sent.json()["message_id"],
        "topic": "input",
    }
    done = await wait_status(client, run["id"], "completed")
    assert done["output"] == "published: draft about q3"
    assert [(c["kind"], c["name"]) for c in done["checkpoints"]] == [
        ("checkpoint", "draft"),
        ("wait", "input"),
        ("checkpoint", "publish"),
    ]


async def test_generic_route_validates_input_against_signature(client: httpx.AsyncClient) -> None:
    # The typed per-flow route and the generic one give the same 422 shape.
    bad = await client.post("/api/flows/review/runs", json={"input": {"title": 3, "extra": 1}})
    assert bad.status_code == 422
    errors = {(tuple(e["loc"]), e["type"]) for e in bad.json()["detail"]}
    assert errors == {
        (("body", "input", "title"), "string_type"),
        (("body", "input", "extra"), "extra_forbidden"),
    }
    missing = await client.post("/api/flows/approval/runs", json={})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "input"]
    wrong_type = await client.post("/api/flows/counter/runs", json={"input": {"steps": "many"}})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["detail"][0]["loc"] == ["body", "input", "steps"]


async def test_defaults_and_lax_json_values(client: httpx.AsyncClient) -> None:
    run = await start(client, "counter", input={"steps": "3"})
    info = await wait_status(client, run["id"], "completed")
    assert info["input"] == {"steps": 3}
    assert info["output"] == 6
    review = await start(client, "review", input={"title": "t"})
    assert review["input"] == {"title": "t"}  # the default stays the function's own


async def test_unknown_flow_is_404_and_only_registered_flows_start(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/flows/os.system/runs", json={"input": {}})
    assert response.status_code == 404
    assert "flows: approval, counter, editorial, fragile, review" in response.json()["detail"]


async def test_run_id_makes_start_idempotent(client: httpx.AsyncClient) -> None:
    first = await client.post(
        "/api/flows/counter/runs", json={"input": {"steps": 1}, "run_id": "order-42"}
    )
    assert first.status_code == 201
    again = await client.post(
        "/api/flows/counter/runs", json={"input": {"steps": 1}, "run_id": "order-42"}
    )
    assert again.status_code == 200
    assert again.json()["id"] == "order-42"
    other = await client.post(
        "/api/flows/approval/runs", json={"input": {"topic": "x"}, "run_id": "order-42"}
    )
    assert other.status_code == 409
    bad_id = await client.post(
        "/api/flows/counter/runs", json={"input": {"steps": 1}, "run_id": "../etc"}
    )
    assert bad_id.status_code == 422


async def test_get_unknown_run_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/runs/nope")
    assert response.status_code == 404
    assert "no run 'nope'" in response.json()["detail"]


async def test_list_filters_and_pages(client: httpx.AsyncClient) -> None:
    ids = [(await start(client, "counter", input={"steps": 0}))["id"] for _ in range(3)]
    waiting = (await start(client, "approval", input={"topic": "x"}))["id"]
    await wait_status(client, waiting, "waiting")
    for run_id in ids:
        await wait_status(client, run_id, "completed")
    page = (await client.get("/api/runs", params={"status": "waiting"})).json()
    assert [r["id"] for r in page["runs"]] == [waiting]
    assert page["runs"][0]["pending_wait"]["question"].startswith("Publish this?")
    assert page["next_cursor"] is None
    first = (await client.get("/api/runs", params={"flow": "counter", "limit": 2})).json()
    assert len(first["runs"]) == 2
    assert first["next_cursor"] == first["runs"][-1]["id"]
    rest = (
        await client.get(
            "/api/runs", params={"flow": "counter", "limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    seen = [r["id"] for r in first["runs"] + rest["runs"]]
    assert sorted(seen) == sorted(ids)
    assert rest["runs"][0]["checkpoints"] == 0
    assert (await client.get("/api/runs", params={"status": "asleep"})).status_code == 422
    assert (await client.get("/api/runs", params={"limit": 0})).status_code == 422


async def test_invalid_message_is_422_and_consumes_nothing(client: httpx.AsyncClient) -> None:
    run = await start(client, "review", input={"title": "paper"})
    await wait_status(client, run["id"], "waiting")
    bad = await client.post(
        f"/api/runs/{run['id']}/messages", json={"payload": {"approved": "perhaps"}}
    )
    assert bad.status_code == 422
    (error,) = bad.json()["detail"]
    assert error["loc"] == ["body", "payload"]
    assert error["type"] == "invalid_message"
    assert "does not fit its wait" in error["msg"]
    info = (await client.get(f"/api/runs/{run['id']}")).json()
    assert info["status"] == "waiting"
    good = await client.post(
        f"/api/runs/{run['id']}/messages", json={"payload": {"approved": True, "score": 5}}
    )
    assert good.status_code == 202
    done = await wait_status(client, run["id"], "completed")
    assert done["output"] == {"title": "paper", "approved": True, "score": 5}


async def test_message_to_unknown_or_finished_run(client: httpx.AsyncClient) -> None:
    missing = await client.post("/api/runs/nope/messages", json={"payload": 1})
    assert missing.status_code == 404
    run = await start(client, "counter", input={"steps": 1})
    await wait_status(client, run["id"], "completed")
    finished = await client.post(f"/api/runs/{run['id']}/messages", json={"payload": 1})
    assert finished.status_code == 409
    assert "accepts no more messages" in finished.json()["detail"]


async def test_idempotency_key_delivers_once(client: httpx.AsyncClient) -> None:
    run = await start(client, "approval", input={"topic": "x"})
    first = await client.post(
        f"/api/runs/{run['id']}/messages",
        json={"payload": True},
        headers={"Idempotency-Key": "hook-1"},
    )
    again = await client.post(
        f"/api/runs/{run['id']}/messages", json={"payload": False, "key": "hook-1"}
    )
    assert first.status_code == again.status_code == 202
    assert first.json()["message_id"] == again.json()["message_id"]
    done = await wait_status(client, run["id"], "completed")
    assert done["output"].startswith("published")


async def test_cancel(client: httpx.AsyncClient) -> None:
    run = await start(client, "approval", input={"topic": "x"})
    await wait_status(client, run["id"], "waiting")
    cancelled = await client.post(f"/api/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await client.post(f"/api/runs/{run['id']}/cancel")
    assert again.status_code == 409
    assert "cancelled already" in again.json()["detail"]
    assert (await client.post("/api/runs/nope/cancel")).status_code == 404


async def test_replay_from_checkpoint(client: httpx.AsyncClient) -> None:
    run = await start(client, "counter", input={"steps": 3})
    await wait_status(client, run["id"], "completed")
    replay = await client.post(
        f"/api/runs/{run['id']}/replay", json={"from_checkpoint": 2, "overrides": {"double#2": 10}}
    )
    assert replay.status_code == 201, replay.text
    new = replay.json()
    assert new["replay_of"] == run["id"]
    assert replay.headers["location"].endswith(new["id"])
    done = await wait_status(client, new["id"], "completed")
    assert done["output"] == 0 + 10 + 4
    # No body: replay from the start.
    plain = await client.post(f"/api/runs/{run['id']}/replay")
    assert plain.status_code == 201
    unknown = await client.post(
        f"/api/runs/{run['id']}/replay", json={"from_checkpoint": "nonesuch"}
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["type"] == "replay"
    assert (await client.post("/api/runs/nope/replay", json={})).status_code == 404


async def test_retry_failed_run(client: httpx.AsyncClient) -> None:
    attempts.clear()
    run = await start(client, "fragile", input={"n": 4})
    failed = await wait_status(client, run["id"], "failed")
    assert failed["error"] == "ValueError: first call fails"
    retried = await client.post(f"/api/runs/{run['id']}/retry")
    assert retried.status_code == 200
    done = await wait_status(client, run["id"], "completed")
    assert done["output"] == 8
    not_failed = await client.post(f"/api/runs/{run['id']}/retry")
    assert not_failed.status_code == 409
    assert (await client.post("/api/runs/nope/retry")).status_code == 404


async def test_openapi_document_is_complete(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/api/openapi.json")).json()
    paths = doc["paths"]
    for path in (
        "/api/flows",
        "/api/flows/{name}/runs",
        "/api/flows/approval/runs",
        "/api/flows/review/runs",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/messages",
        "/api/runs/{run_id}/replay",
        "/api/runs/{run_id}/retry",
        "/api/runs/{run_id}/cancel",
        "/api/runs/{run_id}/events",
        "/api/events",
    ):
        assert path in paths, path
    schemas = doc["components"]["schemas"]
    for name in (
        "RunInfo",
        "CheckpointInfo",
        "WaitInfo",
        "MessageIn",
        "MessageAccepted",
        "ReplayIn",
        "RunPage",
        "StartRun",
        "StartReviewRun",
        "ReviewInput",
        "Error",
    ):
        assert name in schemas, name
    # The typed route documents the flow's own arguments.
    review = paths["/api/flows/review/runs"]["post"]
    ref = review["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/StartReviewRun")
    assert schemas["ReviewInput"]["required"] == ["title"]
    messages = paths["/api/runs/{run_id}/messages"]["post"]["responses"]
    assert {"202", "404", "409", "422"} <= set(messages)
    assert "schema" in schemas["WaitInfo"]["properties"]  # by alias, as the API sends it
    events = paths["/api/runs/{run_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
