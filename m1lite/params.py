"""Request parameters, from wherever a client put them.

The contract: the query string, an `application/x-www-form-urlencoded` or
`multipart/form-data` body, or a JSON object body; `text/plain` bodies holding
either form encoding or JSON too (navigator.sendBeacon sends those). JSON-valued
parameters are JSON text in a form field, or plain JSON values in a JSON body.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fast_query_parsers import parse_query_string
from starlette.datastructures import UploadFile
from starlette.requests import Request

from m1lite.errors import BadRequest

_json_decode = msgspec.json.decode


class Params:
    """Named values; a name given more than once keeps every value (e.g. `fq`)."""

    __slots__ = ("_values", "files")

    def __init__(self) -> None:
        self._values: dict[str, list[Any]] = {}
        self.files: dict[str, UploadFile] = {}

    def add(self, name: str, value: Any) -> None:
        values = self._values.get(name)
        if values is None:
            self._values[name] = [value]
        else:
            values.append(value)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def names(self) -> list[str]:
        return list(self._values)

    def raw(self, name: str) -> Any:
        values = self._values.get(name)
        return None if values is None else values[-1]

    def all(self, name: str) -> list[Any]:
        values = self._values.get(name, [])
        flat: list[Any] = []
        for value in values:
            if isinstance(value, list):
                flat.extend(value)
            else:
                flat.append(value)
        return flat

    def string(
        self, name: str, default: str | None = None, *, required: bool = False
    ) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise BadRequest(f"missing parameter: {name}", code="missing_parameter")
            return default
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        raise BadRequest(f"parameter {name} must be a string", code="bad_parameter")

    def required_str(self, name: str) -> str:
        value = self.string(name, required=True)
        assert value is not None
        if not value:
            raise BadRequest(f"parameter {name} must not be empty", code="missing_parameter")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
        raise BadRequest(f"parameter {name} must be true or false", code="bad_parameter")

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value.strip()) if isinstance(value, str) else int(value)
            if isinstance(value, float) and number != value:
                raise ValueError
        except (ValueError, TypeError):
            raise BadRequest(f"parameter {name} must be an integer", code="bad_parameter") from None
        if minimum is not None and number < minimum:
            raise BadRequest(f"parameter {name} must be at least {minimum}", code="bad_parameter")
        if maximum is not None and number > maximum:
            raise BadRequest(f"parameter {name} must be at most {maximum}", code="bad_parameter")
        return number

    def json(self, name: str, *, required: bool = False) -> Any:
        """A JSON-valued parameter: JSON text in a form field, or a JSON value as is."""
        value = self.raw(name)
        if value is None:
            if required:
                raise BadRequest(f"missing parameter: {name}", code="missing_parameter")
            return None
        if isinstance(value, str):
            return decode_json(value.encode(), what=f"parameter {name}")
        return value


def decode_json(body: bytes, *, what: str) -> Any:
    try:
        return _json_decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply", code="too_deep") from None
    except UnicodeDecodeError:
        # msgspec raises this (not DecodeError) for invalid UTF-8 inside a JSON string.
        raise BadRequest(f"{what} is not valid UTF-8", code="bad_encoding") from None


def _add_form(params: Params, encoded: bytes) -> None:
    # A compiled parser: the stdlib's parse_qsl takes ~3 ms to percent-decode a
    # 100-event body, more than everything else /write does with it.
    pairs = parse_query_string(encoded, "&")
    if not pairs and encoded.strip():
        # The parser yields nothing for undecodable input; say why.
        try:
            encoded.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the form body is not valid UTF-8", code="bad_encoding") from None
    for name, value in pairs:
        params.add(name, value)


def _add_json_object(params: Params, body: bytes) -> None:
    value = decode_json(body, what="the JSON body")
    if not isinstance(value, dict):
        raise BadRequest("a JSON body must be an object of parameters", code="invalid_json")
    for name, item in value.items():
        params.add(name, item)


async def read_params(request: Request) -> Params:
    params = Params()
    query = request.scope.get("query_string", b"")
    if query:
        _add_form(params, query)
    if request.method in ("GET", "HEAD"):
        return params
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        await _add_multipart(params, request)
        return params
    body = await request.body()
    if not body:
        return params
    if media_type == "application/json":
        _add_json_object(params, body)
        return params
    if media_type in ("text/plain", "") and body.lstrip()[:1] == b"{":
        _add_json_object(params, body)  # sendBeacon with a JSON string
    else:
        _add_form(params, body)
    return params


async def _add_multipart(params: Params, request: Request) -> None:
    try:
        form = await request.form(max_files=4, max_fields=1000)
    except Exception as exc:  # python-multipart raises several unrelated types
        if getattr(exc, "status_code", None) == 413:
            raise
        raise BadRequest(f"malformed multipart body: {exc}", code="bad_multipart") from None
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            params.files[name] = value
        else:
            params.add(name, value)
