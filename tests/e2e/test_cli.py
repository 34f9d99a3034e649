"""The `switchback` command: env/exec give unmodified clients a working trusted
path through the proxy, run starts it, check and status explain themselves.

Clients here get the proxy and the CA from the environment only; the fake
providers listen on localhost, so the tests pass `--no-proxy ""` (by default
loopback bypasses the proxy)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import certifi
import pytest

from support.fakeprovider import CHAT
from support.proxy import BIN, GUARD, free_port, wait_for_port
from switchback import cli

SWITCHBACK = BIN / "switchback"
BROKEN = "providers:\n  p:\n    base_url: https://localhost:1/v1\n    protocol: grpc\n"
OPENAI_CALL = """
import openai
client = openai.OpenAI(base_url={base_url!r}, api_key="sk-client-key", max_retries=0, timeout=20)
answer = client.chat.completions.create(model="m", messages=[{{"role": "user", "content": "hi"}}])
print(answer.choices[0].message.content)
"""


def switchback(*args: str, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SWITCHBACK), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=env, cwd=cwd)


def exports(output: str) -> dict[str, str]:
    """`export NAME=value` lines (as a shell would read them) → {NAME: value}."""
    pairs = [shlex.split(line.removeprefix("export "))[0].split("=", 1)
             for line in output.splitlines()]
    return dict(pairs)


def client_command(client: str, base_url: str) -> list[str]:
    """An openai SDK or curl call with no proxy or CA of its own."""
    if client == "openai":
        return [sys.executable, "-c", OPENAI_CALL.format(base_url=base_url)]
    return ["curl", "-sS", "--fail-with-body", "--max-time", "20", base_url + CHAT,
            "-H", "authorization: Bearer sk-client-key", "-H", "content-type: application/json",
            "-d", '{"model": "m", "messages": [{"role": "user", "content": "hi"}]}']


def test_env_makes_the_ca_before_the_first_run_and_a_bundle_that_keeps_the_usual_roots(
        tmp_path):
    done = switchback("env", "--proxy", "http://127.0.0.1:9999",
                      env={"PATH": "/usr/bin:/bin", "SWITCHBACK_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    variables = exports(done.stdout)
    certs = tmp_path / "certs"
    bundle, ca = certs / "switchback-bundle.pem", certs / "mitmproxy-ca-cert.pem"
    assert variables == {
        **dict.fromkeys(("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"),
                        "http://127.0.0.1:9999"),
        **dict.fromkeys(("NO_PROXY", "no_proxy"), "localhost,127.0.0.1,::1"),
        **dict.fromkeys(("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                         "CODEX_CA_CERTIFICATE"), str(bundle)),
        "NODE_EXTRA_CA_CERTS": str(ca),
        "NODE_USE_ENV_PROXY": "1",
    }
    text = bundle.read_text()
    assert ca.read_text().strip() in text
    first_certifi_root = Path(certifi.where()).read_text().split("-----END CERTIFICATE-----")[0]
    assert first_certifi_root.strip() in text


def test_env_for_fish_and_no_bypass(tmp_path):
    done = switchback("env", "--certs", str(tmp_path), "--shell", "fish", "--no-proxy", "")
    assert done.returncode == 0, done.stderr
    assert "set -gx NO_PROXY '';" in done.stdout.splitlines()
    assert f"set -gx SSL_CERT_FILE {tmp_path.resolve()}/switchback-bundle.pem;" in done.stdout


@pytest.mark.parametrize("client", ["openai", "curl"])
def test_exec_gives_an_unmodified_client_a_trusted_path_through_the_proxy(
        fakes, proxy, confdir, client):
    fake = fakes("fake")
    running = proxy(f'providers: {{fake: {{base_url: "{fake.base_url}"}}}}')
    done = switchback("exec", "--certs", str(confdir), "--proxy", running.url, "--no-proxy", "",
                      "--", *client_command(client, fake.base_url))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "hello from fake" in done.stdout
    assert fake.count(CHAT) == 1
    assert "fake 200" in running.output()  # Switchback handled it, not a bypass


def test_exec_leaves_other_https_hosts_untouched(fakes, proxy, confdir, server_cert):
    """Through the same HTTPS_PROXY, a host that is not an LLM provider is
    tunnelled: the client sees that host's own certificate, not the proxy's."""
    llm, other = fakes("llm"), fakes("other")
    running = proxy(f'providers: {{llm: {{base_url: "{llm.base_url}"}}}}')
    through = ("exec", "--certs", str(confdir), "--proxy", running.url, "--no-proxy", "", "--")
    own_cert = switchback(*through, "curl", "-sS", "--max-time", "20", "--cacert",
                          str(server_cert.ca), "-d", "{}", other.base_url + CHAT)
    assert "hello from other" in own_cert.stdout, own_cert.stderr
    proxy_bundle = switchback(*through, "curl", "-sS", "--max-time", "20", "-d", "{}",
                              other.base_url + CHAT)
    assert proxy_bundle.returncode != 0  # the proxy CA does not vouch for it: not intercepted
    assert other.count(CHAT) == 1 and "switchback: chat" not in running.output()


def test_exec_passes_the_exit_code_through(tmp_path):
    done = switchback("exec", "--certs", str(tmp_path), "--",
                      sys.executable, "-c", "import sys; sys.exit(7)")
    assert done.returncode == 7


PRINT_ENV = ("import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
             "if k.isupper() and k != 'PATH'}))")


def test_exec_gives_the_child_the_proxy_and_the_ca(tmp_path):
    """What a real child (Claude Code, say) finds in its environment: the proxy,
    and the CA both the ways Node reads it (added) and others (a whole bundle)."""
    done = switchback("exec", "--certs", str(tmp_path), "--proxy", "http://127.0.0.1:9999",
                      "--", sys.executable, "-c", PRINT_ENV,
                      env={"PATH": "/usr/bin:/bin", "ANTHROPIC_API_KEY": "sk-ant-own"})
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout)
    certs = tmp_path.resolve()
    assert child["HTTPS_PROXY"] == child["HTTP_PROXY"] == "http://127.0.0.1:9999"
    assert child["NODE_EXTRA_CA_CERTS"] == str(certs / "mitmproxy-ca-cert.pem")
    assert child["SSL_CERT_FILE"] == child["CODEX_CA_CERTIFICATE"] == \
        str(certs / "switchback-bundle.pem")
    assert child["ANTHROPIC_API_KEY"] == "sk-ant-own"  # the rest of its environment stays
    assert "ANTHROPIC_BASE_URL" not in child and "OPENAI_BASE_URL" not in child


def test_exec_with_the_gateway_gives_base_urls_and_no_ca(tmp_path):
    done = switchback("exec", "--certs", str(tmp_path / "certs"), "--gateway", "9000",
                      "--", sys.executable, "-c", PRINT_ENV,
                      env={"PATH": "/usr/bin:/bin", "HTTP_PROXY": "http://corp:3128"})
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout)
    assert child["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9000"
    assert child["OPENAI_BASE_URL"] == "http://127.0.0.1:9000/v1"
    assert child["NO_PROXY"] == "localhost,127.0.0.1,::1"  # the gateway is not proxied
    assert child["HTTP_PROXY"] == "http://corp:3128"  # the shell's own, left alone
    assert not {"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "HTTPS_PROXY"} & child.keys()
    assert not (tmp_path / "certs").exists()  # no CA needed, none made


@pytest.mark.parametrize("given,url", [
    (None, "http://127.0.0.1:8082"), ("9000", "http://127.0.0.1:9000"),
    ("0.0.0.0:9000", "http://127.0.0.1:9000"), ("[::1]:9000", "http://[::1]:9000"),
    ("http://10.0.0.5:4000/", "http://10.0.0.5:4000"),
])
def test_env_with_the_gateway(tmp_path, given, url):
    done = switchback("env", "--gateway", *([given] if given else []),
                      env={"PATH": "/usr/bin:/bin", "SWITCHBACK_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert exports(done.stdout) == {
        "ANTHROPIC_BASE_URL": url, "OPENAI_BASE_URL": f"{url}/v1",
        **dict.fromkeys(("NO_PROXY", "no_proxy"), "localhost,127.0.0.1,::1")}


@pytest.mark.parametrize("args,message", [
    (["--gateway", "somewhere"], "expected the gateway's URL or HOST:PORT"),
    (["--gateway", "9000", "--proxy", "http://127.0.0.1:8080"], "not allowed with"),
])
def test_env_refuses_a_bad_gateway(tmp_path, args, message):
    done = switchback("env", *args, env={"SWITCHBACK_HOME": str(tmp_path)})
    assert done.returncode == 2 and message in done.stderr


def test_run_starts_the_proxy_with_a_fresh_ca_and_the_config(tmp_path, fakes, server_cert):
    fake = fakes("fake")
    config = tmp_path / "switchback.yaml"
    config.write_text(f'providers: {{fake: {{base_url: "{fake.base_url}"}}}}\n')
    certs, port, log = tmp_path / "certs", free_port(), tmp_path / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(SWITCHBACK), "run", "--certs", str(certs), "--listen", f"127.0.0.1:{port}",
             "--config", str(config), "--",
             "-s", str(GUARD), "--set", f"ssl_verify_upstream_trusted_ca={server_cert.ca}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, log)
        done = switchback("exec", "--certs", str(certs), "--proxy", f"http://127.0.0.1:{port}",
                          "--no-proxy", "", "--", *client_command("curl", fake.base_url))
        assert done.returncode == 0, done.stderr + done.stdout
        assert "hello from fake" in done.stdout
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "fake 200" in log.read_text()


def test_run_refuses_a_broken_config_before_starting(tmp_path):
    config = tmp_path / "switchback.yaml"
    config.write_text(BROKEN)
    done = switchback("run", "--certs", str(tmp_path / "certs"),
                      "--listen", f"127.0.0.1:{free_port()}", cwd=tmp_path)  # ./switchback.yaml
    assert done.returncode == 2
    assert "switchback.yaml: providers.p.protocol: unknown protocol 'grpc'" in done.stderr
    assert "Fix: use one of: auto, chat, responses, messages" in done.stderr
    assert not (tmp_path / "certs").exists()  # nothing was started or made


def test_run_command_line():
    certs, config = Path("/c"), Path("/s.yaml")
    command = cli.proxy_command("mitmweb", "::1", 9000, certs, config, True, ["-v"])
    assert command[0] == str(BIN / "mitmweb")
    assert command[1:3] == ["-s", str(cli.ADDON_SCRIPT)] and cli.ADDON_SCRIPT.is_file()
    assert command[3:] == ["--listen-host", "::1", "--listen-port", "9000",
                           "--set", "confdir=/c", "--set", "connection_strategy=lazy",
                           "--set", "switchback_config=/s.yaml",
                           "--set", "switchback_intercept=all",
                           # one --set per column: mitmproxy does not split a list on commas
                           *[arg for column in ("tls", "icon", "path", "method", "status",
                                                "size", "time", "comment")
                             for arg in ("--set", f"web_columns={column}")],
                           "-v"]
    own = cli.proxy_command("mitmweb", "::1", 9000, certs, None, False,
                            ["--set", "web_columns=comment"])
    assert own[-2:] == ["--set", "web_columns=comment"]
    assert sum("web_columns" in arg for arg in own) == 1
    gateway = cli.proxy_command("mitmdump", "127.0.0.1", 8080, certs, None, False, ["-v"],
                                ("127.0.0.1", 8082))
    assert gateway[-3:] == ["--set", "switchback_gateway=127.0.0.1:8082", "-v"]
    plain = cli.proxy_command("mitmdump", "127.0.0.1", 8080, certs, None, False, [])
    assert plain[0] == str(BIN / "mitmdump")
    assert not any(arg.startswith(("switchback_config", "switchback_intercept",
                                   "switchback_gateway")) for arg in plain)


@pytest.mark.parametrize("listen,expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
    ("[::1]:9000", ("::1", 9000)),
    (":8081", ("127.0.0.1", 8081)),
])
def test_listen_addresses(listen, expected):
    assert cli.split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "host:", "host:http", "host:70000"])
def test_bad_listen_addresses(listen):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        cli.split_listen(listen)


def test_check_names_the_key_and_the_fix(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(BROKEN)
    done = switchback("check", str(config))
    assert done.returncode == 1
    assert done.stderr == (f"{config}: providers.p.protocol: unknown protocol 'grpc'. "
                           f"Fix: use one of: auto, chat, responses, messages\n"
                           f"1 problem in {config}\n")


def test_check_lists_every_problem_in_one_run(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("""
providers:
  a: {base_url: "ftp://nowhere", keys: ["${SWITCHBACK_TEST_UNSET}"]}
  b: {base_url: "https://localhost:9002/v1", protocol: grpc, colour: red}
fallbacks:
  "*": [b/*, nobody/*, "no-slash"]
timeouts: {first_byte: soon}
cooldown: {window: -1}
conversations: {max_size: lots}
tiemouts: {}
""")
    done = switchback("check", str(config))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    keys = [line.split(": ")[1] for line in lines[:-1]]
    assert sorted(keys) == sorted([
        "tiemouts", "providers.a.base_url", "providers.a.keys[0]", "providers.b.colour",
        "providers.b.protocol", "fallbacks.*[1]", "fallbacks.*[2]", "timeouts.first_byte",
        "cooldown.window", "conversations.max_size"])
    assert all(line.startswith(f"{config}: ") and ". Fix: " in line for line in lines[:-1])
    assert lines[-1] == f"10 problems in {config}"
    assert "Traceback" not in done.stderr


def test_addon_path_is_the_entry_script_inside_the_package():
    done = switchback("addon-path")
    script = Path(done.stdout.strip())
    assert done.returncode == 0 and script.is_file()
    assert script.parent.parent == Path(cli.__file__).parent  # switchback/entry/…
    assert "addons = switchback_addons()" in script.read_text()


@pytest.mark.parametrize("command", [["env"], ["addon-path"], ["--help"]])
def test_output_piped_into_a_reader_that_leaves_early_is_no_error(tmp_path, command):
    shell = f"{shlex.quote(str(SWITCHBACK))} {' '.join(command)} | head -c 1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True,
                          text=True, timeout=60, env={"SWITCHBACK_HOME": str(tmp_path),
                                                      "PATH": "/usr/bin:/bin"})
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert done.returncode == 0


@pytest.mark.parametrize("version,bypassed", [
    ("v20.20.2", True), ("v22.20.0", True), ("v22.21.0", False), ("v22.22.1", False),
    ("v23.11.0", True), ("v24.4.1", True), ("v24.5.0", False), ("v25.1.0", False),
    ("v18.0.0", True), ("not a version", False),
])
def test_node_releases_whose_fetch_ignores_the_proxy_get_the_fix(version, bypassed):
    advice = cli.node_advice(version + "\n")
    assert (advice is not None) is bypassed
    if advice:
        assert "22.21" in advice and "24.5" in advice and "EnvHttpProxyAgent" in advice


def test_env_warns_about_the_node_on_path(tmp_path):
    node = tmp_path / "bin" / "node"
    node.parent.mkdir()
    node.write_text("#!/bin/sh\necho v20.20.2\n")
    node.chmod(0o755)
    done = switchback("env", env={"SWITCHBACK_HOME": str(tmp_path), "PATH": f"{node.parent}"})
    assert done.returncode == 0
    assert "Node v20.20.2 ignores NODE_USE_ENV_PROXY" in done.stderr
    assert "export HTTPS_PROXY=" in done.stdout


def test_check_says_ok_with_a_summary(tmp_path):
    config = tmp_path / "good.yaml"
    config.write_text("providers:\n"
                      "  primary: {base_url: 'https://localhost:9001/v1', keys: [k1, k2]}\n"
                      "  backup: {base_url: 'https://localhost:9002/v1', protocol: chat}\n"
                      "fallbacks: {gpt-4o: [backup/gpt-4o-mini], '*': [backup/*]}\n")
    done = switchback("check", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"{config}: ok — providers: primary (2 keys, auto), "
                           f"backup (client's key, chat); "
                           f"fallbacks: gpt-4o → backup/gpt-4o-mini; * → backup/*; "
                           f"budgets: none\n")
    assert "k1" not in done.stdout


def test_status_with_nothing_listening_says_so():
    url = f"http://127.0.0.1:{free_port()}/status"
    done = switchback("status", "--url", url)
    assert done.returncode == 1
    assert f"nothing answers at {url}" in done.stderr
    assert "switchback run" in done.stderr


STATUS = {
    "providers": [{"name": "primary", "base_url": "https://localhost:9001/v1",
                   "protocol": "auto", "keys": ["#3fa9c2", "#b81d43"]},
                  {"name": "backup", "base_url": "https://localhost:9002/v1",
                   "protocol": "chat", "keys": []}],
    "cooldowns": [{"scope": "key", "provider": "primary", "key": "#3fa9c2",
                   "remaining_s": 17.4, "reason": "429 retry-after"}],
    "protocols": [],
    "budgets": [
        {"principal": "team-a", "period": "day", "window_start": "2026-11-30T00:00:00Z",
         "limit_usd": 5.0, "spent_usd": 4.981234, "spent_tokens": 1234567,
         "reserved_usd": 0.0125, "reserved_tokens": 4100, "calls": 310, "refused": 2,
         "unpriced_calls": 0},
        {"principal": "#3fa9c2", "period": "month", "window_start": "2026-11-01T00:00:00Z",
         "limit_tokens": 2000000, "spent_usd": 0.000435, "spent_tokens": 800,
         "reserved_usd": 0.0, "reserved_tokens": 0, "calls": 100, "refused": 0,
         "unpriced_calls": 1}],
    "counters": {"calls": 12, "fallbacks": 3},
}


@pytest.fixture
def status_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(STATUS).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/status"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_status_prints_tables(status_server, capsys):
    assert cli.main(["status", "--url", status_server]) == 0
    assert capsys.readouterr().out == (
        "Providers\n"
        "  name     protocol  base url                   keys\n"
        "  primary  auto      https://localhost:9001/v1  #3fa9c2 #b81d43\n"
        "  backup   chat      https://localhost:9002/v1  client's key\n"
        "\n"
        "Cooldowns\n"
        "  scope  provider  key/model  left  reason\n"
        "  key    primary   #3fa9c2    17s   429 retry-after\n"
        "\n"
        "Protocols learned: none\n"
        "\n"
        "Budgets\n"
        "  principal  period  since                limit          spent                  "
        "reserved  calls  refused  unpriced\n"
        "  team-a     day     2026-11-30 00:00:00  $5.00          $4.98 (1,234,567 tok)  "
        "$0.01     310    2        0\n"
        "  #3fa9c2    month   2026-11-01 00:00:00  2,000,000 tok  800 tok ($0.000435)    "
        "0 tok     100    0        1\n"
        "\n"
        "Counters\n"
        "  counter    value\n"
        "  calls      12\n"
        "  fallbacks  3\n")


def test_status_json(status_server, capsys):
    assert cli.main(["status", "--url", status_server, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == STATUS
