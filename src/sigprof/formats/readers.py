"""Loads any profile sigprof can show: a Sentry profile chunk (or JSON
Lines of them, or a v1 transaction profile), speedscope JSON, or collapsed
stacks. The format is recognised from the content, not the file name."""

from __future__ import annotations

import json
import os
from typing import Any

from sigprof.formats import collapsed, sentry_chunk, speedscope
from sigprof.formats.profile_model import Profile


class UnreadableProfile(ValueError):
    """The file is not a profile sigprof can read; str() says why."""


def load(path: str) -> Profile:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise UnreadableProfile(f"cannot read {path}: {error.strerror or error}") from None
    name = os.path.basename(path)
    try:
        profile = parse(raw, name)
    except UnreadableProfile as error:
        raise UnreadableProfile(f"{path}: {error}") from None
    return profile


def parse(raw: bytes, name: str = "profile") -> Profile:
    if raw[:2] == b"\x1f\x8b":
        raise UnreadableProfile(
            "this is a gzipped (pprof) profile; open it with `go tool pprof` or Pyroscope"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableProfile("not a text profile (expected JSON or collapsed stacks)") from None
    stripped = text.lstrip()
    if stripped[:15].lower().startswith(("<!doctype", "<html")):
        raise UnreadableProfile("this is already an HTML view; open it in a browser")
    if stripped.startswith(("{", "[")):
        documents = _json_documents(stripped)
        profile = _from_json(documents)
    else:
        try:
            profile = collapsed.parse(text)
        except ValueError as error:
            raise UnreadableProfile(f"not JSON, and not collapsed stacks: {error}") from None
    profile.name = name
    return profile


def _json_documents(text: str) -> list[Any]:
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as whole_error:
        # JSON Lines: several chunks, one per line
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise UnreadableProfile(f"invalid JSON: {whole_error}") from None


def _from_json(documents: list[Any]) -> Profile:
    first = documents[0]
    if isinstance(first, dict) and "shared" in first and "profiles" in first:
        try:
            return speedscope.parse(first)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise UnreadableProfile(f"malformed speedscope file: {error!r}") from None
    if isinstance(first, list):  # a JSON array of chunks
        documents = first
    if documents and all(sentry_chunk.is_sentry(d) for d in documents):
        profile = Profile(name="Sentry profile", unit="samples", clock="")
        try:
            for document in documents:
                sentry_chunk.parse_into(profile, document)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise UnreadableProfile(f"malformed Sentry profile: {error!r}") from None
        return profile
    raise UnreadableProfile(
        "JSON, but neither speedscope nor a Sentry profile / profile_chunk"
    )
