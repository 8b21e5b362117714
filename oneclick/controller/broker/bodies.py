"""Request bodies as the broker reads them: at most BODY_LIMIT bytes, within BODY_TIMEOUT, JSON
that can be stored, validated against the protocol's model."""

from __future__ import annotations

import asyncio
import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from oneclick.api import errors
from oneclick.controller.broker.problem import Problem

BODY_LIMIT = 64 * 1024
BODY_TIMEOUT = 10.0

Model = TypeVar("Model", bound=BaseModel)


async def read_body(request: web.Request, model: type[Model]) -> Model:
    """The request's JSON body as `model`: bounded in size and time, parsed strictly."""
    if request.content_length is not None and request.content_length > BODY_LIMIT:
        raise Problem(413, f"the body is larger than {BODY_LIMIT} bytes")
    try:
        raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT)
    except web.HTTPRequestEntityTooLarge as error:
        raise Problem(413, f"the body is larger than {BODY_LIMIT} bytes") from error
    except TimeoutError as error:
        raise Problem(408, f"the body did not arrive within {BODY_TIMEOUT:.0f}s") from error
    try:
        data = json.loads(raw)
        # A lone surrogate (\ud800) parses, but is no character: nothing could store it.
        json.dumps(data, ensure_ascii=False).encode()
    except ValueError as error:
        raise Problem(400, f"the body is not valid JSON: {error}") from error
    try:
        return model.model_validate(data)
    except ValidationError as error:  # JSON, but not what the schema says: 422
        raise Problem(422, f"invalid {model.__name__}: {errors.describe(error)}") from error
