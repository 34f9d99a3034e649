"""mitmproxy entry script of an installed Switchback:
`mitmdump -s "$(switchback addon-path)"`."""

from switchback.shell import addons as switchback_addons

addons = switchback_addons()
