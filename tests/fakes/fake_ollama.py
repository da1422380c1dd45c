#!/usr/bin/env python3
"""A stand-in for the `ollama` program in kitt's tests (Python 3 stdlib only).

`ollama serve` listens on OLLAMA_HOST and speaks the documented HTTP API:
/api/version, /api/tags, /api/pull (JSON-lines progress), HEAD and POST
/api/blobs/sha256:<hex> (the upload's SHA-256 is checked), /api/create,
/api/delete and /api/chat (JSON-lines tokens, a final line with the
server's counters). Models live in OLLAMA_MODELS like the real store
(manifests/<host>/<namespace>/<model>/<tag>, blobs/sha256-<hex>), so a
second server sees what the first pulled. The server takes a moment to
start, loads a model on its first use (again when num_ctx, num_gpu or
num_thread change), logs like the real one, and exits on SIGTERM.
`ollama --version` prints the version as the real client does when no
server answers.

Environment read by the fake:
  FAKE_OLLAMA_VERSION      version to report (default 0.6.8)
  FAKE_OLLAMA_REQUESTS     JSON-lines file: the serve command and every request
  FAKE_OLLAMA_UNKNOWN      comma-separated tags the library does not know
  FAKE_OLLAMA_PULL_FAIL    a tag whose pull fails midway with an error line, every time
  FAKE_OLLAMA_PULL_FAULTS  comma-separated faults, one for each pull request in turn
                           (later pulls succeed): `stall` (midway, the same progress
                           line is repeated every 100 ms without new bytes, as the
                           real server's ticker does), `silent` (midway, nothing more
                           is sent), `drop` (midway, the connection is closed), `500`
                           (an HTTP 500 answer), `error` (an error line midway),
                           `nospace` (an error line saying the disk is full)
  FAKE_OLLAMA_DIE_ON_LOAD  "1": the server exits while loading a model
  FAKE_OLLAMA_STARTUP_MS   delay before listening (default 300)
  FAKE_OLLAMA_LOAD_MS      time to load a model (default 200)
  FAKE_OLLAMA_PULL_STEP_MS delay between pull progress lines (default 300)
  FAKE_OLLAMA_TOKEN_MS     delay between generated tokens (default 2)
  FAKE_OLLAMA_EOS_AFTER    tokens after which replies end by themselves (default 1000)
"""

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("FAKE_OLLAMA_VERSION", "0.6.8")
DEFAULT_HOST = "registry.ollama.ai"
RECORD_LOCK = threading.Lock()
FAULT_LOCK = threading.Lock()
PULLS = {"count": 0}
LOAD_LOCK = threading.Lock()
LOADED = {"model": None, "options": None}


def env_ms(name, default):
    return int(os.environ.get(name, default)) / 1000.0


def log(level, message, **fields):
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    extra = "".join(f" {key}={json.dumps(value)}" for key, value in fields.items())
    sys.stderr.write(f"time={stamp} level={level} source=fake msg={json.dumps(message)}{extra}\n")
    sys.stderr.flush()


def record(entry):
    path = os.environ.get("FAKE_OLLAMA_REQUESTS")
    if not path:
        return
    with RECORD_LOCK, open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def store():
    root = os.environ.get("OLLAMA_MODELS") or os.path.join(os.path.expanduser("~"), ".ollama", "models")
    os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(root, "manifests"), exist_ok=True)
    return root


def normalise(name):
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def manifest_path(name):
    name = normalise(name)
    path, tag = name.rsplit(":", 1)
    parts = path.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_HOST, "library"] + parts
    elif len(parts) == 2:
        parts = [DEFAULT_HOST] + parts
    return os.path.join(store(), "manifests", *parts, tag)


def blob_path(digest):
    return os.path.join(store(), "blobs", digest.replace(":", "-"))


def read_manifest(name):
    try:
        with open(manifest_path(name), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_blob(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob_path(digest), "wb") as out:
        out.write(data)
    return digest


def write_manifest(name, layers):
    config = write_blob(json.dumps({"model_format": "gguf", "name": name}).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config},
        "layers": layers,
    }
    path = manifest_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(manifest, out)


def next_fault():
    """The fault for this pull request, from FAKE_OLLAMA_PULL_FAULTS in turn."""
    faults = [f.strip() for f in os.environ.get("FAKE_OLLAMA_PULL_FAULTS", "").split(",") if f.strip()]
    with FAULT_LOCK:
        index = PULLS["count"]
        PULLS["count"] += 1
    return faults[index] if index < len(faults) else None


def partial_file(digest):
    return blob_path(digest) + "-partial"


def partial_part(digest):
    """How far (0-4) an earlier pull got with this layer."""
    try:
        with open(partial_file(digest), encoding="utf-8") as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def set_partial(digest, part):
    with open(partial_file(digest), "w", encoding="utf-8") as out:
        out.write(str(part))


def clear_partial(digest):
    try:
        os.remove(partial_file(digest))
    except OSError:
        pass


def listed_models():
    root = os.path.join(store(), "manifests")
    models = []
    for directory, _, files in os.walk(root):
        for tag in files:
            parts = os.path.relpath(directory, root).split(os.sep)
            if parts[0] == DEFAULT_HOST and parts[1] == "library":
                parts = parts[2:]
            elif parts[0] == DEFAULT_HOST:
                parts = parts[1:]
            name = "/".join(parts) + ":" + tag
            manifest = read_manifest(name) or {"layers": []}
            size = sum(layer.get("size", 0) for layer in manifest["layers"])
            models.append({
                "name": name,
                "model": name,
                "size": size,
                "digest": hashlib.sha256(name.encode()).hexdigest(),
                "details": {"format": "gguf", "family": "llama", "quantization_level": "Q4_K_M"},
            })
    return sorted(models, key=lambda model: model["name"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-ollama"

    def log_message(self, fmt, *args):
        log("INFO", "request", line=fmt % args)

    # ---- plumbing ----------------------------------------------------------

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def parse(self, raw):
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def send_json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def stream_line(self, value):
        data = (json.dumps(value) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def handle_request(self, method):
        raw = b"" if method in ("GET", "HEAD") else self.read_body()
        body = self.parse(raw) if not self.path.startswith("/api/blobs/") else None
        entry = {"method": method, "path": self.path, "body": body}
        if self.path.startswith("/api/blobs/") and method == "POST":
            entry["bytes"] = len(raw)
        record(entry)
        route = ROUTES.get((method, self.path.split("?")[0]))
        if route is None and self.path.startswith("/api/blobs/"):
            route = Handler.blob_post if method == "POST" else Handler.blob_head
        if route is None:
            self.send_json(404, {"error": f"no route for {method} {self.path}"})
            return
        route(self, body if body is not None else raw)

    def do_GET(self):
        self.handle_request("GET")

    def do_POST(self):
        self.handle_request("POST")

    def do_HEAD(self):
        self.handle_request("HEAD")

    def do_DELETE(self):
        self.handle_request("DELETE")

    # ---- routes ------------------------------------------------------------

    def version(self, _body):
        self.send_json(200, {"version": VERSION})

    def tags(self, _body):
        self.send_json(200, {"models": listed_models()})

    def pull(self, body):
        name = normalise(body.get("model") or body.get("name") or "")
        unknown = {normalise(tag) for tag in os.environ.get("FAKE_OLLAMA_UNKNOWN", "").split(",") if tag}
        if name in unknown:
            log("ERROR", "pull failed", model=name)
            self.send_json(404, {"error": "pull model manifest: file does not exist"})
            return
        fault = next_fault()
        fail = os.environ.get("FAKE_OLLAMA_PULL_FAIL")
        if fail and normalise(fail) == name:
            fault = "error"
        if fault == "500":
            log("ERROR", "pull failed", model=name, fault=fault)
            self.send_json(500, {"error": "registry answered 502 Bad Gateway"})
            return
        step = env_ms("FAKE_OLLAMA_PULL_STEP_MS", 300)
        weights = hashlib.sha256(name.encode()).digest() * 4096
        template = b"{{ .Prompt }}"
        self.start_stream()
        self.stream_line({"status": "pulling manifest"})
        layers = []
        for media, data in (("model", weights), ("template", template)):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            total = len(data)
            # Like the real server, a layer resumes from what an earlier pull left.
            for part in range(partial_part(digest), 5):
                line = {"status": f"pulling {digest[7:19]}", "digest": digest,
                        "total": total, "completed": total * part // 4}
                self.stream_line(line)
                set_partial(digest, part)
                if fault and media == "model" and part == 2:
                    self.fail_midway(name, fault, line)
                    return
                time.sleep(step if media == "model" else 0)
            write_blob(data)
            clear_partial(digest)
            layers.append({"mediaType": f"application/vnd.ollama.image.{media}",
                           "digest": digest, "size": total})
        self.stream_line({"status": "verifying sha256 digest"})
        self.stream_line({"status": "writing manifest"})
        # As the real server does, the model is in the store before `success`.
        write_manifest(name, layers)
        self.stream_line({"status": "success"})
        log("INFO", "pulled model", model=name)
        self.end_stream()

    def fail_midway(self, name, fault, line):
        """Ends a pull stream the way `fault` says; the layer's partial file stays."""
        log("ERROR", "pull failed midway", model=name, fault=fault)
        if fault == "error":
            self.stream_line({"error": "max retries exceeded: unexpected EOF"})
            self.end_stream()
        elif fault == "nospace":
            partial = blob_path(line["digest"]) + "-partial"
            self.stream_line({"error": f"write {partial}: no space left on device"})
            self.end_stream()
        elif fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "stall":
            # The real server keeps reporting the same numbers while a download stalls.
            try:
                for _ in range(1200):
                    time.sleep(0.1)
                    self.stream_line(line)
            except OSError:
                log("INFO", "client went away during a stalled pull", model=name)
            self.close_connection = True
        elif fault == "silent":
            time.sleep(120)
            self.close_connection = True
        else:
            raise ValueError(f"unknown FAKE_OLLAMA_PULL_FAULTS entry {fault!r}")

    def blob_head(self, _body):
        digest = self.path.rsplit("/", 1)[-1]
        status = 200 if os.path.exists(blob_path(digest)) else 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def blob_post(self, raw):
        expected = self.path.rsplit("/", 1)[-1]
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        if actual != expected:
            self.send_json(400, {"error": f"digest mismatch, expected {expected}, got {actual}"})
            return
        write_blob(raw)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def create(self, body):
        name = normalise(body.get("model", ""))
        files = body.get("files") or {}
        if not files:
            self.send_json(400, {"error": "neither 'from' or 'files' was specified"})
            return
        layers = []
        for file_name, digest in files.items():
            path = blob_path(digest)
            if not os.path.exists(path):
                self.send_json(400, {"error": f"file {file_name} not found: {digest}"})
                return
            with open(path, "rb") as handle:
                if handle.read(4) != b"GGUF":
                    self.send_json(400, {"error": "invalid file magic"})
                    return
            layers.append({"mediaType": "application/vnd.ollama.image.model",
                           "digest": digest, "size": os.path.getsize(path)})
        self.start_stream()
        self.stream_line({"status": "parsing GGUF"})
        for layer in layers:
            self.stream_line({"status": f"using existing layer {layer['digest']}"})
        params = write_blob(json.dumps(body.get("parameters") or {}).encode())
        layers.append({"mediaType": "application/vnd.ollama.image.params", "digest": params,
                       "size": os.path.getsize(blob_path(params))})
        self.stream_line({"status": f"creating new layer {params}"})
        self.stream_line({"status": "writing manifest"})
        write_manifest(name, layers)
        self.stream_line({"status": "success"})
        log("INFO", "created model", model=name)
        self.end_stream()

    def delete(self, body):
        name = normalise(body.get("model") or body.get("name") or "")
        path = manifest_path(name)
        if not os.path.exists(path):
            self.send_json(404, {"error": f"model '{name}' not found"})
            return
        os.remove(path)
        log("INFO", "deleted model", model=name)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def chat(self, body):
        started = time.monotonic_ns()
        name = normalise(body.get("model", ""))
        if read_manifest(name) is None:
            self.send_json(404, {"error": f"model \"{name}\" not found, try pulling it first"})
            return
        options = body.get("options") or {}
        load_ns = self.load(name, options)
        messages = body.get("messages") or []
        stream = body.get("stream", True)
        base = {"model": body.get("model"), "created_at": datetime.now(timezone.utc).isoformat()}
        if not messages:
            self.reply_final(stream, dict(base, message={"role": "assistant", "content": ""},
                                     done_reason="load", done=True))
            return

        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages) + 10
        predict = int(options.get("num_predict", -1))
        natural = int(os.environ.get("FAKE_OLLAMA_EOS_AFTER", "1000"))
        count, reason = (predict, "length") if 0 <= predict <= natural else (natural, "stop")
        prompt_ns = 1_000_000 + prompt_tokens * 50_000
        if stream:
            self.start_stream()
        eval_started = time.monotonic_ns()
        text = []
        for index in range(count):
            time.sleep(env_ms("FAKE_OLLAMA_TOKEN_MS", 2))
            piece = f"tok{index} "
            text.append(piece)
            if stream:
                self.stream_line(dict(base, message={"role": "assistant", "content": piece},
                                      done=False))
        eval_ns = time.monotonic_ns() - eval_started
        final = dict(base, message={"role": "assistant", "content": "" if stream else "".join(text)},
                     done_reason=reason, done=True,
                     total_duration=time.monotonic_ns() - started, load_duration=load_ns,
                     prompt_eval_count=prompt_tokens, prompt_eval_duration=prompt_ns,
                     eval_count=count, eval_duration=eval_ns)
        self.reply_final(stream, final, started_stream=stream)

    def reply_final(self, stream, final, started_stream=False):
        if stream:
            if not started_stream:
                self.start_stream()
            self.stream_line(final)
            self.end_stream()
        else:
            self.send_json(200, final)

    def load(self, name, options):
        """Loads the model unless it is loaded with the same settings; the time taken in ns."""
        settings = {key: options.get(key) for key in ("num_ctx", "num_gpu", "num_thread")}
        with LOAD_LOCK:
            if LOADED["model"] == name and LOADED["options"] == settings:
                return 12_000
            started = time.monotonic_ns()
            log("INFO", "loading model", model=name, **{k: v for k, v in settings.items() if v})
            record({"event": "load", "model": name, "options": settings})
            if os.environ.get("FAKE_OLLAMA_DIE_ON_LOAD") == "1":
                log("ERROR", "error loading llama server",
                    error="llama runner process has terminated: signal: killed")
                os._exit(2)
            time.sleep(env_ms("FAKE_OLLAMA_LOAD_MS", 200))
            LOADED.update(model=name, options=settings)
            log("INFO", "llama runner started", seconds=(time.monotonic_ns() - started) / 1e9)
            return time.monotonic_ns() - started


ROUTES = {
    ("GET", "/api/version"): Handler.version,
    ("GET", "/api/tags"): Handler.tags,
    ("POST", "/api/pull"): Handler.pull,
    ("POST", "/api/create"): Handler.create,
    ("DELETE", "/api/delete"): Handler.delete,
    ("POST", "/api/chat"): Handler.chat,
}


def serve():
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    settings = {key: value for key, value in os.environ.items() if key.startswith("OLLAMA_")}
    record({"event": "serve", "argv": sys.argv[1:], "env": settings})
    log("INFO", "server config", env=settings)
    time.sleep(env_ms("FAKE_OLLAMA_STARTUP_MS", 300))
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):
        log("INFO", "received signal, shutting down", signal=signum)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log("INFO", f"Listening on {host}:{port} (version {VERSION})")
    server.serve_forever()


def main():
    args = sys.argv[1:]
    if args in (["--version"], ["-v"]):
        print("Warning: could not connect to a running Ollama instance")
        print(f"Warning: client version is {VERSION}")
        return 0
    if args[:1] == ["serve"]:
        serve()
        return 0
    sys.stderr.write(f"Error: unknown command {' '.join(args)!r} for \"ollama\"\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
