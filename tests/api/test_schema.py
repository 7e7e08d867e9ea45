"""The OpenAPI schema: drf-spectacular's own validation without a warning, and openapi-spec-validator's."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from openapi_spec_validator import validate

from tests.api.conftest import Api

ENDPOINTS = {
    "/api/v1/launch-specs/": {"get"},
    "/api/v1/launch-specs/{name}": {"get", "put", "delete"},
    "/api/v1/launch-specs/{name}/plan": {"get"},
    "/api/v1/launch-specs/{name}/capacity": {"get"},
    "/api/v1/launch-specs/{name}/egress-ips": {"get"},
    "/api/v1/launch-specs:sync": {"post"},
    "/api/v1/eips/": {"get"},
    "/api/v1/eips/{allocation_id}": {"get"},
    "/api/v1/eips/{allocation_id}/reassign": {"post"},
    "/api/v1/eips/{allocation_id}/reassign/{request_id}": {"get"},
    "/api/v1/nodes/": {"get"},
    "/api/v1/events/": {"get"},
}


def test_the_schema_validates_as_openapi_3(tmp_path: Path, db: None) -> None:
    target = tmp_path / "schema.yaml"
    # --fail-on-warn: a view whose shape drf-spectacular had to guess fails here.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=io.StringIO())
    schema = yaml.safe_load(target.read_text())
    validate(schema)
    assert schema["openapi"].startswith("3.")
    assert {path: set(ops) - {"parameters"} for path, ops in schema["paths"].items()} == ENDPOINTS
    assert schema["components"]["securitySchemes"]["tokenAuth"] == {
        "type": "http", "scheme": "bearer", "description": "An API token: `manage.py api_token create USER`"}


def test_the_schema_is_served_to_readers(viewer_api: Api) -> None:
    response = viewer_api.get("/api/schema/")
    assert response.status_code == 200 and "json" in response["Content-Type"]
    validate(response.json())
    as_yaml = viewer_api.get("/api/schema/", format="yaml")
    assert as_yaml.status_code == 200 and yaml.safe_load(as_yaml.content)["paths"].keys() == ENDPOINTS.keys()
    docs = viewer_api.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content and b"<script>" not in docs.content


@pytest.mark.parametrize("accept, content_type", [
    ("application/json", "application/json"),
    ("application/vnd.oai.openapi+json", "application/vnd.oai.openapi+json"),
    ("*/*", "application/vnd.oai.openapi+json"),
])
def test_the_schema_is_served_to_json_clients(viewer_api: Api, accept: str, content_type: str) -> None:
    """JSON clients send `Accept: application/json`: the schema answered them 406 (only its OpenAPI type)."""
    response = viewer_api.client.get("/api/schema/", headers={**viewer_api.headers, "Accept": accept})
    assert response.status_code == 200 and response["Content-Type"] == content_type
    assert response.json()["paths"].keys() == ENDPOINTS.keys()
    as_yaml = viewer_api.client.get("/api/schema/", {"format": "yaml"}, headers=viewer_api.headers)
    assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi;")
    assert yaml.safe_load(as_yaml.content)["paths"].keys() == ENDPOINTS.keys()


def test_the_schema_documents_the_refusals_and_the_bodies(tmp_path: Path, db: None) -> None:
    """401, 403 and 429 everywhere; 404 where the path names an object (not PUT, which creates); a list's 400;
    the sync's two 400 shapes; PUT's body with the name optional, wrapped or bare."""
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=io.StringIO())
    schema = yaml.safe_load(target.read_text())
    for path, methods in ENDPOINTS.items():
        for method in methods:
            codes = set(schema["paths"][path][method]["responses"])
            assert {"401", "403", "429"} <= codes, (path, method)
            assert ("404" in codes) == ("{" in path and method != "put"), (path, method)
            if path in ("/api/v1/eips/", "/api/v1/nodes/", "/api/v1/events/"):
                assert "400" in codes
    components = schema["components"]["schemas"]
    refused = schema["paths"]["/api/v1/launch-specs:sync"]["post"]["responses"]["400"]["content"]
    shapes = {ref["$ref"].rsplit("/", 1)[1] for ref in components["SyncRefused"]["oneOf"]}
    assert refused["application/json"]["schema"]["$ref"].endswith("/SyncRefused")
    assert shapes == {"SyncResult", "SyncRefusal"}
    assert "pruneClusters" in components["SyncResult"]["properties"]
    assert "cluster" in components["SyncRequestRequest"]["properties"]
    put = schema["paths"]["/api/v1/launch-specs/{name}"]["put"]["requestBody"]["content"]["application/json"]
    bodies = {ref["$ref"].rsplit("/", 1)[1] for ref in components[put["schema"]["$ref"].rsplit("/", 1)[1]]["oneOf"]}
    assert bodies == {"LaunchSpecPutDocumentRequest", "LaunchSpecPutBodyRequest"}
    assert "name" not in components["LaunchSpecPutBodyRequest"].get("required", [])
