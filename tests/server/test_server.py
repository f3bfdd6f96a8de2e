"""Tests of `nanoflow serve` against a real running server on the CPU engine with the default
model: the official openai client, raw HTTP for SSE framing, parity with `nanoflow generate`,
concurrency, bad input, disconnects, API keys, overload and SIGTERM."""

import http.client
import json
import os
import re
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
    def __init__(self, *extra):
        self.port = free_port()
        self.log = open(os.path.join(os.path.dirname(BIN), f"server_test_{self.port}.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--model", MODEL, "--port", str(self.port), "--served-model-name", NAME,
             "--max-body-bytes", str(MAX_BODY), *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
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
                "nanoflow_inter_token_latency_seconds_count"]:
        assert key in m


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
    refs = {p: c.completions.create(model=NAME, prompt=p, max_tokens=8, temperature=0).choices[0].text
            for p in PROMPTS}

    def one(i):
        p = PROMPTS[i % len(PROMPTS)]
        s = c.completions.create(model=NAME, prompt=p, max_tokens=8, temperature=0, stream=True)
        return p, "".join(ch.choices[0].text for ch in s if ch.choices)

    with ThreadPoolExecutor(max_workers=256) as pool:
        results = list(pool.map(one, range(256)))
    assert len(results) == 256
    for p, text in results:
        assert text == refs[p]


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


def wait_metric(server, key, pred, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        v = server.metrics().get(key, 0)
        if pred(v) or time.time() > deadline:
            return v
        time.sleep(0.02)


def test_disconnect_frees_blocks(server):
    before = server.metrics()
    assert before["nanoflow_kv_blocks_used"] == 0
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
    t0 = time.time()
    assert wait_metric(server, "nanoflow_kv_blocks_used", lambda v: v == 0) == 0
    assert time.time() - t0 < 2.0
    after = server.metrics()
    assert after["nanoflow_num_requests_running"] == 0
    assert after["nanoflow_client_disconnects_total"] == before["nanoflow_client_disconnects_total"] + 1
    assert after['nanoflow_request_finished_total{finish_reason="abort"}'] >= 1


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
        t0 = time.time()
        assert s.terminate(timeout=30) == 0
        assert time.time() - t0 < 15
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
