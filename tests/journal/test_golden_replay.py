"""Committed journals replay against today's code: a guard on replay semantics.

Each file under ``tests/journal/journals/`` is a run recorded by an earlier version.
Replaying it must return recorded results without running any checkpoint
body, re-raise recorded failures with their original type, never repeat a
recorded send, and finish. A change that breaks this breaks every user's
in-flight runs on upgrade.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest

import kitaru
from kitaru import checkpoint, flow
from kitaru.storage import JournalEntry, RunRecord
from kitaru.storage.memory import MemoryStore
from kitaru.storage.serde import dumps_plain

pytestmark = pytest.mark.anyio

JOURNALS = Path(__file__).parent / "journals"


class Draft(pydantic.BaseModel):
    title: str
    words: int


def must_not_run(*_: Any) -> Any:
    raise AssertionError("a recorded checkpoint ran again")


@checkpoint
def research(topic: str) -> list[str]:
    return must_not_run(topic)  # type: ignore[no-any-return]


@checkpoint
async def draft(facts: list[str]) -> Draft:
    return must_not_run(facts)  # type: ignore[no-any-return]


@checkpoint
def lookup(role: str) -> str:
    return must_not_run(role)  # type: ignore[no-any-return]


@flow(name="golden_approval")
async def golden_approval(topic: str) -> str:
    facts = await research(topic)
    text = await draft(facts)
    try:
        editor = await lookup("editor")
    except KeyError:
        editor = "editor missing"
    await kitaru.send("golden-inbox", f"{text.title} ready", topic="notifications")
    ok = await kitaru.wait(bool, question="Approve?")
    verdict = "approved" if ok else "rejected"
    return f"{text.title} ({text.words} words) {verdict}; {editor}"


@flow(name="golden_inbox")
async def golden_inbox() -> None:
    await kitaru.wait(str, topic="never")


async def seed(store_name: str, data: dict[str, Any]) -> None:
    store = MemoryStore(f"memory://{store_name}")
    now = time.time()
    run = data["run"]
    await store.create_run(
        RunRecord(
            id=run["id"],
            flow=run["flow"],
            status=run["status"],
            created_at=now,
            updated_at=now,
            input=json.dumps(run["input"]).encode(),
            wait=dumps_plain(data["wait"]) if data.get("wait") else None,
            wait_topics="input" if data.get("wait") else None,
        )
    )
    await store.create_run(
        RunRecord(
            id="golden-inbox",
            flow="golden_inbox",
            status="waiting",
            created_at=now,
            updated_at=now,
            input=b"{}",
        )
    )
    entries = [
        JournalEntry(
            run_id=run["id"],
            position=e["position"],
            name=e["name"],
            kind=e["kind"],
            status=e["status"],
            attempts=1,
            started_at=now,
            duration_s=0.0,
            value=json.dumps(e["value"]).encode() if "value" in e else None,
            error=dumps_plain(e["error"]) if "error" in e else None,
            metadata=dumps_plain(e["metadata"]) if "metadata" in e else None,
        )
        for e in data["journal"]
    ]
    await store.record(entries)
    await store.aclose()


@pytest.mark.parametrize("path", sorted(JOURNALS.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_journal_replays(path: Path, evict_mode: dict[str, Any]) -> None:
    data = json.loads(path.read_text())
    name = f"golden-{path.stem}-{len(evict_mode)}"
    await seed(name, data)
    run_id = data["run"]["id"]
    async with kitaru.runtime(
        store=f"memory://{name}", flows=[golden_approval, golden_inbox], **evict_mode
    ) as rt:
        await rt.send(run_id, data["answer"])
        with anyio.fail_after(5):
            assert await rt.result(run_id) == data["output"]
        info = await rt.get_run(run_id)
        # Nothing was re-sent: the inbox holds no second notification.
        assert await rt.store.next_message("golden-inbox", "notifications") is None
        assert [c.position for c in info.checkpoints] == [0, 1, 2, 3, 4]
