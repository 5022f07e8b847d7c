#!/usr/bin/env python3
"""Faithfulness check: the official OpenAI and Anthropic Python SDKs against the mock.

Not run by `cargo test`. To run it:

    python3 -m venv .venv && .venv/bin/pip install openai anthropic
    .venv/bin/pip install google-genai   # optional: Gemini checks run if present
    cargo build -p strake-mock-upstream
    .venv/bin/python e2e/mock-upstream/tests/sdk_smoke.py

By default the script starts `target/debug/strake-mock-upstream` itself (override
the binary with MOCK_BIN). To test a mock that is already running, or a proxy in
front of one, set MOCK_URL (e.g. http://127.0.0.1:18080) and MOCK_KEY (the key
the server expects; default `sk-mock-smoke`). Exits non-zero on the first failure.
"""

import base64
import os
import struct
import subprocess
import sys
from pathlib import Path

import anthropic
import openai

try:
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types
except ImportError:  # the Gemini checks are optional
    genai = None

KEY = os.environ.get("MOCK_KEY", "sk-mock-smoke")
WRONG_KEY = "sk-strk-not-the-real-key"
# 40 bytes of prompt text = 10 input tokens by the mock's rule (bytes / 4).
PROMPT = "0123456789012345678901234567890123456789"
REPLY_8 = "This is a deterministic reply from the Strake"


def start_mock():
    """Starts the mock on a free port; returns (process, base URL)."""
    root = Path(__file__).resolve().parents[3]
    binary = os.environ.get("MOCK_BIN", str(root / "target/debug/strake-mock-upstream"))
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--key", KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    prefix = "listening on "
    if not line.startswith(prefix):
        proc.kill()
        sys.exit(f"unexpected first line from the mock: {line!r}")
    return proc, line[len(prefix):]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok   {what}")


def expect_raises(exc_type, what, fn):
    try:
        fn()
    except exc_type as e:
        print(f"ok   {what} -> {type(e).__name__}")
        return e
    raise AssertionError(f"{what}: expected {exc_type.__name__}")


def openai_checks(url):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": PROMPT}]

    r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    check(r.choices[0].message.content == REPLY_8, "openai chat: content")
    check(r.choices[0].finish_reason == "stop", "openai chat: finish_reason")
    check((r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (10, 8, 18),
          "openai chat: usage")
    check(r._request_id is not None, "openai chat: x-request-id surfaced")

    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunks": "4", "x-mock-interval-ms": "20"},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    check(text == "This is a deterministic", "openai stream: content")
    check(finish == "stop", "openai stream: finish_reason")
    check(usage is not None and usage.completion_tokens == 4 and usage.prompt_tokens == 10,
          "openai stream: include_usage final chunk")

    with client.chat.completions.stream(model="gpt-4o", messages=messages) as s:
        final = s.get_final_completion()
    check(final.choices[0].message.content == REPLY_8, "openai stream helper: final completion")

    r = client.chat.completions.create(model="gpt-4o", messages=messages, max_completion_tokens=3)
    check(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3,
          "openai chat: max_completion_tokens caps the reply")

    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT)
    check(c.choices[0].text == REPLY_8 and c.usage.prompt_tokens == 10, "openai legacy completions")

    e = client.embeddings.create(model="text-embedding-3-small", input=["abcd", "efgh"])
    check(len(e.data) == 2 and len(e.data[0].embedding) == 1536, "openai embeddings (SDK base64 default)")
    norm = sum(x * x for x in e.data[0].embedding)
    check(abs(norm - 1.0) < 1e-3, "openai embeddings: unit vectors")
    raw = client.embeddings.create(model="m", input="abcd", dimensions=4, encoding_format="base64")
    floats = struct.unpack("<4f", base64.b64decode(raw.data[0].embedding))
    check(len(floats) == 4, "openai embeddings: explicit base64")

    models = client.models.list()
    check(any(m.id == "gpt-4o" for m in models), "openai models.list")

    resp = client.responses.create(model="gpt-4.1", input=PROMPT)
    check(resp.output_text == REPLY_8, "openai responses: output_text")
    check(resp.usage.input_tokens == 10 and resp.usage.output_tokens == 8, "openai responses: usage")

    deltas = []
    with client.responses.stream(model="gpt-4.1", input=PROMPT) as s:
        for event in s:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = s.get_final_response()
    check("".join(deltas) == REPLY_8 and final.output_text == REPLY_8,
          "openai responses stream: deltas and final response")

    azure = openai.AzureOpenAI(azure_endpoint=url, api_key=KEY, api_version="2024-10-21",
                               max_retries=0)
    r = azure.chat.completions.create(model="prod-gpt4o", messages=messages)
    check(r.choices[0].message.content == REPLY_8 and r.model == "prod-gpt4o", "azure chat")

    bad = openai.OpenAI(base_url=f"{url}/v1", api_key=WRONG_KEY, max_retries=0)
    err = expect_raises(openai.AuthenticationError, "openai wrong key",
                        lambda: bad.chat.completions.create(model="gpt-4o", messages=messages))
    check(err.code == "invalid_api_key", "openai wrong key: code invalid_api_key")
    bad_azure = openai.AzureOpenAI(azure_endpoint=url, api_key=WRONG_KEY,
                                   api_version="2024-10-21", max_retries=0)
    expect_raises(openai.AuthenticationError, "azure wrong key",
                  lambda: bad_azure.chat.completions.create(model="d", messages=messages))

    expect_raises(openai.RateLimitError, "openai x-mock-status: 429",
                  lambda: client.chat.completions.create(
                      model="gpt-4o", messages=messages, extra_headers={"x-mock-status": "429"}))
    expect_raises(openai.InternalServerError, "openai model-name knob status=500",
                  lambda: client.chat.completions.create(model="gpt-4o@status=500", messages=messages))

    def drop():
        s = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True,
                                           extra_headers={"x-mock-drop": "2"})
        for _ in s:
            pass
    expect_raises(Exception, "openai x-mock-drop: stream cut mid-way raises", drop)


def anthropic_checks(url):
    client = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": PROMPT}]

    m = client.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=messages)
    check(m.content[0].text == REPLY_8, "anthropic messages: content")
    check(m.stop_reason == "end_turn", "anthropic messages: stop_reason")
    check((m.usage.input_tokens, m.usage.output_tokens) == (10, 8), "anthropic messages: usage")
    check(m._request_id is not None, "anthropic messages: request-id surfaced")

    m = client.messages.create(model="claude-sonnet-4-6", max_tokens=2, messages=messages)
    check(m.stop_reason == "max_tokens" and m.usage.output_tokens == 2,
          "anthropic messages: max_tokens caps the reply")

    with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=1024, messages=messages,
        extra_headers={"x-mock-chunks": "3", "x-mock-interval-ms": "20"},
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text == "This is a", "anthropic stream: text_stream")
    check(final.usage.input_tokens == 10 and final.usage.output_tokens == 3,
          "anthropic stream: usage from message_start + message_delta")
    check(final.stop_reason == "end_turn", "anthropic stream: stop_reason")

    raw = client.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=messages,
                                 stream=True)
    types = [event.type for event in raw]
    check(types[:3] == ["message_start", "content_block_start", "content_block_delta"]
          and types[-3:] == ["content_block_stop", "message_delta", "message_stop"],
          "anthropic raw stream: event order (ping handled)")

    count = client.messages.count_tokens(model="claude-sonnet-4-6", messages=messages,
                                         system="abcd")
    check(count.input_tokens == 11, "anthropic count_tokens")

    models = client.models.list()
    check(all(m.type == "model" for m in models.data) and models.data, "anthropic models.list")

    bad = anthropic.Anthropic(base_url=url, api_key=WRONG_KEY, max_retries=0)
    expect_raises(anthropic.AuthenticationError, "anthropic wrong key",
                  lambda: bad.messages.create(model="c", max_tokens=5, messages=messages))
    err = expect_raises(anthropic.APIStatusError, "anthropic x-mock-status: 529",
                        lambda: client.messages.create(model="c", max_tokens=5, messages=messages,
                                                       extra_headers={"x-mock-status": "529"}))
    check(err.status_code == 529, "anthropic 529 status code")
    expect_raises(anthropic.RateLimitError, "anthropic x-mock-status: 429",
                  lambda: client.messages.create(model="c", max_tokens=5, messages=messages,
                                                 extra_headers={"x-mock-status": "429"}))


def gemini_checks(url):
    def client(key):
        return genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=url))

    c = client(KEY)
    r = c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    check(r.text == REPLY_8, "gemini generate_content: text")
    u = r.usage_metadata
    check((u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (10, 8, 18),
          "gemini generate_content: usage_metadata")

    config = genai_types.GenerateContentConfig(
        http_options=genai_types.HttpOptions(headers={"x-mock-chunks": "3"}))
    text, last = "", None
    for chunk in c.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT,
                                                  config=config):
        text += chunk.text or ""
        last = chunk
    check(text == "This is a", "gemini stream: text")
    check(last.usage_metadata.candidates_token_count == 3
          and last.candidates[0].finish_reason == genai_types.FinishReason.STOP,
          "gemini stream: final usage and finish reason")

    count = c.models.count_tokens(model="gemini-2.5-flash", contents="abcdefgh")
    check(count.total_tokens == 2, "gemini count_tokens")

    bad = client(WRONG_KEY)  # keep a reference: a dropped Client closes its transport
    err = expect_raises(genai_errors.ClientError, "gemini wrong key",
                        lambda: bad.models.generate_content(model="gemini-2.5-flash", contents="x"))
    check(err.code == 400 and err.status == "INVALID_ARGUMENT", "gemini wrong key: 400 INVALID_ARGUMENT")


def main():
    proc = None
    url = os.environ.get("MOCK_URL")
    if not url:
        proc, url = start_mock()
    try:
        print(f"mock at {url}; openai {openai.__version__}, anthropic {anthropic.__version__}")
        openai_checks(url)
        anthropic_checks(url)
        if genai:
            gemini_checks(url)
        else:
            print("skip gemini checks (pip install google-genai)")
        print("all SDK checks passed")
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    main()
