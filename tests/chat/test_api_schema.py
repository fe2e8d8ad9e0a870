"""The REST API's OpenAPI schema (/api/schema/) and its Swagger UI (/api/docs/), which loads nothing
from another host."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

# Every endpoint and its methods; a new endpoint must be added here, and so to the schema.
ENDPOINTS = {
    "/api/auth/token/": {"post", "delete"},
    "/api/auth/ticket/": {"post"},
    "/api/rooms/": {"get", "post"},
    "/api/rooms/{room_id}/": {"get"},
    "/api/rooms/{room_id}/members/": {"post"},
    "/api/rooms/{room_id}/leave/": {"post"},
    "/api/rooms/{room_id}/messages/": {"get", "post"},
    "/api/rooms/{room_id}/read/": {"post"},
    "/api/direct-messages/": {"post"},
    "/api/messages/{message_id}/": {"patch", "delete"},
    "/api/messages/{message_id}/reactions/{emoji}/": {"put", "delete"},
}
HTTP_METHODS = {"get", "put", "patch", "post", "delete", "head", "options", "trace"}


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/schema/?format=json")  # no login: the schema is public
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)


def test_the_schema_lists_every_endpoint_with_its_methods(schema):
    assert {path: set(operations) & HTTP_METHODS for path, operations in schema["paths"].items()} == ENDPOINTS


def test_the_schema_is_served_as_yaml_by_default(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


def operation(schema: dict, path: str, method: str) -> dict:
    return schema["paths"][path][method]


def body_ref(schema: dict, path: str, method: str, status: str) -> str:
    content = operation(schema, path, method)["responses"][status]["content"]["application/json"]["schema"]
    return content.get("$ref") or content["items"]["$ref"]


def test_the_schema_gives_the_request_and_response_bodies(schema):
    assert body_ref(schema, "/api/rooms/", "get", "200") == "#/components/schemas/Room"
    assert body_ref(schema, "/api/rooms/", "post", "201") == "#/components/schemas/Room"
    assert body_ref(schema, "/api/rooms/{room_id}/messages/", "get", "200") == \
        "#/components/schemas/PaginatedMessageList"
    for path in ("/api/rooms/{room_id}/messages/", "/api/direct-messages/"):
        assert body_ref(schema, path, "post", "201") == "#/components/schemas/Message"
        assert body_ref(schema, path, "post", "200") == "#/components/schemas/Message"  # a retry
        assert body_ref(schema, path, "post", "400") == "#/components/schemas/ChatErrorResponse"
    assert body_ref(schema, "/api/rooms/{room_id}/read/", "post", "200") == "#/components/schemas/ReadMarkResponse"
    assert set(operation(schema, "/api/rooms/{room_id}/leave/", "post")["responses"]) == {"204", "400", "404"}
    requests = {path: operation(schema, path, "post")["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                for path in ENDPOINTS if "post" in ENDPOINTS[path] and not path.startswith("/api/auth/")}
    assert {path: ref.rsplit("/", 1)[1] for path, ref in requests.items()} == {
        "/api/rooms/": "CreateRoomRequest",
        "/api/rooms/{room_id}/members/": "AddMembersRequest",
        "/api/rooms/{room_id}/leave/": "LeaveRoomRequest",
        "/api/rooms/{room_id}/messages/": "PostMessageRequest",
        "/api/rooms/{room_id}/read/": "MarkReadRequest",
        "/api/direct-messages/": "DirectMessageRequest",
    }
    message = schema["components"]["schemas"]["Message"]["properties"]
    assert set(message) == {"id", "user", "room", "timestamp", "text", "edited_at", "deleted", "reactions"}
    assert message["timestamp"]["type"] == "number"
    assert (message["edited_at"]["type"], message["edited_at"]["nullable"]) == ("number", True)
    assert message["reactions"]["items"]["$ref"] == "#/components/schemas/Reaction"
    assert set(schema["components"]["schemas"]["Reaction"]["properties"]) == {"emoji", "users"}
    room = schema["components"]["schemas"]["Room"]["properties"]
    assert set(room) == {"id", "name", "is_direct", "members", "last_message", "unread_count"}
    assert room["last_message"]["nullable"] is True


MESSAGE = "/api/messages/{message_id}/"
REACTION = "/api/messages/{message_id}/reactions/{emoji}/"


def test_the_schema_gives_the_changes_of_a_message_their_bodies_and_errors(schema):
    for path, method in ((MESSAGE, "patch"), (MESSAGE, "delete"), (REACTION, "put"), (REACTION, "delete")):
        assert body_ref(schema, path, method, "200") == "#/components/schemas/Message"
        for status in ("400", "404"):
            assert body_ref(schema, path, method, status) == "#/components/schemas/ChatErrorResponse"
        parameters = {parameter["name"]: parameter["schema"]["type"]
                      for parameter in operation(schema, path, method)["parameters"] if parameter["in"] == "path"}
        assert parameters == ({"message_id": "integer", "emoji": "string"} if path == REACTION
                              else {"message_id": "integer"})
    # 403: another's message (edit, delete); 409: a deleted message (edit, reactions).
    assert set(operation(schema, MESSAGE, "patch")["responses"]) == {"200", "400", "403", "404", "409"}
    assert set(operation(schema, MESSAGE, "delete")["responses"]) == {"200", "400", "403", "404"}
    for method in ("put", "delete"):
        assert set(operation(schema, REACTION, method)["responses"]) == {"200", "400", "404", "409"}
    requests = {(path, method): operation(schema, path, method)["requestBody"]["content"]["application/json"]
                ["schema"]["$ref"].rsplit("/", 1)[1] for path, method in ((MESSAGE, "patch"), (REACTION, "put"))}
    assert requests == {(MESSAGE, "patch"): "EditMessageRequest", (REACTION, "put"): "AddReactionRequest"}
    # An edit's body is required, `text` in it (not a partial update's, every field optional).
    assert operation(schema, MESSAGE, "patch")["requestBody"]["required"] is True
    assert schema["components"]["schemas"]["EditMessageRequest"]["required"] == ["text"]
    # The body of a reaction is optional; a DELETE's, which OpenAPI 3.0 cannot describe, is in the text.
    assert not operation(schema, REACTION, "put")["requestBody"].get("required", False)
    for path in (MESSAGE, REACTION):
        assert "requestBody" not in operation(schema, path, "delete")
        assert '`{"uuid"}`' in operation(schema, path, "delete")["description"]
    assert "%2F" in next(parameter["description"] for parameter in operation(schema, REACTION, "put")["parameters"]
                         if parameter["name"] == "emoji")


def test_the_schema_names_both_authentication_schemes(schema):
    assert set(schema["components"]["securitySchemes"]) == {"tokenAuth", "cookieAuth"}
    assert operation(schema, "/api/rooms/", "get")["security"] == [{"tokenAuth": []}, {"cookieAuth": []}]


def test_the_spectacular_command_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert target.read_text().startswith("openapi: 3.")


def test_swagger_ui_loads_its_files_from_this_site_only(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page), "the page names another host"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) == 4  # favicon, stylesheet, bundle, preset
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/swagger-ui-dist/")
        assert finders.find(asset.removeprefix("/static/")), asset
    assert '"/api/schema/"' in page
    assert '"validatorUrl": null' in page

