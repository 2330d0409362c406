"""A loopback OpenAI-compatible chat-completions server that the test suite owns, serving a real model.

It runs a Hugging Face causal LM (the suite's SmolLM2-135M) through transformers with its own greedy decoding
loop (a forward pass per token over the KV cache, independent of `generate`), and answers
`POST /v1/chat/completions` as OpenAI's API does: plain JSON or streamed server-sent events, with `logprobs` /
`top_logprobs` and `usage` (in the last chunk when `stream_options.include_usage`). `GET /v1/models` lists the
model. Faults can be scripted, one per coming request or for every request: an HTTP status with headers (429
with Retry-After, 500), an empty completion, a body that is not JSON, a completion of N characters, silence for
a while (a hang), a dropped connection, or a fixed reply text. Every chat request is logged.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from testkit.support import LoopbackServer, OwnedHTTPServer


@dataclass(frozen=True)
class Fault:
    """What the server does instead of (or before) answering one chat request."""

    kind: str  # status | empty | malformed | long | hang | drop | reply
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    size: int = 0
    seconds: float = 0.0
    text: str = ""

    @classmethod
    def http(cls, status: int, retry_after: float | None = None) -> Fault:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls("status", status=status, headers=headers)


@dataclass(frozen=True)
class ChatRequest:
    body: dict
    stream: bool
    answered: str  # "model", or the fault's kind
    at: float  # time.monotonic() on arrival


class Generator:
    """Greedy decoding with log-probabilities, one request at a time (a lock: one model, many handler threads)."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.lock = threading.Lock()

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        return list(encoded["input_ids"])

    def tokens(
        self, prompt: list[int], max_tokens: int, top: int
    ) -> Iterator[tuple[int, list[tuple[int, float]], float]]:
        """Yields (token id, its top alternatives as (id, logprob), its logprob) until EOS or max_tokens."""
        torch = self.torch
        with self.lock, torch.inference_mode():
            past, step_input = None, torch.tensor([prompt])
            for _ in range(max_tokens):
                output = self.model(input_ids=step_input, cache=past, use_cache=True)
                past = output.cache
                logprobs = torch.log_softmax(output.logits[0, -1].float(), dim=-1)
                token = int(torch.argmax(logprobs))
                if token == self.tokenizer.eos_token_id:
                    return
                best = torch.topk(logprobs, max(1, top))
                yield token, list(zip(best.indices.tolist(), best.values.tolist(), strict=True)), float(logprobs[token])
                step_input = torch.tensor([[token]])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OwnedHTTPServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        """Silenced: the server keeps its own request log."""

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": self.server.owner.model_name, "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        owner = self.server.owner
        fault = owner.next_fault()
        stream = bool(body.get("stream"))
        owner.record(ChatRequest(body, stream, fault.kind if fault else "model", time.monotonic()))
        if fault is None:
            self._answer(body, stream)
        elif fault.kind == "status":
            self._send_json(fault.status, {"error": {"message": f"scripted {fault.status}"}}, fault.headers)
        elif fault.kind == "malformed":
            self._send_bytes(200, b'{"choices": [{"message": ')
        elif fault.kind in ("drop", "hang"):  # a hang answers nothing for a while, then goes away
            time.sleep(fault.seconds)
            self.close_connection = True
            self.connection.close()
        else:
            text = {"empty": "", "long": "a" * fault.size, "reply": fault.text}[fault.kind]
            self._send_json(200, owner.completion_payload(text, None, 0, 0, "stop"))

    def _answer(self, body: dict, stream: bool) -> None:
        owner = self.server.owner
        generator = owner.generator
        prompt = generator.prompt_ids(body["messages"])
        top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        max_tokens = int(body.get("max_tokens") or 64)
        steps = generator.tokens(prompt, max_tokens, top)
        if not stream:
            generated = list(steps)
            ids = [token for token, _, _ in generated]
            logprobs = (
                [owner.logprob_entry(token, alternatives, lp) for token, alternatives, lp in generated] if top else None
            )
            finish = "length" if len(ids) == max_tokens else "stop"
            text = generator.tokenizer.decode(ids, skip_special_tokens=True)
            self._send_json(200, owner.completion_payload(text, logprobs, len(prompt), len(ids), finish))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        ids: list[int] = []
        shown = ""
        for token, alternatives, lp in steps:
            ids.append(token)
            text = generator.tokenizer.decode(ids, skip_special_tokens=True)
            piece, shown = text[len(shown) :], text
            logprobs = {"content": [owner.logprob_entry(token, alternatives, lp)]} if top else None
            self._event(owner.chunk_payload({"role": "assistant", "content": piece}, None, logprobs))
        self._event(
            owner.chunk_payload(
                {"role": "assistant", "content": ""}, "length" if len(ids) == max_tokens else "stop", None
            )
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": len(prompt),
                "completion_tokens": len(ids),
                "total_tokens": len(prompt) + len(ids),
            }
            self._event(owner.chunk_payload(None, None, None) | {"choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, payload: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


class OpenAIServer(LoopbackServer):
    """Start it, point InferenceClient(base_url=server.base_url) at it, script faults, read `requests()`."""

    def __init__(self, model_dir: Path | None, model_name: str = "HuggingFaceTB/SmolLM2-135M-Instruct"):
        super().__init__(_Handler, "openai-server")
        self._model_dir = model_dir
        self._generator: Generator | None = None
        self.model_name = model_name
        self._faults: deque[Fault] = deque()
        self._standing: Fault | None = None
        self._lock = threading.Lock()
        self._counter = 0
        self.base_url = f"{self.url}/v1"

    @property
    def generator(self) -> Generator:
        """The model, loaded on the first request it answers (fault-only tests need none: model_dir=None)."""
        with self._lock:
            if self._generator is None:
                if self._model_dir is None:
                    raise RuntimeError("this server was started without a model; script every reply")
                self._generator = Generator(self._model_dir)
            return self._generator

    def script(self, *faults: Fault) -> None:
        """Each coming chat request takes the next fault; when they are used up, the model answers again."""
        with self._lock:
            self._faults.extend(faults)

    def always(self, fault: Fault | None) -> None:
        """Every chat request meets this fault until always(None)."""
        with self._lock:
            self._standing = fault

    def reset(self) -> None:
        """No scripted or standing fault and an empty log: a shared server, fresh for the next test."""
        with self._lock:
            self._faults.clear()
            self._standing = None
        self.clear_log()

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else self._standing

    def logprob_entry(self, token: int, alternatives: list[tuple[int, float]], logprob: float) -> dict:
        decode = self.generator.tokenizer.decode
        return {
            "token": decode([token]),
            "logprob": logprob,
            "bytes": None,
            "top_logprobs": [
                {"token": decode([index]), "logprob": value, "bytes": None} for index, value in alternatives
            ],
        }

    def _envelope(self, kind: str) -> dict:
        with self._lock:
            self._counter += 1
            number = self._counter
        return {"id": f"chatcmpl-{number}", "object": kind, "created": int(time.time()), "model": self.model_name}

    def completion_payload(
        self, text: str, logprobs: list | None, prompt_tokens: int, completion_tokens: int, finish: str
    ) -> dict:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": {"content": logprobs} if logprobs is not None else None,
        }
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return self._envelope("chat.completion") | {
            "choices": [choice],
            "usage": usage,
            "system_fingerprint": "loopback",
        }

    def chunk_payload(self, delta: dict | None, finish: str | None, logprobs: dict | None) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return self._envelope("chat.completion.chunk") | {"choices": [choice], "system_fingerprint": "loopback"}
