"""Errors every layer may raise at start (kept apart so none imports the options)."""

from __future__ import annotations


class StartupError(Exception):
    """libchat cannot start; the message is one line saying what to change."""
