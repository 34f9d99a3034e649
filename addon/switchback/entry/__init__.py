"""The mitmproxy entry script, shipped inside the package: `switchback
addon-path` prints its path. It sits in a folder of its own because mitmproxy
puts a script's folder first on the import path while loading it."""

from pathlib import Path

SCRIPT = Path(__file__).with_name("switchback_addon.py")
