"""Properties of URLs the API is given: a NUL (``%00``) anywhere in the path or the query
of a ``/v1/`` request is the 400 error shape, on every operation, for every caller.

Regression: on PostgreSQL a NUL reached the database in an id lookup or a filter
(``GET /v1/jobs/%00``, ``?type=%00``, ``DELETE /v1/cloud/providers/%00``, …) and was a
500, since PostgreSQL text refuses NUL. The guard's answers are documented on every
operation of the served schema (``matrixcloud.api.schema.add_guard_responses``).
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.factories import bearer, signup
from tests.properties import bounded

pytestmark = pytest.mark.django_db

BOUNDED = bounded(60, HealthCheck.function_scoped_fixture)
ERROR = {"error": "invalid URL: NUL character (%00) in the path or query", "status": 400}


def served_schema(api: APIClient) -> dict[str, Any]:
    response = api.get("/openapi.yaml")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


@functools.cache
def served_operations() -> tuple[tuple[str, str], ...]:
    """The served schema's operations, read once (generating and parsing the schema
    costs about a third of a second, and the property draws from it every example)."""
    return tuple(operations(served_schema(APIClient())))


def operations(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, item in schema["paths"].items()
        for method in ("get", "post", "delete")
        if method in item
    ]


@pytest.fixture
def token() -> str:
    return signup("Url Tester", "urls@example.test", "Urls")[2]


def test_every_operation_documents_the_guard(api: APIClient) -> None:
    schema = served_schema(api)
    for method, path in operations(schema):
        responses = schema["paths"][path][method]["responses"]
        expected = {"400"} | ({"403", "413", "415", "429"} if method != "get" else set())
        assert expected <= set(responses), (method, path, sorted(responses))
        for code in expected:
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/Error"


@BOUNDED
@given(data=st.data())
def test_a_nul_anywhere_in_the_url_is_a_400(api: APIClient, token: str, data: Any) -> None:
    method, path = data.draw(st.sampled_from(served_operations()))
    concrete = "/".join(
        data.draw(st.text("abc_-0123456789", min_size=1, max_size=8))
        if part.startswith("{")
        else part
        for part in path.split("/")
    )
    where = data.draw(st.sampled_from(["path", "query key", "query value"]))
    if where == "path":
        cut = data.draw(st.integers(len("/v1/"), len(concrete)))
        url = concrete[:cut] + "%00" + concrete[cut:]
    elif where == "query key":
        url = concrete + "?x%00y=1"
    else:
        url = concrete + "?limit=1&q=a%00b&type=%00"
    headers = data.draw(st.sampled_from([bearer(token), {}]))
    response = getattr(api, method)(url, **headers)
    assert response.status_code == 400, (method, url, response.content)
    assert response.json() == ERROR
