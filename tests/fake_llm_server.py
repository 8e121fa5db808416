"""A local, deterministic, OpenAI-compatible chat-completions server for tests.

Nothing here touches the network beyond 127.0.0.1.  The server speaks just
enough of the OpenAI REST API for ``litellm.acompletion(model="openai/fake-...",
api_base=server.base_url, ...)`` to work:

* ``POST /v1/chat/completions`` (also ``/chat/completions``)
* ``GET  /v1/models`` (also ``/models``)

Usage::

    with FakeLLMServer() as server:
        resp = await litellm.acompletion(
            model="openai/fake-cooperative@200",   # mode + optional latency (ms)
            api_base=server.base_url, api_key="sk-test",
            messages=[...], max_retries=0)
        server.count, server.requests, server.configure(mode="http_500")

Behaviour is chosen per request by the ``model`` field.  LiteLLM strips the
``openai/`` prefix, so ``openai/fake-cooperative@200`` arrives as
``fake-cooperative@200``: mode ``cooperative``, 200 ms latency.  A model named
just ``fake`` (or ``fake@<ms>``, or anything not starting with ``fake``) uses
the server-wide default set by :meth:`FakeLLMServer.configure`, which may be
changed mid-run.

Modes (see ``MODES``):

=================  ==========================================================
cooperative        legal JSON answer (the default)
invalid_json       prose, not JSON at all
fenced_json        the cooperative answer wrapped in a ```json fence
prose_json         a sentence before and after the cooperative JSON
wrong_schema       JSON object missing required keys / with wrong types
unknown_resource   names a resource that is not in ``resources``
negative_qty       a quantity of -1
fractional_qty     a quantity of 1.5
not_owned          gives a resource the speaker holds 0 of (or more than held)
http_429           429 + OpenAI error body + ``Retry-After: 0``
http_500           500 + OpenAI error body
flaky_429          429 for the first ``fail_times`` requests of each distinct
                   prompt (messages), then cooperative
slow               sleeps ``slow_seconds`` (30 s) before answering
http_401           401 authentication error
echo_key           400 whose message contains the Authorization header
no_schema          400 to any request with a ``response_format`` of type
                   json_schema (an older server), else cooperative
no_format          400 to any request with a ``response_format``, else cooperative
echo_example       the example answer the system prompt shows, verbatim
length             the cooperative JSON cut in half, ``finish_reason`` length
=================  ==========================================================

Each request's ``max_tokens`` is kept in ``requests``; ``replies`` holds the
time.monotonic() at which each response was written (for start-up benchmarks).

The prompt contract: the last user message holds a fenced ```json block with
the state (``task`` = ``propose`` | ``reply`` | ``advise``).  If no state can
be found the server answers 400 (``invalid_request_error``) so a broken prompt
fails loudly rather than silently.

Everything is deterministic: the same request body always gives the same
response body (``created`` is a constant, ``id`` is a hash of the body).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLLMServer", "MODES", "ERROR_MODES", "cooperative_answer", "extract_state"]

MODES = (
    "cooperative",
    "invalid_json",
    "fenced_json",
    "prose_json",
    "wrong_schema",
    "unknown_resource",
    "negative_qty",
    "fractional_qty",
    "not_owned",
    "http_429",
    "http_500",
    "flaky_429",
    "slow",
    "http_401",
    "echo_key",
    "no_schema",
    "no_format",
    "echo_example",
    "length",
)
ERROR_MODES = ("http_429", "http_500", "http_401", "echo_key")  # (+ flaky_429 while failing)

CREATED = 1_700_000_000  # constant so responses are byte-for-byte reproducible
UNKNOWN_RESOURCE = "unobtainium"
_MODEL_RE = re.compile(r"^(?:openai/)?fake(?:-(?P<mode>[A-Za-z0-9_]+))?(?:@(?P<latency>\d+(?:\.\d+)?))?$")
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


# --------------------------------------------------------------------------- #
# state parsing
# --------------------------------------------------------------------------- #
def _content_text(content: Any) -> str:
    """Message content may be a string or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def _all_message_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return "".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))


def extract_state(messages: Any) -> dict | None:
    """Return the state dict from the last user message's ```json block (or None)."""
    if not isinstance(messages, list):
        return None
    last_user = None
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            last_user = m
    if last_user is None:
        return None
    text = _content_text(last_user.get("content"))
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)]
    candidates.reverse()  # prefer the last fenced block
    candidates.append(text)
    for cand in candidates:
        try:
            obj = json.loads(cand.strip())
        except ValueError:
            continue
        if isinstance(obj, dict) and "task" in obj:
            return obj
    return None


# --------------------------------------------------------------------------- #
# the cooperative trader
# --------------------------------------------------------------------------- #
def _ints(d: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[str(k)] = int(v)
    return out


def _resources(state: dict, *holders: dict) -> list[str]:
    res = state.get("resources")
    if isinstance(res, list) and res:
        return [str(r) for r in res]
    names: list[str] = []
    for h in holders:
        for k in h:
            if k not in names:
                names.append(k)
    return sorted(names)


def _best_pair(
    resources: list[str],
    my_hold: dict[str, int],
    my_need: dict[str, int],
    partner_hold: dict[str, int],
    partner_need: dict[str, int] | None = None,
) -> tuple[str, str] | None:
    """Pick (give, receive): give what I hold most beyond needs, ask what I need most.

    Only legal pairs are considered: I hold >= 1 of give, partner holds >= 1 of
    receive, and they differ.  Ties break by order in ``resources``.
    """
    idx = {r: i for i, r in enumerate(resources)}
    partner_need = partner_need or {}
    best = None
    best_key = None
    for g in resources:
        if my_hold.get(g, 0) < 1:
            continue
        for a in resources:
            if a == g or partner_hold.get(a, 0) < 1:
                continue
            key = (
                my_hold.get(g, 0) - my_need.get(g, 0),  # surplus of what I give
                max(my_need.get(a, 0) - my_hold.get(a, 0), 0),  # how much I need what I ask
                max(partner_need.get(g, 0) - partner_hold.get(g, 0), 0),  # partner needs what I give
                -my_hold.get(a, 0),  # otherwise: what I hold least
                -idx[g],
                -idx[a],
            )
            if best_key is None or key > best_key:
                best_key, best = key, (g, a)
    return best


def _leg(resource: str, quantity: Any) -> dict:
    return {"resource": resource, "quantity": quantity}


def _legal_leg(leg: Any, holdings: dict[str, int], resources: list[str]) -> bool:
    return (
        isinstance(leg, dict)
        and leg.get("resource") in resources
        and isinstance(leg.get("quantity"), int)
        and not isinstance(leg.get("quantity"), bool)
        and 1 <= leg["quantity"] <= holdings.get(leg["resource"], 0)
    )


def _role(state: dict) -> str:
    role = state.get("role")
    if role in ("initiator", "responder"):
        return role
    return "initiator" if state.get("task") == "propose" else "responder"


def _proposal(state: dict) -> tuple[dict, dict] | None:
    """(give, receive) legs for a legal proposal by 'me', or None if impossible."""
    me = state.get("me") or {}
    partner = state.get("partner") or {}
    my_hold, my_need = _ints(me.get("holdings")), _ints(me.get("needs"))
    p_hold, p_need = _ints(partner.get("holdings")), _ints(partner.get("needs"))
    resources = _resources(state, my_hold, p_hold)
    advice = state.get("advice")
    if isinstance(advice, dict):
        ig, rg = advice.get("initiator_gives"), advice.get("responder_gives")
        give, receive = (ig, rg) if _role(state) == "initiator" else (rg, ig)
        if (
            _legal_leg(give, my_hold, resources)
            and _legal_leg(receive, p_hold, resources)
            and give["resource"] != receive["resource"]
        ):
            return _leg(give["resource"], give["quantity"]), _leg(receive["resource"], receive["quantity"])
    pair = _best_pair(resources, my_hold, my_need, p_hold, p_need)
    if pair is None:
        return None
    return _leg(pair[0], 1), _leg(pair[1], 1)


def _proposal_message(action: str, give: dict, receive: dict) -> str:
    verb = "How about" if action == "propose" else "Instead, how about"
    return (
        f"{verb} I give you {give['quantity']} {give['resource']} "
        f"for {receive['quantity']} {receive['resource']}?"
    )


def _valuations(resources: list[str], *agents: dict) -> dict[str, float]:
    vals = {}
    for r in resources:
        need = sum(_ints(a.get("needs")).get(r, 0) for a in agents)
        held = sum(_ints(a.get("holdings")).get(r, 0) for a in agents)
        vals[r] = round(1.0 + max(need, 0) / (1.0 + max(held, 0)), 3)
    return vals


def cooperative_answer(state: dict) -> dict:
    """The cooperative trader's answer (a JSON-able dict) for a state dict."""
    task = state.get("task")
    if task == "advise":
        ini, resp = state.get("initiator") or {}, state.get("responder") or {}
        i_hold, r_hold = _ints(ini.get("holdings")), _ints(resp.get("holdings"))
        resources = _resources(state, i_hold, r_hold)
        pair = _best_pair(resources, i_hold, _ints(ini.get("needs")), r_hold, _ints(resp.get("needs")))
        out: dict[str, Any] = {"valuations": _valuations(resources, ini, resp)}
        if pair is None:
            out.update(initiator_gives=None, responder_gives=None, note="No legal swap exists between these two.")
        else:
            out.update(
                initiator_gives=_leg(pair[0], 1),
                responder_gives=_leg(pair[1], 1),
                note=f"A one-for-one swap of {pair[0]} for {pair[1]} helps both sides.",
            )
        return out

    if task == "reply":
        me = state.get("me") or {}
        my_hold, my_need = _ints(me.get("holdings")), _ints(me.get("needs"))
        offer = state.get("offer") or {}
        you_give, you_recv = offer.get("you_give") or {}, offer.get("you_receive") or {}
        g_res, g_q = you_give.get("resource"), you_give.get("quantity")
        r_res, r_q = you_recv.get("resource"), you_recv.get("quantity")
        legal = state.get("legal_actions") or ["accept", "reject", "counter"]
        can_pay = isinstance(g_q, int) and isinstance(r_q, int) and 1 <= g_q <= my_hold.get(str(g_res), 0) and r_q >= 1
        wanted = my_hold.get(str(r_res), 0) < my_need.get(str(r_res), 0)
        if "accept" in legal and can_pay and (wanted or r_q >= g_q):
            return {"action": "accept", "message": f"Deal: {g_q} {g_res} for {r_q} {r_res} works for me."}
        if "counter" in legal:
            prop = _proposal(state)
            if prop is not None:
                give, receive = prop
                return {
                    "action": "counter",
                    "give": give,
                    "receive": receive,
                    "message": _proposal_message("counter", give, receive),
                }
        return {"action": "reject", "message": "Sorry, that trade does not work for me."}

    # "propose" (and anything unknown is treated as a proposal request)
    prop = _proposal(state)
    if prop is None:
        return {"action": "reject", "message": "I have nothing I can offer you right now."}
    give, receive = prop
    return {"action": "propose", "give": give, "receive": receive, "message": _proposal_message("propose", give, receive)}


# --------------------------------------------------------------------------- #
# faulty content modes
# --------------------------------------------------------------------------- #
def _forced_offer(state: dict) -> tuple[dict, str, str, dict[str, int], list[str]]:
    """A proposal-shaped answer to mutate, plus (give key, receive key, giver holdings, resources)."""
    task = state.get("task")
    if task == "advise":
        ans = cooperative_answer(state)
        giver = _ints((state.get("initiator") or {}).get("holdings"))
        other = _ints((state.get("responder") or {}).get("holdings"))
        gk, rk = "initiator_gives", "responder_gives"
    else:
        ans = cooperative_answer(state)
        if task == "reply" and ans.get("action") != "counter":
            prop = _proposal(state)
            ans = {"action": "counter", "message": "Let me counter."}
            if prop is not None:
                ans["give"], ans["receive"] = prop
        elif ans.get("action") not in ("propose", "counter"):
            ans = {"action": "propose", "message": "Let me propose."}
        giver = _ints((state.get("me") or {}).get("holdings"))
        other = _ints((state.get("partner") or {}).get("holdings"))
        gk, rk = "give", "receive"
    resources = _resources(state, giver, other)
    if not isinstance(ans.get(gk), dict) or not isinstance(ans.get(rk), dict):
        r0 = resources[0] if resources else "wood"
        r1 = resources[1] if len(resources) > 1 else r0
        ans[gk], ans[rk] = _leg(r0, 1), _leg(r1, 1)
    return ans, gk, rk, giver, resources


def faulty_answer(mode: str, state: dict) -> str:
    """Assistant message *content* (a string) for a content-fault mode."""
    coop = json.dumps(cooperative_answer(state))
    if mode == "invalid_json":
        return "Sure! I think we should trade a little of what I have for some of what you have. Deal?"
    if mode == "fenced_json":
        return "```json\n" + json.dumps(cooperative_answer(state), indent=2) + "\n```"
    if mode == "prose_json":
        return "Here is my decision: " + coop + " Let me know what you think."
    if mode == "wrong_schema":
        if state.get("task") == "advise":
            return json.dumps({"valuation": "high", "initiator_gives": "some wood"})
        return json.dumps({"act": "trade", "give": "wood", "receive": {"resource": 7, "quantity": "one"}})

    ans, gk, rk, giver, resources = _forced_offer(state)
    if mode == "unknown_resource":
        bad = UNKNOWN_RESOURCE
        while bad in resources:
            bad += "_x"
        ans[rk] = _leg(bad, 1)
    elif mode == "negative_qty":
        ans[gk] = _leg(ans[gk]["resource"], -1)
    elif mode == "fractional_qty":
        ans[gk] = _leg(ans[gk]["resource"], 1.5)
    elif mode == "not_owned":
        zero = [r for r in resources if giver.get(r, 0) <= 0 and r != ans[rk]["resource"]]
        if zero:
            ans[gk] = _leg(zero[0], 1)
        else:
            r = ans[gk]["resource"]
            ans[gk] = _leg(r, giver.get(r, 0) + 1)
    else:  # pragma: no cover - guarded by caller
        raise ValueError(mode)
    if "message" in ans and gk == "give":
        ans["message"] = "Here is my offer."
    return json.dumps(ans)


def _example(messages: Any) -> str:
    """The system prompt's example answer (its last line that is a JSON object), as a weak model parrots it."""
    system = next((m for m in messages if isinstance(m, dict) and m.get("role") == "system"), {}) if isinstance(messages, list) else {}
    lines = [line.strip() for line in _content_text(system.get("content")).splitlines()]
    return next((line for line in reversed(lines) if line.startswith("{") and line.endswith("}")), "{}")


# --------------------------------------------------------------------------- #
# the HTTP server
# --------------------------------------------------------------------------- #
def _err(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def handle_one_request(self) -> None:
        # A client that timed out / went away must not print tracebacks to stderr.
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    # -- helpers -------------------------------------------------------------
    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.server.fake._replied()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # client gave up (e.g. timeout)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- routes --------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            data = [{"id": "fake", "object": "model", "created": CREATED, "owned_by": "fake"}]
            data += [{"id": f"fake-{m}", "object": "model", "created": CREATED, "owned_by": "fake"} for m in MODES]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, _err(f"Unknown path {path}", "invalid_request_error", "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        raw = self._read_body()
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _err(f"Unknown path {path}", "invalid_request_error", "not_found"))
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            self._send_json(400, _err(f"Could not parse JSON body: {exc}", "invalid_request_error", None))
            return
        fake: FakeLLMServer = self.server.fake
        headers = {k.lower(): v for k, v in self.headers.items()}  # lower-cased names
        fake._record(body, headers)
        status, payload, extra_headers = fake._respond(body, headers)
        self._send_json(status, payload, extra_headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # slow handlers never block shutdown
    allow_reuse_address = True
    request_queue_size = 256  # default backlog of 5 would stall bursts of connections
    fake: "FakeLLMServer"


class FakeLLMServer:
    """Deterministic OpenAI-compatible chat server on 127.0.0.1 (see module docstring).

    Attributes/API:
      start() -> self, stop(), context manager (``with FakeLLMServer() as s``)
      base_url      "http://127.0.0.1:PORT/v1"  (port, host also available)
      requests      list of received chat-completion request bodies (dicts), copy
      headers       list of the matching request headers (dicts, lower-case names)
      count         number of chat-completion requests received
      arrivals      time.monotonic() at which each request (in ``requests``) arrived
      configure(mode=, latency_ms=, fail_times=, slow_seconds=)  server-wide default
      reset()       forget requests/count/flaky counters and restore default config
    """

    def __init__(
        self,
        mode: str = "cooperative",
        latency_ms: float = 0,
        fail_times: int = 1,
        slow_seconds: float = 30.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[dict] = []
        self._headers: list[dict] = []
        self._arrivals: list[float] = []  # time.monotonic() of each request, parallel to _requests
        self._replies: list[float] = []  # time.monotonic() at which each response was written
        self._count = 0
        self._flaky_seen: dict[str, int] = {}
        self._defaults = dict(mode=mode, latency_ms=latency_ms, fail_times=fail_times, slow_seconds=slow_seconds)
        self._validate_mode(mode)
        self._mode, self._latency_ms, self._fail_times, self._slow_seconds = mode, latency_ms, fail_times, slow_seconds

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "FakeLLMServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _Server((self.host, 0), _Handler)  # port 0: the OS picks a free port
        httpd.fake = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"FakeLLMServer:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wake sleeping 'slow'/latency handlers
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeLLMServer not started")
        return f"http://{self.host}:{self.port}/v1"

    # -- configuration / inspection --------------------------------------------
    @staticmethod
    def _validate_mode(mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fake mode {mode!r}; choose from {MODES}")

    def configure(
        self,
        mode: str | None = None,
        latency_ms: float | None = None,
        fail_times: int | None = None,
        slow_seconds: float | None = None,
    ) -> None:
        """Change the server-wide default (used for model 'fake' / 'fake@ms'). Safe mid-run."""
        with self._lock:
            if mode is not None:
                self._validate_mode(mode)
                self._mode = mode
            if latency_ms is not None:
                self._latency_ms = latency_ms
            if fail_times is not None:
                self._fail_times = fail_times
            if slow_seconds is not None:
                self._slow_seconds = slow_seconds

    def reset(self) -> None:
        """Clear recorded requests, count and flaky counters; restore constructor config."""
        with self._lock:
            self._requests.clear()
            self._arrivals.clear()
            self._replies.clear()
            self._headers.clear()
            self._count = 0
            self._flaky_seen.clear()
            d = self._defaults
            self._mode, self._latency_ms = d["mode"], d["latency_ms"]
            self._fail_times, self._slow_seconds = d["fail_times"], d["slow_seconds"]

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    @property
    def arrivals(self) -> list[float]:
        with self._lock:
            return list(self._arrivals)

    @property
    def replies(self) -> list[float]:
        with self._lock:
            return list(self._replies)

    def _replied(self) -> None:
        with self._lock:
            self._replies.append(time.monotonic())

    @property
    def headers(self) -> list[dict]:
        with self._lock:
            return list(self._headers)

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    @property
    def mode(self) -> str:
        return self._mode

    # -- request handling (called from handler threads) --------------------------
    def _record(self, body: dict, headers: dict) -> None:
        with self._lock:
            self._requests.append(body)
            self._headers.append(headers)
            self._arrivals.append(time.monotonic())
            self._count += 1

    def _resolve(self, model: Any) -> tuple[str | None, float]:
        with self._lock:
            mode, latency = self._mode, float(self._latency_ms)
        m = _MODEL_RE.match(model) if isinstance(model, str) else None
        if m:
            if m.group("mode"):
                mode = m.group("mode")
            if m.group("latency") is not None:
                latency = float(m.group("latency"))
        if mode not in MODES:
            return None, latency
        return mode, latency

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _respond(self, body: dict, headers: dict) -> tuple[int, dict, dict[str, str]]:
        model = body.get("model")
        mode, latency_ms = self._resolve(model)
        self._sleep(latency_ms / 1000.0)
        if mode is None:
            return 404, _err(f"The model `{model}` does not exist (unknown fake mode).", "invalid_request_error", "model_not_found", "model"), {}
        if body.get("stream"):
            return 400, _err("The fake server does not support stream=True.", "invalid_request_error", None, "stream"), {}

        if mode == "http_429":
            return 429, self._rate_limit_error(model), {"Retry-After": "0"}
        if mode == "http_500":
            return 500, _err("The server had an error while processing your request. Sorry about that!", "server_error", None), {}
        if mode == "http_401":
            return 401, _err("Incorrect API key provided. You can find your API key at https://example.invalid/keys.", "invalid_request_error", "invalid_api_key"), {}
        if mode == "echo_key":
            auth = headers.get("authorization") or "<none>"
            return 400, _err(f"Invalid request; the Authorization header was: {auth}", "invalid_request_error", None), {}
        response_format = body.get("response_format")
        if mode == "no_format" and response_format is not None:
            return 400, _err("response_format is not supported by this server", "invalid_request_error", None, "response_format"), {}
        if mode == "no_schema" and isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            return 400, _err("'response_format.type' must be 'json_object' or 'text'", "invalid_request_error", None, "response_format"), {}
        if mode == "flaky_429":
            key = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()
            with self._lock:
                seen = self._flaky_seen.get(key, 0)
                self._flaky_seen[key] = seen + 1
                fail_times = self._fail_times
            if seen < fail_times:
                return 429, self._rate_limit_error(model), {"Retry-After": "0"}
        if mode == "slow":
            with self._lock:
                slow = self._slow_seconds
            self._sleep(slow)

        messages = body.get("messages")
        state = extract_state(messages)
        if state is None:
            return 400, _err("Fake server: no ```json state block with a 'task' key in the last user message.", "invalid_request_error", None, "messages"), {}
        finish_reason = "stop"
        if mode in ("cooperative", "flaky_429", "slow", "no_schema", "no_format"):
            content = json.dumps(cooperative_answer(state))
        elif mode == "echo_example":
            content = _example(messages)
        elif mode == "length":
            whole = json.dumps(cooperative_answer(state))
            content, finish_reason = whole[: len(whole) // 2], "length"
        else:
            content = faulty_answer(mode, state)
        return 200, self._completion(body, content, finish_reason), {}

    @staticmethod
    def _rate_limit_error(model: Any) -> dict:
        return _err(
            f"Rate limit reached for {model} on requests per min (RPM): Limit 1, Used 1, Requested 1. Please try again in 0s.",
            "requests",
            "rate_limit_exceeded",
        )

    @staticmethod
    def _completion(body: dict, content: str, finish_reason: str = "stop") -> dict:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
        prompt_tokens = len(_all_message_text(body.get("messages"))) // 4
        completion_tokens = len(content) // 4
        return {
            "id": f"chatcmpl-fake{digest}",
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model"),
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for 'connection refused' tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
