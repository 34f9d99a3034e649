"""mitmproxy entry script of an installed Switchback:
`mitmdump -s "$(switchback addon-path)"`."""

from switchback.addon import Switchback

addons = [Switchback()]
