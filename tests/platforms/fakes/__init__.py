"""Fake WeCom and Lark API servers that behave like the real ones.

Klein apps as classes (STYLE 11): test them with ``StubTreq(fake.app.resource())``
or serve them on a real loopback port with :func:`.serve.listen` (and
``python -m tests.platforms.fakes.serve wecom|lark``) for twistd integration
tests; ``api_base`` of an app then points at ``http://127.0.0.1:PORT``. No
test reaches the internet.

Both record every request (:class:`.script.Recorded`), and both are
scriptable per endpoint: platform error codes, HTTP 5xx/429 and slowness
(:class:`.script.Fault`, consumed one per request), over Python or over the
``/_fake/`` control routes.
"""
