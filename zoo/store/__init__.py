"""The zoo store: read a zoo (:mod:`zoo.store.reader`), write one (:mod:`zoo.store.writer`), and the tools
around them (lock, verify, upgrade, transfer)."""
