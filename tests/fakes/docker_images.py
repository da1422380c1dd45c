"""What the fake `docker` (tests/fakes/docker) runs for each image, and how a
container's paths, ports and environment map onto this host (stdlib only).

A container here is a process tree of the tests' own programs: the real
llama-server, or the engine fakes beside this file, started the way each
official image's entry point would start the real server. Its file system is
a directory in which every mount point is a link to what is mounted there.
"""

import os
import socket

FAKES = os.environ.get("FAKE_DOCKER_FAKES") or os.path.dirname(os.path.realpath(__file__))
# The port each image's server listens on by default, inside the container.
DEFAULT_PORTS = {"llama.cpp": 8080, "ollama": 11434, "vllm-openai": 8000, "sglang": 30000, "tabbyapi": 5000}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_rootfs(container):
    """The container's file system: its own directories, each mount point a link."""
    root = container["rootfs"]
    for directory in ("root", "tmp", "app"):
        os.makedirs(os.path.join(root, directory), exist_ok=True)
    for mount in container["mounts"]:
        point = os.path.join(root, mount["container"].lstrip("/"))
        os.makedirs(os.path.dirname(point), exist_ok=True)
        os.symlink(mount["host"], point)


def host_path(container, path):
    """Where an absolute path inside the container is on the host, and
    whether it is inside a mount."""
    for mount in container["mounts"]:
        if path == mount["container"] or path.startswith(mount["container"] + "/"):
            return mount["host"] + path[len(mount["container"]) :], True
    return os.path.join(container["rootfs"], path.lstrip("/")), False


def program_link(container, inside, target):
    """A link at `inside` in the container's file system to `target`, so the
    program runs under the name the image gives it."""
    path = os.path.join(container["rootfs"], inside.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.lexists(path):
        os.symlink(target, path)
    return path


def entrypoint(container):
    """The process a container runs: an argument vector on this host, its
    extra environment and its working directory; None when the fake cannot run it."""
    command = list(container["command"])
    repo = container["image"].rsplit(":", 1)[0]
    name = repo.rsplit("/", 1)[-1]
    port = DEFAULT_PORTS.get(name, 8080)
    openai = os.path.join(FAKES, "fake_openai_server.py")
    cwd = container["rootfs"]
    if name == "llama.cpp":
        server = os.environ.get("FAKE_DOCKER_LLAMA_SERVER")
        if not server:
            return None
        argv = [server] + host_arguments(container, command, port)
    elif repo == "ollama/ollama":
        argv = [os.path.join(FAKES, "fake_ollama.py")] + (command or ["serve"])
    elif repo == "vllm/vllm-openai":
        vllm = program_link(container, "/usr/local/bin/vllm", openai)
        argv = [vllm, "serve"] + host_arguments(container, command, port)
    elif name == "sglang":
        if command[:1] not in (["python3"], ["python"]):
            return None
        argv = [openai] + host_arguments(container, command[1:], port)
    elif name == "tabbyapi":
        command = command or ["main.py"]
        if command[0] != "main.py":
            return None
        cwd = os.path.join(container["rootfs"], "app")
        main = program_link(container, "/app/main.py", openai)
        argv = [main] + host_arguments(container, command[1:], port)
    elif name == "busybox":
        argv = command
    else:
        return None
    return argv, container_environment(container, repo, port), cwd


def container_environment(container, repo, port):
    """The image's environment, then `--env`, with the ollama image's host
    and store translated to this host."""
    env = {"OLLAMA_HOST": "0.0.0.0"} if repo == "ollama/ollama" else {}
    env.update(dict(item.split("=", 1) for item in container["env"]))
    env["HOME"] = os.path.join(container["rootfs"], "root")
    if repo == "ollama/ollama":
        host, sep, given = env["OLLAMA_HOST"].rpartition(":")
        if not sep:
            host, given = given, ""
        env["OLLAMA_HOST"] = "127.0.0.1:%d" % reachable_port(container, host, int(given or port))
        env["OLLAMA_MODELS"] = host_path(container, env.get("OLLAMA_MODELS", "/root/.ollama/models"))[0]
    return env


def reachable_port(container, host, port):
    """The host port a server inside listening on host:port is reachable at.
    Inside a container, a server on 127.0.0.1 or on an unpublished port is
    unreachable from the host: it runs where nobody looks."""
    published = {p["container_port"]: p["host_port"] for p in container["ports"]}
    return published[port] if host == "0.0.0.0" and port in published else free_port()


def host_arguments(container, command, default_port):
    """Paths to the host's; the published port and host as on the host."""
    translated = []
    for arg in command:
        if arg.startswith("/"):
            path, mounted = host_path(container, arg)
            arg = path if mounted or os.path.lexists(path) else arg
        translated.append(arg)
    host = translated[translated.index("--host") + 1] if "--host" in translated else "127.0.0.1"
    port = int(translated[translated.index("--port") + 1]) if "--port" in translated else default_port
    host_port = reachable_port(container, host, port)
    result, skip = [], False
    for arg in translated:
        if skip:
            skip = False
            continue
        if arg in ("--host", "--port"):
            skip = True
            continue
        result.append(arg)
    return result + ["--host", "127.0.0.1", "--port", str(host_port)]
