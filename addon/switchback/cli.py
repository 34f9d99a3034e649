"""`switchback`: run the proxy and point clients at it without remembering flags.

Every subcommand is a thin wrapper: `run` execs mitmdump/mitmweb with the
addon (and its gateway listener), `env`/`exec` hand clients the variables that
make them use the proxy and trust its CA — or use the gateway, with no CA —
`status` reads the running proxy's status server, `check` runs the same config
loader the addon uses, and `addon-path` tells mitmproxy users where the entry
script is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, load_config
from .entry import SCRIPT as ADDON_SCRIPT
from .trust import default_certs_dir, ensure_trust

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_PROXY = f"http://{DEFAULT_LISTEN}"
DEFAULT_STATUS = "http://127.0.0.1:8089/status"
DEFAULT_NO_PROXY = "localhost,127.0.0.1,::1"
DEFAULT_GATEWAY_LISTEN = "127.0.0.1:8082"
DEFAULT_GATEWAY = f"http://{DEFAULT_GATEWAY_LISTEN}"
CERTS_HELP = ("folder with the mitmproxy CA (default: $SWITCHBACK_HOME/certs; in a checkout, "
              "its certs/; else ~/.mitmproxy)")
# Node's built-in fetch honours NODE_USE_ENV_PROXY from these releases on (major, minor).
NODE_ENV_PROXY = {22: 21, 24: 5}
NODE_LAUNCHERS = {"node", "npm", "npx", "pnpm", "yarn"}
WEB_COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")

MAIN_HELP = """\
examples:
  switchback run                      # proxy on 127.0.0.1:8080, ./switchback.yaml if present
  eval "$(switchback env)"            # in another shell: send its clients through it
  switchback run --gateway            # also a plain-HTTP gateway on 127.0.0.1:8082, no CA needed
  switchback exec --gateway -- claude # Claude Code through it: ANTHROPIC_BASE_URL
  switchback exec -- codex exec "hi"  # or: run one command through it
  switchback status                   # keys, cooldowns, budgets, counters of the running proxy
  switchback check switchback.yaml    # validate a config without starting anything
  mitmdump -s "$(switchback addon-path)" --set connection_strategy=lazy   # by hand
"""

RUN_HELP = """\
The mitmproxy CA is created in the certs folder on first use ($SWITCHBACK_HOME/certs;
in a checkout, its certs/; else ~/.mitmproxy, mitmproxy's own), together with
switchback-bundle.pem for clients. mitmweb's page is http://127.0.0.1:8081.
Arguments after `--` go to mitmdump/mitmweb unchanged.

--gateway also listens as a plain-HTTP gateway, for clients that take a base URL
but cannot trust a CA: OPENAI_BASE_URL=http://127.0.0.1:8082/v1 and
ANTHROPIC_BASE_URL=http://127.0.0.1:8082 get the same failover as the proxy.
/v1/messages and requests carrying anthropic-version go to the provider named
anthropic, other /v1/ paths to the one named openai, /NAME/... to provider NAME
(its base URL). It sends configured keys for whoever reaches it: keep it on
loopback.

examples:
  switchback run
  switchback run --config team.yaml --listen 0.0.0.0:8080
  switchback run --web                 # mitmweb: every LLM call with its attempt trail
  switchback run --gateway             # also the gateway on 127.0.0.1:8082 (see below)
  switchback run -- --set switchback_status_port=9089 --set ssl_insecure=true
"""

ENV_HELP = """\
Prints what a client needs to go through the proxy and trust its CA:
  HTTPS_PROXY/HTTP_PROXY (and lowercase)  the proxy, for Python, curl, Codex CLI, Go
  NO_PROXY (and lowercase)                hosts that bypass it (default: loopback)
  SSL_CERT_FILE, REQUESTS_CA_BUNDLE,      switchback-bundle.pem = certifi + system roots
  CURL_CA_BUNDLE, CODEX_CA_CERTIFICATE      + the proxy CA (these replace the default store)
  NODE_EXTRA_CA_CERTS                     the proxy CA alone (Node adds it to its defaults)
  NODE_USE_ENV_PROXY=1                    makes Node's built-in fetch honour HTTPS_PROXY
Claude Code takes HTTPS_PROXY and NODE_EXTRA_CA_CERTS (or SSL_CERT_FILE) from these.

With --gateway (a `switchback run --gateway` listener), no proxy and no CA:
  ANTHROPIC_BASE_URL                      the gateway, for Claude Code and Anthropic's SDKs
  OPENAI_BASE_URL                         the gateway's /v1, for the openai SDKs
  NO_PROXY (and lowercase)                so the gateway is reached directly

Loopback bypasses the proxy by default so local servers, mitmweb and the status
page are reached directly. If one of your providers runs on localhost (a local
model server used as a fallback), pass --no-proxy "" so its calls go through
Switchback too.

Codex CLI reads CODEX_CA_CERTIFICATE (else SSL_CERT_FILE) and HTTPS_PROXY from its
environment; export them in the shell, not in $CODEX_HOME/.env (Codex drops CODEX_*
variables found there).

examples:
  eval "$(switchback env)"
  switchback env --shell fish | source
  switchback env --proxy http://10.0.0.5:8080 >> ~/.profile
  eval "$(switchback env --gateway)"    # the gateway on 127.0.0.1:8082
"""

EXEC_HELP = """\
Runs the command with the variables `switchback env` prints, on top of the current
environment, and exits with its exit code.

examples:
  switchback exec -- python my_agent.py
  switchback exec -- codex exec "fix the failing test"
  switchback exec --no-proxy "" -- curl https://localhost:9001/v1/models
  switchback exec -- claude            # Claude Code through the proxy, trusting its CA
  switchback exec --gateway -- claude  # or through the gateway, no CA
"""

STATUS_HELP = """\
Reads the status server of a running proxy (option switchback_status_port, default 8089).

examples:
  switchback status
  switchback status --json | jq '.cooldowns'
  switchback status --url http://127.0.0.1:9089/status
"""

CHECK_HELP = """\
Loads the config exactly as the proxy would (including ${ENV_VAR} keys from this
environment) and prints either a summary or every problem, one a line, each with
the file, the key and the fix.

examples:
  switchback check switchback.yaml
"""

ADDON_PATH_HELP = """\
Prints the path of the mitmproxy entry script inside the installed package, for
running mitmproxy yourself.

examples:
  mitmdump -s "$(switchback addon-path)" --set connection_strategy=lazy
  mitmweb -s "$(switchback addon-path)" --set switchback_config=switchback.yaml
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader left early (`switchback env | head`): nothing is wrong. Point
        # stdout at nothing so the flush at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def parser() -> argparse.ArgumentParser:
    certs = argparse.ArgumentParser(add_help=False)
    certs.add_argument("--certs", type=Path, metavar="DIR", help=CERTS_HELP)
    client = argparse.ArgumentParser(add_help=False)
    way = client.add_mutually_exclusive_group()
    way.add_argument("--proxy", default=DEFAULT_PROXY, metavar="URL",
                     help=f"the Switchback proxy (default: {DEFAULT_PROXY})")
    way.add_argument("--gateway", nargs="?", const=DEFAULT_GATEWAY, type=gateway_url,
                     metavar="URL",
                     help=f"use the gateway listener (`switchback run --gateway`) instead of "
                          f"the proxy and its CA: base URLs, no CA (default URL: "
                          f"{DEFAULT_GATEWAY})")
    client.add_argument("--no-proxy", default=DEFAULT_NO_PROXY, metavar="HOSTS",
                        help=f'comma-separated hosts that bypass the proxy (default: '
                             f'{DEFAULT_NO_PROXY}); "" sends everything through it')

    top = argparse.ArgumentParser(
        prog="switchback", epilog=MAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keep OpenAI-style LLM calls alive behind HTTPS_PROXY.")
    commands = top.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, summary: str, epilog: str,
                parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, epilog=epilog,
                                   parents=list(parents),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    run = command("run", "start the proxy (mitmdump, or mitmweb with --web)", RUN_HELP, [certs])
    run.add_argument("--config", type=Path, metavar="FILE",
                     help="Switchback config (default: ./switchback.yaml when it exists)")
    run.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                     help=f"where the proxy listens (default: {DEFAULT_LISTEN})")
    run.add_argument("--web", action="store_true", help="run mitmweb instead of mitmdump")
    run.add_argument("--gateway", nargs="?", const=DEFAULT_GATEWAY_LISTEN, metavar="HOST:PORT",
                     help=f"also listen as a plain-HTTP gateway for clients that cannot trust "
                          f"a CA (default: {DEFAULT_GATEWAY_LISTEN})")
    run.add_argument("--intercept-all", action="store_true",
                     help="decrypt every HTTPS connection, not only LLM provider hosts "
                          "(others are tunnelled untouched by default)")
    run.add_argument("extra", nargs=argparse.REMAINDER, metavar="-- MITMPROXY_ARGS",
                     help="extra mitmdump/mitmweb arguments")
    run.set_defaults(handler=run_proxy)

    env = command("env", "print the shell exports a client needs", ENV_HELP, [certs, client])
    env.add_argument("--shell", choices=("sh", "fish"), default="sh",
                     help="syntax of the exports (default: sh, also right for bash and zsh)")
    env.set_defaults(handler=print_env)

    run_cmd = command("exec", "run one command through the proxy", EXEC_HELP, [certs, client])
    run_cmd.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                         help="the command to run")
    run_cmd.set_defaults(handler=exec_command)

    status = command("status", "show providers, cooldowns and counters of the running proxy",
                     STATUS_HELP)
    status.add_argument("--url", default=DEFAULT_STATUS,
                        help=f"the status endpoint (default: {DEFAULT_STATUS})")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(handler=show_status)

    check = command("check", "validate a config file", CHECK_HELP)
    check.add_argument("config", type=Path, metavar="CONFIG")
    check.set_defaults(handler=check_config)

    addon_path = command("addon-path", "print the path of the mitmproxy entry script",
                         ADDON_PATH_HELP)
    addon_path.set_defaults(handler=lambda args: print(ADDON_SCRIPT) or 0)
    return top


# --- run ---------------------------------------------------------------------------------------


def run_proxy(args: argparse.Namespace) -> int:
    config = args.config or (Path("switchback.yaml") if Path("switchback.yaml").exists() else None)
    if config is not None and load_or_report(config) is None:
        return fail(f"not started; `switchback check {config}` validates the fix", code=2)
    try:
        host, port = split_listen(args.listen)
        gateway = split_listen(port_only(args.gateway), "--gateway") if args.gateway else None
    except ValueError as exc:
        return fail(str(exc))
    certs = certs_dir(args)
    ensure_trust(certs)
    command = proxy_command("mitmweb" if args.web else "mitmdump", host, port, certs,
                            config.resolve() if config else None, args.intercept_all,
                            after_dashes(args.extra), gateway)
    if not Path(command[0]).exists():
        return fail(f"{command[0]} not found: install Switchback into this Python "
                    f"environment (scripts/setup)")
    print(f"switchback: proxy on http://{host}:{port}; in another shell: "
          f'eval "$({env_hint(host, port, certs if args.certs else None)})"', file=sys.stderr)
    if gateway is not None:
        print(f"switchback: gateway on http://{gateway[0]}:{gateway[1]} (no CA needed); in "
              f'another shell: eval "$({gateway_hint(*gateway)})"', file=sys.stderr)
    os.execv(command[0], command)
    return 0  # unreachable: execv replaces this process


def proxy_command(tool: str, host: str, port: int, certs: Path, config: Path | None,
                  intercept_all: bool, extra: Sequence[str],
                  gateway: tuple[str, int] | None = None) -> list[str]:
    """The mitmdump/mitmweb command line: the same venv, the addon, lazy
    connections; the gateway is the addon's option (it adds the listener)."""
    command = [str(Path(sys.executable).parent / tool), "-s", str(ADDON_SCRIPT),
               "--listen-host", host, "--listen-port", str(port),
               "--set", f"confdir={certs}", "--set", "connection_strategy=lazy"]
    if config is not None:
        command += ["--set", f"switchback_config={config}"]
    if intercept_all:
        command += ["--set", "switchback_intercept=all"]
    if gateway is not None:
        command += ["--set", f"switchback_gateway={gateway[0]}:{gateway[1]}"]
    if tool == "mitmweb" and not any("web_columns" in arg for arg in extra):
        # The comment column shows each call's marks, trail and name in the list. A
        # list option takes one `--set` per item: mitmproxy does not split on commas.
        command += [arg for column in WEB_COLUMNS for arg in ("--set", f"web_columns={column}")]
    return command + list(extra)


def split_listen(listen: str, option: str = "--listen") -> tuple[str, int]:
    """`HOST:PORT`, `[::1]:PORT` or `:PORT` (loopback) → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        example = DEFAULT_GATEWAY_LISTEN if option == "--gateway" else DEFAULT_LISTEN
        raise ValueError(f"{option} {listen!r}: expected HOST:PORT, e.g. {example}")
    return host.strip("[]") or "127.0.0.1", int(port)


def port_only(listen: str) -> str:
    """A gateway given as a bare port listens on loopback: `8082` → `:8082`."""
    return f":{listen}" if listen.isdigit() else listen


def reachable_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a listener on host:port."""
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{f'[{reachable}]' if ':' in reachable else reachable}:{port}"


def env_hint(host: str, port: int, certs: Path | None) -> str:
    """The `switchback env` a client shell needs for this proxy (flags only where not default)."""
    url = reachable_url(host, port)
    flags = ("" if url == DEFAULT_PROXY else f" --proxy {url}") + \
        (f" --certs {shlex.quote(str(certs))}" if certs else "")
    return f"{own_command()} env{flags}"


def gateway_hint(host: str, port: int) -> str:
    """The `switchback env` a client shell needs for this gateway."""
    url = reachable_url(host, port)
    return f"{own_command()} env --gateway{'' if url == DEFAULT_GATEWAY else ' ' + url}"


def own_command() -> str:
    # The full path: the venv's bin is usually not on the other shell's PATH.
    return shlex.quote(str(Path(sys.executable).with_name('switchback')))


# --- env / exec --------------------------------------------------------------------------------


def client_env(args: argparse.Namespace) -> dict[str, str]:
    """The variables that route a client through the proxy and make it trust
    the CA; with a gateway, those that point its base URLs there."""
    if args.gateway:
        return gateway_env(args.gateway, args.no_proxy)
    trust = ensure_trust(certs_dir(args))
    variables = {}
    for name in ("HTTPS_PROXY", "HTTP_PROXY"):
        variables[name] = variables[name.lower()] = args.proxy
    variables["NO_PROXY"] = variables["no_proxy"] = args.no_proxy
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "CODEX_CA_CERTIFICATE"):
        variables[name] = str(trust.bundle)
    variables["NODE_EXTRA_CA_CERTS"] = str(trust.ca)
    variables["NODE_USE_ENV_PROXY"] = "1"
    return variables


def gateway_url(value: str) -> str:
    """`--gateway` as a URL: given as one, or as `[HOST:]PORT` of the listener."""
    if "://" in value:
        return value.rstrip("/")
    try:
        return reachable_url(*split_listen(port_only(value)))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected the gateway's URL or HOST:PORT, e.g. {DEFAULT_GATEWAY}"
        ) from None


def gateway_env(gateway: str, no_proxy: str) -> dict[str, str]:
    """Base URLs on the gateway: Anthropic's SDKs (and Claude Code) add /v1
    themselves, the openai SDKs expect it in the base URL. Loopback bypasses
    any proxy the shell has, so the gateway is reached directly."""
    variables = {"ANTHROPIC_BASE_URL": gateway, "OPENAI_BASE_URL": f"{gateway}/v1"}
    variables["NO_PROXY"] = variables["no_proxy"] = no_proxy
    return variables


def node_advice(version: str) -> str | None:
    """What to tell the user of a Node whose fetch ignores NODE_USE_ENV_PROXY
    (None when it honours it, or the version cannot be read)."""
    match = re.match(r"v?(\d+)\.(\d+)", version.strip())
    if match is None:
        return None
    major, minor = int(match[1]), int(match[2])
    if major > max(NODE_ENV_PROXY) or minor >= NODE_ENV_PROXY.get(major, 1 << 30):
        return None
    return (f"Node {version.strip()} ignores NODE_USE_ENV_PROXY: its fetch (and the openai "
            "Node SDK) will not go through the proxy, with no error. Fix: Node 22.21+ or "
            "24.5+, or in the app, before any call: import { setGlobalDispatcher, "
            "EnvHttpProxyAgent } from 'undici'; setGlobalDispatcher(new EnvHttpProxyAgent());")


def warn_about_node() -> None:
    """Say so on stderr when the `node` on PATH would bypass the proxy."""
    node = shutil.which("node")
    if node is None:
        return
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return
    if advice := node_advice(version):
        print(f"switchback: {advice}", file=sys.stderr)


def print_env(args: argparse.Namespace) -> int:
    if not args.gateway:
        warn_about_node()
    for name, value in client_env(args).items():
        if args.shell == "fish":
            print(f"set -gx {name} {shlex.quote(value)};")
        else:
            print(f"export {name}={shlex.quote(value)}")
    return 0


def exec_command(args: argparse.Namespace) -> int:
    command = after_dashes(args.command)
    if not command:
        return fail("exec: give the command after --, e.g. switchback exec -- python app.py")
    environment = {**os.environ, **client_env(args)}
    if Path(command[0]).name in NODE_LAUNCHERS and not args.gateway:
        warn_about_node()
    try:
        os.execvpe(command[0], command, environment)
    except OSError as exc:
        return fail(f"exec: cannot run {command[0]}: {exc.strerror}", code=127)
    return 0  # unreachable: execvpe replaces this process


# --- status ------------------------------------------------------------------------------------


def show_status(args: argparse.Namespace) -> int:
    # Never through a proxy: with `switchback env` exported, this could be our own.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(args.url, timeout=5) as answer:
            body = answer.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return fail(f"status: nothing answers at {args.url} ({reason}).\n"
                    f"Is the proxy running? Start it with `switchback run`; its status server "
                    f"listens on port 8089\n(option switchback_status_port). "
                    f"For another address: switchback status --url URL")
    try:
        status = json.loads(body)
    except ValueError:
        return fail(f"status: {args.url} did not answer with JSON; is it Switchback's "
                    f"status server?")
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return 0


def render_status(status: dict[str, Any]) -> str:
    """The status JSON as a few plain tables, for a person at a terminal."""
    providers = [(p.get("name", ""), p.get("protocol", ""), p.get("base_url", ""),
                  " ".join(p.get("keys") or []) or "client's key")
                 for p in status.get("providers", [])]
    cooldowns = [(c.get("scope", ""), c.get("provider", ""),
                  c.get("key") or c.get("model") or "", f"{c.get('remaining_s', 0):.0f}s",
                  c.get("reason", ""))
                 for c in status.get("cooldowns", [])]
    protocols = [(p.get("provider", ""), p.get("model", ""), p.get("protocol", ""))
                 for p in status.get("protocols", [])]
    counters = [(name, str(value)) for name, value in sorted(status.get("counters", {}).items())]
    budgets = [budget_row(b) for b in status.get("budgets", [])]
    sections = [
        ("Providers", ("name", "protocol", "base url", "keys"), providers),
        ("Cooldowns", ("scope", "provider", "key/model", "left", "reason"), cooldowns),
        ("Protocols learned", ("provider", "model", "protocol"), protocols),
        ("Budgets", ("principal", "period", "since", "limit", "spent", "reserved", "calls",
                     "refused", "unpriced"), budgets),
        ("Counters", ("counter", "value"), counters),
    ]
    return "\n\n".join(f"{title}\n{table(headers, rows)}" if rows else f"{title}: none"
                       for title, headers, rows in sections)


def budget_row(budget: dict[str, Any]) -> tuple[str, ...]:
    """One budget's figures, in its own unit first."""
    usd = "limit_usd" in budget
    limit = dollars(budget["limit_usd"]) if usd else tokens(budget.get("limit_tokens", 0))
    spent = (dollars(budget.get("spent_usd", 0)), tokens(budget.get("spent_tokens", 0)))
    reserved = (dollars(budget.get("reserved_usd", 0)),
                tokens(budget.get("reserved_tokens", 0)))
    first = 0 if usd else 1
    return (budget.get("principal", ""), budget.get("period", ""),
            str(budget.get("window_start", "")).replace("T", " ").removesuffix("Z"),
            limit, f"{spent[first]} ({spent[1 - first]})", reserved[first],
            str(budget.get("calls", 0)), str(budget.get("refused", 0)),
            str(budget.get("unpriced_calls", 0)))


def dollars(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or not value else f"${value:.6f}".rstrip("0")


def tokens(value: float) -> str:
    return f"{int(value):,} tok"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    return "\n".join("  " + "  ".join(str(cell).ljust(width)
                                      for cell, width in zip(row, widths)).rstrip()
                     for row in (headers, *rows))


# --- check -------------------------------------------------------------------------------------


def check_config(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    print(f"{args.config}: ok — {summary(config)}")
    return 0


def load_or_report(path: Path) -> Config | None:
    """The config, or None after printing every problem: where, what, the fix."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem.line, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count > 1 else ''} in {exc.source}", file=sys.stderr)
        return None


def summary(config: Config) -> str:
    providers = ", ".join(
        f"{p.name} ({len(p.keys)} key{'s' if len(p.keys) != 1 else ''}, {p.protocol})"
        if p.keys else f"{p.name} (client's key, {p.protocol})"
        for p in config.providers.values()) or "built-in only"
    fallbacks = "; ".join(
        f"{model} → {', '.join(f'{t.provider}/{t.model}' for t in targets)}"
        for model, targets in config.fallbacks.items()) or "none"
    budgets = ", ".join(f"{principal}: {' + '.join(b.label for b in entries)}"
                        for principal, entries in config.budgets.items()) or "none"
    return f"providers: {providers}; fallbacks: {fallbacks}; budgets: {budgets}" + (
        f"; own prices for {len(config.pricing)} model(s)" if config.pricing else "")


# --- shared ------------------------------------------------------------------------------------


def certs_dir(args: argparse.Namespace) -> Path:
    return (args.certs or default_certs_dir()).expanduser().resolve()


def after_dashes(items: Sequence[str]) -> list[str]:
    """argparse keeps the `--` that separates a pass-through command; drop it."""
    return list(items[1:] if items[:1] == ["--"] else items)


def fail(message: str, code: int = 1) -> int:
    print(f"switchback: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
