"""The user data every provider hands a member: one cloud-config that cloud-init's own schema
accepts, from which the agent (without a YAML parser) and the local provider (as cloud-init)
take the bootstrap; anything else in its place is refused, saying why."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from oneclick.agent.bootstrap import BootstrapNotFound, parse, read
from oneclick.api.protocol import Bootstrap
from oneclick.controller.providers import LaunchRequest, ProviderError, userdata
from oneclick.controller.providers.local import LocalProvider, _user_data
from tests.providers.hostile_broker import HostileBroker, Way, hostile_broker


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:4096", "-nodes", "-keyout", "/dev/null",
         "-subj", "/CN=oneclick broker CA", "-days", "1"],
        capture_output=True, text=True, check=True).stdout


@pytest.fixture
def bootstrap(ca_pem: str) -> Bootstrap:
    return Bootstrap(broker_url="https://10.213.0.1:8443", ca_cert=ca_pem, namespace="ns",
                     cluster="c", member="c-head-node-0", token="T" * 43,
                     domain="oneclick.local", agent_sha256="ab" * 32)


def check_schema(path: Path) -> None:
    """Debian's cloud-init (hack/bootstrap installs it) on a file of user data."""
    checked = subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "Valid cloud-config" in checked.stdout, (
        checked.stdout + checked.stderr)


def test_cloud_init_accepts_the_user_data_and_reads_what_the_agent_reads(
    bootstrap: Bootstrap, tmp_path: Path,
) -> None:
    rendered = userdata.render(bootstrap)
    assert len(rendered.encode()) < userdata.USER_DATA_LIMIT  # (a 4096-bit RSA CA in it)
    path = tmp_path / "user-data"
    path.write_text(rendered)
    check_schema(path)
    # What cloud-init makes of it (YAML) is what the agent takes (JSON, no YAML parser).
    config = yaml.safe_load(rendered)
    [written] = [f for f in config["write_files"] if f["path"] == userdata.BOOTSTRAP_FILE]
    assert written["permissions"] == "0600" and written["owner"] == "root:root"
    assert Bootstrap.model_validate_json(written["content"]) == bootstrap
    assert parse(rendered, "user data") == bootstrap
    # cloud-init keeps it as user-data.txt, where the agent looks first.
    kept = tmp_path / "var/lib/cloud/instance/user-data.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text(rendered)
    assert read(None, tmp_path, metadata_url="http://127.0.0.1:9") == bootstrap
    # Its script is the one this package ships, run by the image's python3.
    files = userdata.files(rendered)
    script, mode = files[userdata.BOOT_SCRIPT]
    assert mode == 0o700 and "def agent_from_broker" in script
    assert config["runcmd"][0][:3] == ["python3", "-I", userdata.BOOT_SCRIPT]


def test_a_bare_bootstrap_still_works(bootstrap: Bootstrap) -> None:
    """What images with the agent were handed until now (and the ssh pools' hosts kept)."""
    assert parse(bootstrap.model_dump_json(by_alias=True), "file") == bootstrap


@pytest.mark.parametrize(("change", "says"), [
    (lambda c: "#cloud-config\nwrite_files:\n  - path: x\n", "cannot read"),
    (lambda c: c.replace(userdata.BOOTSTRAP_FILE, "/etc/elsewhere.json", 1),
     "without a OneClick bootstrap"),
    (lambda c: _config(c, lambda d: d["write_files"].append(d["write_files"][0])),
     "2 times"),
    (lambda c: _config(c, lambda d: d["write_files"][0].update(encoding="b64")),
     "not plain text"),
    (lambda c: _config(c, lambda d: d.update(write_files={"path": "x"})),
     "without a OneClick bootstrap"),
    (lambda c: "#cloud-config\n[1, 2]\n", "without a OneClick bootstrap"),
    (lambda c: c + " " * 1024 * 1024, "over"),
    (lambda c: _config(c, lambda d: d["write_files"][0].update(content='{"token": 1}')),
     "not a OneClick bootstrap"),
])
def test_the_agent_refuses_user_data_that_is_not_ours(bootstrap: Bootstrap, change: object,
                                                      says: str) -> None:
    assert callable(change)
    with pytest.raises(BootstrapNotFound) as refused:
        parse(change(userdata.render(bootstrap)), "the user data")
    assert says in str(refused.value) and "T" * 43 not in str(refused.value)


def _config(rendered: str, edit: object) -> str:
    assert callable(edit)
    config = json.loads(rendered.partition("\n")[2])
    edit(config)
    return "#cloud-config\n" + json.dumps(config)


def test_the_local_provider_writes_under_var_lib_oneclick_only(
    bootstrap: Bootstrap, tmp_path: Path,
) -> None:
    rendered = userdata.render(bootstrap)
    _user_data(tmp_path, rendered)
    written = tmp_path / "var/lib/oneclick/bootstrap.json"
    assert written.stat().st_mode & 0o777 == 0o600
    assert Bootstrap.model_validate_json(written.read_text()) == bootstrap
    assert (tmp_path / "var/lib/oneclick/occ-boot.py").stat().st_mode & 0o777 == 0o700
    for path in ("/etc/passwd", "/var/lib/oneclick/../../../etc/passwd"):
        hostile = _config(rendered, lambda d, p=path: d["write_files"].append(
            {"path": p, "content": "x", "permissions": "0600"}))
        with pytest.raises(ProviderError) as refused:
            _user_data(tmp_path / "other", hostile)
        assert refused.value.permanent and "under /var/lib/oneclick/ only" in str(refused.value)
        assert not (tmp_path / "etc/passwd").exists() and not (tmp_path / "other").exists()


@pytest.mark.parametrize(("field", "value", "says"), [
    ("brokerUrl", "http://10.213.0.1:8443", "brokerUrl is not an https:// address"),
    ("brokerUrl", "https://user@evil.example", "brokerUrl is not an https:// address"),
    ("token", "T" * 40 + "\r\nX-Evil: 1", "the token is malformed"),
    ("member", "../../etc", "member is not a Kubernetes name"),
    ("agentSha256", "0" * 63, "agentSha256 is not a SHA-256 in hex"),
    ("brokerUrl", "https://10.213.0.1:99999", "brokerUrl is not an https:// address"),
    ("caCert", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     "caCert is not a usable PEM certificate: no start line"),
    ("caCert", "-----BEGIN CERTIFICATE-----\nAAAA\u00e9\n-----END CERTIFICATE-----\n",
     "caCert is not a usable PEM certificate: cadata should be an ASCII string"),
])
def test_occ_boot_refuses_a_hostile_bootstrap_with_debians_python(
    bootstrap: Bootstrap, tmp_path: Path, field: str, value: str, says: str,
) -> None:
    """Each field is checked before it goes into a URL or a header; nothing is fetched, the
    token is never shown."""
    script, _ = userdata.files(userdata.render(bootstrap))[userdata.BOOT_SCRIPT]
    (tmp_path / "occ-boot.py").write_text(script)
    hostile = {**bootstrap.wire(), field: value}
    (tmp_path / "bootstrap.json").write_text(json.dumps(hostile))
    ran = subprocess.run(["/usr/bin/python3", "-I", str(tmp_path / "occ-boot.py"),
                          "--bootstrap", str(tmp_path / "bootstrap.json")],
                         capture_output=True, text=True, check=False, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert ran.returncode == 2 and says in ran.stderr, ran.stderr
    assert bootstrap.token not in ran.stderr + ran.stdout
    one_line_each(ran.stderr)  # (a bad CA is final: said, not a traceback)


def test_occ_boot_leaves_an_image_that_has_its_own_agent_to_it(
    bootstrap: Bootstrap, tmp_path: Path,
) -> None:
    """The Nimbus path: the image's occ-agent (here this environment's, on the PATH) is run
    by the image's own units; occ-boot fetches nothing and runs nothing."""
    script, _ = userdata.files(userdata.render(bootstrap))[userdata.BOOT_SCRIPT]
    (tmp_path / "occ-boot.py").write_text(script)
    (tmp_path / "bootstrap.json").write_text(bootstrap.model_dump_json(by_alias=True))
    own = Path(sys.executable).parent / "occ-agent"
    assert own.is_file()
    ran = subprocess.run(["/usr/bin/python3", "-I", str(tmp_path / "occ-boot.py"),
                          "--bootstrap", str(tmp_path / "bootstrap.json")],
                         capture_output=True, text=True, check=False, timeout=60,
                         env={"PATH": f"{own.parent}:/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    assert f"this image has its own agent ({own}); its boot runs it" in ran.stderr


async def test_a_stock_image_needs_the_namespaced_members(
    bootstrap: Bootstrap, tmp_path: Path, images: Path,
) -> None:
    """Its cloud-config writes and runs as root on the member: a loopback member has no
    root of its own, so the launch fails at once, saying why."""
    stock = tmp_path / "images" / "stock"
    shutil.copytree(images / "base-cluster", stock, symlinks=True)
    (stock / "image.json").write_text('{"boot": "cloud-config"}')
    provider = LocalProvider(state_dir=tmp_path / "state", images_dir=tmp_path / "images",
                             namespaced=False)
    request = LaunchRequest(idempotency_key="uid-1", namespace="ns", cluster="c",
                            member="c-solo-0", role="solo", index=0, image="stock", size=None,
                            user_data=userdata.render(bootstrap))
    with pytest.raises(ProviderError) as refused:
        await provider.launch(request)
    assert refused.value.permanent and "needs the local provider's namespaces" in str(
        refused.value)
    for hostile in ('{"boot": "cloud-config", "python": "python3"}', '{"boot": "maybe"}',
                    '{"shell": "/bin/sh"}', "[]"):
        (stock / "image.json").write_text(hostile)
        with pytest.raises(ProviderError) as refused:
            await LocalProvider(state_dir=tmp_path / "state", images_dir=tmp_path / "images",
                                namespaced=True).launch(request)
        assert refused.value.permanent and "image.json" in str(refused.value)
    assert not list((tmp_path / "state").glob("instances/*"))


# occ-boot as the member's python3 runs it, with its directory and deadline set for the test
# (module constants): everything else is the script the cloud-config carries.
RUN = """import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("occ_boot", sys.argv[1])
boot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(boot)
boot.AGENTS, boot.DEADLINE = sys.argv[2], float(sys.argv[3])
if os.environ.get("STALE"):  # what a crash during keep() left, for this very pid
    os.makedirs(boot.AGENTS, mode=0o700)
    open(os.environ["STALE"].replace("PID", str(os.getpid())), "w").close()
sys.exit(boot.main(sys.argv[4:]))
"""
# The agent the hostile broker serves: it says how it was run (padded: a trickle of it lasts).
FAKE_AGENT = (b"import os, sys\n"
              b"print('the agent ran:', *sys.argv[1:], 'cache:', os.environ['OCC_AGENT_CACHE'])\n"
              + b"#" * 2000 + b"\n")


def occ_boot(tmp_path: Path, broker: HostileBroker, deadline: float = 60,
             stale: bool = False) -> subprocess.CompletedProcess[str]:
    digest = hashlib.sha256(FAKE_AGENT).hexdigest()
    bootstrap = Bootstrap(broker_url=broker.url, ca_cert=broker.ca, namespace="ns",
                          cluster="c", member="c-head-node-0", token="T" * 43,
                          agent_sha256=digest)
    script, _ = userdata.files(userdata.render(bootstrap))[userdata.BOOT_SCRIPT]
    (tmp_path / "occ-boot.py").write_text(script)
    (tmp_path / "bootstrap.json").write_text(bootstrap.model_dump_json(by_alias=True))
    agents = tmp_path / "oneclick"
    env = {"PATH": "/usr/bin:/bin", "OCC_AGENT_CACHE": "/tmp"}  # (not what the agent gets)
    if stale:
        env["STALE"] = str(agents / f"occ-agent-{digest[:16]}.pyz.PID.new")
    return subprocess.run(["/usr/bin/python3", "-I", "-c", RUN, str(tmp_path / "occ-boot.py"),
                           str(agents), str(deadline), "--bootstrap",
                           str(tmp_path / "bootstrap.json")],
                          capture_output=True, text=True, check=False, timeout=60, env=env)


def one_line_each(stderr: str) -> None:
    """Whatever happened, occ-boot said it in its own lines: no traceback."""
    assert all(line.startswith("occ-boot: ") for line in stderr.splitlines()), stderr


def test_occ_boot_retries_a_cut_off_download_and_runs_the_whole_agent(tmp_path: Path) -> None:
    """A controller restarting mid-download, something that is not HTTP, an answer that
    cannot say it is whole: each is tried again, none is a digest mismatch; then the whole
    agent is kept and run, its libraries unpacked under root's directory whatever the
    environment said."""
    script: list[Way] = ["cut", "not-http", "no-length", "whole"]
    with hostile_broker(tmp_path, FAKE_AGENT, script) as broker:
        ran = occ_boot(tmp_path, broker)
    assert ran.returncode == 0, ran.stderr
    assert broker.served == script and broker.reports == []
    one_line_each(ran.stderr)
    assert (f"the transfer was cut short after {len(FAKE_AGENT) // 2} bytes, "
            f"{len(FAKE_AGENT) - len(FAKE_AGENT) // 2} more expected") in ran.stderr
    assert "the answer is not HTTP (BadStatusLine" in ran.stderr
    assert "the answer has no Content-Length: it may be cut short" in ran.stderr
    assert "mismatch" not in ran.stderr
    kept = tmp_path / "oneclick" / f"occ-agent-{hashlib.sha256(FAKE_AGENT).hexdigest()[:16]}.pyz"
    assert kept.read_bytes() == FAKE_AGENT and kept.stat().st_mode & 0o777 == 0o700
    assert ran.stdout == (f"the agent ran: --bootstrap {tmp_path / 'bootstrap.json'} "
                          f"cache: {tmp_path / 'oneclick' / 'cache'}\n")


@pytest.mark.parametrize(("way", "says"), [
    ("trickle", "The read operation timed out"),  # (each byte well within 60 s)
    ("not-http", "the answer is not HTTP (BadStatusLine"),
])
def test_occ_boot_gives_up_at_its_deadline_and_reports_why(tmp_path: Path, way: Way,
                                                           says: str) -> None:
    """The deadline bounds the whole fetch, however slowly the bytes come; what kept it from
    the agent is said in one line and reported, and nothing is run."""
    with hostile_broker(tmp_path, FAKE_AGENT, [way]) as broker:
        started = time.monotonic()
        ran = occ_boot(tmp_path, broker, deadline=3)
        took = time.monotonic() - started
    assert ran.returncode == 1 and took < 15, (took, ran.stderr)
    one_line_each(ran.stderr)
    assert f"occ-boot: could not fetch the agent from {broker.url}: {says}" in ran.stderr
    assert "mismatch" not in ran.stderr and "the agent ran" not in ran.stdout
    [report] = broker.reports
    assert report["ok"] is False and report["failedStep"] == "occ-boot: fetch the agent"
    assert says in str(report["message"])
    assert not list(tmp_path.glob("oneclick/*"))  # (nothing kept)


def test_occ_boot_keeps_the_agent_past_what_a_crash_left(tmp_path: Path) -> None:
    """A staging file left by a crash during keep(), under the name a later boot's pid
    would have chosen, is not in the way."""
    with hostile_broker(tmp_path, FAKE_AGENT, ["whole"]) as broker:
        ran = occ_boot(tmp_path, broker, stale=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("the agent ran: --bootstrap")
    assert [p.name for p in (tmp_path / "oneclick").glob("*.new")] != []  # (it was there)
    assert [p.name for p in (tmp_path / "oneclick").glob(".occ-agent-*")] == []
