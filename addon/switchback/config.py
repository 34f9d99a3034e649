"""Switchback's YAML config → frozen dataclasses.

A malformed config must stop the proxy with a message that names the file,
the key and the fix, so every check here records a problem with all three —
and reading goes on, so one run reports every problem in the file, not the
first. Unknown keys are errors: a typo silently ignored is a fallback that
never happens.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .accounting.budgets import Budget, Unit, parse_period
from .accounting.estimate import DEFAULT_OUTPUT_TOKENS
from .accounting.pricing import Price
from .health.cooldown import CooldownPolicy
from .state.stores import DEFAULT_CONVERSATION_BYTES
from .providers import BUILTIN, Provider
from .vocabulary import AUTO, PROVIDER_PROTOCOLS, Rescue

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.I)
_SIZE_UNIT = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
              "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, None: 1}


class ConfigError(ValueError):
    """A config problem — where it is, what is wrong, how to fix it — and
    any more found in the same file (`problems`, this one first)."""

    def __init__(self, source: str, key: str, problem: str, fix: str,
                 more: tuple[ConfigError, ...] = ()) -> None:
        self.source, self.key, self.problem, self.fix = source, key, problem, fix
        self.problems: tuple[ConfigError, ...] = (self, *more)
        super().__init__("\n".join(p.line for p in self.problems))

    @property
    def line(self) -> str:
        return f"{self.source}: {self.key}: {self.problem}. Fix: {self.fix}"


@dataclass(frozen=True)
class Target:
    """One fallback step: a provider and a model name, or `*` for the same name."""

    provider: str
    model: str

    def model_for(self, requested: str) -> str:
        return requested if self.model == "*" else self.model


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 30.0  # streams: until the first event arrives
    response: float = 300.0  # non-streaming: until the answer's headers arrive
    idle: float = 300.0  # between events of a committed stream


@dataclass(frozen=True)
class SharedState:
    """Where replicas share what they learn: a Redis (or Valkey) URL, and the
    prefix that keeps this deployment's keys apart from others on it."""

    url: str
    prefix: str = "switchback"


@dataclass(frozen=True)
class Config:
    providers: Mapping[str, Provider] = field(default_factory=dict)
    fallbacks: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    # where a prompt too long for its model goes instead of passing the refusal through
    context_fallbacks: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    cooldown: CooldownPolicy = CooldownPolicy()
    max_wait: float = 2.0  # everything cooling: wait this long at most for the first to return
    protocol_memory: float = 86_400.0  # how long a protocol that worked is remembered
    conversation_bytes: int = DEFAULT_CONVERSATION_BYTES  # translated conversations kept
    conversation_ttl: float = 86_400.0
    state: SharedState | None = None  # None: this process's memory only
    pricing: Mapping[str, Price] = field(default_factory=dict)  # by model, over genai-prices
    budgets: Mapping[str, tuple[Budget, ...]] = field(default_factory=dict)  # by principal, "*"
    budget_output_tokens: int = DEFAULT_OUTPUT_TOKENS  # held for a call with no output limit
    resume: bool = True  # continue a stream cut mid-answer on another candidate
    source: str = "<built-in defaults>"

    def fallbacks_for(self, model: str) -> tuple[Target, ...]:
        return self.fallbacks.get(model, self.fallbacks.get("*", ()))

    def context_fallbacks_for(self, model: str) -> tuple[Target, ...]:
        return self.context_fallbacks.get(model, self.context_fallbacks.get("*", ()))


def parse_duration(value: Any) -> float | None:
    """`30s`, `500ms`, `2m`, `1h` or a bare number of seconds (≥ 0); None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    match = _DURATION.match(str(value))
    return float(match.group(1)) * _UNIT[match.group(2)] if match else None


def finite(value: Any) -> bool:
    """A real number: not a bool, not NaN or infinity (YAML has .nan and .inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def parse_size(value: Any) -> int | None:
    """`256MiB`, `1GB`, `500kB` or a bare number of bytes (> 0); None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    match = _SIZE.match(str(value))
    if not match:
        return None
    size = int(float(match.group(1)) * _SIZE_UNIT[(match.group(2) or "").lower() or None])
    return size if size > 0 else None


class _Reader:
    """Walks the raw YAML, recording each problem with the file and key and
    carrying on with what can still be read."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source, self.env = source, env
        self.problems: list[ConfigError] = []

    def fail(self, key: str, problem: str, fix: str) -> None:
        self.problems.append(ConfigError(self.source, key, problem, fix))

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None = None) -> dict:
        """The mapping at `key` with its unknown keys left out (and reported)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__}",
                      f"write `{key}:` followed by indented `name: value` lines")
            return {}
        if allowed is None:
            return value
        for name in value:
            if name not in allowed:
                self.fail(f"{key}.{name}" if key else str(name), "unknown key",
                          f"use one of: {', '.join(allowed)}")
        return {k: v for k, v in value.items() if k in allowed}

    def secret(self, value: Any, key: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "expected a non-empty string",
                      'give the key literally or as "${ENV_VAR}"')
            return None
        missing = [name for name in _ENV.findall(value)
                   if name not in self.env or not self.env[name]]
        for name in missing:
            self.fail(key, f"environment variable {name} is not set",
                      f"export {name}=… before starting, or remove this key")
        return None if missing else _ENV.sub(lambda m: self.env[m.group(1)], value)

    def provider(self, name: str, raw: Any) -> Provider | None:
        key = f"providers.{name}"
        before = len(self.problems)
        raw = self.mapping(raw, key, ("base_url", "keys", "protocol", "continuation",
                                      "prefix"))
        base_url = raw.get("base_url")
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(f"{key}.base_url", f"expected an http(s) URL, got {base_url!r}",
                      "write the provider's API root, e.g. https://api.example.com/v1")
        keys = raw.get("keys", [])
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list):
            self.fail(f"{key}.keys", "expected a list of keys",
                      'write keys: ["${MY_KEY}"] or leave it out to use the client\'s key')
            keys = []
        secrets = [self.secret(k, f"{key}.keys[{i}]") for i, k in enumerate(keys)]
        protocol = raw.get("protocol", AUTO)
        if protocol not in PROVIDER_PROTOCOLS:
            self.fail(f"{key}.protocol", f"unknown protocol {protocol!r}",
                      f"use one of: {', '.join(PROVIDER_PROTOCOLS)}")
        builtin = BUILTIN.get(name)
        continuation = raw.get("continuation", builtin.continuation if builtin
                               else Rescue.PREFILL.value)
        if continuation not in tuple(Rescue):
            self.fail(f"{key}.continuation", f"unknown continuation {continuation!r}",
                      f"use one of: {', '.join(Rescue)}")
        prefix = raw.get("prefix", builtin.prefix if builtin else False)
        if not isinstance(prefix, bool):
            self.fail(f"{key}.prefix", f"expected true or false, got {prefix!r}",
                      "write prefix: true for a provider that wants a prefilled answer's "
                      "start marked (Mistral, DeepSeek)")
        if len(self.problems) > before:
            return None
        return Provider(name=name, base_url=base_url.rstrip("/"),
                        keys=tuple(s for s in secrets if s is not None), protocol=protocol,
                        continuation=Rescue(continuation), prefix=prefix)

    def targets(self, model: str, raw: Any, providers: Collection[str],
                section: str = "fallbacks") -> tuple[Target, ...]:
        key = f"{section}.{model}"
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            self.fail(key, "expected a list of provider/model entries",
                      "write e.g. [backup/gpt-4o-mini, other/*]")
            return ()
        targets = []
        for i, entry in enumerate(raw):
            provider, sep, target_model = str(entry).partition("/")
            if not sep or not provider or not target_model:
                self.fail(f"{key}[{i}]", f"{entry!r} is not provider/model",
                          "write provider/model, or provider/* for the same model name")
            elif provider not in providers:
                self.fail(f"{key}[{i}]", f"unknown provider {provider!r}",
                          f"define providers.{provider} or use one of: "
                          f"{', '.join(providers) or '(none defined)'}")
            else:
                targets.append(Target(provider, target_model))
        return tuple(targets)

    def durations(self, raw: Any, section: str, names: tuple[str, ...],
                  may_be_zero: tuple[str, ...] = ()) -> dict[str, float]:
        values = {}
        for name, value in self.mapping(raw, section, names).items():
            seconds = parse_duration(value)
            if seconds is None or (seconds == 0 and name not in may_be_zero):
                self.fail(f"{section}.{name}" if section else name,
                          f"{value!r} is not a positive duration",
                          "write a duration like 30s, 500ms or 2m")
            else:
                values[name] = seconds
        return values

    def conversations(self, raw: Any) -> dict[str, Any]:
        """`conversations: {max_size: 256MiB, ttl: 24h}` as Config fields."""
        section = self.mapping(raw, "conversations", ("max_size", "ttl"))
        out: dict[str, Any] = {}
        if "max_size" in section:
            size = parse_size(section["max_size"])
            if size is None:
                self.fail("conversations.max_size",
                          f"{section['max_size']!r} is not a positive size",
                          "write a size like 256MiB, 1GiB or 500MB")
            else:
                out["conversation_bytes"] = size
        if "ttl" in section:
            ttl = self.durations({"ttl": section["ttl"]}, "conversations", ("ttl",))
            if ttl:
                out["conversation_ttl"] = ttl["ttl"]
        return out

    def state(self, raw: Any) -> SharedState | None:
        """`state: memory`, `state: redis://…` or `state: {url: …, prefix: …}`."""
        if raw is None or raw == "memory":
            return None
        fix = ('write state: memory, state: redis://HOST:6379/0 (also rediss:// and '
               'unix:///path?db=0), or state: {url: redis://…, prefix: switchback}')
        if not isinstance(raw, (str, dict)):
            self.fail("state", f"expected a URL or a mapping, got {type(raw).__name__}", fix)
            return None
        section = self.mapping(raw, "state", ("url", "prefix")) if isinstance(raw, dict) \
            else {"url": raw}
        url, prefix = section.get("url"), section.get("prefix", SharedState.prefix)
        parts = urlsplit(url) if isinstance(url, str) else None
        usable = parts is not None and (
            (parts.scheme in ("redis", "rediss") and bool(parts.hostname))
            or (parts.scheme == "unix" and bool(parts.path)))
        if not usable:
            shown = url.rpartition("@")[2] if isinstance(url, str) else url  # no password
            self.fail("state.url" if isinstance(raw, dict) else "state",
                      f"{shown!r} is not a Redis URL", fix)
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", prefix):
            self.fail("state.prefix", f"{prefix!r} is not a usable key prefix",
                      "write letters, digits, _ . : or -, e.g. prefix: switchback-prod")
        return SharedState(url, prefix) if usable and isinstance(prefix, str) else None

    def pricing(self, raw: Any) -> dict[str, Price]:
        """`pricing: {model: {input: 0.15, output: 0.60, cached_input: 0.075,
        cache_write: 0.1875}}`, USD per million."""
        prices = {}
        for model, entry in self.mapping(raw, "pricing").items():
            key = f"pricing.{model}"
            entry = self.mapping(entry, key, ("input", "output", "cached_input", "cache_write"))
            rates = {}
            for name, value in entry.items():
                if not finite(value) or value < 0:
                    self.fail(f"{key}.{name}", f"{value!r} is not a price",
                              "write USD per million tokens as a number ≥ 0, e.g. 0.15")
                else:
                    rates[name] = float(value)
            missing = [name for name in ("input", "output") if name not in entry]
            if missing:
                self.fail(key, f"no {' or '.join(missing)} price",
                          "give both, e.g. {input: 0.15, output: 0.60}")
            elif len(rates) == len(entry):
                prices[str(model)] = Price(**rates)
        return prices

    def budgets(self, raw: Any) -> dict[str, tuple[Budget, ...]]:
        """`budgets: {principal: {usd: 5, period: day}}`, or a list of such per principal."""
        fix = "write e.g. {usd: 5.00, period: day} or {tokens: 2000000, period: month}"
        budgets = {}
        for principal, entries in self.mapping(raw, "budgets").items():
            principal = str(principal)
            key = f"budgets.{principal}"
            if principal.startswith("#") and not re.fullmatch(r"#[0-9a-f]{6}", principal):
                self.fail(key, "not a key fingerprint",
                          "write the fingerprint `switchback status` shows, e.g. \"#3fa9c2\", "
                          "never the key itself")
                continue
            many = isinstance(entries, list)
            read = []
            for i, entry in enumerate(entries if many else [entries]):
                where = f"{key}[{i}]" if many else key
                entry = self.mapping(entry, where, ("usd", "tokens", "period"))
                units = [unit for unit in Unit if unit.value in entry]
                period = parse_period(entry.get("period"))
                if len(units) != 1:
                    self.fail(where, "expected exactly one of usd or tokens", fix)
                    continue
                unit = units[0]
                limit = entry[unit.value]
                if not finite(limit) or limit < 0 or (unit is Unit.TOKENS and limit != int(limit)):
                    self.fail(f"{where}.{unit.value}", f"{limit!r} is not a limit",
                              "write a number ≥ 0: USD (5.00) or whole tokens (2000000)")
                elif period is None:
                    self.fail(f"{where}.period", f"{entry.get('period')!r} is not a period",
                              "write hour, day, week, month (UTC calendar) or a duration "
                              "like 30m, 12h or 7d")
                else:
                    read.append(Budget(principal, unit, float(limit), period))
            labels = [budget.label for budget in read]
            for label in sorted({label for label in labels if labels.count(label) > 1}):
                self.fail(key, f"two {label} budgets", "keep one budget per unit and period")
            if read or (many and not entries):  # an empty list: exempt from "*"
                budgets[principal] = tuple(read)
        return budgets

    def count(self, raw: Any, key: str) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
            self.fail(key, f"{raw!r} is not a positive whole number", "write e.g. 4096")
            return None
        return raw

    def check(self) -> None:
        """Raise every problem found, the first one named first."""
        if self.problems:
            first, *more = self.problems
            raise ConfigError(first.source, first.key, first.problem, first.fix, tuple(more))


def parse_config(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Parse config text; `source` names the file in every error."""
    reader = _Reader(source, os.environ if env is None else env)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(document)"
        raise ConfigError(source, where, f"not valid YAML ({getattr(exc, 'problem', exc)})",
                          "check indentation and quoting on that line") from None
    raw = reader.mapping(raw, "", ("providers", "fallbacks", "timeouts", "cooldown",
                                   "protocol_memory", "conversations", "state", "pricing",
                                   "budgets", "budget_output_tokens",
                                   "context_fallbacks", "resume"))
    read = {str(name): reader.provider(str(name), value)
            for name, value in reader.mapping(raw.get("providers"), "providers").items()}
    providers = {name: p for name, p in read.items() if p is not None}
    known = {*BUILTIN, *read}  # a provider with problems is still a name fallbacks may use
    fallbacks = {
        str(model): reader.targets(str(model), value, known)
        for model, value in reader.mapping(raw.get("fallbacks"), "fallbacks").items()
    }
    context_fallbacks = {
        str(model): reader.targets(str(model), value, known, "context_fallbacks")
        for model, value in reader.mapping(raw.get("context_fallbacks"),
                                           "context_fallbacks").items()
    }
    timeouts = reader.durations(raw.get("timeouts"), "timeouts",
                                tuple(Timeouts.__dataclass_fields__))
    cooldown = reader.durations(raw.get("cooldown"), "cooldown",
                                ("floor", "ceiling", "long", "window", "max_wait", "probe"),
                                ("max_wait", "probe"))
    max_wait = cooldown.pop("max_wait", Config.max_wait)
    memory = reader.durations({"protocol_memory": raw["protocol_memory"]}, "",
                              ("protocol_memory",)) if "protocol_memory" in raw else {}
    conversations = reader.conversations(raw.get("conversations"))
    state = reader.state(raw.get("state"))
    pricing = reader.pricing(raw.get("pricing"))
    budgets = reader.budgets(raw.get("budgets"))
    output = reader.count(raw["budget_output_tokens"], "budget_output_tokens") \
        if "budget_output_tokens" in raw else None
    resume = raw.get("resume", "on")
    resume = {True: "on", False: "off"}.get(resume, resume)  # YAML reads a bare on/off as a bool
    if resume not in ("on", "off"):
        reader.fail("resume", f"expected on or off, got {resume!r}",
                    "write resume: off to end a stream cut mid-answer with an error instead "
                    "of continuing it elsewhere")
    reader.check()
    return Config(resume=resume == "on", providers=providers, fallbacks=fallbacks,
                  context_fallbacks=context_fallbacks, timeouts=Timeouts(**timeouts),
                  cooldown=CooldownPolicy(**cooldown), max_wait=max_wait, source=source,
                  state=state, pricing=pricing, budgets=budgets,
                  budget_output_tokens=output or DEFAULT_OUTPUT_TOKENS, **memory,
                  **conversations)


def load_config(path: str | Path | None) -> Config:
    """Read the config file; no path means built-in defaults only."""
    if not path:
        return Config()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot read it ({exc.strerror})",
                          "check the path given to switchback_config") from None
    return parse_config(text, str(path))
