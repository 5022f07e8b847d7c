"""The official OpenAI and Anthropic SDKs through Strake, configured by
nothing but the env keys of a StrakeToken's Secret (OPENAI_BASE_URL,
OPENAI_API_KEY, ANTHROPIC_BASE_URL, ANTHROPIC_AUTH_TOKEN, ...), as a pod with
`envFrom: [{secretRef: {name: NAME-strake}}]` has them.

Run by e2e/tests/sdks.rs, which issues the token and sets the environment.
Assertions never show a token or key: a failing test's output is scanned
for leaks like every other log.
"""

import json
import os
import urllib.request

import anthropic
import openai
import pytest

MARKER = os.environ["E2E_MARKER"]


def prompt(what):
    return f"Say hello ({what} {MARKER})"


def upstream_requests(what):
    url = os.environ["MOCK_UPSTREAM_URL"] + "/__mock/requests"
    with urllib.request.urlopen(url, timeout=10) as resp:
        recorded = json.load(resp)
    return [r for r in recorded if prompt(what) in r["body"]]


def assert_upstream_saw(what, key_header, expected):
    """The provider got the real key, and never the Strake token."""
    seen = upstream_requests(what)
    assert seen, f"the upstream received no request for {what}"
    token = os.environ["token"]
    for r in seen:
        keys = [v for n, v in r["headers"] if n == key_header]
        has_real_key = keys == [expected]
        assert has_real_key, f"{r['path']}: {key_header} is not the real key"
        leaked = token in json.dumps(r) or any("sk-strk-" in v for _, v in r["headers"])
        assert not leaked, f"{r['path']}: a Strake token reached the upstream"


def test_env_is_what_the_secret_provides():
    assert os.environ["OPENAI_BASE_URL"].endswith("/v1")
    same = os.environ["OPENAI_API_KEY"] == os.environ["ANTHROPIC_AUTH_TOKEN"] == os.environ["token"]
    assert same, "the Secret's env keys do not all hold its token"
    assert "ANTHROPIC_API_KEY" not in os.environ


def test_openai_chat_completion():
    client = openai.OpenAI()
    resp = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt("openai")}],
    )
    assert resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert_upstream_saw("openai", "authorization", "Bearer " + os.environ["MOCK_OPENAI_KEY"])


def test_openai_streaming():
    client = openai.OpenAI()
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt("openai-stream")}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2 and text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert_upstream_saw("openai-stream", "authorization", "Bearer " + os.environ["MOCK_OPENAI_KEY"])


def test_anthropic_message():
    client = anthropic.Anthropic()
    msg = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=[{"role": "user", "content": prompt("anthropic")}],
    )
    assert msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert_upstream_saw("anthropic", "x-api-key", os.environ["MOCK_ANTHROPIC_KEY"])


def test_anthropic_streaming():
    client = anthropic.Anthropic()
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=[{"role": "user", "content": prompt("anthropic-stream")}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.usage.output_tokens > 0
    assert_upstream_saw("anthropic-stream", "x-api-key", os.environ["MOCK_ANTHROPIC_KEY"])


def test_unknown_tokens_raise_the_sdks_own_errors():
    # Never issued: the proxy answers 401 in each provider's error shape.
    unknown = "sk-strk-" + "0" * 46
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key=unknown, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt("bad")}]
        )
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(auth_token=unknown, max_retries=0).messages.create(
            model="claude-sonnet-4-6",
            max_tokens=16,
            messages=[{"role": "user", "content": prompt("bad")}],
        )
