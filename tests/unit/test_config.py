"""Config parsing: the README example works as written; every mistake names
the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchback.config import (Config, ConfigError, Target, load_config, parse_config,
                               parse_duration)
from switchback.providers import BUILTIN
from switchback.vocabulary import Rescue

README_EXAMPLE = """
providers:
  primary:
    base_url: https://localhost:9001/v1
    keys: ["${PRIMARY_KEY_1}", "${PRIMARY_KEY_2}"]  # optional; without keys the client's own key is used
    protocol: auto                                  # auto | chat | responses
  backup:
    base_url: https://localhost:9002/v1
    keys: [sk-backup-literal]
fallbacks:
  gpt-4o: [backup/gpt-4o-mini]   # ordered; provider/model
  "*": [backup/*]                # any other model: same name on backup
timeouts:
  first_byte: 30s
"""
ENV = {"PRIMARY_KEY_1": "sk-one", "PRIMARY_KEY_2": "sk-two"}


def test_readme_example_parses_as_written():
    config = parse_config(README_EXAMPLE, "switchback.yaml", ENV)
    assert config.providers["primary"].keys == ("sk-one", "sk-two")
    assert config.providers["backup"].keys == ("sk-backup-literal",)
    assert config.providers["primary"].base_url == "https://localhost:9001/v1"
    assert config.fallbacks_for("gpt-4o") == (Target("backup", "gpt-4o-mini"),)
    assert config.fallbacks_for("o3") == (Target("backup", "*"),)
    assert config.fallbacks_for("o3")[0].model_for("o3") == "o3"
    assert config.timeouts.first_byte == 30.0


def test_cooldown_section():
    config = parse_config("cooldown: {floor: 2s, ceiling: 10m, long: 2h, max_wait: 0s}", "c", {})
    assert (config.cooldown.floor, config.cooldown.ceiling, config.cooldown.long) == \
        (2.0, 600.0, 7200.0)
    assert config.max_wait == 0.0


def test_keys_never_in_repr():
    config = parse_config(README_EXAMPLE, "switchback.yaml", ENV)
    assert "sk-one" not in repr(config) and "sk-backup-literal" not in repr(config)


def test_fallback_may_name_a_builtin_provider():
    config = parse_config('fallbacks: {"*": [openai/gpt-4o-mini]}', "f.yaml", {})
    assert config.fallbacks_for("x") == (Target("openai", "gpt-4o-mini"),)


BROKEN = [
    ("provider: {}", "provider", "providers, fallbacks, timeouts, cooldown"),
    ("providers: {p: {base_url: ftp://x}}", "providers.p.base_url", "API root"),
    ("providers: {p: {url: https://x}}", "providers.p.url", "base_url, keys, protocol"),
    ("providers: {p: {base_url: 'https://x', protocol: grpc}}", "providers.p.protocol",
     "auto, chat, responses"),
    ("providers: {p: {base_url: 'https://x', keys: ['${NOPE}']}}", "providers.p.keys[0]",
     "export NOPE"),
    ("providers: {p: {base_url: 'https://x', keys: 3}}", "providers.p.keys", "keys: ["),
    ("fallbacks: {m: [nowhere/x]}", "fallbacks.m[0]", "define providers.nowhere"),
    ("fallbacks: {m: [no-slash]}", "fallbacks.m[0]", "provider/model"),
    ("timeouts: {first_byte: soon}", "timeouts.first_byte", "30s"),
    ("timeouts: {first_byte: 0s}", "timeouts.first_byte", "30s"),
    ("cooldown: {floor: -2}", "cooldown.floor", "30s"),
    ("cooldown: {ceil: 2m}", "cooldown.ceil", "ceiling"),
    ("timeouts: {first_bite: 3s}", "timeouts.first_bite", "first_byte"),
    ("providers: [a, b]", "providers", "indented"),
    ("providers: {p: {base_url: 'https://x'}\n  bad", "line", "indentation"),
    ("resume: sometimes", "resume", "resume: off"),
    ("providers: {p: {base_url: 'https://x', continuation: maybe}}",
     "providers.p.continuation", "prefill, restart, off"),
    ("providers: {p: {base_url: 'https://x', prefix: yes please}}", "providers.p.prefix",
     "prefix: true"),
]


def test_resume_and_continuation():
    config = parse_config("""
resume: off
providers:
  local: {base_url: "http://localhost:8000/v1", continuation: restart}
  mistral: {base_url: "https://api.mistral.ai/v1", keys: [k]}
  other: {base_url: "https://other.example/v1"}
""", "c.yaml", {})
    assert config.resume is False and Config().resume is True
    providers = config.providers
    assert providers["local"].continuation is Rescue.RESTART
    # A configured provider named like a built-in keeps what the built-in knows.
    assert (providers["mistral"].continuation, providers["mistral"].prefix) == \
        (Rescue.PREFILL, True)
    assert (providers["other"].continuation, providers["other"].prefix) == (Rescue.PREFILL, False)
    assert BUILTIN["openai"].continuation is Rescue.RESTART


@pytest.mark.parametrize("text,key,fix", BROKEN, ids=[b[1] for b in BROKEN])
def test_errors_name_file_key_and_fix(text, key, fix):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conf/switchback.yaml", {})
    message = str(caught.value)
    assert message.startswith("conf/switchback.yaml: ")
    assert caught.value.key.startswith(key)
    assert fix in caught.value.fix
    assert "Fix: " in message


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(caught.value)


def test_no_path_means_defaults():
    assert load_config(None).providers == {}


@pytest.mark.parametrize("value,seconds", [
    ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), (5, 5.0), ("1.5", 1.5),
    ("0s", 0.0), (-1, None), ("soon", None), (True, None), ("3 weeks", None),
])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("text,url,prefix", [
    ("state: memory", None, None),
    ("state: redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", "switchback"),
    ("state: rediss://user:pw@cache.internal:6380/1", "rediss://user:pw@cache.internal:6380/1",
     "switchback"),
    ("state: unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0", "switchback"),
    ("state: {url: 'redis://localhost', prefix: team-a}", "redis://localhost", "team-a"),
])
def test_state_backends(text, url, prefix):
    state = parse_config(text, "t.yaml", {}).state
    assert (state.url if state else None, state.prefix if state else None) == (url, prefix)


@pytest.mark.parametrize("text,key", [
    ("state: postgres://db", "state"),
    ("state: {url: 'redis://', prefix: x}", "state.url"),
    ("state: {url: 'redis://localhost', prefix: 'has space'}", "state.prefix"),
    ("state: {url: 'redis://localhost', colour: red}", "state.colour"),
    ("state: [redis://localhost]", "state"),
])
def test_a_malformed_state_names_the_key_and_the_fix(text, key):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml", {})
    assert caught.value.key == key
    assert "redis://" in caught.value.fix or "prefix" in caught.value.fix
