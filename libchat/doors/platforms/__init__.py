"""Chat-platform adapters (CONTRACT section 10): WeCom and Lark.

Groundwork, all pure (no I/O, no reactor): the callback crypto
(``wecom_crypto``, ``lark_crypto``), the hardened callback parsers and their
mapping into libchat's unified 1001 form (``wecom_xml``, ``lark_event``), the
dialog/user id rules (``ids``), the long-text splitter (``textsplit``) and the
retry dedupe set (``dedupe``). Every failure a callback can meet is one of the
exceptions in ``errors``, each carrying the HTTP status section 10 answers.
"""
