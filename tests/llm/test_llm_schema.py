"""schema=: answers validated into a type; a bad answer is re-asked, a bounded number of times."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest

import kitaru
from kitaru import flow
from kitaru._llm._structured import ask_for_json
from kitaru.storage.serde import codec_for
from tests.llm.conftest import Script

pytestmark = pytest.mark.anyio


class Verdict(pydantic.BaseModel):
    approved: bool
    notes: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


async def test_answers_parse_into_the_schema() -> None:
    verdict = await kitaru.llm(
        "judge",
        model="gpt-4o-mini",
        schema=Verdict,
        mock_response='```json\n{"approved": true, "notes": "crisp"}\n```',
    )
    assert verdict == Verdict(approved=True, notes="crisp")
    numbers = await kitaru.llm(
        "count", model="gpt-4o-mini", schema=list[int], mock_response='{"value": [1, 2, 3]}'
    )
    assert numbers == [1, 2, 3]
    bare = await kitaru.llm("count", model="gpt-4o-mini", schema=list[int], mock_response="[4]")
    assert bare == [4]
    point = await kitaru.llm(
        "where", model="gpt-4o-mini", schema=Point, mock_response='{"x": 1, "y": 2}'
    )
    assert point == Point(1, 2)


async def test_a_bad_answer_is_sent_back_with_the_error(
    rt: kitaru.Runtime, scripted: Script
) -> None:
    scripted.add("I think yes", '{"approved": "maybe"}', '{"approved": true, "notes": "ok"}')

    @flow
    async def f() -> Verdict:
        return await kitaru.llm("judge", model="scripted/m", schema=Verdict)

    run = await rt.start(f)
    assert await run.result() == Verdict(approved=True, notes="ok")
    assert scripted.count == 3
    second = scripted.calls[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": "I think yes"}
    assert second[-1]["role"] == "user"
    assert "not valid" in second[-1]["content"] and "not JSON" in second[-1]["content"]
    third = scripted.calls[2]["messages"][-1]["content"]
    assert "approved" in third and "notes" in third
    (entry,) = (await run.info()).checkpoints
    assert entry.attempts == 3
    assert len(entry.errors) == 2
    assert entry.metadata["usage"]["input_tokens"] == 21  # every attempt is paid for


async def test_re_asking_is_bounded(rt: kitaru.Runtime, scripted: Script) -> None:
    scripted.add("no", "still no")

    @flow
    async def f() -> Verdict:
        return await kitaru.llm("judge", model="scripted/m", schema=Verdict, schema_retries=1)

    run = await rt.start(f)
    with pytest.raises(kitaru.FlowFailed) as caught:
        await run.result()
    assert caught.value.error_type == "kitaru.SerializationError"
    assert "did not fit Verdict after 2 tries" in caught.value.error
    assert "'still no'" in caught.value.error
    (entry,) = (await run.info()).checkpoints
    assert (entry.status, entry.attempts) == ("failed", 2)


async def test_the_prompt_asks_for_json(scripted: Script) -> None:
    scripted.add('{"approved": false, "notes": "n"}')
    await kitaru.llm("judge", model="scripted/m", schema=Verdict, system="You are strict.")
    system = scripted.calls[0]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are strict.")
    assert "JSON Schema" in system["content"] and '"approved"' in system["content"]


def test_native_structured_output_when_the_model_supports_it() -> None:
    import litellm

    messages = [{"role": "user", "content": "q"}]
    _, params = ask_for_json(litellm, "gpt-4o-mini", messages, {}, codec_for(list[int]))
    spec = params["response_format"]
    assert spec["type"] == "json_schema"
    schema = spec["json_schema"]["schema"]
    assert schema["type"] == "object" and schema["required"] == ["value"]
    given = {"response_format": {"type": "json_object"}}
    _, params = ask_for_json(litellm, "gpt-4o-mini", messages, given, codec_for(Verdict))
    assert params == given  # the caller's choice wins
