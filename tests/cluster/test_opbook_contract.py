"""The operator book contract (IOperatorBook, CONTRACT §13) run on
MemoryBook (the verified fake), JournalBook, RedisOperatorBook on a real
redis-server and its fake (FakeOperatorBook on a FakeRedis world); then what
only the Redis book and its fake promise (per-node hashes, atomic adoption,
writes that Redis missed are written again), and the desk's own restart test
on the Redis book."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from zope.interface.verify import verifyObject

from libchat.cluster.connect import RedisConnections, parse_redis
from libchat.cluster.keys import Keys
from libchat.cluster.opbook import RedisOperatorBook
from libchat.cluster.testing import FakeRedis
from libchat.cluster.testing_doors import FakeOperatorBook
from libchat.interfaces import Unavailable
from libchat.runtimes.operators.book import IOperatorBook, JournalBook, MemoryBook
from libchat.storage.store import run_inline

from .door_backends import retried
from .redis_server import RedisServer


def ticket(dialog_id: str, rank: float, operator: str | None = None) -> dict[str, Any]:
    return {"dialog_id": dialog_id, "user_id": "u-" + dialog_id, "program": "human",
            "since": 10.0 + rank, "rank": rank, "operator": operator,
            "assigned_at": None if operator is None else 20.0}


class Books:
    """Opens the book of a node, again after a "restart"."""

    def open(self, node: str = "n1") -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SharedBooks(Books):
    """Books of several nodes on one Redis (or fake world), which can fail."""

    def outage(self) -> None:
        raise NotImplementedError

    def recover(self) -> None:
        raise NotImplementedError


class MemoryBooks(Books):
    def __init__(self) -> None:
        self.books: dict[str, MemoryBook] = {}

    def open(self, node: str = "n1") -> Any:
        return defer.succeed(self.books.setdefault(node, MemoryBook()))


class JournalBooks(Books):
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def open(self, node: str = "n1") -> Any:
        return defer.succeed(JournalBook(self.tmp / node, run_inline))


class FakeBooks(SharedBooks):
    def __init__(self) -> None:
        self.world = FakeRedis(task.Clock())

    def open(self, node: str = "n1") -> Any:
        book = FakeOperatorBook(self.world, node)
        return book.fetch().addCallback(lambda _: book)

    def outage(self) -> None:
        self.world.down = True

    def recover(self) -> None:
        self.world.down = False


class RedisBooks(SharedBooks):
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.keys = Keys("t:")
        self.conns: list[RedisConnections] = []

    def connect(self) -> RedisConnections:
        conns = RedisConnections(reactor, parse_redis(self.server.endpoint), timeout=1.0)
        self.conns.append(conns)
        return conns

    def open(self, node: str = "n1") -> Any:
        return RedisOperatorBook.open(self.connect(), self.keys, node)

    def outage(self) -> None:
        self.server.kill9()

    def recover(self) -> None:
        self.server.restart()

    def close(self) -> None:
        pytest_twisted.blockon(defer.gatherResults([c.disconnect() for c in self.conns]))


class BookContract:
    @pytest_twisted.inlineCallbacks
    def test_the_book_provides_its_interface(self, books: Books) -> Any:
        assert verifyObject(IOperatorBook, (yield books.open()))

    @pytest_twisted.inlineCallbacks
    def test_tickets_survive_a_restart_whole_and_in_rank_order(self, books: Books) -> Any:
        book = yield books.open()
        book.put(ticket("d2", 2.0))
        book.put(ticket("d1", 1.0))
        book.put(ticket("d3", 3.0))
        book.put(ticket("d2", 2.0, operator="ada"))  # replaced whole
        book.drop("d3")
        book.drop("never")
        assert [t["dialog_id"] for t in book.load()] == ["d1", "d2"]
        yield book.settle()
        again = yield books.open()
        assert again.load() == [ticket("d1", 1.0), ticket("d2", 2.0, operator="ada")]
        again.put(ticket("d0", 0.0))  # put back at the head of the queue
        yield again.settle()
        yield again.compact()
        assert [t["dialog_id"] for t in (yield books.open()).load()] == ["d0", "d1", "d2"]


class TestMemoryBook(BookContract):
    @pytest.fixture
    def books(self) -> Iterator[Books]:
        yield MemoryBooks()


class TestJournalBook(BookContract):
    @pytest.fixture
    def books(self, tmp_path: Path) -> Iterator[Books]:
        yield JournalBooks(tmp_path)


class SharedBookContract(BookContract):
    """What the Redis book (and its fake) add: per-node hashes, atomic
    adoption, writes that Redis missed are written again."""

    @pytest_twisted.inlineCallbacks
    def test_each_node_has_its_own_tickets_and_one_survivor_adopts_a_dead_nodes(
            self, books: SharedBooks) -> Any:
        dead = yield books.open("dead")
        dead.put(ticket("d1", 1.0))
        dead.put(ticket("d2", 2.0, operator="ada"))
        yield dead.settle()
        s1 = yield books.open("s1")
        s2 = yield books.open("s2")
        assert s1.load() == [] and s2.load() == []
        got = yield defer.gatherResults([s1.adopt("dead"), s2.adopt("dead")])
        assert sorted(len(g) for g in got) == [0, 2]
        winner = s1 if got[0] else s2
        assert [t["dialog_id"] for t in winner.load()] == ["d1", "d2"]
        assert (yield books.open("dead")).load() == []
        assert [t["dialog_id"] for t in (yield books.open(winner.node_id)).load()] == ["d1", "d2"]

    @pytest_twisted.inlineCallbacks
    def test_a_change_redis_missed_is_written_again_once_it_is_back(
            self, books: SharedBooks, logged: Any) -> Any:
        logged.allow("operator book")
        book = yield books.open()
        book.put(ticket("d1", 1.0))
        yield book.settle()
        books.outage()
        book.put(ticket("d1", 1.0, operator="ada"))
        book.put(ticket("d2", 2.0))
        with pytest.raises(Unavailable):
            yield book.settle()
        books.recover()
        yield retried(book.settle)
        again = yield books.open()
        assert again.load() == [ticket("d1", 1.0, operator="ada"), ticket("d2", 2.0)]

    @pytest_twisted.inlineCallbacks
    def test_a_book_that_forgot_writes_nothing_into_its_hash_another_node_adopted(
            self, books: SharedBooks, logged: Any) -> Any:
        """A desk that stops being the desk alive forgets its mirror and its
        unacknowledged writes: the next desk adopts what Redis acknowledged,
        and nothing of the old desk's puts it back (ClusterDesk._suspend)."""
        logged.allow("operator book")
        book = yield books.open("old")
        book.put(ticket("d1", 1.0))
        yield book.settle()
        books.outage()
        book.put(ticket("d1", 1.0, operator="ada"))
        book.put(ticket("d2", 2.0))
        book.forget()
        assert book.load() == []
        books.recover()
        new = yield retried(lambda: books.open("new"))
        got = yield new.adopt("old")
        assert got == [ticket("d1", 1.0)], "what Redis last acknowledged"
        yield book.settle()  # nothing left to write again
        yield book.compact()
        assert (yield books.open("old")).load() == []
        book.put(ticket("d3", 3.0))  # a desk again: it writes as before
        yield book.settle()
        assert [t["dialog_id"] for t in (yield books.open("old")).load()] == ["d3"]


class TestFakeOperatorBook(SharedBookContract):
    @pytest.fixture
    def books(self) -> Iterator[Books]:
        yield FakeBooks()


class TestRedisOperatorBook(SharedBookContract):
    @pytest.fixture
    def books(self, redis_server: RedisServer) -> Iterator[RedisBooks]:
        b = RedisBooks(redis_server)
        yield b
        b.close()


@pytest.fixture
def redis_books(redis_server: RedisServer) -> Iterator[RedisBooks]:
    b = RedisBooks(redis_server)
    yield b
    b.close()


@pytest_twisted.inlineCallbacks
def test_the_desk_resumes_queue_and_assignments_from_the_redis_book(
        tmp_path: Path, redis_books: RedisBooks) -> Any:
    """tests/operators' restart test, with the book in Redis."""
    from tests.operators.test_desk import assigned
    from tests.operators.world import Desk

    books = redis_books
    w = Desk(tmp_path, max_per_operator=1, wait=300, book=(yield books.open()))
    w.connect("ada")
    w.say("human", dialog_id="d1")
    w.say("human", dialog_id="d2", user_id="u2")
    w.reply("ada", "d1", "hi")
    w.clock.advance(100)
    w.router.stop()
    yield w.book.settle()
    again = Desk(tmp_path, clock=w.clock, store=w.store, book=(yield books.open()))
    assert [t.dialog_id for t in again.desk.queue()] == ["d2"]
    assert again.desk.assigned_to("d1") == "ada"
    back = again.connect("ada")
    assert assigned(back) == ["d1"]
    assert again.reply("ada", "d1", "I am back") is None
    again.clock.advance(200)
    assert again.to_user("d2")[-1]["event_type"] == 2003
    yield again.book.settle()
    kept = (yield books.open()).load()
    assert [(t["dialog_id"], t["operator"]) for t in kept] == [("d1", "ada")], \
        "the ended dialog d2 leaves no ticket behind"
