"""Calling language models: one small interface and thin layers around the LiteLLM call.

    CachedModel -> LimitedModel -> BudgetModel -> RetryModel -> WorkerModel -> (worker process) LiteLLMModel

(RetryModel -> LiteLLMModel directly when COMMONPOOL_LLM_WORKERS=0; see workers.py.)

Each layer is a ChatModel (chat.py) and can be tested alone against the fake
server in tests/. Nothing in this package imports litellm at import time: a
rules run, or a rerun answered wholly from the cache, never pays its 2-4 s.
"""
