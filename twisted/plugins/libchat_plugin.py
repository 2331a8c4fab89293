"""twistd plugin: ``twistd -n libchat``. A pointer to :mod:`libchat.tap`."""

from twisted.application.service import ServiceMaker

libchat = ServiceMaker(
    "libchat",
    "libchat.tap",
    "Chat router binding each dialog to its own Node.js tool program",
    "libchat",
)
