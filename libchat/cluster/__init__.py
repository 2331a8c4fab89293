"""Several libchat nodes over one Redis (CONTRACT §14): the Redis layer.

- :mod:`.connect`: ``--redis`` endpoints, the password file, the three
  connections (commands, blocking stream reads, SUBSCRIBE) and the start checks;
- :mod:`.scripts` and ``lua/``: the Lua scripts that make ownership and the
  transcript safe (claim, append, release, lease refresh);
- :mod:`.lease`: the node lease and its health;
- :mod:`.store` / :mod:`.bus`: the Redis implementations of the seams in
  :mod:`.interfaces`, whose verified fakes live in :mod:`.testing`.

The router does not use any of it yet (issue 13 continues); see docs/scaleout.md.
"""
