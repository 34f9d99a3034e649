"""Where the proxy's CA lives, and the bundle clients trust it through.

`SSL_CERT_FILE` and `REQUESTS_CA_BUNDLE` *replace* a client's trust store, so
pointing them at the proxy CA alone would break every other HTTPS call the
client makes (and every host Switchback tunnels without intercepting). The
bundle therefore keeps the usual roots — certifi's and the system's — next to
the proxy CA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import certifi
from mitmproxy.certs import CertStore
from mitmproxy.options import CONF_BASENAME, KEY_SIZE

import switchback

CA_CERT = f"{CONF_BASENAME}-ca-cert.pem"  # the file mitmproxy writes for clients to trust
BUNDLE = "switchback-bundle.pem"
# The system store carries roots certifi lacks (a company's own CA); first one found wins.
SYSTEM_ROOTS = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu, Alpine, Arch
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
    Path("/etc/ssl/cert.pem"),  # macOS (system roots only, not the keychain)
)


@dataclass(frozen=True)
class Trust:
    ca: Path  # the proxy CA alone: for stores that add to the defaults (Node)
    bundle: Path  # usual roots + proxy CA: for variables that replace the defaults


def checkout() -> Path | None:
    """The checkout this package runs from (editable or plain), None when installed."""
    root = Path(switchback.__file__).resolve().parent.parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "addon").is_dir() else None


def default_certs_dir() -> Path:
    """Where the CA lives: `$SWITCHBACK_HOME/certs`; else `certs/` in a
    checkout (what scripts/run uses); else mitmproxy's own per-user confdir,
    `~/.mitmproxy` — never inside site-packages."""
    if home := os.environ.get("SWITCHBACK_HOME"):
        return Path(home).expanduser() / "certs"
    root = checkout()
    return root / "certs" if root is not None else Path.home() / ".mitmproxy"


def ensure_trust(certs: Path) -> Trust:
    """Make the CA if this is the first use, then (re)write the bundle.

    Generating the CA here, the way mitmproxy itself does on first start, lets
    `switchback env` work before the proxy has ever run. The bundle is
    rewritten every time so it follows certifi and system-root updates.
    """
    ca = certs / CA_CERT
    if not ca.exists():
        store = CertStore.from_store(certs, CONF_BASENAME, KEY_SIZE)
        if not ca.exists():  # the key file survived but the cert was deleted
            ca.write_bytes(store.default_ca.to_pem())
    roots = [Path(certifi.where()), *[path for path in SYSTEM_ROOTS if path.is_file()][:1]]
    parts = [path.read_text().strip() for path in (*roots, ca)]
    bundle = certs / BUNDLE
    partial = bundle.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text("\n".join(parts) + "\n")
    partial.replace(bundle)  # atomic: a client reading it never sees half a file
    return Trust(ca=ca, bundle=bundle)
