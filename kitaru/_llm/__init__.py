"""``kitaru.llm`` and the durable LLM calls behind it (and behind the PydanticAI adapter). Internal.

- ``_call``: :func:`kitaru.llm` and the call it makes (in flow code, in a
  checkpoint body, outside a flow);
- ``_durable``: the ``llm`` journal entry (:func:`journaled`, on the journal's
  ``durable`` routine) and the unjournaled live calls, shared with the adapter;
- ``_models``: model aliases (``resolve_model``), loading litellm, reading its
  responses;
- ``_structured``: asking for JSON of a type and parsing the answer into it;
- ``_retries``: which provider errors are transient, and retrying them;
- ``_secrets``: keeping API keys out of errors;
- ``_guard``: the guard behind :func:`kitaru.testing.forbid_real_llm_calls`.

Nothing here is imported by ``import kitaru``: ``kitaru.llm`` is resolved on
first use (``kitaru/__init__.py``), and litellm only when a call goes live.
"""
