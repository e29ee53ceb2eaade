"""A support desk service: one durable approval agent per ticket, answered by a webhook.

``POST /tickets`` starts an agent that drafts a reply and waits (for days if need
be) until a person approves it; the approval arrives as a webhook on the
kitaru API mounted at ``/kitaru``. Serve it (state lives in ./.kitaru/):

    python examples/fastapi_app.py serve            # http://127.0.0.1:8000

Then, from another terminal:

    curl -s -X POST localhost:8000/tickets -H 'Content-Type: application/json' \\
         -d '{"id": 42, "customer": "Ada", "text": "My invoice is wrong"}'
    curl -s localhost:8000/kitaru/runs/ticket-42                 # status, pending question
    curl -N localhost:8000/kitaru/runs/ticket-42/events          # live events (Ctrl-C to stop)
    curl -s -X POST localhost:8000/kitaru/runs/ticket-42/messages \\
         -H 'Content-Type: application/json' -d '{"payload": {"approved": true}}'

An answer that does not fit the question's schema (``{"payload": "yes"}``) is
refused with 422 and consumed nothing. Stop the service while a ticket waits and
start it again: the agent is not redone, and an approval sent meanwhile by any
process sharing the store is delivered. To watch and answer from a browser, run
``kitaru serve --port 8001`` in the same folder.

``python examples/fastapi_app.py`` alone plays the whole story on a free port.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import anyio
import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

import kitaru
from kitaru import checkpoint, flow
from kitaru.integrations.fastapi import RuntimeDep, lifespan, router


class Ticket(BaseModel):
    id: int
    customer: str
    text: str


class Decision(BaseModel):
    approved: bool
    #: Replaces the drafted reply when given.
    edited_reply: str | None = None


@checkpoint
async def draft_reply(ticket: Ticket) -> str:
    """Stands in for an LLM call (recorded once, never repeated on replay)."""
    return f"Hello {ticket.customer}, sorry about that: we are looking into '{ticket.text}'."


@checkpoint
def send_reply(ticket_id: int, reply: str) -> str:
    """A side effect that must happen exactly once."""
    return f"sent reply to ticket {ticket_id} ({len(reply)} characters)"


@flow
async def support_reply(ticket: Ticket) -> str:
    """Draft a reply to a ticket, wait for a person's approval, then send it."""
    reply = await draft_reply(ticket)
    try:
        decision = await kitaru.wait(
            schema=Decision,
            question=f"Send this reply to {ticket.customer}?\n\n{reply}",
            timeout=dt.timedelta(days=2),
        )
    except kitaru.WaitTimeout:
        return "escalated: nobody approved the reply within two days"
    if not decision.approved:
        return "discarded"
    return await send_reply(ticket.id, decision.edited_reply or reply)


app = FastAPI(title="support desk", lifespan=lifespan(flows=[support_reply]))
app.include_router(router(flows=[support_reply]), prefix="/kitaru")


@app.post("/tickets", status_code=202)
async def open_ticket(ticket: Ticket, rt: RuntimeDep) -> dict[str, str]:
    """Start the ticket's agent; posting the same ticket twice starts it once."""
    run = await rt.start(support_reply, ticket, run_id=f"ticket-{ticket.id}")
    return {
        "run_id": run.id,
        "status": f"/kitaru/runs/{run.id}",
        "events": f"/kitaru/runs/{run.id}/events",
        "approve": f"/kitaru/runs/{run.id}/messages",
    }


async def demo() -> None:
    """Serve on a free loopback port and play a client: ticket, events, webhook."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, ws="none", log_level="warning")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ticket = {"id": 42, "customer": "Ada", "text": "My invoice is wrong"}
            links = (await client.post("/tickets", json=ticket)).json()
            print(f"POST /tickets -> run {links['run_id']}")
            async with client.stream("GET", links["events"]) as events:
                async for event in _events(events):
                    print(f"  event {event['event']}: {_brief(event['data'])}")
                    if event["event"] == "wait":
                        wrong = await client.post(links["approve"], json={"payload": "yes"})
                        print(f"POST {links['approve']} 'yes' -> {wrong.status_code}")
                        answer = {"payload": {"approved": True}}
                        right = await client.post(links["approve"], json=answer)
                        print(f"POST {links['approve']} {answer['payload']} -> {right.status_code}")
            info = (await client.get(links["status"])).json()
            print(f"run {info['id']} {info['status']}: {info['output']}")
        server.should_exit = True


async def _events(response: httpx.Response) -> Any:
    """Server-sent events of a streaming response, as dicts."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event["event"] = line[7:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif not line and "event" in event:
            yield event
            event = {}


def _brief(data: dict[str, Any]) -> str:
    if "status" in data and "name" not in data:
        return data["status"]
    if "question" in data:
        return data["question"].splitlines()[0]
    return f"{data.get('kind')} {data.get('name')} {data.get('status')}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
        # Event streams stay open until the client leaves: close them 3 s after Ctrl-C.
        uvicorn.run(app, host="127.0.0.1", port=port, timeout_graceful_shutdown=3)
    else:
        anyio.run(demo)
