"""``zoo upgrade PATH``: convert a schema-1 zoo to the current schema, keeping the old store beside it."""

from __future__ import annotations

from zoo.app.args import ArgumentParser, parse
from zoo.store import SCHEMA_VERSION
from zoo.store.upgrade import upgrade


def main(argv: list[str]) -> int:
    """convert a zoo written by an older wszoo (schema 1) to the current schema"""
    parser = ArgumentParser(prog="zoo upgrade", description="convert a schema-1 zoo to the current schema")
    parser.add_argument("path")
    args = parse(parser, argv)
    if args is None:
        return 0
    z = upgrade(args.path)
    print(
        f"zoo {z.path}: upgraded to schema {SCHEMA_VERSION} ({len(z)} models);"
        f" the schema-1 store is kept at {args.path.rstrip('/')}.schema1 (remove it when satisfied)"
    )
    return 0
