"""Validation of every REST request the fake receives against Discord's official OpenAPI spec.

The spec (``discord-api-spec/openapi.json``, MIT, see its LICENSE) is loaded once per test session by
:func:`load_spec_validator`; loading takes a few seconds, validating a request 10-40 ms.

Every known gap between the spec and what discord.py (and Discord itself) accepts is handled here, in
:func:`_patch_spec` and :class:`SpecValidator.validate`, and nowhere else:

1. ``SnowflakeType`` is a decimal string in the spec, but Discord accepts integers too and discord.py sends
   them (``attachments: [{"id": 0, ...}]`` uses the integer index of the uploaded file; message references
   carry integer ids). The patched type accepts a non-negative integer as well.
2. The spec's string formats ``snowflake`` and ``nonce`` are unknown to the JSON-schema validator and get
   format checkers here (a snowflake is a decimal string; a nonce is a string of at most 25 characters or an
   integer).
3. Multipart bodies (file uploads) carry the JSON document in a ``payload_json`` part, which the spec's
   multipart schema cannot express; the fake decodes that part and validates it as the operation's
   ``application/json`` body. The file parts are checked by the fake itself (size limit, attachment indexes).
"""

from __future__ import annotations

import copy
import json
import re
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema.exceptions import ValidationError
from multidict import MultiDict
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters

SPEC_PATH = Path(__file__).parent / "discord-api-spec" / "openapi.json"
SPEC_SERVER = "https://discord.com"
API_PREFIX = "/api/v10"

_SNOWFLAKE = re.compile(r"^(0|[1-9][0-9]*)$")


def _is_snowflake(value: object) -> bool:
    return not isinstance(value, str) or bool(_SNOWFLAKE.match(value))


def _is_nonce(value: object) -> bool:
    return not isinstance(value, str) or len(value) <= 25


def _patch_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Return the spec with gap 1 (integer snowflakes) closed; see the module docstring."""
    patched = copy.deepcopy(spec)
    schemas = patched["components"]["schemas"]
    snowflake_string = schemas["SnowflakeType"]
    schemas["SnowflakeType"] = {"anyOf": [snowflake_string, {"type": "integer", "minimum": 0}]}
    return patched


@dataclass(frozen=True)
class _Request:
    """A request in the shape openapi-core's Request protocol reads."""

    method: str
    path: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters
    host_url: str = SPEC_SERVER


class SpecValidator:
    """Validates requests against the spec; not bound to an event loop, so one instance serves a session."""

    def __init__(self, spec: dict[str, Any]) -> None:
        config = Config(
            extra_format_validators={"snowflake": _is_snowflake, "nonce": _is_nonce},
            spec_validator_cls=None,
        )
        self._openapi = OpenAPI.from_dict(_patch_spec(spec), config=config)

    def validate(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        content_type: str,
        body: bytes | None,
        payload_json: str | None = None,
    ) -> list[str]:
        """Return the spec's objections to one request (empty when it conforms).

        ``path`` starts with ``/api/v10``. For multipart requests pass the decoded ``payload_json`` part;
        it is validated as the JSON body (gap 3).
        """
        if payload_json is not None:
            content_type, body = "application/json", payload_json.encode()
        request = _Request(
            method=method.lower(),
            path=path,
            body=body or None,
            content_type=content_type if body else "",
            parameters=RequestParameters(query=MultiDict(query), header=headers),
        )
        result = self._openapi.unmarshal_request(request)
        return [_describe(error) for error in result.errors]


def _describe(error: BaseException) -> str:
    """One short line per objection: what kind, and where in the body which schema keyword failed.

    Discord's schemas are unions (``anyOf``), so a bad field yields an error per branch; the leaves are
    reported, leaving out branch mismatches on a discriminating ``type`` field, which only say "wrong branch".
    """
    schema_errors = getattr(error.__cause__, "schema_errors", None) or getattr(error, "schema_errors", None)
    if not schema_errors:
        return f"{type(error).__name__}: {error.__cause__ or error}"
    leaves = list(_leaves(schema_errors))
    meaningful = [leaf for leaf in leaves if not _is_branch_mismatch(leaf)] or leaves
    lines = dict.fromkeys(
        f"{'/'.join(str(part) for part in leaf.absolute_path) or '<body>'} fails "
        f"{leaf.validator}={reprlib.repr(leaf.validator_value)}"
        for leaf in meaningful
    )
    return f"{type(error).__name__}: {'; '.join(list(lines)[:5])}"


def _leaves(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    for error in errors:
        if error.context:
            yield from _leaves(error.context)
        else:
            yield error


def _is_branch_mismatch(error: ValidationError) -> bool:
    path = list(error.absolute_path)
    return error.validator in {"enum", "const"} and bool(path) and path[-1] == "type"


@cache
def load_spec_validator() -> SpecValidator:
    """The session's one validator (the spec takes seconds to load)."""
    return SpecValidator(json.loads(SPEC_PATH.read_text()))
