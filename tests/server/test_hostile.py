"""A hostile client against a real `nanoflow serve` (CPU, default model): each request that once
killed the server or was quietly accepted (issue 20) gets a clear OpenAI-style error, and the
server goes on serving everyone else. No test depends on timing: waits are for a condition."""

import json
import resource
import socket
import subprocess
import time

import openai
import pytest

from test_server import BIN, MODEL, NAME, Server


@pytest.fixture(scope="module")
def server():
    s = Server(max_body=16 << 20)
    yield s
    assert s.terminate() == 0


def alive(s):
    out = s.client().completions.create(model=NAME, prompt="Hello", max_tokens=2, temperature=0)
    assert len(out.choices[0].text) > 0 or out.usage.completion_tokens == 2


def error_of(s, path, body):
    code, _, out = s.post(path, body)
    return code, json.loads(out)["error"]


@pytest.mark.parametrize("body, code", [
    (b'{"prompt": "hi", "max_tokens": 1e400}', "number_out_of_range"),
    (b'{"prompt": "hi", "temperature": -1e999}', "number_out_of_range"),
    (b'{"prompt": "hi", "x": ' + b"[" * 70000 + b"]" * 70000 + b"}", "json_too_deep"),
    (b'{"prompt": "hi", "x": {"a": ' * 5000 + b"1" + b"}" * 10001, "json_too_deep"),
])
def test_json_that_once_aborted_is_a_400(server, body, code):
    status, err = error_of(server, "/v1/completions", body)
    assert status == 400 and err["code"] == code, err
    alive(server)


def test_deep_nesting_inside_a_chat_message(server):
    deep = b"[" * 40000 + b"]" * 40000
    body = b'{"messages": [{"role": "user", "content": "hi", "extra": ' + deep + b"}]}"
    status, err = error_of(server, "/v1/chat/completions", body)
    assert status == 400 and err["code"] == "json_too_deep"
    alive(server)


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "min_tokens": 5}, "min_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True,
                              "top_logprobs": 2**32 + 5}, "top_logprobs"),
    ("/v1/completions", {"prompt": "hi", "stop_token_ids": [-1]}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "hi", "stop_token_ids": [2**32 + 1]}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "hi", "stop_token_ids": [49152]}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"49152": 5}}, "logit_bias"),
    ("/v1/completions", {"prompt": [1, 2**32 + 1]}, "prompt"),
    ("/v1/completions", {"prompt": [1, 49152]}, "prompt"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2**64 - 1}, "max_tokens"),
])
def test_values_that_were_quietly_accepted_are_a_400(server, path, body, param):
    status, err = error_of(server, path, body)
    assert status == 400, err
    assert err["param"] == param, err
    alive(server)


def test_openai_message_forms_are_accepted(server):
    c = server.client()
    parts = c.chat.completions.create(
        model=NAME, max_tokens=3, temperature=0,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello"},
                                               {"type": "text", "text": "there"}]}])
    plain = c.chat.completions.create(model=NAME, max_tokens=3, temperature=0,
                                      messages=[{"role": "user", "content": "Hello\nthere"}])
    assert parts.choices[0].message.content == plain.choices[0].message.content
    tools = c.chat.completions.create(model=NAME, max_tokens=3, temperature=0, messages=[
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ])
    assert tools.choices[0].finish_reason == "length"
    status, err = error_of(server, "/v1/chat/completions", {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert status == 400 and err["param"] == "messages"


def test_ten_megabytes_of_whitespace(server):
    status, err = error_of(server, "/v1/completions", {"prompt": " " * (10 << 20), "max_tokens": 1})
    assert status == 400 and "maximum context length" in err["message"], err
    alive(server)


def test_sequences_count_against_the_queue(server):
    status, err = error_of(server, "/v1/completions", {"prompt": ["hi"] * 1024, "n": 16, "max_tokens": 1})
    assert status == 400 and err["code"] == "too_many_sequences", err
    alive(server)


def test_small_queue_counts_prompts_times_n():
    s = Server("--max-waiting-requests", "4")
    try:
        status, err = error_of(s, "/v1/completions", {"prompt": ["a", "b", "c"], "n": 2, "max_tokens": 1})
        assert status == 400 and err["code"] == "too_many_sequences"
        out = s.client().completions.create(model=NAME, prompt=["a", "b"], n=2, max_tokens=1)
        assert len(out.choices) == 4
    finally:
        assert s.terminate() == 0


def test_empty_api_key_is_an_error():
    out = subprocess.run([BIN, "serve", "--model", MODEL, "--api-key", ""], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "--api-key" in out.stderr, out.stderr


def test_connection_cap_and_idle_timeout():
    s = Server("--max-connections", "4", "--idle-timeout", "1")
    try:
        idle = []
        for _ in range(4):
            idle.append(socket.create_connection(("127.0.0.1", s.port)))
        # Wait until the server counts them (an accepted socket is a session at once; the cap
        # answers the fifth with a 503 and closes it).
        deadline = time.time() + 60
        while True:
            extra = socket.create_connection(("127.0.0.1", s.port))
            extra.settimeout(30)
            data = extra.recv(4096)
            extra.close()
            if data.startswith(b"HTTP/1.1 503"):
                assert b"too_many_connections" in data
                break
            assert time.time() < deadline
        # The idle ones are closed by the server after --idle-timeout; then requests succeed.
        for sock in idle:
            sock.settimeout(60)
            assert sock.recv(1) == b""
            sock.close()
        alive(s)
    finally:
        assert s.terminate() == 0


def test_accept_backs_off_when_out_of_file_descriptors():
    # A low descriptor limit for the server alone: connections past it fail to accept (EMFILE),
    # which the server logs once and waits out, doubling its pause; once they close it serves.
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    s = Server("--idle-timeout", "300", preexec_fn=low_limit)
    try:
        socks = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(100)]
        deadline = time.time() + 60
        while "backing off" not in open(s.log_path).read():
            assert time.time() < deadline, "no accept error seen"
            time.sleep(0.1)
        assert s.proc.poll() is None
        for sock in socks:
            sock.close()
        deadline = time.time() + 60
        while True:
            try:
                alive(s)
                break
            except openai.APIConnectionError:
                assert time.time() < deadline
                time.sleep(0.2)
    finally:
        assert s.terminate() == 0
