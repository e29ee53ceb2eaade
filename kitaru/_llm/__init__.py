"""``kitaru.llm`` and the durable LLM calls behind it (and behind the PydanticAI adapter).

Nothing here is imported by ``import kitaru``: ``kitaru.llm`` is resolved on
first use (``kitaru/__init__.py``), and litellm only when a call goes live.
"""
