"""libchat: a Twisted chat router that binds each dialog to its own Node.js tool program."""

__version__ = "0.1.0"
