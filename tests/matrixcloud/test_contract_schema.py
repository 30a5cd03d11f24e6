"""The served schema (``/openapi.yaml``) covers the contract (``docs/contract/openapi.yaml``).

Every contract operation is served; every request-body property the contract names is
accepted; every response the contract gives a schema has a served response whose
properties include the contract's (recursively), with compatible types and enums. The
served schema may add operations, fields, responses and enum values, never drop them.

The contract is the committed copy, so any clone runs these tests. In the team's workspace,
where ``../shared/contract/openapi.yaml`` sits beside the repository, the copy must equal it
(``./dev contract`` refreshes it from there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

# From the repository root, not from this file: the path holds wherever the test sits.
CONTRACT_PATH = Path(settings.BASE_DIR) / "docs" / "contract" / "openapi.yaml"
SHARED_CONTRACT_PATH = Path(settings.BASE_DIR).parent / "shared" / "contract" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
COMPOSITIONS = ("allOf", "oneOf", "anyOf")

Schema = dict[str, Any]


def _load_contract() -> Schema:
    if not CONTRACT_PATH.is_file():
        pytest.fail(
            f"the API contract is missing: expected {CONTRACT_PATH} (committed; ./dev contract "
            "copies it from ../shared/contract); the schema tests cannot run without it",
            pytrace=False,
        )
    return yaml.safe_load(CONTRACT_PATH.read_text())


CONTRACT = _load_contract()
OPERATIONS = [
    (path, method)
    for path, item in CONTRACT["paths"].items()
    for method in HTTP_METHODS
    if method in item
]


def _op_id(path: str, method: str) -> str:
    return f"{method.upper()} {path}"


def _contract_op(path: str, method: str) -> Schema:
    return CONTRACT["paths"][path][method]


def _json_bodies(content: Schema | None) -> list[tuple[str, Schema]]:
    """(media type, schema) pairs of a content map that carry a schema."""
    return [(media, spec["schema"]) for media, spec in (content or {}).items() if "schema" in spec]


def resolve(doc: Schema, node: Any) -> Any:
    """Follow local ``$ref`` chains (``#/components/...``) in ``doc``."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def flatten(doc: Schema, node: Any) -> Schema:
    """One view of a schema: refs resolved, allOf/oneOf/anyOf parts merged into it."""
    node = resolve(doc, node) or {}
    merged: Schema = {key: value for key, value in node.items() if key not in COMPOSITIONS}
    merged["properties"] = dict(merged.get("properties", {}))
    merged["required"] = list(merged.get("required", []))
    for key in COMPOSITIONS:
        for part in node.get(key, []):
            flat = flatten(doc, part)
            merged["properties"].update(flat["properties"])
            if key == "allOf":
                merged["required"] += flat["required"]
            if "enum" in flat:
                merged["enum"] = [*merged.get("enum", []), *flat["enum"]]
            for inherited in ("type", "items"):
                if inherited in flat and inherited not in merged:
                    merged[inherited] = flat[inherited]
    return merged


def incompatibilities(
    served: Schema, contract_node: Any, served_node: Any, where: str
) -> list[str]:
    """What ``served_node`` lacks of ``contract_node``, recursively; empty when compatible."""
    expected = flatten(CONTRACT, contract_node)
    actual = flatten(served, served_node)
    problems: list[str] = []
    if "type" in expected and "type" in actual and expected["type"] != actual["type"]:
        problems.append(f"{where}: type {actual['type']!r}, contract {expected['type']!r}")
    if "enum" in expected and "enum" in actual:
        missing_values = [value for value in expected["enum"] if value not in actual["enum"]]
        if missing_values:
            problems.append(f"{where}: enum lacks {missing_values}")
    missing = sorted(set(expected["properties"]) - set(actual["properties"]))
    if missing:
        problems.append(f"{where}: missing properties {missing}")
    for name in sorted(set(expected["properties"]) & set(actual["properties"])):
        problems += incompatibilities(
            served, expected["properties"][name], actual["properties"][name], f"{where}.{name}"
        )
    if "items" in expected:
        if "items" not in actual:
            problems.append(f"{where}: not an array")
        else:
            problems += incompatibilities(served, expected["items"], actual["items"], f"{where}[]")
    return problems


@pytest.fixture(scope="module")
def served() -> Schema:
    """The schema as ``GET /openapi.yaml`` serves it, fetched once for the module."""
    response = APIClient().get("/openapi.yaml")
    assert response.status_code == 200, response.content[:500]
    return yaml.safe_load(response.content)


def _served_op(served: Schema, path: str, method: str) -> Schema:
    operation = served.get("paths", {}).get(path, {}).get(method)
    assert operation is not None, f"{_op_id(path, method)} is not in the served schema"
    return operation


REQUEST_CASES = [
    pytest.param(path, method, id=_op_id(path, method))
    for path, method in OPERATIONS
    if "requestBody" in _contract_op(path, method)
]
RESPONSE_CASES = [
    pytest.param(path, method, status, media, schema, id=f"{_op_id(path, method)} {status} {media}")
    for path, method in OPERATIONS
    for status, response in _contract_op(path, method)["responses"].items()
    for media, schema in _json_bodies(resolve(CONTRACT, response).get("content"))
]
OPEN_CASES = [
    pytest.param(path, method, id=_op_id(path, method))
    for path, method in OPERATIONS
    if _contract_op(path, method).get("security") == []
]


def test_the_contract_has_44_operations() -> None:
    assert len(OPERATIONS) == 44


@pytest.mark.skipif(
    not SHARED_CONTRACT_PATH.is_file(),
    reason=f"no shared contract beside the repository ({SHARED_CONTRACT_PATH}): "
    "a clone outside the team's workspace checks against the committed copy alone",
)
def test_the_committed_contract_is_the_shared_one() -> None:
    assert CONTRACT_PATH.read_bytes() == SHARED_CONTRACT_PATH.read_bytes(), (
        f"{CONTRACT_PATH} differs from {SHARED_CONTRACT_PATH}: run ./dev contract to refresh "
        "the committed copy, then commit it"
    )


def test_the_schema_is_served_as_yaml() -> None:
    response = APIClient().get("/openapi.yaml")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(response.content)["openapi"].startswith("3.")


def test_the_served_schema_is_valid_openapi(served: Schema) -> None:
    validate_schema(served)


@pytest.mark.parametrize(
    ("path", "method"), [pytest.param(*op, id=_op_id(*op)) for op in OPERATIONS]
)
def test_operation_is_served(served: Schema, path: str, method: str) -> None:
    _served_op(served, path, method)


@pytest.mark.parametrize(
    ("path", "method"), [pytest.param(*op, id=_op_id(*op)) for op in OPERATIONS]
)
def test_path_parameters_are_strings(served: Schema, path: str, method: str) -> None:
    operation = _served_op(served, path, method)
    served_item = served["paths"][path]
    params = {
        p["name"]: p
        for p in [*served_item.get("parameters", []), *operation.get("parameters", [])]
        if p["in"] == "path"
    }
    for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        assert name in params, f"path parameter {name} is not documented"
        assert params[name]["schema"].get("type") == "string"


@pytest.mark.parametrize(("path", "method"), REQUEST_CASES)
def test_request_body_accepts_the_contract_fields(served: Schema, path: str, method: str) -> None:
    body = _served_op(served, path, method).get("requestBody")
    assert body is not None, "no request body in the served schema"
    for media, schema in _json_bodies(_contract_op(path, method)["requestBody"].get("content")):
        assert media in body["content"], f"request body is not {media}"
        served_schema = body["content"][media]["schema"]
        assert incompatibilities(served, schema, served_schema, "request") == []
        required = set(flatten(CONTRACT, schema)["required"])
        assert required <= set(flatten(served, served_schema)["required"])


@pytest.mark.parametrize(("path", "method", "status", "media", "schema"), RESPONSE_CASES)
def test_response_has_the_contract_shape(
    served: Schema, path: str, method: str, status: str, media: str, schema: Schema
) -> None:
    responses = _served_op(served, path, method)["responses"]
    assert str(status) in responses, f"no {status} response in the served schema"
    content = responses[str(status)].get("content", {})
    assert media in content, f"{status} response is not {media}"
    assert incompatibilities(served, schema, content[media]["schema"], status) == []


@pytest.mark.parametrize(("path", "method"), OPEN_CASES)
def test_open_operations_need_no_credentials(served: Schema, path: str, method: str) -> None:
    assert _served_op(served, path, method).get("security") == []


def test_request_and_response_cases_cover_the_contract() -> None:
    # Guards the parametrisation itself: a broken loader would otherwise test nothing.
    assert len(REQUEST_CASES) == 8
    assert len(RESPONSE_CASES) >= 30
    assert len(OPEN_CASES) == 11


def test_docs_page_reads_the_served_schema_without_a_cdn() -> None:
    response = APIClient().get("/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    # The reader is a static file (the page's CSP allows no inline script), same origin.
    assert '<script src="/static/docs/docs.js" defer></script>' in page
    script = APIClient().get("/static/docs/docs.js")
    assert script.status_code == 200
    reader = b"".join(script.streaming_content).decode()
    assert 'fetch("/openapi.yaml"' in reader
    for text in (page, reader):
        assert "http://" not in text
        assert "https://" not in text
