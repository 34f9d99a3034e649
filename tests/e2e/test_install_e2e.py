"""Installed as a user would — `pipx install <checkout>`, a non-editable
install into a venv of its own — Switchback runs from any folder: the entry
script ships inside the package, the CA goes to the user's ~/.mitmproxy and
never into site-packages, and a call goes through to a fake provider.

The install reuses the pip cache the setup filled, so it fetches little; it
still takes a minute, which is why there is one such test."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from support.proxy import GUARD, ROOT, free_port, wait_for_port


def pip_cache() -> str:
    done = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                          text=True, timeout=60)
    return done.stdout.strip()


def test_pipx_install_runs_from_any_folder(tmp_path, fakes, server_cert):
    fake = fakes("primary")
    home, bin_dir, elsewhere = tmp_path / "home", tmp_path / "bin", tmp_path / "elsewhere"
    for folder in (home, elsewhere):
        folder.mkdir()
    env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home),
           "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(bin_dir),
           "PIP_CACHE_DIR": pip_cache(), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "NO_PROXY": "*"}
    installed = subprocess.run([sys.executable, "-m", "pipx", "install", str(ROOT)], env=env,
                               capture_output=True, text=True, timeout=900,
                               stdin=subprocess.DEVNULL, cwd=elsewhere)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    switchback = bin_dir / "switchback"

    script = Path(subprocess.run([str(switchback), "addon-path"], env=env, text=True,
                                 capture_output=True, timeout=60, cwd=elsewhere).stdout.strip())
    assert script.is_file() and "site-packages" in script.parts
    assert not str(script).startswith(str(ROOT))  # the installed copy, not the checkout's

    config = elsewhere / "switchback.yaml"
    config.write_text(f'providers: {{primary: {{base_url: "{fake.base_url}"}}}}\n')
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proxy = subprocess.Popen(
            [str(switchback), "run", "--listen", f"127.0.0.1:{port}", "--",
             "-s", str(GUARD), "--set", f"ssl_verify_upstream_trusted_ca={server_cert.ca}",
             "--set", "switchback_status_port=0"],
            env=env, cwd=elsewhere, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, proxy, log)
        ca = home / ".mitmproxy" / "mitmproxy-ca-cert.pem"
        assert ca.is_file() and (home / ".mitmproxy" / "switchback-bundle.pem").is_file()
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False, timeout=30,
                          verify=ssl.create_default_context(cafile=str(ca))) as http:
            answer = http.post(fake.base_url + "/chat/completions",
                               json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                               headers={"authorization": "Bearer sk-client-key"})
        assert answer.json()["choices"][0]["message"]["content"] == "hello from primary"
        assert "switchback: chat m → ok via primary" in log.read_text()  # its config was read
    finally:
        proxy.terminate()
        proxy.wait(timeout=15)
    site = script.parent.parent.parent
    assert not any(path.name.startswith("mitmproxy-ca") for path in site.rglob("*.pem"))
    assert not (site.parent / "certs").exists()
    assert os.listdir(elsewhere) == ["switchback.yaml"]
