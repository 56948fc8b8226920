"""A real GCS JSON API server on loopback for tests, plus a fake GCE metadata server.

``gcp-storage-emulator`` serves the storage API that google-cloud-storage (and so Beam's
``gs://`` filesystem) talks to when ``STORAGE_EMULATOR_HOST`` is set.  Without credentials,
Beam retries Application Default Credentials for about 30 s per process before going
anonymous; the metadata server answers those look-ups at once with a dummy token, which the
emulator ignores.  Multi-process Beam workers inherit the environment and reach both servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKET = "latentpress-test"
PROJECT = "latentpress-test-project"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _MetadataHandler(BaseHTTPRequestHandler):
    ACCOUNT = {"email": "tests@latentpress.invalid", "scopes": [], "aliases": ["default"]}

    def do_GET(self):  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        if path.endswith("/token"):
            body = {"access_token": "emulator", "expires_in": 3600, "token_type": "Bearer"}
        elif path.endswith("/project/project-id"):
            body = PROJECT
        elif "/service-accounts/" in path:
            body = self.ACCOUNT
        else:
            body = ""
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(200)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/json" if body else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def local_gcs(bucket: str = BUCKET):
    """Starts both servers, points the environment at them, yields the bucket name."""
    import logging

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    storage_port, metadata_port = free_port(), free_port()
    storage = create_server("127.0.0.1", storage_port, in_memory=True, default_bucket=bucket)
    storage.start()
    metadata = ThreadingHTTPServer(("127.0.0.1", metadata_port), _MetadataHandler)
    threading.Thread(target=metadata.serve_forever, daemon=True).start()
    settings = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{storage_port}",
        "GCE_METADATA_HOST": f"127.0.0.1:{metadata_port}",
        "GCE_METADATA_IP": f"127.0.0.1:{metadata_port}",
        "GOOGLE_CLOUD_PROJECT": PROJECT,
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield bucket
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        metadata.shutdown()
        storage.stop()


def upload(local_path: str, gcs_path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with open(local_path, "rb") as source, FileSystems.create(gcs_path) as sink:
        sink.write(source.read())


def list_paths(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


class _FaultyProxyHandler(BaseHTTPRequestHandler):
    """Forwards to the emulator; answers the first try of some object requests with 503/429."""

    protocol_version = "HTTP/1.1"
    server: _FaultyProxy

    def _forward(self):
        import http.client

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        operation = (self.command, self.path.split("?", 1)[0])
        status = self.server.fault_for(operation)
        if status:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward  # noqa: N815

    def log_message(self, *args):
        pass


class _FaultyProxy(ThreadingHTTPServer):
    def __init__(self, upstream_port: int, max_faults: int):
        super().__init__(("127.0.0.1", free_port()), _FaultyProxyHandler)
        self.upstream_port = upstream_port
        self.max_faults = max_faults
        self.injected: list[tuple[str, str, int]] = []
        self._seen: set = set()
        self._lock = threading.Lock()

    def fault_for(self, operation: tuple[str, str]) -> int:
        """503 or 429 (alternating) on the first try of an object operation, up to the limit."""
        method, path = operation
        if "/o" not in path or len(self.injected) >= self.max_faults:
            return 0
        with self._lock:
            if operation in self._seen:
                return 0
            self._seen.add(operation)
            status = 503 if len(self.injected) % 2 == 0 else 429
            self.injected.append((method, path, status))
            return status


@contextlib.contextmanager
def faulty_proxy(max_faults: int = 12):
    """Routes this process's storage traffic through a proxy that injects transient errors."""
    upstream = os.environ["STORAGE_EMULATOR_HOST"]
    proxy = _FaultyProxy(int(upstream.rsplit(":", 1)[1]), max_faults)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        yield proxy
    finally:
        os.environ["STORAGE_EMULATOR_HOST"] = upstream
        proxy.shutdown()
