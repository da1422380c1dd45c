#!/usr/bin/env python3
"""A stand-in for the OpenAI-compatible servers kitt starts, for tests.

Which server it plays depends on how it is invoked, as the real programs are:

  vllm serve MODEL [flags]            vLLM (also `vllm --version`)
  PYTHON -m sglang.launch_server ...  SGLang (this file is the "interpreter";
  PYTHON -c CODE                      it also runs code, with a fake `sglang`
                                      package's metadata on sys.path)
  python3 .../main.py [flags]         TabbyAPI
  mlx_lm.server [flags]               mlx_lm.server

Each parses its real flags (an unknown flag fails as argparse does), takes a
moment to load, prints log lines, serves its real endpoints on the host and
port given, streams chat completions in the OpenAI shape (role chunk, content
chunks, finish chunk, a usage-only chunk when `stream_options.include_usage`,
`data: [DONE]`), honours `max_tokens` and, where the real server does,
`ignore_eos` and `min_tokens`, and exits on SIGTERM. vLLM and SGLang start a
worker process, as the real ones do.

Environment:
  FAKE_SERVER_LOG          JSON-lines file: the start (program, argv, cwd) and every
                           request
  FAKE_LOAD_SECONDS        loading time (default 0.3)
  FAKE_NATURAL_TOKENS      tokens before the model's end of sequence (default 3)
  FAKE_FAIL                oom | oom_kv | exit: fail while loading, as the real server
  FAKE_FAIL_MATCH          fail only when the command line contains this text
  FAKE_NOT_SERVING_REQUESTS vLLM: /health answers, but this many chat requests
                           fail first, as while the engine behind it starts
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VLLM_VERSION = "0.8.5"
HERE = os.path.dirname(os.path.realpath(__file__))
LOG_LOCK = threading.Lock()


def record(event):
    path = os.environ.get("FAKE_SERVER_LOG")
    if not path:
        return
    with LOG_LOCK, open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(event) + "\n")


def say(line):
    print(line, flush=True)


def vllm_parser():
    parser = argparse.ArgumentParser(prog="vllm serve")
    parser.add_argument("model")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dtype", default="auto")
    return parser


def sglang_parser():
    parser = argparse.ArgumentParser(prog="python3 -m sglang.launch_server")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--context-length", type=int, default=None)
    parser.add_argument("--max-running-requests", type=int, default=None)
    parser.add_argument("--disable-radix-cache", action="store_true")
    parser.add_argument("--mem-fraction-static", type=float, default=None)
    parser.add_argument("--tp-size", "--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--random-seed", type=int, default=None)
    return parser


def tabby_parser():
    parser = argparse.ArgumentParser(description="TabbyAPI server")
    for flag in ["--host", "--port", "--disable-auth", "--model-dir", "--model-name",
                 "--max-seq-len", "--cache-size", "--max-batch-size", "--cache-mode",
                 "--config", "--gpu-split-auto"]:
        parser.add_argument(flag)
    return parser


def mlx_parser():
    parser = argparse.ArgumentParser(description="MLX Http Server.")
    parser.add_argument("--model", type=str)
    parser.add_argument("--host", type=str, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--log-level", type=str, default="INFO")
    return parser


class Server:
    """What the persona serves, after parsing its command line."""

    def __init__(self, persona, args):
        self.persona = persona
        self.args = args
        self.loading = True
        self.not_serving = int(os.environ.get("FAKE_NOT_SERVING_REQUESTS", "0"))
        self.lock = threading.Lock()
        self.started = int(time.time())
        if persona == "vllm":
            self.model_id = (args.served_model_name or [args.model])[0]
        elif persona == "sglang":
            self.model_id = args.served_model_name or args.model_path
        elif persona == "tabby":
            self.model_id = args.model_name
        else:
            self.model_id = os.path.realpath(args.model)

    def models(self):
        owner = {"vllm": "vllm", "sglang": "sglang", "tabby": "tabbyAPI", "mlx": "mlx"}
        if self.persona == "tabby":
            names = sorted(os.listdir(self.args.model_dir))
        else:
            names = [self.model_id]
        data = [{"id": name, "object": "model", "created": self.started,
                 "owned_by": owner[self.persona]} for name in names]
        return {"object": "list", "data": data}

    def answers_model(self, requested):
        if self.persona == "tabby":
            return True
        if self.persona == "mlx":
            return requested in ("default_model", self.args.model)
        return requested == self.model_id

    def pins_output(self):
        return self.persona in ("vllm", "sglang", "tabby")

    def not_serving_yet(self):
        if self.persona != "vllm":
            return False
        with self.lock:
            self.not_serving -= 1
            return self.not_serving >= 0


def token_count(server, body):
    max_tokens = int(body.get("max_tokens") or 16)
    natural = int(os.environ.get("FAKE_NATURAL_TOKENS", "3"))
    count = min(natural, max_tokens)
    if server.pins_output():
        if body.get("ignore_eos") or body.get("ban_eos_token"):
            count = max_tokens
        count = max(count, min(int(body.get("min_tokens") or 0), max_tokens))
    return count


def prompt_tokens(body):
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state = None

    def log_message(self, fmt, *args):
        say("INFO:     127.0.0.1 - " + fmt % args)

    def reply(self, status, payload=None):
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        state = self.server_state
        record({"event": "request", "method": "GET", "path": self.path,
                "loading": state.loading})
        persona = state.persona
        if self.path in ("/health", "/health_generate") and persona != "mlx":
            if state.loading:
                return self.reply(503)
            if persona == "tabby":
                return self.reply(200, {"status": "healthy"})
            return self.reply(200)
        if self.path == "/health" and persona == "mlx":
            return self.reply(200, {"status": "ok"})
        if state.loading:
            return self.reply(503)
        if self.path == "/v1/models":
            return self.reply(200, state.models())
        if self.path == "/version" and persona == "vllm":
            return self.reply(200, {"version": VLLM_VERSION})
        if self.path == "/get_server_info" and persona == "sglang":
            return self.reply(200, {"model_path": state.args.model_path,
                                    "context_length": state.args.context_length,
                                    "version": sglang_version()})
        if self.path == "/v1/model" and persona == "tabby":
            card = {"id": state.model_id, "object": "model", "created": state.started,
                    "owned_by": "tabbyAPI",
                    "parameters": {"max_seq_len": int(state.args.max_seq_len or 4096),
                                   "cache_size": int(state.args.cache_size or 4096)}}
            return self.reply(200, card)
        self.reply(404, {"detail": "Not Found"})

    def do_POST(self):
        state = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        event = {"event": "request", "method": "POST", "path": self.path, "body": body}
        if self.path != "/v1/chat/completions" or state.loading:
            record(event)
            return self.reply(404 if not state.loading else 503, {"detail": "Not Found"})
        if state.not_serving_yet():
            event["status"] = 500
            record(event)
            return self.reply(500, {"object": "error", "message": "engine is not ready",
                                    "type": "InternalServerError", "code": 500})
        requested = body.get("model", "default_model")
        if not state.answers_model(requested):
            event["status"] = 404
            record(event)
            return self.reply(404, {"object": "error", "type": "NotFoundError", "code": 404,
                                    "message": "The model `%s` does not exist." % requested})
        if (state.persona == "vllm" and body.get("min_tokens")
                and body["min_tokens"] > body.get("max_tokens", 16)):
            event["status"] = 400
            record(event)
            message = "min_tokens must be less than or equal to max_tokens"
            return self.reply(400, {"object": "error", "type": "BadRequestError", "code": 400,
                                    "message": message})
        event["status"] = 200
        record(event)
        count = token_count(state, body)
        model = requested if state.persona == "mlx" else state.model_id
        finish = "length" if count >= int(body.get("max_tokens") or 16) else "stop"
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": count,
                 "total_tokens": prompt_tokens(body) + count}
        if body.get("stream"):
            return self.stream(state, body, model, count, finish, usage)
        text = " ".join("tok%d" % i for i in range(count))
        self.reply(200, {"id": "chatcmpl-fake", "object": "chat.completion",
                         "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "finish_reason": finish,
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": usage})

    def stream(self, state, body, model, count, finish, usage):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        created = int(time.time())

        def chunk(choices, **extra):
            payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                       "created": created, "model": model, "choices": choices}
            payload.update(extra)
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

        if state.persona != "mlx":
            chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                    "logprobs": None, "finish_reason": None}])
        delay = float(os.environ.get("FAKE_TOKEN_SECONDS", "0.002"))
        for i in range(count):
            time.sleep(delay)
            chunk([{"index": 0, "delta": {"content": " tok%d" % i}, "logprobs": None,
                    "finish_reason": None}])
        chunk([{"index": 0, "delta": {"content": ""}, "logprobs": None,
                "finish_reason": finish}])
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            chunk([], usage=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def sglang_version():
    sys.path.insert(0, os.path.join(HERE, "site"))
    import importlib.metadata
    return importlib.metadata.version("sglang")


def fail_while_loading(persona, args, args_text):
    failure = os.environ.get("FAKE_FAIL", "")
    match = os.environ.get("FAKE_FAIL_MATCH", "")
    if not failure or match not in args_text:
        return
    time.sleep(0.1)
    say("Traceback (most recent call last):")
    say('  File "server.py", line 42, in <module>')
    if failure == "exit":
        say("RuntimeError: weights file is truncated")
        sys.exit(3)
    lines = {
        ("vllm", "oom"): "ValueError: No available memory for the cache blocks. Try increasing "
                         "`gpu_memory_utilization` when initializing the engine.",
        ("vllm", "oom_kv"): ("ValueError: The model's max seq len (%s) is larger than the "
                             "maximum number of tokens that can be stored in KV cache (16). "
                             "Try increasing `gpu_memory_utilization` or decreasing "
                             "`max_model_len` when initializing the engine."
                             % getattr(args, "max_model_len", None)),
        ("sglang", "oom"): "RuntimeError: Not enough memory. Please try to increase "
                           "--mem-fraction-static.",
        ("tabby", "oom"): "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
                          "2.00 GiB. GPU 0 has a total capacity of 23.58 GiB",
        ("mlx", "oom"): "[METAL] Command buffer execution failed: Insufficient Memory "
                        "(00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)",
    }
    say(lines[(persona, failure)])
    if persona == "vllm":
        say("RuntimeError: Engine core initialization failed. See root cause above.")
    sys.exit(1)


def start_worker():
    """vLLM's engine core and SGLang's scheduler run in processes of their own."""
    return subprocess.Popen([sys.executable, sys.argv[0], "--fake-worker"])


def serve(persona, args):
    args_text = " ".join(sys.argv)
    record({"event": "start", "persona": persona, "program": sys.argv[0], "argv": sys.argv[1:],
            "cwd": os.getcwd()})
    say("INFO %s: starting with %s" % (persona, args_text))
    state = Server(persona, args)
    Handler.server_state = state
    host = args.host or "127.0.0.1"
    worker = start_worker() if persona in ("vllm", "sglang") else None
    load = float(os.environ.get("FAKE_LOAD_SECONDS", "0.3"))
    httpd = None
    if persona == "sglang":
        # SGLang listens at once and answers /health 503 while it loads.
        httpd = ThreadingHTTPServer((host, int(args.port)), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    say("INFO Loading model weights from %s" % state.model_id)
    time.sleep(load / 2)
    fail_while_loading(persona, args, args_text)
    time.sleep(load / 2)
    if httpd is None:
        httpd = ThreadingHTTPServer((host, int(args.port)), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state.loading = False
    say("INFO:     Uvicorn running on http://%s:%s (Press CTRL+C to quit)" % (host, args.port))
    try:
        while True:
            time.sleep(3600)
    finally:
        if worker:
            worker.kill()


def main():
    argv = sys.argv[1:]
    name = os.path.basename(sys.argv[0])
    if argv[:1] == ["--fake-worker"]:
        while True:
            time.sleep(3600)
    if name == "vllm":
        if argv[:1] == ["--version"]:
            say(VLLM_VERSION)
            return
        if argv[:1] != ["serve"]:
            say("usage: vllm [-h] [-v] {chat,complete,serve,bench} ...")
            sys.exit(2)
        return serve("vllm", vllm_parser().parse_args(argv[1:]))
    if name == "main.py":
        return serve("tabby", tabby_parser().parse_args(argv))
    if name == "mlx_lm.server":
        return serve("mlx", mlx_parser().parse_args(argv))
    if argv[:2] == ["-m", "sglang.launch_server"]:
        return serve("sglang", sglang_parser().parse_args(argv[2:]))
    if argv[:1] == ["-c"] and len(argv) > 1:
        sys.path.insert(0, os.path.join(HERE, "site"))
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        return
    if argv[:1] == ["-m"] and len(argv) > 1:
        say("%s: No module named %s" % (sys.executable, argv[1]))
        sys.exit(1)
    say("fake_openai_server: unknown invocation %r" % sys.argv)
    sys.exit(2)


if __name__ == "__main__":
    main()
