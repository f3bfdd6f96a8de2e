"""Tests of `nanoflow serve` against a real running server on the CPU engine with the default
model: the official openai client, curl and raw HTTP for SSE framing, parity with `nanoflow
generate`, concurrency, bad input, disconnects, slow clients, API keys, overload and SIGTERM.
No test depends on timing: waits are for a condition, with a generous timeout."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("NANOFLOW_BIN", os.path.join(ROOT, "build", "nanoflow"))
MODEL = os.environ.get("NANOFLOW_TEST_MODEL", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
NAME = "smollm2"
MAX_BODY = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *extra, env=None, max_body=MAX_BODY, preexec_fn=None):
        self.port = free_port()
        self.log_path = os.path.join(os.path.dirname(BIN), f"server_test_{self.port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--model", MODEL, "--port", str(self.port), "--served-model-name", NAME,
             "--max-body-bytes", str(max_body), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn)
        deadline = time.time() + 120
        while True:
            assert self.proc.poll() is None, "the server exited during start-up"
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.2)

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path, headers=None):
        c = self.conn()
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    def post(self, path, body, headers=None):
        c = self.conn()
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        c.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        out = r.read()
        c.close()
        return r.status, dict(r.getheaders()), out

    def metrics(self):
        status, body = self.get("/metrics")
        assert status == 200
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def client(self, api_key="EMPTY"):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=api_key, max_retries=0, timeout=120)

    def terminate(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        return rc


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.terminate() == 0


def generate_json(prompt, max_tokens):
    out = subprocess.run([BIN, "generate", "--model", MODEL, "--prompt", prompt, "--max-tokens", str(max_tokens),
                          "--temperature", "0", "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a"]


def test_health_models_metrics(server):
    assert server.get("/health")[0] == 200
    models = server.client().models.list()
    assert [m.id for m in models.data] == [NAME]
    m = server.metrics()
    for key in ["nanoflow_num_requests_running", "nanoflow_num_requests_waiting", "nanoflow_kv_cache_usage_perc",
                "nanoflow_prompt_tokens_total", "nanoflow_generation_tokens_total",
                "nanoflow_prefix_cache_hit_rate", "nanoflow_time_to_first_token_seconds_count",
                "nanoflow_inter_token_latency_seconds_count",
                'nanoflow_kv_offload_hit_tokens_total{tier="host"}',
                'nanoflow_kv_offload_hit_tokens_total{tier="disk"}',
                "nanoflow_kv_offload_saved_blocks_total", 'nanoflow_kv_offload_blocks{tier="host"}']:
        assert key in m
    assert m["nanoflow_kv_offload_saved_blocks_total"] == 0  # no tiers on this server


def test_greedy_equals_generate(server):
    c = server.client()
    for prompt in PROMPTS[:2]:
        ref = generate_json(prompt, 12)
        r = c.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0,
                                 extra_body={"return_token_ids": True})
        assert r.choices[0].text == ref["text"]
        assert r.choices[0].model_extra["token_ids"] == ref["token_ids"]
        assert r.choices[0].finish_reason == ref["finish_reason"]
        assert r.usage.completion_tokens == len(ref["token_ids"])
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_usage_reports_cached_prompt_tokens(server):
    # The same long prompt twice: the second finds its full blocks in the prefix cache.
    c = server.client()
    prompt = "A prompt long enough for several KV blocks, about rivers, bridges and old mills. " * 4
    first = c.completions.create(model=NAME, prompt=prompt, max_tokens=2, temperature=0)
    second = c.completions.create(model=NAME, prompt=prompt, max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens and cached % 16 == 0


def test_completion_stream_equals_non_stream(server):
    c = server.client()
    full = c.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=10, temperature=0)
    chunks = list(c.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=10, temperature=0, stream=True,
                                       stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == full.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10
    assert len([ch for ch in chunks if ch.choices]) == 10  # one token per chunk


def test_prompt_forms_and_n(server):
    c = server.client()
    ids = server.post("/v1/completions", {"prompt": "Hello there", "max_tokens": 1, "return_token_ids": True})
    prompt_ids = json.loads(ids[2])["choices"][0]["prompt_token_ids"]
    by_text = c.completions.create(model=NAME, prompt="Hello there", max_tokens=5, temperature=0)
    by_ids = c.completions.create(model=NAME, prompt=prompt_ids, max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    many = c.completions.create(model=NAME, prompt=["Hello there", "The sky is"], max_tokens=5, temperature=0, n=2)
    assert [ch.index for ch in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text == by_text.choices[0].text
    lists = c.completions.create(model=NAME, prompt=[prompt_ids, prompt_ids], max_tokens=5, temperature=0)
    assert [ch.text for ch in lists.choices] == [by_text.choices[0].text] * 2
    seeded = [c.completions.create(model=NAME, prompt="Hello", max_tokens=8, temperature=1.0, seed=7).choices[0].text
              for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_sampling_fields_and_logprobs(server):
    c = server.client()
    r = c.completions.create(model=NAME, prompt="Hello", max_tokens=4, temperature=0.7, top_p=0.9,
                             frequency_penalty=0.5, presence_penalty=0.5, logit_bias={"11": -100}, logprobs=3,
                             extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(len(t) <= 3 for t in lp.top_logprobs)
    stop = c.completions.create(model=NAME, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 7"])
    assert stop.choices[0].finish_reason == "stop" and " 7" not in stop.choices[0].text
    chat = c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                     temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == 3 and all(len(t.top_logprobs) == 2 for t in content)


def test_chat(server):
    c = server.client()
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(model=NAME, messages=msgs, max_tokens=16, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert "Paris" in r.choices[0].message.content
    assert r.usage.completion_tokens <= 16
    chunks = list(c.chat.completions.create(model=NAME, messages=msgs, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == r.choices[0].finish_reason


def test_sse_framing(server):
    c = server.conn()
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": "Hello", "max_tokens": 5, "temperature": 0,
                                                          "stream": True}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type").startswith("text/event-stream")
    raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: ") and "\n" not in e
        assert json.loads(e[6:])["object"] == "text_completion"
    assert len(events) - 2 == 5
    # The connection stays usable (keep-alive) for the next request.
    c.request("GET", "/health")
    assert c.getresponse().status == 200
    c.close()


def test_concurrent_streams(server):
    c = server.client()
    refs = {p: generate_json(p, 8)["text"] for p in PROMPTS}

    def one(i):
        p = PROMPTS[i % len(PROMPTS)]
        s = c.completions.create(model=NAME, prompt=p, max_tokens=8, temperature=0, stream=True)
        return p, "".join(ch.choices[0].text for ch in s if ch.choices)

    with ThreadPoolExecutor(max_workers=256) as pool:
        results = list(pool.map(one, range(256)))
    assert len(results) == 256
    for p, text in results:
        assert text == refs[p]
    assert wait_metric(server, "nanoflow_kv_blocks_used", lambda v: v == 0) == 0


BAD = [
    ("/v1/completions", b'{"prompt": "hi", ', 400, None),
    ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "many"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "n": 0}, 400, "n"),
    ("/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi", "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {"prompt": "hi", "model": "no-such-model"}, 404, "model"),
    ("/v1/completions", {"prompt": [1] * 9000}, 400, "prompt"),
    ("/v1/completions", {"prompt": [10**9]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 9000}, 400, "max_tokens"),
    ("/v1/completions", b'{"prompt": "\xff\xfe"}', 400, None),
    ("/v1/completions", b'{"prompt": "' + b"a" * (MAX_BODY + 10) + b'"}', 413, None),
    ("/v1/chat/completions", {"messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": 3}, 400, "logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9000}, 400,
     "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi " * 9000}]}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True,
                              "top_logprobs": 30}, 400, "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4"}, 404, "model"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}', 400, None),
    ("/v1/completions", b'[1, 2]', 400, None),
    ("/v1/completions", {"prompt": "hi", "stop": 5}, 400, "stop"),
    ("/v1/completions", {"prompt": "hi", "seed": "a"}, 400, "seed"),
    ("/v1/completions", {"prompt": "hi", "n": "two"}, 400, "n"),
    ("/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "hi", "top_k": -5}, 400, "top_k"),
    ("/v1/completions", {"prompt": "hi", "min_p": 2}, 400, "min_p"),
    ("/v1/completions", {"prompt": "hi", "frequency_penalty": 5}, 400, "frequency_penalty"),
    ("/v1/completions", {"prompt": "hi", "presence_penalty": -3}, 400, "presence_penalty"),
    ("/v1/completions", {"prompt": "hi", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 50}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"x": 1}}, 400, "logit_bias"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"99999999": 1}}, 400, "logit_bias"),
    ("/v1/completions", {"prompt": "hi", "ignore_eos": 3}, 400, "ignore_eos"),
    ("/v1/completions", {"prompt": "hi", "return_token_ids": "x"}, 400, "return_token_ids"),
    ("/v1/completions", {"prompt": "hi", "stream": True, "stream_options": 5}, 400, "stream_options"),
    ("/v1/completions", {"prompt": [49152]}, 400, "prompt"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
]


@pytest.mark.parametrize("path,body,status,param", BAD)
def test_bad_input(server, path, body, status, param):
    code, _, out = server.post(path, body)
    assert code == status, out
    err = json.loads(out)["error"]
    assert err["message"] and err["type"]
    assert "param" in err and "code" in err
    if param:
        assert err["param"] == param
    ok = server.client().completions.create(model=NAME, prompt="Hello", max_tokens=2, temperature=0)
    assert ok.choices[0].finish_reason == "length"


def test_malformed_http(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    s.sendall(b"GARBAGE\x01 / HTTP/9.9\r\n\r\n")
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    s.close()
    assert got.startswith(b"HTTP/1.1 400"), got
    assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]["message"]
    ok = server.client().completions.create(model=NAME, prompt="Hello", max_tokens=2, temperature=0)
    assert ok.choices[0].finish_reason == "length"


def wait_metric(server, key, pred, timeout=120.0):
    deadline = time.time() + timeout
    while True:
        v = server.metrics().get(key, 0)
        if pred(v) or time.time() > deadline:
            return v
        time.sleep(0.02)


def idle_metrics(server):
    """The metrics once no request holds KV blocks (the engine publishes its stats after the
    step whose outputs finished the previous test's requests)."""
    assert wait_metric(server, "nanoflow_kv_blocks_used", lambda v: v == 0) == 0
    m = server.metrics()
    assert m["nanoflow_num_requests_running"] == 0 and m["nanoflow_num_requests_waiting"] == 0
    return m


def test_disconnect_frees_blocks(server):
    before = idle_metrics(server)
    s = socket.create_connection(("127.0.0.1", server.port))
    body = json.dumps({"prompt": "Tell me a long story.", "max_tokens": 4000, "ignore_eos": True, "stream": True})
    s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    got = b""
    while got.count(b"data: ") < 3:
        got += s.recv(65536)
    assert server.metrics()["nanoflow_kv_blocks_used"] > 0
    assert server.metrics()["nanoflow_num_requests_running"] == 1
    s.close()
    # The abort reaches the engine at its next step, which frees the blocks; the request never
    # runs to its 4000 tokens.
    assert wait_metric(server, "nanoflow_kv_blocks_used", lambda v: v == 0) == 0
    after = server.metrics()
    assert after["nanoflow_num_requests_running"] == 0
    assert after["nanoflow_client_disconnects_total"] == before["nanoflow_client_disconnects_total"] + 1
    assert after['nanoflow_request_finished_total{finish_reason="abort"}'] == \
        before.get('nanoflow_request_finished_total{finish_reason="abort"}', 0) + 1
    assert after["nanoflow_generation_tokens_total"] < before["nanoflow_generation_tokens_total"] + 4000
    ok = server.client().completions.create(model=NAME, prompt="Hello", max_tokens=2, temperature=0)
    assert ok.choices[0].finish_reason == "length"


def test_disconnect_non_streaming_frees_blocks(server):
    # A client that gives up on a non-streaming request that is still running.
    before = idle_metrics(server)
    s = socket.create_connection(("127.0.0.1", server.port))
    body = json.dumps({"prompt": "Tell me a long story.", "max_tokens": 4000, "ignore_eos": True})
    s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    gen0 = before["nanoflow_generation_tokens_total"]
    assert wait_metric(server, "nanoflow_generation_tokens_total", lambda v: v >= gen0 + 3) >= gen0 + 3
    assert server.metrics()["nanoflow_kv_blocks_used"] > 0
    s.close()
    assert wait_metric(server, "nanoflow_kv_blocks_used", lambda v: v == 0) == 0
    after = server.metrics()
    assert after["nanoflow_num_requests_running"] == 0
    assert after["nanoflow_client_disconnects_total"] == before["nanoflow_client_disconnects_total"] + 1
    assert after['nanoflow_request_finished_total{finish_reason="abort"}'] == \
        before.get('nanoflow_request_finished_total{finish_reason="abort"}', 0) + 1
    assert after["nanoflow_generation_tokens_total"] < gen0 + 4000
    ok = server.client().completions.create(model=NAME, prompt="Hello", max_tokens=2, temperature=0)
    assert ok.choices[0].finish_reason == "length"


def test_api_key_overload_and_sigterm():
    s = Server("--api-key", "sekret", "--max-running-requests", "1", "--max-waiting-requests", "1",
               "--shutdown-timeout", "1")
    try:
        code, _, out = s.post("/v1/completions", {"prompt": "hi", "max_tokens": 1})
        assert code == 401 and json.loads(out)["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").completions.create(model=NAME, prompt="hi", max_tokens=1)
        assert s.client("sekret").completions.create(model=NAME, prompt="hi", max_tokens=1).choices
        assert s.get("/health")[0] == 200  # health and metrics need no key

        # One running, one waiting: the third gets 503 with Retry-After.
        streams, events = [], []
        auth = {"Authorization": "Bearer sekret", "Content-Type": "application/json"}
        for i in range(2):
            c = s.conn()
            c.request("POST", "/v1/completions", headers=auth,
                      body=json.dumps({"prompt": "Count to a thousand:", "max_tokens": 3000, "ignore_eos": True,
                                       "stream": True}))
            r = c.getresponse()
            assert r.status == 200
            if i == 0:
                r.readline()  # the first chunk: the first request is running
            streams.append((c, r))
        code, headers, out = s.post("/v1/completions", {"prompt": "hi", "max_tokens": 1}, headers=auth)
        assert code == 503 and "Retry-After" in headers, out

        # SIGTERM: in-flight requests are aborted after --shutdown-timeout; the streams end cleanly.
        def drain(r):
            events.append(r.read().decode())

        readers = [threading.Thread(target=drain, args=(r,)) for _, r in streams]
        for t in readers:
            t.start()
        time.sleep(0.2)
        assert s.terminate(timeout=120) == 0
        for t in readers:
            t.join(timeout=10)
        assert len(events) == 2
        for e in events:
            assert e.rstrip().endswith("data: [DONE]")
            assert re.search(r'"finish_reason":"abort"', e)
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


# --- raw SSE framing, as curl sees it ---------------------------------------------------------

def curl_sse(server, path, body):
    curl = shutil.which("curl")
    if not curl:
        pytest.skip("curl is not installed; the raw SSE framing test needs it (apt-get install curl)")
    out = subprocess.run([curl, "-sS", "-N", "-i", "--http1.1", "-H", "Content-Type: application/json",
                          "--data-binary", json.dumps(body), f"http://127.0.0.1:{server.port}{path}"],
                         capture_output=True, check=True, timeout=300).stdout
    head, sep, payload = out.partition(b"\r\n\r\n")
    assert sep, out
    return head.decode(), payload.decode("utf-8")


def check_sse(head, payload, max_tokens):
    """Checks the framing of a stream with include_usage and return_token_ids; returns the choice
    chunks (parsed) and the usage chunk."""
    lines = head.split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), head
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert headers["content-type"].startswith("text/event-stream")
    assert headers.get("transfer-encoding") == "chunked"
    # Every event is exactly "data: <one line>\n\n"; the stream ends with "data: [DONE]\n\n".
    assert re.fullmatch(r"(data: [^\n]+\n\n)+", payload), payload
    assert payload.endswith("\n\ndata: [DONE]\n\n")
    events = [json.loads(e[len("data: "):]) for e in payload.split("\n\n")[:-2]]
    *chunks, usage = events
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(chunks) == max_tokens
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + max_tokens
    for i, ch in enumerate(chunks):
        assert "usage" in ch and ch["usage"] is None  # include_usage: null until the last event
        assert len(ch["choices"]) == 1
        c = ch["choices"][0]
        assert len(c["token_ids"]) == 1  # one token per chunk
        assert c["finish_reason"] == (None if i + 1 < len(chunks) else "length")
        assert ("prompt_token_ids" in c) == (i == 0)
        assert ch["id"] == usage["id"]
    return chunks, usage


def test_sse_framing_curl_completions(server):
    body = {"model": NAME, "prompt": PROMPTS[0], "max_tokens": 7, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True}
    head, payload = curl_sse(server, "/v1/completions", {**body, "stream": True,
                                                         "stream_options": {"include_usage": True}})
    chunks, _ = check_sse(head, payload, 7)
    assert all(ch["object"] == "text_completion" for ch in chunks)
    full = json.loads(server.post("/v1/completions", body)[2])["choices"][0]
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == full["text"]
    assert [ch["choices"][0]["token_ids"][0] for ch in chunks] == full["token_ids"]


def test_sse_framing_curl_chat(server):
    body = {"model": NAME, "messages": [{"role": "user", "content": "Name three colors."}], "max_tokens": 6,
            "temperature": 0, "ignore_eos": True, "return_token_ids": True}
    head, payload = curl_sse(server, "/v1/chat/completions", {**body, "stream": True,
                                                              "stream_options": {"include_usage": True}})
    chunks, _ = check_sse(head, payload, 6)
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in ch["choices"][0]["delta"] for ch in chunks[1:])
    full = json.loads(server.post("/v1/chat/completions", body)[2])["choices"][0]
    assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks) == full["message"]["content"]
    assert [ch["choices"][0]["token_ids"][0] for ch in chunks] == full["token_ids"]


# --- a server whose dispatcher merges deltas and whose connections buffer little --------------

SLOW_CAP = 64 * 1024


@pytest.fixture(scope="module")
def tuned():
    s = Server(env={"NANOFLOW_SERVE_TEST_MERGE_DELTAS": "3", "NANOFLOW_SERVE_MAX_CONNECTION_BUFFER": str(SLOW_CAP)})
    yield s
    assert s.terminate() == 0


def sse_events(server, path, body):
    status, headers, out = server.post(path, body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    raw = out.decode("utf-8")
    assert raw.endswith("data: [DONE]\n\n")
    return [json.loads(e[len("data: "):]) for e in raw.split("\n\n")[:-2]]


@pytest.mark.parametrize("prompt,extra", [
    (PROMPTS[1], {"max_tokens": 14, "logprobs": 2}),
    ("1, 2, 3, 4,", {"max_tokens": 20, "stop": [" 7"]}),  # text held back for a stop string
    # Emoji of several byte tokens: a token that does not complete its character streams "",
    # and the character goes with the token that completes it.
    ("Emoji party: 🎉🥳🎈🎂🍰 and more emoji:", {"max_tokens": 16, "ignore_eos": True}),
])
def test_multi_token_deltas_stream_one_token_per_chunk(tuned, prompt, extra):
    # The dispatcher hands the connection three tokens per delta; the stream still has one
    # token per chunk, every chunk whole UTF-8 characters, and the chunks add up to the
    # non-streamed result.
    body = {"model": NAME, "prompt": prompt, "temperature": 0, "return_token_ids": True, **extra}
    full = json.loads(tuned.post("/v1/completions", body)[2])["choices"][0]
    chunks = sse_events(tuned, "/v1/completions", {**body, "stream": True})
    choices = [ch["choices"][0] for ch in chunks]
    assert [len(c["token_ids"]) for c in choices] == [1] * len(full["token_ids"])
    assert [c["token_ids"][0] for c in choices] == full["token_ids"]
    assert "".join(c["text"] for c in choices) == full["text"]
    # U+FFFD only where the output itself ends inside a character (max_tokens cut it).
    assert all("\ufffd" not in c["text"] for c in choices[:-1])
    if "emoji" in prompt:
        assert any(c["text"] == "" for c in choices) and any(ord(ch) > 0xFFFF for ch in full["text"])
    assert [c["finish_reason"] for c in choices] == [None] * (len(choices) - 1) + [full["finish_reason"]]
    if "logprobs" in extra:
        assert [c["logprobs"]["tokens"][0] for c in choices] == full["logprobs"]["tokens"]
        assert [c["logprobs"]["token_logprobs"][0] for c in choices] == full["logprobs"]["token_logprobs"]


def test_multi_token_deltas_chat(tuned):
    body = {"model": NAME, "messages": [{"role": "user", "content": "Write a haiku about the sea."}],
            "max_tokens": 12, "temperature": 0, "return_token_ids": True}
    full = json.loads(tuned.post("/v1/chat/completions", body)[2])["choices"][0]
    choices = [ch["choices"][0] for ch in sse_events(tuned, "/v1/chat/completions", {**body, "stream": True})]
    assert [c["token_ids"] for c in choices] == [[t] for t in full["token_ids"]]
    assert "".join(c["delta"].get("content", "") for c in choices) == full["message"]["content"]


def test_slow_client_is_cut_off(tuned):
    # A client that stops reading its stream: the server buffers at most SLOW_CAP bytes for it
    # (plus one step of chunks and the kernel's socket buffers), then aborts the request, frees its
    # blocks and closes.
    before = idle_metrics(tuned)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", tuned.port))
    # 128 completions with 20 top logprobs each: ~200 KB of chunks per step, so the kernel's socket
    # buffers (a few MB) and the cap fill within a few dozen steps.
    n, max_tokens = 128, 1000
    body = json.dumps({"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": max_tokens,
                       "ignore_eos": True, "n": n, "logprobs": True, "top_logprobs": 20, "return_token_ids": True,
                       "stream": True})
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    key = "nanoflow_slow_client_aborts_total"
    try:
        assert wait_metric(tuned, key, lambda v: v == before[key] + 1, timeout=600) == before[key] + 1
        assert wait_metric(tuned, "nanoflow_kv_blocks_used", lambda v: v == 0) == 0
        after = tuned.metrics()
        abort = 'nanoflow_request_finished_total{finish_reason="abort"}'
        assert after[abort] == before.get(abort, 0) + n
        assert after["nanoflow_generation_tokens_total"] < before["nanoflow_generation_tokens_total"] + n * max_tokens
        assert after["nanoflow_num_requests_running"] == 0
        # The server keeps serving.
        ok = tuned.client().completions.create(model=NAME, prompt="Hello", max_tokens=2, temperature=0)
        assert ok.choices[0].finish_reason == "length"
    finally:
        s.close()


# --- SIGTERM with a request that can finish -----------------------------------------------------

def test_sigterm_finishes_in_flight():
    s = Server("--shutdown-timeout", "600")
    try:
        c = s.conn(timeout=300)
        c.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                  body=json.dumps({"prompt": "Hello", "max_tokens": 24, "ignore_eos": True, "temperature": 0,
                                   "stream": True, "return_token_ids": True}))
        r = c.getresponse()
        assert r.status == 200
        first = r.readline()
        assert first.startswith(b"data: ")
        s.proc.send_signal(signal.SIGTERM)
        rest = (first + r.read()).decode()
        # The stream was not cut short: all 24 tokens, finish_reason "length", then [DONE].
        events = [json.loads(e[6:]) for e in rest.split("\n\n")[:-2]]
        assert rest.endswith("data: [DONE]\n\n")
        assert sum(len(e["choices"][0]["token_ids"]) for e in events) == 24
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        assert s.terminate(timeout=120) == 0
        # No longer admitting: the port is closed.
        with pytest.raises(OSError):
            s.get("/health")
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
