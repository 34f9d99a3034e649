"""mitmproxy entry script: `mitmdump -s addon/switchback_addon.py`.

It works from a plain checkout (no install) by putting this folder on the
import path, so the `switchback` package beside it is found.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from switchback.shell import addons as switchback_addons  # noqa: E402

addons = switchback_addons()
