"""What EC2 does when an instance boots, for instances of the moto server (which runs nothing):
each running instance gets a metadata service of its own on loopback (IMDSv2: a session token
first, then the user data) and a real `occ-agent` that reads its bootstrap from there."""

from __future__ import annotations

import base64
import contextlib
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


def metadata_service(user_data: str) -> ThreadingHTTPServer:
    token = secrets.token_hex(16)

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            ok = self.path == "/latest/api/token" and self.headers.get(
                "X-aws-ec2-metadata-token-ttl-seconds")
            self._answer(200 if ok else 400, token if ok else "")

        def do_GET(self) -> None:
            if self.headers.get("X-aws-ec2-metadata-token") != token:
                self._answer(401, "")  # IMDSv2 only, as the provider asks for
            elif self.path == "/latest/user-data":
                self._answer(200, user_data)
            else:
                self._answer(404, "")

        def _answer(self, code: int, text: str) -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Machine:
    instance_id: str
    metadata: ThreadingHTTPServer
    agent: subprocess.Popen[bytes]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.agent.kill()
        self.agent.wait(10)
        self.metadata.shutdown()
        self.metadata.server_close()


@dataclass
class Ec2Machines:
    """Boots every running instance tagged with `namespace` once; stops those that end."""

    ec2: EC2Client
    namespace: str
    workdir: Path
    machines: dict[str, Machine] = field(default_factory=dict)
    booted: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Ec2Machines:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for machine in self.machines.values():
            machine.stop()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            pages = self.ec2.get_paginator("describe_instances").paginate(Filters=[
                {"Name": "tag:oneclick.dev/namespace", "Values": [self.namespace]}])
            states = {i["InstanceId"]: i["State"]["Name"] for page in pages
                      for r in page["Reservations"] for i in r["Instances"]}
            for instance_id, state in states.items():
                if state == "running" and instance_id not in self.machines:
                    self.machines[instance_id] = self._boot(instance_id)
                    self.booted.append(instance_id)
                elif state != "running" and instance_id in self.machines:
                    self.machines.pop(instance_id).stop()

    def _boot(self, instance_id: str) -> Machine:
        attribute = self.ec2.describe_instance_attribute(InstanceId=instance_id,
                                                         Attribute="userData")
        user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
        metadata = metadata_service(user_data)
        root = self.workdir / instance_id
        root.mkdir(parents=True)
        ordinal = len(self.booted) + 2
        with open(self.workdir / f"{instance_id}.log", "wb") as log:
            agent = subprocess.Popen(
                [str(Path(sys.executable).parent / "occ-agent"), "--root", str(root),
                 "--metadata-url", f"http://127.0.0.1:{metadata.server_address[1]}",
                 "--hostname", instance_id, "--fqdn", f"{instance_id}.ec2.internal",
                 "--address", f"127.214.{ordinal // 256}.{ordinal % 256}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return Machine(instance_id, metadata, agent)
