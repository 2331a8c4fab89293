"""The seams of libchat. The router knows only these, never a transport.

Front doors implement :class:`IUpstream`; program runtimes implement
:class:`IRuntime`/:class:`IInstance`; the dialog/memory store implements
:class:`IStore`. Each has a verified in-memory fake in :mod:`libchat.testing`.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IUpstream(Interface):
    """One connection (or gateway) that sends user events and receives replies."""

    channel = Attribute(
        "str: the family of front doors this upstream belongs to ('frame', 'web'). "
        "A dialog's replies fall back only to upstreams of its own channel."
    )

    def alive() -> bool:
        """True while events delivered now will reach a client."""

    def deliver(event: dict) -> None:
        """Send one libchat -> upstream event (2001-2004)."""


class IInstanceOwner(Interface):
    """What a runtime reports back about one instance (implemented by the router)."""

    def instanceConnected(instance: "IInstance") -> None:
        """The program connected to its socket; buffered events were flushed."""

    def instanceEvent(instance: "IInstance", event: dict) -> None:
        """The program sent a valid 2001/2002/2003."""

    def instanceGone(instance: "IInstance", connected: bool, detail: str) -> None:
        """The instance's process is gone. ``connected`` tells whether it ever
        connected (False: it failed to start, or missed the start deadline)."""


class IInstance(Interface):
    """One running program instance bound to at most one dialog."""

    instance_id = Attribute("str: unique for the life of the server")
    program = Attribute("str: the program (intent) name")
    token = Attribute("str: the secret the program presents to the memory API")
    pid = Attribute("int | None: the process id once spawned")

    def send(event: dict) -> None:
        """Queue an event to the program; buffered until it connects."""

    def stop(drain: float = 0.0):
        """Stop the instance: wait up to ``drain`` s for it to exit by itself,
        then SIGTERM its process group, then SIGKILL after the kill grace.
        Returns a Deferred that fires once the process is gone."""


class IRuntime(Interface):
    """Starts instances of programs."""

    def start(program: str, dialog_id: str, user_id: str, owner: IInstanceOwner) -> IInstance:
        """Start an instance of ``program`` for a dialog; events go to ``owner``."""

    def stopAll():
        """Stop every instance; Deferred fires when all are gone."""


class IStore(Interface):
    """Dialog records and per-(user, program) memory, durable somewhere."""

    def load():
        """Read what a previous run kept; returns the list of DialogRecords."""

    def get(dialog_id: str):
        """The DialogRecord for an id, or None."""

    def add(record) -> None:
        """Keep a new DialogRecord."""

    def changed(record) -> None:
        """Mark a record as changed so the next flush writes it."""

    def memory_get(user_id: str, program: str, key: str):
        """The value saved for (user, program, key), or None."""

    def memory_set(user_id: str, program: str, key: str, value, dialog_id: str, now: float):
        """Save a value (and note it in the dialog's record); returns a
        Deferred that fires when the value is durable."""

    def flush():
        """Write every changed record; returns a Deferred."""

    def pending():
        """{channel: [event, ...]}: replies kept for an absent upstream by a
        previous run, oldest first (restored by the router at start)."""

    def pending_put(channel: str, event: dict) -> None:
        """A reply was queued for ``channel`` because no upstream could take it."""

    def pending_taken(channel: str, count: int) -> None:
        """The ``count`` oldest queued replies of ``channel`` were delivered."""
