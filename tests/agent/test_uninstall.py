"""`occ-agent --uninstall` on a host's root: what the common tasks installed goes, and the
host's own files come back byte for byte (the ssh provider's tests prove it on real hosts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oneclick.agent import tasks, uninstall
from oneclick.api.protocol import Context, Identity, Peer


def _host_key() -> str:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


SITE_KEY = _host_key() + " admin"
USER_KEY = _host_key() + " user"


def _context() -> Context:
    peers = [Peer(member=f"c-node-{i}", role="node", index=i, provides=[], identity=Identity(
        hostname=f"node-{i}", fqdn=f"node-{i}.example.org", addresses=[f"10.0.0.{i + 1}"],
        ssh_host_keys=[_host_key()])) for i in range(2)]
    return Context(cluster="c", member=peers[0], required_roles={"node": peers}, members=peers,
                   data={}, ssh_authorized_keys=[USER_KEY], hosts_file=True, ssh_host_based=True)


def _host(root: Path) -> None:
    """A host as its owner keeps it: its own hosts, keys and sshd configuration."""
    _bare(root)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.9.9.9 fileserver\n")
    (root / "etc/ssh/sshd_config").write_text(
        "".join(f"# line {i}\n" for i in range(12)) + "Include /etc/ssh/sshd_config.d/*.conf\n"
        "PermitRootLogin prohibit-password\n")
    (root / "etc/ssh/sshd_config").chmod(0o600)  # (tasks.py writes 644: the mode comes back)
    (root / "etc/ssh/ssh_config").write_text("Include /etc/ssh/ssh_config.d/*.conf\nHost *\n")
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh").chmod(0o700)
    (root / "root/.ssh/authorized_keys").write_text(SITE_KEY + "\n")
    (root / "root/.ssh/authorized_keys").chmod(0o600)


def _bare(root: Path) -> None:
    for directory in ("etc/ssh", "var/lib", "var/log"):
        (root / directory).mkdir(parents=True)


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    return {str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def test_uninstall_gives_the_host_back_as_it_was(tmp_path: Path) -> None:
    _host(tmp_path)
    before = _tree(tmp_path)
    uninstall.record(tmp_path)
    tasks.run_all(tmp_path, _context())
    uninstall.record(tmp_path)  # a rerun of the agent: the first record stands
    tasks.run_all(tmp_path, _context())
    assert USER_KEY in (tmp_path / "root/.ssh/authorized_keys").read_text()
    assert (tmp_path / "etc/ssh/sshd_config").read_text().startswith("Include")

    result = subprocess.run([str(Path(sys.executable).parent / "occ-agent"), "--uninstall",
                             "--root", str(tmp_path)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "removed the managed block of /root/.ssh/authorized_keys" in result.stdout
    assert _tree(tmp_path) == before  # (the state directory went too)


def test_what_the_host_did_not_have_goes_and_its_own_include_stays(tmp_path: Path) -> None:
    _bare(tmp_path)
    (tmp_path / "etc/ssh/ssh_config").write_text("Include /etc/ssh/ssh_config.d/*.conf\n")
    before = _tree(tmp_path)
    uninstall.record(tmp_path)
    tasks.run_all(tmp_path, _context())
    assert (tmp_path / "root/.shosts").exists() and (tmp_path / "etc/ssh/sshd_config").exists()
    uninstall.uninstall(tmp_path)
    after = _tree(tmp_path)
    assert after.pop("root")[1] is None  # root's home stays (empty): a host always has one
    assert after == before


def test_without_a_record_blocks_go_but_include_lines_stay(tmp_path: Path) -> None:
    """A tenant who deleted the record cannot make uninstall take the host's own lines."""
    _host(tmp_path)
    tasks.run_all(tmp_path, _context())
    uninstall.uninstall(tmp_path)
    for relative in uninstall.MANAGED:
        path = tmp_path / relative
        assert not path.exists() or tasks.BEGIN not in path.read_text(), relative
    assert not any((tmp_path / d).exists() for d in uninstall.DROP_INS)
    assert (tmp_path / "etc/ssh/sshd_config").read_text().startswith(
        "Include /etc/ssh/sshd_config.d/*.conf\n# line 0\n")


def test_a_block_without_its_end_stays_for_the_provider_to_see(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").write_text(f"127.0.0.1 localhost\n{tasks.BEGIN}\n10.0.0.66 x\n")
    uninstall.uninstall(tmp_path)
    assert tasks.BEGIN in (tmp_path / "etc/hosts").read_text()
