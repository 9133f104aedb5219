"""/openapi.json documents every route, method, error and scheme; /docs is served locally."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from api import schemas
from api.openapi import build_spec

UNDOCUMENTED_METHODS = {"HEAD", "OPTIONS"}


def test_every_route_and_method_is_documented(app: Flask, client: FlaskClient) -> None:
    from openapi_spec_validator import validate

    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)  # against the OpenAPI 3.1 meta-schema
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - UNDOCUMENTED_METHODS):
            operation = spec["paths"].get(path, {}).get(method.lower())
            if not operation or not operation.get("responses") or not operation.get("summary"):
                missing.append(f"{method} {rule.rule}")
    assert not missing, f"document these views (see api/openapi.py): {missing}"


def test_errors_parameters_and_security_are_documented(app: Flask) -> None:
    spec = build_spec(app)
    components = spec["components"]
    assert set(components["securitySchemes"]) >= {"TenantKey", "AdminToken"}
    for name, schema in vars(schemas).items():
        if isinstance(schema, type) and issubclass(schema, schemas.Schema) \
                and schema.__module__ == schemas.__name__:
            assert name in components["schemas"], name
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    ref = response.get("$ref", "")
                    assert ref.startswith("#/components/responses/"), where
                    error = components["responses"][ref.rsplit("/", 1)[1]]
                    assert error["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorResponse"}, where
            for param in re.findall(r"{([^}]+)}", path):
                declared = [p for p in operation.get("parameters", [])
                            if p.get("name") == param
                            or p.get("$ref", "").endswith("/TenantPath") and param == "tenant"]
                assert declared, f"{where}: path parameter {param}"
            if path.startswith("/api/"):
                assert operation.get("security"), f"{where} names its credentials"
                assert "401" in operation["responses"], where
    limited = spec["paths"]["/api/whatsapp/pair"]["post"]["responses"]["429"]
    assert limited == {"$ref": "#/components/responses/TooManyRequests"}
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(
        components["responses"]["TooManyRequests"]["headers"])


def test_docs_page_loads_only_local_assets(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html and "//" not in html.replace(
        "<!DOCTYPE", "")
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(src.startswith("/docs/") for src in sources)
    for src in sources:
        asset = client.get(src)
        assert asset.status_code == 200 and len(asset.data) > 20, src
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert bundle.mimetype in ("text/javascript", "application/javascript")
    for trick in ("/docs/../setup.cfg", "/docs/%2e%2e/setup.cfg", "/docs/..%2fsetup.cfg",
                  "/docs/VERSION/..", "/docs/nothing.js"):
        assert client.get(trick).status_code == 404, trick
