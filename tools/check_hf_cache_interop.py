#!/usr/bin/env python3
"""Checks that clipkd and Python's huggingface_hub share one Hugging Face cache (issue 17).

A Hub on the loopback address (this script's, in the Hub's URL layout: HEAD/GET
/{repo}/resolve/{revision}/{file} with X-Repo-Commit, ETag, X-Linked-Etag/X-Linked-Size for
large files, 404 + X-Error-Code for a missing one) serves two open_clip repositories. Then:

1. Python downloads repository A (`hf_hub_download`); `clipkd download --model hf-hub:A` with
   HF_HUB_OFFLINE=1 finds both files in the cache Python wrote.
2. `clipkd download --model hf-hub:B` downloads repository B (online); Python's
   `try_to_load_from_cache` finds both files and `hf_hub_download` with HF_HUB_OFFLINE=1 returns
   the same paths, with the same bytes.
3. While Python holds huggingface_hub's lock on a blob (`filelock` on
   `.locks/<repo folder>/<etag>.lock`), `clipkd download` of it waits, and finishes once the
   lock is released.

Needs `pip install huggingface_hub` and a built clipkd binary (not run in CI, which has no
Python). Usage: tools/check_hf_cache_interop.py path/to/clipkd
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"

# The tiny teacher of the command line's tests (crates/clipkd/tests/common/train_setup.rs).
MODEL_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 48, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 1},
}


def repo_files(seed):
    config = json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": {}}).encode()
    weights = bytes((i * seed + i // 7) % 251 for i in range(300_000))
    return {"open_clip_config.json": config, "open_clip_model.safetensors": weights}


FILES = {}
for repo, seed in [
    ("py-org/written-by-python", 31),
    ("rs-org/written-by-clipkd", 37),
    ("lock-org/locked-by-python", 41),
]:
    for name, body in repo_files(seed).items():
        FILES[f"/{repo}/resolve/main/{name}"] = body


class Hub(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, with_body):
        body = FILES.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        if self.path.endswith(".safetensors"):
            # A large (LFS) file: its ETag is the SHA-256 of its content.
            sha = hashlib.sha256(body).hexdigest()
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(body)))
        else:
            # A small (git) file: a git blob hash.
            git = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
            self.send_header("ETag", f'"{git}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self):
        self.answer(False)

    def do_GET(self):
        self.answer(True)


def main():
    clipkd = os.path.abspath(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    cache = tempfile.mkdtemp(prefix="hf-interop-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=cache, HF_HUB_DISABLE_XET="1")
    os.environ.update(env)
    import huggingface_hub as hub  # after the environment: it reads it on import

    # 1. Python writes, clipkd reads offline.
    a = "py-org/written-by-python"
    py_paths = {f: hub.hf_hub_download(a, f, cache_dir=cache) for f in repo_files(31)}
    out = subprocess.run(
        [clipkd, "download", "--model", f"hf-hub:{a}"],
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    printed = out.stdout.strip()
    assert printed == py_paths["open_clip_model.safetensors"], (printed, py_paths)
    print(f"1. clipkd, offline, found Python's download: {printed}")

    # 2. clipkd writes, Python reads (cache lookup, and offline download).
    b = "rs-org/written-by-clipkd"
    out = subprocess.run(
        [clipkd, "download", "--model", f"hf-hub:{b}"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    rs_weights = out.stdout.strip()
    for name, body in repo_files(37).items():
        found = hub.try_to_load_from_cache(b, name, cache_dir=cache)
        assert isinstance(found, str), (name, found)
        with open(found, "rb") as f:
            assert f.read() == body, name
    found = hub.try_to_load_from_cache(b, "open_clip_model.safetensors", cache_dir=cache)
    assert found == rs_weights, (found, rs_weights)
    print(f"2. Python's try_to_load_from_cache found clipkd's download: {found}")

    offline = subprocess.run(
        [
            sys.executable,
            "-c",
            "import huggingface_hub as h, sys; "
            f"print(h.hf_hub_download('{b}', 'open_clip_model.safetensors', cache_dir=sys.argv[1]))",
            cache,
        ],
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == rs_weights, (offline.stdout, rs_weights)
    print(f"   and hf_hub_download with HF_HUB_OFFLINE=1 returned it: {offline.stdout.strip()}")

    # 3. The download lock is the one Python takes.
    import time

    from filelock import FileLock

    c = "lock-org/locked-by-python"
    etag = hashlib.sha256(repo_files(41)["open_clip_model.safetensors"]).hexdigest()
    lock_path = os.path.join(cache, ".locks", "models--lock-org--locked-by-python", f"{etag}.lock")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with FileLock(lock_path):
        waiting = subprocess.Popen(
            [clipkd, "download", "--model", f"hf-hub:{c}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        assert waiting.poll() is None, "clipkd did not wait for Python's lock"
        print("3. clipkd waits while Python holds the blob's lock...")
    stdout, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stderr
    print(f"   ...and finishes once it is released: {stdout.strip()}")
    server.shutdown()
    print(f"huggingface_hub {hub.__version__}: the cache and its locks are shared both ways")


if __name__ == "__main__":
    main()
