"""The live "Explain this neuron": one explanation of one neuron, written and scored now by a configured explainer.

Configured by environment variables (on a Space: its variables, and a secret for the key):
- NEUROSCOPE_EXPLAINER_URL: an OpenAI-compatible server's base URL (vLLM, TGI, llama.cpp, Ollama, OpenAI), or `hf`
  (`hf:PROVIDER`) for Hugging Face Inference Providers. Unset: the button is off, and says how to turn it on.
- NEUROSCOPE_EXPLAINER_MODEL: the model's name on that server or the Hub.
- NEUROSCOPE_EXPLAINER_KEY_ENV: the variable that holds the key (default OPENAI_API_KEY for a URL, HF_TOKEN for hf).
- NEUROSCOPE_EXPLAINER_SCORERS: e.g. `detection,embedding` (default: every scorer the explainer supports).
- NEUROSCOPE_EXPLAINER_TIMEOUT: seconds one explanation may take, scoring included (default 120).

The backend, the prompts and the scoring are harvest.explain's (the backend built by the CLI's own function), and
the prompt holds the neuron's stored examples only: nothing a visitor types reaches it. The result is shown, never
written into the dataset. Any failure of the explainer becomes a notice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from urllib.parse import urlparse

import httpx2

from harvest.explain.backends import HF_PROVIDERS, ChatBackend, Completion, make_backend
from harvest.explain.embedding import SentenceEmbedder
from harvest.explain.retry import MalformedReply, RetryPolicy, status_of
from harvest.explain.run import ExplainConfig, ExplainError, explain_neuron, resolve_scorers
from harvest.explain.scorers import SCORER_NAMES, build_scorers
from hub_sync.publish import describe
from hub_sync.reader import DatasetError, NeuronDataset
from space.explanations import Explanation
from space.links import resolve
from space.render import explanation_html, message_html, score_legend_html
from space.sources import Catalog

URL_ENV = "NEUROSCOPE_EXPLAINER_URL"
MODEL_ENV = "NEUROSCOPE_EXPLAINER_MODEL"
KEY_ENV_ENV = "NEUROSCOPE_EXPLAINER_KEY_ENV"
SCORERS_ENV = "NEUROSCOPE_EXPLAINER_SCORERS"
TIMEOUT_ENV = "NEUROSCOPE_EXPLAINER_TIMEOUT"
DEFAULT_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0  # one request's limit (at most the whole explanation's)
# Few, short retries: a visitor waits, and the explain queue holds one explanation at a time.
LIVE_POLICY = RetryPolicy(attempts=3, base_delay=1.0, max_delay=4.0, max_retry_after=10.0)
MAX_TOKENS = ExplainConfig.max_tokens
ENABLE_HINT = (
    f"Explaining live is off. To turn it on, set {URL_ENV} (an OpenAI-compatible server's base URL, or hf for "
    f"Hugging Face Inference Providers) and {MODEL_ENV}, with the key in OPENAI_API_KEY (HF_TOKEN for hf) or in the "
    f"variable {KEY_ENV_ENV} names; see the README."
)
NOT_SAVED = "Written and scored just now from the neuron's stored examples; shown here, not saved to the dataset."
View = tuple[str, str, dict]


class ExplanationTimeout(TimeoutError):
    """The explanation ran past its deadline: no further request is started."""


@dataclass(frozen=True)
class ExplainerSettings:
    url: str
    model: str | None
    key_env: str | None = None
    scorers: list[str] | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def where(self) -> str:
        """The server, for the page: its host only (a URL may carry more than a visitor should see)."""
        if self.url.partition(":")[0] == HF_PROVIDERS:
            return "Hugging Face Inference Providers"
        return urlparse(self.url).netloc or self.url


def settings_from_env(environ: Mapping[str, str] = os.environ) -> tuple[ExplainerSettings | None, str]:
    """The configured explainer, or None and why not: unset (how to turn it on) or a bad value (which, and why)."""
    url = environ.get(URL_ENV, "").strip()
    if not url:
        return None, ENABLE_HINT
    scorers = [name.strip() for name in environ.get(SCORERS_ENV, "").split(",") if name.strip()] or None
    unknown = sorted(set(scorers or []) - set(SCORER_NAMES))
    if unknown:
        choices = ", ".join(SCORER_NAMES)
        return None, f"Explaining live is off: {SCORERS_ENV} names unknown scorers {unknown} (choose from {choices})."
    text = environ.get(TIMEOUT_ENV, "").strip()
    try:
        timeout = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        return None, f"Explaining live is off: {TIMEOUT_ENV} must be a number of seconds above 0, not {text!r}."
    model = environ.get(MODEL_ENV, "").strip() or None
    return ExplainerSettings(url, model, environ.get(KEY_ENV_ENV, "").strip() or None, scorers, timeout), ""


class DeadlineBackend:
    """A backend that starts no request after its deadline: bounds one explanation to about `seconds` (plus the
    request in flight, itself bounded by REQUEST_TIMEOUT and LIVE_POLICY)."""

    def __init__(self, backend: ChatBackend, seconds: float):
        self.backend = backend
        self.name = backend.name
        self.usage = backend.usage
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def complete(self, messages: list[dict[str, str]], max_tokens: int, top_logprobs: int = 0) -> Completion:
        if time.monotonic() > self.deadline:
            raise ExplanationTimeout(f"the explanation took longer than {self.seconds:g} s")
        return self.backend.complete(messages, max_tokens, top_logprobs)

    def supports_logprobs(self) -> bool:
        return self.backend.supports_logprobs()


class LiveExplainer:
    """The Space's explainer: off (with the reason the page shows) or on, with one backend and sentence model kept."""

    def __init__(
        self, settings: ExplainerSettings | None, off_reason: str = ENABLE_HINT, environ: Mapping[str, str] = os.environ
    ):
        self.settings = settings
        self.off_reason = off_reason
        self._backend: ChatBackend | None = None
        self._embedder = SentenceEmbedder()
        self._scorer_names: list[str] | None = None
        if settings is not None:
            try:  # builds a client only: no request yet
                self._backend = make_backend(
                    settings.url, settings.model, settings.key_env,
                    timeout=min(REQUEST_TIMEOUT, settings.timeout), policy=LIVE_POLICY, environ=environ,
                )
            except ValueError as error:
                self.off_reason = f"Explaining live is off: {error}."

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LiveExplainer:
        settings, reason = settings_from_env(environ)
        return cls(settings, reason, environ)

    @property
    def enabled(self) -> bool:
        return self._backend is not None

    def status_html(self) -> str:
        if self.settings is None or self._backend is None:  # a quiet line: most deployments leave it off
            return f'<p class="ns-muted">{escape(self.off_reason, quote=True)}</p>'
        who = escape(f"{self._backend.name} ({self.settings.where})", quote=True)
        return (
            f'<p class="ns-muted">Explains with {who}: one explanation from the neuron\'s stored top examples, scored '
            f"on held-out ones, in at most about {self.settings.timeout:g} s. The result is shown, not saved.</p>"
        )

    def explain(self, dataset: NeuronDataset, layer: int, neuron: int) -> dict:
        """One neuron explained and scored now: a record as `harvest explain` stores it (refused ones say why)."""
        backend = DeadlineBackend(self._backend, self.settings.timeout)
        if self._scorer_names is None:
            self._scorer_names = resolve_scorers(self.settings.scorers, backend)
        scorers = build_scorers(self._scorer_names, backend, self._embedder)
        return explain_neuron(dataset, backend, scorers, layer, neuron, MAX_TOKENS)

    def failure_notice(self, error: Exception) -> str:
        """What went wrong, for the visitor; the cause of a failed start (ExplainError) is looked through."""
        cause = error.__cause__ if isinstance(error, ExplainError) and error.__cause__ is not None else error
        where = self.settings.where
        if isinstance(cause, ExplanationTimeout):
            return f"The explainer did not finish: {cause}. Try again; the operator can raise {TIMEOUT_ENV}."
        if status_of(cause) == 429:
            return (
                f"The explainer at {where} is rate-limiting requests (429 Too Many Requests), still after "
                f"{LIVE_POLICY.attempts} tries. Try again in a minute."
            )
        if isinstance(cause, httpx2.TransportError):
            return f"The explainer at {where} cannot be reached: {type(cause).__name__}: {describe(cause)}."
        if isinstance(cause, (MalformedReply, json.JSONDecodeError)):
            return f"The explainer at {where} sent no chat completion in {LIVE_POLICY.attempts} tries: {cause}"
        status = status_of(cause)
        if status is not None:  # the reason phrase, not the error's text: that names the server's whole URL
            key = "check its key" if status in (401, 403) else "see the Space's log"
            return f"The explainer at {where} answered {status} {cause.response.reason_phrase}: {key}."
        return f"The explainer at {where} failed: {type(cause).__name__}: {describe(cause)}"


def live_explanation_html(title: str, item: Explanation) -> str:
    heading = f"<h3>{escape(title, quote=True)}</h3>"
    return f'<div class="ns-page ns-live-expl">{heading}{explanation_html(item)}{score_legend_html()}</div>'


def explain_view(catalog: Catalog, explainer: LiveExplainer, model: object, layer: object, neuron: object) -> View:
    """The named neuron explained now: (notice, explanation HTML, the record); failures and bad input are notices."""
    if not explainer.enabled:
        return message_html([explainer.off_reason]), "", {}
    ref, messages = resolve(catalog, model, layer, neuron)
    if ref is None or messages:
        return message_html([*messages, "Nothing was explained: choose a neuron, then explain it."]), "", {}
    try:
        record = explainer.explain(catalog.models[ref.model], ref.layer, ref.neuron)
    except DatasetError as error:
        return message_html([f"The dataset cannot be read: {error}"]), "", {}
    except Exception as error:  # noqa: BLE001 - whatever the remote server does, the visitor gets a notice
        print(f"Explain this neuron failed on {ref}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return message_html([explainer.failure_notice(error)]), "", {}
    title = f"Live explanation of {ref.model} · layer {ref.layer} · neuron {ref.neuron}"
    return message_html([NOT_SAVED]), live_explanation_html(title, Explanation.from_row(record)), record
