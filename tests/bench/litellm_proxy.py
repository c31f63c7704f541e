"""The LiteLLM proxy as the gateway bench's second baseline: its own venv, its config, its process.

LiteLLM cannot share the project's venv (``litellm[proxy]`` pins other openai/httpx/uvicorn releases), so the
bench builds ``.run/bench/litellm-venv`` once (``python3 -m venv`` + ``pip install litellm[proxy]==1.106.2
httptools==0.9.0``, progress printed) and reuses it while it holds that LiteLLM release and imports. Newer
LiteLLM releases do not install from this machine's index (TESTING.md).

How it runs (a lean production proxy, not a crippled one): ``litellm --config <yaml> --host 127.0.0.1 --port N
--num_workers 1`` — LiteLLM's own CLI, i.e. uvicorn with uvloop; httptools is added to the venv so uvicorn
parses HTTP with the same C parser as the gateway and the bare passthrough (without it uvicorn falls back to
pure-Python h11, which would charge LiteLLM for a server choice rather than for its proxy work). Config:

- ``model_list``: ``mock-small`` → ``openai/mock-small`` at the mock's ``/v1`` with a dummy upstream key;
- ``general_settings``: a fixed ``master_key`` (the client sends it: the proxy authenticates every call, as
  the gateway does; 1.106.2 refuses to start without one unless told it is a local development setup), no
  database (no ``DATABASE_URL``: no virtual keys, no spend rows), and
  ``disable_spend_logs`` / ``disable_error_logs`` / ``background_health_checks: false`` so nothing would be
  written or polled in the background;
- ``litellm_settings``: ``num_retries: 0`` (the clients do not retry either), ``request_timeout: 30``, no
  callbacks, no telemetry, ``set_verbose``/``json_logs`` off;
- environment: only PATH/HOME/LANG plus ``LITELLM_LOG=ERROR`` (quiet logs; uvicorn's access log then logs
  nothing) and ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (the cost map from the package: there is no outside
  network, and it is fetched once at startup anyway, never per request). The bench's ``DATABASE_URL``,
  ``REDIS_URL`` and ``OPENAI_*`` are NOT passed on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".run" / "bench"
VENV = LOGS / "litellm-venv"
VERSION = "1.106.2"
PACKAGES = (f"litellm[proxy]=={VERSION}", "httptools==0.9.0")
MASTER_KEY = "sk-bench-litellm"
MODEL = "mock-small"
START_TIMEOUT_S = 180  # the proxy imports for ~20-30 s on a busy 2-core machine
INSTALL_TIMEOUT_S = 1200
# pip lines worth showing while the one-time install runs (the rest is hundreds of lines of noise)
_PROGRESS = ("Collecting ", "Installing collected", "Successfully", "ERROR", "error:")


class Unavailable(RuntimeError):
    """LiteLLM could not be installed or started; the message says why (reported in the bench's rows)."""


def _python() -> Path:
    return VENV / "bin" / "python"


def _importable() -> bool:
    """The venv holds LiteLLM VERSION and its proxy server imports (checked in a child, ~5 s)."""
    if not _python().exists():
        return False
    probe = (
        "import importlib.metadata as m, litellm, fastapi, uvicorn, httptools, yaml; "
        f"assert m.version('litellm') == {VERSION!r}, m.version('litellm')"
    )
    return subprocess.run([str(_python()), "-c", probe], capture_output=True, timeout=120).returncode == 0


def _run_printing(command: list[str], timeout: float) -> None:
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    errors: list[str] = []  # pip's ERROR lines say why; the rest of its tail is mostly index warnings
    try:
        for line in proc.stdout:
            tail = [*tail[-40:], line]
            if line.startswith(("ERROR", "error:")):
                errors.append(line)
            if line.startswith(_PROGRESS):
                print(f"    litellm-venv [{time.perf_counter() - started:5.0f} s] {line.rstrip()[:150]}", flush=True)
            if time.perf_counter() - started > timeout:
                raise Unavailable(f"{' '.join(command[:4])} … took over {timeout:.0f} s")
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        why = "".join(errors[-3:] or tail[-8:]).strip()
        raise Unavailable(f"{' '.join(command[:5])} … failed ({proc.returncode}): {why}")


def ensure_venv() -> Path:
    """The venv's Python: reused when it imports, else built now (a few minutes, once). Raises Unavailable."""
    if _importable():
        return _python()
    print(f"  building {VENV} ({' '.join(PACKAGES)}); once, a few minutes ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    _run_printing([base, "-m", "venv", "--clear", str(VENV)], 300)
    pip = [str(_python()), "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check"]
    _run_printing([*pip, *PACKAGES], INSTALL_TIMEOUT_S)
    if not _importable():
        raise Unavailable(f"{VENV} was built but litellm {VERSION} does not import there")
    return _python()


def _config(mock_v1: str) -> str:
    """The proxy's config.yaml (see the module docstring for why each setting)."""
    return f"""\
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {mock_v1}
      api_key: dummy-upstream-key
litellm_settings:
  num_retries: 0
  request_timeout: 30
  set_verbose: false
  json_logs: false
  telemetry: false
general_settings:
  master_key: {MASTER_KEY}
  disable_spend_logs: true
  disable_error_logs: true
  background_health_checks: false
"""


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health/liveliness", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def litellm_server(mock_v1: str, port: int):
    """The LiteLLM proxy (1 worker) on 127.0.0.1:port forwarding to the mock; yields its /v1 base URL.
    Raises Unavailable (with the log's tail) when it cannot be installed or does not come up."""
    python = ensure_venv()
    LOGS.mkdir(parents=True, exist_ok=True)
    config, log = LOGS / "litellm-config.yaml", LOGS / "litellm-proxy.log"
    config.write_text(_config(mock_v1))
    home = LOGS / "litellm-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    command = [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--num_workers", "1"]
    with log.open("wb") as out:
        # a session of its own: stopping it ends whatever it started, and only that
        proc = subprocess.Popen(
            command, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while not _up(url):
            if proc.poll() is not None or time.perf_counter() - started > START_TIMEOUT_S:
                tail = log.read_text(errors="replace")[-1500:]
                raise Unavailable(f"the LiteLLM proxy did not come up (exit {proc.poll()}); {log}: {tail}")
            time.sleep(0.2)
        print(f"  LiteLLM {VERSION} proxy up in {time.perf_counter() - started:.1f} s", flush=True)
        yield url + "/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
