"""twistd plugin: ``twistd -n libchat``. A pointer to :mod:`libchat.tap`.

Like twistd's own ``ServiceMaker`` it imports libchat only when used, but it
hands twistd :class:`libchat.tap.TwistdOptions`, whose errors are one line.
"""

from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IServiceMaker)
class LibchatMaker:
    tapname = "libchat"
    module = "libchat.tap"  # where the options and makeService live
    description = "Chat router binding each dialog to its own Node.js tool program"

    @property
    def options(self) -> Any:
        from libchat.tap import TwistdOptions
        return TwistdOptions

    def makeService(self, options: Any) -> Any:
        from libchat.tap import makeService
        return makeService(options)


libchat = LibchatMaker()
