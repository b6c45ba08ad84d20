"""What real clients send, through the official `openai` client: one case per kind of request, each followed by
a one-token completion that proves the engine still serves.

Shared by the tests against a real vLLM on loopback (tests/vllm_cpu) and through the deployed gateway
(tests/e2e/test_gateway.py). The tiny model is random, so the cases check the shape of each answer and the
promises the API makes (n choices, the stop string cut, the same seed giving the same text, the echoed prompt,
the schema a structured output obeys, a usage chunk at the end of a stream), never what the text says.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable

import openai

from plan.recipes import PROBE_TOOL, tool_call_request

PROMPT = "def main("
TOOL_PROMPT = "Call the tool now please."  # the lab's verify prompt (tests/e2e/test_bootstrap.py)
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Lima"]}},
                   "required": ["city"], "additionalProperties": False}}}
# Closed and small: a random model can only fill it with one of a few tokens, so it ends well within max_tokens.
VERDICT_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                  "additionalProperties": False}


def still_serves(client: openai.OpenAI, model: str) -> None:
    """One token, as the watchdog asks: an engine that died on the previous request fails here."""
    answer = client.completions.create(model=model, prompt="Hi", max_tokens=1, temperature=0)
    assert answer.choices and answer.choices[0].text is not None


def completions_n_stop_seed(client: openai.OpenAI, model: str) -> None:
    many = client.completions.create(model=model, prompt=PROMPT, max_tokens=6, n=3, stop=["\n", ")"], seed=7,
                                     temperature=1.0)
    assert sorted(c.index for c in many.choices) == [0, 1, 2]
    assert all("\n" not in c.text and ")" not in c.text for c in many.choices), many.choices
    again = client.completions.create(model=model, prompt=PROMPT, max_tokens=6, n=3, stop=["\n", ")"], seed=7,
                                      temperature=1.0)
    assert [c.text for c in again.choices] == [c.text for c in many.choices], "the same seed, the same texts"


def completions_echo_logprobs(client: openai.OpenAI, model: str) -> None:
    # The request that made torch compile a helper on CPU hosts and killed the engine without a C++ compiler.
    answer = client.completions.create(model=model, prompt=PROMPT, max_tokens=3, echo=True, logprobs=2)
    choice = answer.choices[0]
    assert choice.text.startswith(PROMPT), choice.text
    assert choice.logprobs is not None and len(choice.logprobs.tokens) == len(choice.logprobs.top_logprobs)
    assert all(len(top) <= 3 for top in choice.logprobs.top_logprobs[1:] if top), choice.logprobs.top_logprobs


def chat_stream_with_usage(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}],
                                                 max_tokens=5, stream=True, stream_options={"include_usage": True}))
    assert chunks and chunks[-1].usage is not None, "the last chunk carries the usage"
    assert chunks[-1].usage.completion_tokens == 5 or any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert any(c.choices and c.choices[0].delta.content for c in chunks), "tokens arrive as deltas"


def chat_logprobs(client: openai.OpenAI, model: str) -> None:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=4, logprobs=True, top_logprobs=2)
    content = answer.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 for t in content), content


def chat_json_schema(client: openai.OpenAI, model: str) -> None:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}], max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA}})
    choice = answer.choices[0]
    # A random model fills the whitespace JSON allows between tokens, so the object may not close within
    # max_tokens; what it wrote is still held to the schema: without the whitespace, a prefix of one of the only
    # two objects the schema admits (an unconstrained random model writes anything at all).
    content = choice.message.content or ""
    compact = "".join(content.split())
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(content)["ok"], bool), content
    else:
        assert choice.finish_reason == "length", choice.finish_reason
        assert compact and any(f'{{"ok":{v}}}'.startswith(compact) for v in ("true", "false")), repr(content)


def chat_tool_call(client: openai.OpenAI, model: str) -> None:
    """A named tool, as the deploy's verify sends it (plan.recipes.tool_call_request: the arguments unpinned, so
    the random model closes the call for this prompt at temperature 0), read back into `tool_calls`."""
    request = tool_call_request(model, TOOL_PROMPT)
    answer = client.chat.completions.create(**request)
    calls = answer.choices[0].message.tool_calls
    assert calls and calls[0].function.name == PROBE_TOOL, answer.choices[0]
    assert isinstance(json.loads(calls[0].function.arguments), dict), calls[0].function.arguments


def chat_tool_call_without_parser(client: openai.OpenAI, model: str) -> None:
    """An instance whose model has no tool-call parser refuses a tool call with a 400 that says why."""
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Call the tool now please."}], max_tokens=40,
            tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    except openai.BadRequestError as error:
        assert "tool-call-parser" in str(error), error
        return
    raise AssertionError("a tool call without a tool-call parser was not refused")


def responses_api(client: openai.OpenAI, model: str) -> None:
    answer = client.responses.create(model=model, input="Hello", max_output_tokens=8)
    assert answer.status in ("completed", "incomplete") and answer.output, answer
    assert answer.usage is not None and answer.usage.output_tokens > 0


CASES: tuple[Callable[[openai.OpenAI, str], None], ...] = (
    completions_n_stop_seed, completions_echo_logprobs, chat_stream_with_usage, chat_logprobs, chat_json_schema,
    responses_api)


def run_conformance(client: openai.OpenAI, model: str, tool_parser: bool) -> list[str]:
    """Every case, each followed by a one-token completion; the names of the cases that failed, with why.

    `tool_parser`: the instance runs with a tool-call parser (a real tool call), else it must refuse one.
    """
    failed = []
    assert [m.id for m in client.models.list().data].count(model) == 1
    for case in (*CASES, chat_tool_call if tool_parser else chat_tool_call_without_parser):
        try:
            case(client, model)
        except (AssertionError, openai.OpenAIError, ValueError, KeyError, TypeError) as error:
            failed.append(f"{case.__name__}: {type(error).__name__}: {error}")
        try:
            still_serves(client, model)
        except openai.OpenAIError as error:
            failed.append(f"after {case.__name__} the engine no longer serves: {type(error).__name__}: {error}")
            break
    return failed


# FastAPI's own pages, which /openapi.json does not list about itself.
DOC_ROUTES = (("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"))
OPEN_ROUTES = {("GET", "/health")}
# vLLM's own --api-key leaves these open; each must be among the routes the server lists (the list is real).
KNOWN_UNGUARDED = {("POST", "/invocations"), ("POST", "/tokenize"), ("GET", "/metrics"), ("GET", "/load")}


def ask(connect: Callable[[], http.client.HTTPConnection], method: str, path: str, key: str | None,
            body: bytes | None = None) -> tuple[int, bytes]:
    conn = connect()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def server_routes(connect: Callable[[], http.client.HTTPConnection], key: str) -> list[tuple[str, str]]:
    """(method, path) of every route the running vLLM lists in its /openapi.json (path parameters filled), and
    the docs pages."""
    status, raw = ask(connect, "GET", "/openapi.json", key)
    assert status == 200, f"/openapi.json with the key: HTTP {status}"
    spec = json.loads(raw)
    routes = [(method.upper(), re.sub(r"\{[^}]+\}", "x", path))
              for path, methods in spec["paths"].items() for method in methods]
    assert KNOWN_UNGUARDED <= set(routes), f"this vLLM lists other routes than expected: {routes}"
    return routes + list(DOC_ROUTES)


def unguarded_routes(connect: Callable[[], http.client.HTTPConnection], key: str,
                     routes: list[tuple[str, str]] | None = None,
                     open_routes: frozenset[tuple[str, str]] | set[tuple[str, str]] = OPEN_ROUTES) -> dict[str, int]:
    """Each route asked without a key, with a wrong key and with the key plus one character: every answer but
    401 (and a 401 from one of `open_routes`) is returned as `"METHOD path key=...": status`. Empty means all
    are guarded. An instance keeps /health open; the gateway proxies no /health and opens nothing."""
    body = json.dumps({"model": "tiny", "prompt": "Hi", "max_tokens": 1}).encode()
    answered = {}
    for method, path in routes or server_routes(connect, key):
        for wrong in (None, "sk-wrong-0123456789", f"{key}x"):
            status, _ = ask(connect, method, path, wrong, body if method == "POST" else None)
            if (status == 401) == ((method, path) in open_routes):
                answered[f"{method} {path} key={'<key>x' if wrong and wrong.startswith(key) else wrong!r}"] = status
    return answered


def metric(connect: Callable[[], http.client.HTTPConnection], key: str, name: str) -> float:
    """A metric (counter or gauge) of the server's own /metrics, summed over its labels."""
    status, raw = ask(connect, "GET", "/metrics", key)
    assert status == 200, f"/metrics with the key: HTTP {status}"
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+]+)$", re.MULTILINE)
    values = [float(m.group(2)) for m in pattern.finditer(raw.decode())]
    assert values, f"{name} not in /metrics"
    return sum(values)


def bad_requests(connect: Callable[[], http.client.HTTPConnection], key: str, model: str) -> dict[str, int]:
    """A prompt over the served max_model_len, an absurd and a negative max_tokens, a cut-off JSON body: each must
    get a 400. Returns every answer that was not (empty: all were), after checking the engine still serves."""
    status, raw = ask(connect, "GET", "/v1/models", key)
    assert status == 200, f"/v1/models with the key: HTTP {status}"
    max_model_len = next(m["max_model_len"] for m in json.loads(raw)["data"] if m["id"] == model)

    def post(path: str, payload: dict | bytes) -> int:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return ask(connect, "POST", path, key, body)[0]

    chat = [{"role": "user", "content": "Hi"}]
    answers = {
        "prompt over max_model_len": post("/v1/completions", {"model": model, "max_tokens": 4,
                                                             "prompt": " ".join(["word"] * (3 * max_model_len))}),
        "max_tokens 10**9": post("/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 10**9}),
        "chat max_tokens -1": post("/v1/chat/completions", {"model": model, "max_tokens": -1, "messages": chat}),
        "a cut-off JSON body": post("/v1/completions", f'{{"model": "{model}", "prompt": '.encode()),
    }
    assert post("/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 1}) == 200, "no longer serves"
    return {what: status for what, status in answers.items() if status != 400}


def hang_up_mid_stream(connect: Callable[[], http.client.HTTPConnection], key: str, model: str,
                       within: float = 30) -> float:
    """A long stream, its client gone without a word after three events: vLLM's own running-requests gauge must
    go back to 0 and nothing more decodes. Returns the seconds the slot took to free."""
    conn = connect()
    payload = {"model": model, "prompt": PROMPT, "max_tokens": 1000, "min_tokens": 1000, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(payload),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    assert response.status == 200, response.status
    events = 0
    while events < 3:
        line = response.readline()
        assert line, "the stream ended early"
        events += line.startswith(b"data: ")
    running = metric(connect, key, "vllm:num_requests_running")
    assert running == 1, f"the stream is running alone: {running}"
    conn.sock.close()
    conn.close()
    hung_up = time.monotonic()
    while metric(connect, key, "vllm:num_requests_running") != 0:
        assert time.monotonic() - hung_up < within, f"the hung-up stream still holds its slot after {within} s"
        time.sleep(0.2)
    freed = time.monotonic() - hung_up
    generated = metric(connect, key, "vllm:generation_tokens_total")
    time.sleep(1)
    assert metric(connect, key, "vllm:generation_tokens_total") == generated, "nothing decodes for the lost client"
    return freed
