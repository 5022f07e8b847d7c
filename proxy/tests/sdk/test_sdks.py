"""The official OpenAI and Anthropic Python SDKs against strake-proxy (file
mode) in front of the mock upstream: they must work unchanged with only a
base URL and a Strake token, raise their usual exceptions for a bad token,
and the upstream must see the real key, never the token.

    make sdk      # builds the binaries and the pinned SDK virtualenv, then runs pytest

Binaries: $STRAKE_PROXY_BIN and $STRAKE_MOCK_BIN (default target/debug/…).
"""

import json
import os
import pathlib
import queue
import subprocess
import threading
import urllib.request

import anthropic
import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROXY_BIN = os.environ.get("STRAKE_PROXY_BIN", str(ROOT / "target/debug/strake-proxy"))
MOCK_BIN = os.environ.get("STRAKE_MOCK_BIN", str(ROOT / "target/debug/strake-mock-upstream"))
KEY = "sk-real-upstream-key-for-sdk-tests"


def _lines(stream, sink):
    for line in iter(stream.readline, ""):
        sink.put(line)


def _wait_for(proc, stream, match, timeout=30):
    lines = queue.Queue()
    threading.Thread(target=_lines, args=(stream, lines), daemon=True).start()
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{proc.args[0]} did not start: {''.join(seen)}")
        seen.append(line)
        found = match(line)
        if found:
            # Keep draining so the child never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in iter(lines.get, None)], daemon=True).start()
            return found


def _mint():
    out = subprocess.run([PROXY_BIN, "mint", "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    mock = subprocess.Popen(
        [MOCK_BIN, "--listen", "127.0.0.1:0", "--key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    mock_url = _wait_for(
        mock, mock.stdout, lambda l: l.strip().split("listening on ", 1)[1] if "listening on" in l else None
    )
    token = _mint()
    config = tmp_path_factory.mktemp("strake") / "strake.yaml"
    config.write_text(
        f"""upstreams:
  - name: openai
    provider: openai
    baseUrl: {mock_url}
    apiKey: {KEY}
  - name: anthropic
    provider: anthropic
    baseUrl: {mock_url}
    apiKey: {KEY}
tokens:
  - name: sdk
    identity: sdk@example.com
    sha256: {token["sha256"]}
    upstreams: [openai, anthropic]
"""
    )
    proxy = subprocess.Popen(
        [PROXY_BIN, "--config", str(config), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def serving(line):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        return entry if entry.get("message") == "serving" else None

    addrs = _wait_for(proxy, proxy.stderr, serving)
    yield {
        "proxy": f"http://{addrs['listen']}",
        "admin": f"http://{addrs['admin']}",
        "mock": mock_url,
        "token": token["token"],
    }
    proxy.terminate()
    mock.terminate()
    proxy.wait(10)
    mock.wait(10)


def _get(url):
    with urllib.request.urlopen(url) as r:
        return json.loads(r.read())


@pytest.fixture
def recorded(stack):
    """Requests the mock receives during the test."""
    req = urllib.request.Request(f"{stack['mock']}/__mock/requests", method="DELETE")
    urllib.request.urlopen(req).read()

    def get():
        return _get(f"{stack['mock']}/__mock/requests")

    return get


def _assert_only_the_real_key(requests, header):
    assert requests, "nothing reached the upstream"
    for r in requests:
        text = json.dumps(r)
        assert "sk-strk-" not in text, r
        values = [v for (k, v) in r["headers"] if k == header]
        assert values in ([f"Bearer {KEY}"], [KEY]), r["headers"]


def test_openai_chat(stack, recorded):
    client = openai.OpenAI(base_url=f"{stack['proxy']}/v1", api_key=stack["token"])
    resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}])
    assert resp.choices[0].message.content
    assert resp.usage.completion_tokens > 0
    _assert_only_the_real_key(recorded(), "authorization")


def test_openai_chat_stream_with_usage(stack, recorded):
    client = openai.OpenAI(base_url=f"{stack['proxy']}/v1", api_key=stack["token"])
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    _assert_only_the_real_key(recorded(), "authorization")


def _usage_of(stack, name="sdk"):
    entry = next((t for t in _get(f"{stack['admin']}/usage")["tokens"] if t["name"] == name), None)
    return (entry["inputTokens"], entry["outputTokens"]) if entry else (0, 0)


def test_openai_stream_without_include_usage_is_counted_and_unchanged(stack, recorded):
    client = openai.OpenAI(base_url=f"{stack['proxy']}/v1", api_key=stack["token"])
    before = _usage_of(stack)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}], stream=True
        )
    )
    # What the SDK sees without the option: no usage chunk, no usage field.
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None and "usage" not in c.model_fields_set for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    after = _usage_of(stack)
    assert after[0] > before[0] and after[1] - before[1] == len(text.split())
    [sent] = recorded()
    assert json.loads(sent["body"])["stream_options"] == {"include_usage": True}


def test_anthropic_stream_reports_cache_writes_and_reads(stack, recorded):
    client = anthropic.Anthropic(base_url=stack["proxy"], api_key=stack["token"])
    system = [{"type": "text", "text": "0123456789" * 440, "cache_control": {"type": "ephemeral"}}]
    for cache, field in [("miss", "cache_creation_input_tokens"), ("hit", "cache_read_input_tokens")]:
        before = _usage_of(stack)
        with client.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=8,
            system=system,
            messages=[{"role": "user", "content": "Say hello"}],
            extra_headers={"x-mock-cache": cache},
        ) as stream:
            final = stream.get_final_message()
        assert getattr(final.usage, field) == 1100, final.usage
        total = final.usage.input_tokens + final.usage.cache_creation_input_tokens + final.usage.cache_read_input_tokens
        assert _usage_of(stack)[0] - before[0] == total


def test_anthropic_messages(stack, recorded):
    client = anthropic.Anthropic(base_url=stack["proxy"], api_key=stack["token"])
    msg = client.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert msg.content[0].text
    assert msg.usage.output_tokens > 0
    _assert_only_the_real_key(recorded(), "x-api-key")


def test_anthropic_stream_with_auth_token(stack, recorded):
    # What the operator's Secret sets: ANTHROPIC_AUTH_TOKEN, sent as a bearer token.
    client = anthropic.Anthropic(base_url=stack["proxy"], auth_token=stack["token"], api_key=None)
    with client.messages.stream(
        model="claude-3-5-haiku-latest", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    requests = recorded()
    _assert_only_the_real_key(requests, "x-api-key")
    assert all(not any(k == "authorization" for k, _ in r["headers"]) for r in requests)


def test_wrong_tokens_raise_authentication_errors(stack, recorded):
    bad = _mint()["token"]  # well-formed, never configured
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=f"{stack['proxy']}/v1", api_key=bad, max_retries=0).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert "revoked or does not exist" in str(e.value)
    assert bad not in str(e.value)
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=stack["proxy"], api_key=bad, max_retries=0).messages.create(
            model="claude-3-5-haiku-latest", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert "revoked or does not exist" in str(e.value)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{stack['proxy']}/v1", api_key="sk-proj-not-strake", max_retries=0).models.list()
    assert recorded() == [], "rejected requests never reach the upstream"


def test_usage_is_counted(stack):
    usage = _get(f"{stack['admin']}/usage")
    entry = next(t for t in usage["tokens"] if t["name"] == "sdk")
    assert entry["requests"] >= 4
    assert entry["inputTokens"] > 0 and entry["outputTokens"] > 0


WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_tool_round_trip(stack, recorded, stream):
    client = openai.OpenAI(base_url=f"{stack['proxy']}/v1", api_key=stack["token"])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        # The SDK's stream helper assembles the tool call from its deltas.
        with client.chat.completions.stream(model="gpt-4o", messages=messages, tools=tools) as s:
            for _ in s:
                pass
            first = s.get_final_completion()
    else:
        first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "celsius"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 C"},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    _assert_only_the_real_key(recorded(), "authorization")


@pytest.mark.parametrize("stream", [False, True])
def test_responses_function_call_round_trip(stack, recorded, stream):
    client = openai.OpenAI(base_url=f"{stack['proxy']}/v1", api_key=stack["token"])
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}]
    items = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with client.responses.stream(model="gpt-5", input=items, tools=tools) as s:
            kinds = [e.type for e in s]
            first = s.get_final_response()
        assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    else:
        first = client.responses.create(model="gpt-5", input=items, tools=tools)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)["unit"] == "celsius"
    assert first.usage.output_tokens > 0
    items += [call.model_dump(exclude_none=True), {"type": "function_call_output", "call_id": call.call_id, "output": "21 C"}]
    second = client.responses.create(model="gpt-5", input=items, tools=tools)
    assert second.output_text
    _assert_only_the_real_key(recorded(), "authorization")


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tool_use_round_trip(stack, recorded, stream):
    client = anthropic.Anthropic(base_url=stack["proxy"], api_key=stack["token"])
    tools = [{"name": "get_weather", "description": "Current weather", "input_schema": WEATHER}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    args = dict(model="claude-sonnet-4-6", max_tokens=256, messages=messages, tools=tools)
    if stream:
        with client.messages.stream(**args) as s:
            for _ in s:
                pass
            first = s.get_final_message()
    else:
        first = client.messages.create(**args)
    assert first.stop_reason == "tool_use"
    block = first.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "mock", "unit": "celsius"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "21 C"}]},
    ]
    second = client.messages.create(**args)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text
    _assert_only_the_real_key(recorded(), "x-api-key")
