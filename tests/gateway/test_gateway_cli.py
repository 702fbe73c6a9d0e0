"""`emotion-ai gateway`: its flags reach the gateway's settings; without the extra it is one line, exit 2."""

from __future__ import annotations

import sys

import pytest
from emotion_ai import cli as cli_mod
from emotion_ai.gateway import settings as settings_mod
from emotion_ai.gateway.settings import GatewaySettings, keys_from_env, read_api_keys, settings_from_env

from ..support.cli import run_cli as _run


@pytest.fixture
def served(monkeypatch):
    """Replace uvicorn: record what `emotion-ai gateway` would serve."""
    calls: list[tuple] = []
    from emotion_ai import gateway

    monkeypatch.setattr(gateway, "serve", lambda settings, host, port, **kw: calls.append((settings, host, port, kw)))
    for name in (settings_mod.API_KEYS_ENV, settings_mod.API_KEYS_FILE_ENV, settings_mod.CORS_ENV, "EMOTION_AI_HOST"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_flags_reach_the_settings(served, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# gateway keys\nalpha\n\nbeta  # the second\n")
    code = _run(["gateway", "--host", "0.0.0.0", "--port", "8080", "--endpoint", "10.0.0.5:8500",
                 "--api-keys-file", str(keys), "--cors-origin", "https://app.example", "--deadline", "5",
                 "--max-concurrency", "3", "--detector", "haar", "--accurate"])
    assert code == 0
    ((settings, host, port, _kw),) = served
    assert (host, port) == ("0.0.0.0", 8080)
    assert isinstance(settings, GatewaySettings)
    assert settings.client.endpoints == ("10.0.0.5:8500",) and settings.client.protocol == "grpc"
    assert settings.client.variant == "accurate"
    assert settings.api_keys == {"alpha", "beta"}
    assert settings.cors_origins == ("https://app.example",)
    assert (settings.deadline, settings.max_concurrency, settings.detector) == (5.0, 3, "haar")


def test_the_model_server_host_comes_from_the_environment(served, monkeypatch):
    monkeypatch.setenv("EMOTION_AI_HOST", "models.internal")
    monkeypatch.setenv("EMOTION_AI_GRPC_PORT", "9500")
    monkeypatch.setenv(settings_mod.API_KEYS_ENV, "k1, k2")
    assert _run(["gateway"]) == 0
    ((settings, host, port, _),) = served
    assert (host, port) == ("127.0.0.1", 8000)
    assert (settings.client.host, settings.client.grpc_port) == ("models.internal", 9500)
    assert settings.api_keys == {"k1", "k2"}


@pytest.mark.parametrize("argv", [["gateway", "--port", "0"], ["gateway", "--max-concurrency", "0"],
                                  ["gateway", "--endpoint", "nohost"], ["gateway", "--detector", "yunet:/x.onnx"]])
def test_bad_flags_are_one_line_exit_2(served, capsys, argv):
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert not served


def test_an_unreadable_key_file_is_one_line_exit_2(served, capsys, tmp_path):
    assert _run(["gateway", "--api-keys-file", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "API key file" in err
    assert not served


def test_without_the_extra_it_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "emotion_ai.gateway", None)  # as if FastAPI were not installed
    assert _run(["gateway"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'emotion-ai[gateway]'" in err


def test_key_helpers(tmp_path):
    assert keys_from_env({}) == frozenset()
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no key"):
        read_api_keys(empty)
    with pytest.raises(ValueError, match="not a number"):
        settings_from_env({"EMOTION_AI_GRPC_PORT": "eighty"})
    with pytest.raises(ValueError, match="white space"):
        GatewaySettings(api_keys=frozenset({"a b"}))
    with pytest.raises(ValueError, match="detector must be one of"):
        GatewaySettings(detector="yunet:/tmp/x.onnx")


def test_wait_for_a_model_server_that_is_down_is_one_line_exit_2(served, capsys):
    from emotion_ai_serving.local_server import free_port

    assert _run(["gateway", "--grpc-port", str(free_port()), "--timeout", "1", "--wait", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not AVAILABLE" in err, err
    assert not served


def test_the_thin_client_does_not_import_the_gateway():
    import subprocess

    code = ("import sys, emotion_ai, emotion_ai.cli; emotion_ai.cli.build_parser(); "
            "found = sorted({'fastapi', 'uvicorn', 'starlette', 'emotion_ai.gateway'} & set(sys.modules)); "
            "print(found, file=sys.stderr); sys.exit(1 if found else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_the_help_states_the_settings_defaults():
    from emotion_ai.gateway.settings import GatewaySettings

    text = " ".join(cli_mod.build_parser()._subparsers._group_actions[0].choices["gateway"].format_help().split())
    d = GatewaySettings()
    assert d.max_body_bytes == 20 * 1024 * 1024 and "20 MiB" in text
    assert d.max_pixels == 40_000_000 and "40 million" in text
    assert f"(default: {d.deadline:g})" in text and f"(default: {d.max_concurrency})" in text
    assert "replaces EMOTION_AI_HOST and the port" in text
