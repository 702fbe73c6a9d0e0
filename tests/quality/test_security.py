"""Security properties: loopback-only binds by default, capped requests (see
test_server_bad_requests), model names / labels in URLs and ModelSpecs cannot reach the file
system, and no library module unpickles or evaluates data."""

from __future__ import annotations

import ast
import http.client
import re
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from emotion_ai import spec

from .conftest import keypoints_batch, predict_request, raw_predict
from .quality_support import listening_addresses

REPO = Path(__file__).resolve().parents[2]
LIBRARY_SOURCES = [REPO / "client" / "src", REPO / "serving" / "src", REPO / "training" / "src"]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
KP = spec.KEYPOINTS_MODEL


# -- bind address ----------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_server_binds_loopback_by_default(server):
    """The suite's server is started without --host: both ports listen on loopback only."""
    for port in (server.grpc_port, server.rest_port):
        found = listening_addresses(port)
        assert found, f"nothing listens on {port}"
        assert found <= LOOPBACK, f"port {port} listens on {found}"


def test_serve_cli_default_host_is_loopback():
    from emotion_ai_serving.cli import build_parser

    assert build_parser().parse_args([]).host == "127.0.0.1"


def test_compose_publishes_ports_on_loopback_only():
    text = (REPO / "docker-compose.yml").read_text()
    ports = re.findall(r'^\s+- "([^"]*:\d+)"', text, re.MULTILINE)
    assert ports, "no port mappings found in docker-compose.yml"
    for mapping in ports:
        assert mapping.startswith(("127.0.0.1:", "${")), mapping


# -- file-system reach through names ---------------------------------------------------------------
def traversal_names(export_tree: Path) -> list[str]:
    real = str((export_tree / KP).resolve())
    return [
        "../../../../../../etc/passwd",
        "/etc/passwd",
        f"{real}",  # an absolute path to a real SavedModel base dir: must not be served
        f"{real}/1",
        f"../{export_tree.name}/{KP}",
        "..",
        ".",
        "~root",
        "keypoints/../emotion",
    ]


def _raw_http(server, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _assert_no_leak(body: bytes) -> None:
    assert b"root:x:" not in body and b"saved_model.pb" not in body


def test_rest_names_cannot_reach_files(server, export_tree, serving_ok):
    body = b'{"instances": ' + str(keypoints_batch(1).tolist()).encode() + b"}"
    for name in traversal_names(export_tree):
        enc = quote(name, safe="")
        for method, path, data in (
            ("POST", f"/v1/models/{enc}:predict", body),
            ("GET", f"/v1/models/{enc}", b""),
            ("GET", f"/v1/models/{enc}/metadata", b""),
            ("POST", f"/v1/models/{KP}/labels/{enc}:predict", body),
            ("GET", f"/v1/models/{KP}/labels/{enc}/metadata", b""),
        ):
            status, reply = _raw_http(server, method, path, data)
            assert status in (400, 404), (name, path, status, reply[:200])
            _assert_no_leak(reply)
        # the same names unencoded (raw '../' and '/' in the path) only ever give 400/404
        status, reply = _raw_http(server, "GET", f"/v1/models/{name}")
        assert status in (400, 404), (name, status)
        _assert_no_leak(reply)
    serving_ok()


def test_grpc_names_cannot_reach_files(channel, export_tree, serving_ok):
    kp = {spec.INPUT_KEY: keypoints_batch(1)}
    for name in traversal_names(export_tree):
        for req in (predict_request(name, kp), predict_request(KP, kp, label=name)):
            with pytest.raises(grpc.RpcError) as info:
                raw_predict(channel, req.SerializeToString())
            code = info.value.code()
            assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (
                name,
                code,
            )
    serving_ok()


def test_models_list_unchanged_after_traversal_attempts(server, http, export_tree):
    """Asking for paths must not make the server load anything new."""
    for name in traversal_names(export_tree):
        r = http.get(f"{server.rest_url}/v1/models/{quote(name, safe='')}", timeout=30)
        assert r.status_code in (400, 404)
    r = http.get(f"{server.rest_url}/v1/models/{KP}", timeout=30)
    assert [v["version"] for v in r.json()["model_version_status"]] == ["1"]


# -- no pickle / eval / exec on data ---------------------------------------------------------------
BANNED_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}


def risky_calls(source: str, filename: str = "<src>") -> list[str]:
    """Lines that deserialize or evaluate data unsafely (AST-based, so comments don't count)."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if a.name in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "") in BANNED_MODULES:
            found.append(f"{where} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            kwargs = {k.arg: k.value for k in node.keywords if k.arg}
            # __import__("numpy") names code, not data: only a non-literal argument counts
            literal = bool(node.args) and isinstance(node.args[0], ast.Constant)
            banned = name in BANNED_CALLS and not (name == "__import__" and literal)
            if isinstance(func, ast.Name) and banned:
                found.append(f"{where} {name}()")
            if name == "load" and _is_true(kwargs.get("allow_pickle")):
                found.append(f"{where} load(allow_pickle=True)")
            if name in ("load", "load_all") and _attr_base(func) == "yaml":
                loader = kwargs.get("Loader")
                if loader is None or "Safe" not in ast.unparse(loader):
                    found.append(f"{where} yaml.{name} without SafeLoader")
            safe_mode = kwargs.get("safe_mode")
            if name == "load_model" and safe_mode is not None and not _is_true(safe_mode):
                found.append(f"{where} load_model(safe_mode=False)")
            if _is_true(kwargs.get("shell")):
                found.append(f"{where} shell=True")
            if name == "system" and _attr_base(func) == "os":
                found.append(f"{where} os.system()")
    return found


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _attr_base(func: ast.AST) -> str:
    return (
        func.value.id
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
        else ""
    )


def library_files() -> list[Path]:
    files = [p for root in LIBRARY_SOURCES for p in root.rglob("*.py")]
    return [p for p in files if not p.name.endswith("_pb2.py") and "_pb2" not in p.name]


def test_scanner_catches_each_pattern():
    bad = """
import pickle
from marshal import loads
import numpy as np, yaml, os, subprocess
np.load(f, allow_pickle=True)
yaml.load(text)
eval(user_text)
exec(code)
subprocess.run(cmd, shell=True)
os.system(cmd)
keras.models.load_model(p, safe_mode=False)
__import__(name_from_request)
"""
    assert len(risky_calls(bad)) == 10, risky_calls(bad)
    good = (
        "np.load(f, allow_pickle=False)\nyaml.load(t, Loader=yaml.SafeLoader)\nx.eval()\n"
        "__import__('numpy')\n"
    )
    assert risky_calls(good) == []


def test_library_never_unpickles_or_evaluates():
    files = library_files()
    assert len(files) > 20, "library sources not found"
    problems = [hit for f in files for hit in risky_calls(f.read_text(), str(f.relative_to(REPO)))]
    assert problems == []
