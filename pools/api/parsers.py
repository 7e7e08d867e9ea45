"""The API's one JSON parser: DRF's, decoding through `load_spec_json`.

The views decode their bodies with `load_spec_json` (the CLI's refusals, one line each). DRF parses a body
on its own too: for a session's unsafe request, its CSRF check reads `request.POST`, which runs the parser
before the view. DRF's own JSONParser let a deeply nested body's RecursionError out as a 500 there, and
answered bad JSON in other words than the view would. This parser refuses alike: a JSON 400 with `problems`.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from pools.specfile import SpecFileError, load_spec_json


class SpecJsonParser(JSONParser):
    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> object:
        try:
            return load_spec_json(stream.read() if stream is not None else b"")
        except SpecFileError as exc:
            raise ParseError({"detail": "refused, nothing changed", "problems": exc.messages}) from None
