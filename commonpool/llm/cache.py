"""Our own response cache: a repeated run with the same seed and settings makes no provider call.

One SQLite file per store (<store>/cache/llm.sqlite), shared by every run in it;
WAL mode lets several runs (processes) read and write it at once. The key is a
hash of everything that shapes an answer: model, messages, response schema and
sampling settings. Only answers the provider actually gave are kept (an answer
that later fails validation is still the model's answer); errors never are.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from commonpool.llm.chat import CallRecord, ChatModel, ChatRequest, Reply


def cache_key(request: ChatRequest) -> str:
    material = {
        "model": request.model,
        "messages": request.messages,
        "schema": request.schema,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    if request.structured_output != "auto":  # so the keys of runs made before the setting existed still match
        material["structured_output"] = request.structured_output
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost last answer only costs a repeat call
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, text TEXT, "
            "prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, created REAL)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "finish_reason" not in columns:  # a cache written before finish_reason was kept
            self._db.execute("ALTER TABLE responses ADD COLUMN finish_reason TEXT")
        self._db.commit()

    def get(self, key: str) -> tuple[str, int, int, str | None] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, finish_reason FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else (row[0], int(row[1]), int(row[2]), row[3])

    def put(self, key: str, model: str, reply: Reply) -> None:
        r = reply.record
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, model, text, prompt_tokens, completion_tokens, cost_usd, created, "
                "finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, reply.text, r.prompt_tokens, r.completion_tokens, r.cost_usd, time.time(), r.finish_reason),
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedModel:
    def __init__(self, inner: ChatModel, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache

    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        key = cache_key(request)
        started = time.perf_counter()
        hit = self.cache.get(key)
        if hit is not None:
            text, prompt_tokens, completion_tokens, finish_reason = hit
            record = CallRecord(
                model=request.model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=0.0,  # paid once, by the run that asked first
                latency_ms=(time.perf_counter() - started) * 1000,
                cached=True,
                attempt=attempt,
                finish_reason=finish_reason,
            )
            log.append(record)
            return Reply(text=text, record=record)
        reply = await self.inner.complete(request, log, attempt)
        self.cache.put(key, request.model, reply)
        return reply
