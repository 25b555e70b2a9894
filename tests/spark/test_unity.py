"""``piflow uc register`` through the real databricks-sdk against a local HTTP stand-in of a workspace.

The stand-in (plain ``http.server`` on 127.0.0.1) answers the Unity Catalog schema API and the SQL Statement
Execution API the way a workspace does, records every request, checks the bearer token, and refuses to
create a schema when told to. The tests read back what was sent: the schema, one CREATE TABLE per table with
every contract column typed and commented, comments refreshed on existing tables, and the source tags.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from piflow import schema
from piflow.config import PiflowSettings
from piflow.errors import ConfigError, PiflowError
from piflow.spark import unity

pytestmark = pytest.mark.slow

TOKEN = "dapi-test-token"  # a workspace token for the stand-in, not a PI credential


@dataclass
class Workspace:
    """What the stand-in knows and what it was asked."""

    schemas: set[str] = field(default_factory=set)
    may_create_schema: bool = True
    fail_sql: str | None = None  # a statement containing this text fails
    requests: list[dict[str, Any]] = field(default_factory=list)

    def sql(self) -> list[str]:
        return [r["body"]["statement"] for r in self.requests if r["path"].startswith("/api/2.0/sql/statements")]


def _handler(ws: Workspace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            req = {"method": self.command, "path": self.path.split("?")[0],
                   "auth": self.headers.get("Authorization"), "body": json.loads(raw) if raw else None}
            ws.requests.append(req)
            return req

        def do_GET(self) -> None:
            req = self._record()
            if req["path"].startswith("/api/2.1/unity-catalog/schemas/"):
                if req["auth"] != f"Bearer {TOKEN}":
                    return self._send(401, {"error_code": "UNAUTHENTICATED", "message": "bad token"})
                full = req["path"].rsplit("/", 1)[1]
                if full in ws.schemas:
                    catalog, name = full.split(".")
                    return self._send(200, {"name": name, "catalog_name": catalog, "full_name": full})
                return self._send(404, {"error_code": "SCHEMA_DOES_NOT_EXIST", "message": f"{full} not found"})
            return self._send(404, {"error_code": "NOT_FOUND", "message": "no such endpoint"})

        def do_POST(self) -> None:
            req = self._record()
            if req["auth"] != f"Bearer {TOKEN}":
                return self._send(401, {"error_code": "UNAUTHENTICATED", "message": "bad token"})
            body = req["body"] or {}
            if req["path"] == "/api/2.1/unity-catalog/schemas":
                if not ws.may_create_schema:
                    return self._send(403, {"error_code": "PERMISSION_DENIED",
                                            "message": "User does not have CREATE SCHEMA on Catalog"})
                ws.schemas.add(f"{body['catalog_name']}.{body['name']}")
                return self._send(200, {**body, "full_name": f"{body['catalog_name']}.{body['name']}"})
            if req["path"].startswith("/api/2.0/sql/statements"):
                n = len(ws.sql())
                if ws.fail_sql and ws.fail_sql in body["statement"]:
                    return self._send(200, {"statement_id": f"s{n}", "status": {
                        "state": "FAILED", "error": {"error_code": "BAD_REQUEST", "message": "[PARSE_SYNTAX_ERROR]"}}})
                return self._send(200, {"statement_id": f"s{n}", "status": {"state": "SUCCEEDED"}})
            return self._send(404, {"error_code": "NOT_FOUND", "message": "no such endpoint"})

    return Handler


@pytest.fixture
def workspace_server() -> Iterator[tuple[Workspace, str]]:
    ws = Workspace()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ws))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ws, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def registration(**kw: Any) -> unity.Registration:
    base: dict[str, Any] = {"catalog": "main", "schema": "plant1",
                            "tags": unity.source_tags("https://pi.example.com/piwebapi", "PLANT1*")}
    base.update(kw)
    return unity.Registration(**base)


def creates(ws: Workspace) -> dict[str, str]:
    out = {}
    for s in ws.sql():
        m = re.match(r"CREATE TABLE IF NOT EXISTS `main`\.`plant1`\.`(\w+)`", s)
        if m:
            out[m.group(1)] = s
    return out


def test_register_creates_schema_tables_comments_and_tags(workspace_server: tuple[Workspace, str]) -> None:
    ws, host = workspace_server
    w = unity.workspace(host=host, token=TOKEN)
    result = unity.register(w, registration(location="abfss://lake@acct.dfs.core.windows.net/pi"),
                            warehouse_id="wh-123")
    assert result.schema_created
    assert result.tables == [f"main.plant1.{t}" for t in unity.TABLES]
    schema_posts = [r for r in ws.requests if r["path"] == "/api/2.1/unity-catalog/schemas"]
    assert len(schema_posts) == 1
    assert schema_posts[0]["body"]["catalog_name"] == "main"
    assert schema_posts[0]["body"]["name"] == "plant1"
    assert schema_posts[0]["body"]["comment"]
    statements = [r for r in ws.requests if r["path"].startswith("/api/2.0/sql/statements")]
    assert all(r["body"]["warehouse_id"] == "wh-123" for r in statements)
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in statements)
    assert len(statements) == result.statements

    tables = creates(ws)
    assert sorted(tables) == sorted(unity.TABLES)
    contracts = {t: schema.TABLES[t] for t in unity.TABLES}
    for name, sql in tables.items():
        columns = re.findall(r"^  `(\w+)` ([A-Z<>]+)( NOT NULL)? COMMENT '((?:[^'\\]|\\.)+)'", sql, re.M)
        assert [c[0] for c in columns] == contracts[name].names
        assert [bool(c[2]) for c in columns] == [not f.nullable for f in contracts[name]]
        assert all(len(c[3]) > 5 for c in columns)  # every column says what it holds
        assert f"LOCATION 'abfss://lake@acct.dfs.core.windows.net/pi/{name}'" in sql
        assert re.search(r"\) USING DELTA.* COMMENT '.+'", sql, re.S)
    assert "PARTITIONED BY (`date`)" in tables["pi_values"]
    assert "`timestamp` TIMESTAMP NOT NULL" in tables["pi_values"]
    assert "`categories` ARRAY<STRING>" in tables["pi_af_elements"]
    assert "'delta.enableChangeDataFeed' = 'true'" in tables["pi_points"]
    # comments are refreshed on tables that already exist, and every table is tagged with its source
    sql = ws.sql()
    for t in unity.TABLES:
        assert sum(1 for s in sql if s.startswith(f"ALTER TABLE `main`.`plant1`.`{t}` ALTER COLUMN")) == \
            len(contracts[t])
        assert f"COMMENT ON TABLE `main`.`plant1`.`{t}` IS '" in "\n".join(sql)
        tags = [s for s in sql if s.startswith(f"ALTER TABLE `main`.`plant1`.`{t}` SET TAGS")]
        assert tags == [f"ALTER TABLE `main`.`plant1`.`{t}` SET TAGS ('piflow_table' = '{t}', "
                        "'piflow_source_server' = 'pi.example.com', 'piflow_point_filter' = 'PLANT1*')"]


def test_existing_schema_managed_tables_and_quoting(workspace_server: tuple[Workspace, str]) -> None:
    ws, host = workspace_server
    ws.schemas.add("main.plant1")
    reg = registration(tables=("pi_points",), tags={"piflow_point_filter": "O'Brien*"})
    result = unity.register(unity.workspace(host=host, token=TOKEN), reg, warehouse_id="wh")
    assert not result.schema_created
    assert not [r for r in ws.requests if r["method"] == "POST" and "unity-catalog/schemas" in r["path"]]
    create = creates(ws)["pi_points"]
    assert "LOCATION" not in create  # managed
    assert "COMMENT 'PI path (\\\\\\\\SERVER\\\\NAME or the AF path)'" in create  # backslashes escaped
    assert "'piflow_point_filter' = 'O\\'Brien*'" in ws.sql()[-1]


def test_schema_creation_refused_or_not_allowed(workspace_server: tuple[Workspace, str]) -> None:
    ws, host = workspace_server
    w = unity.workspace(host=host, token=TOKEN)
    with pytest.raises(ConfigError, match="does not exist"):
        unity.register(w, registration(), warehouse_id="wh", create_schema=False)
    ws.may_create_schema = False
    with pytest.raises(PiflowError, match=r"not allowed to create schema main\.plant1"):
        unity.register(w, registration(), warehouse_id="wh")
    assert ws.sql() == []  # nothing was attempted without the schema


def test_failed_statement_stops_with_the_servers_message(workspace_server: tuple[Workspace, str]) -> None:
    ws, host = workspace_server
    ws.schemas.add("main.plant1")
    ws.fail_sql = "`pi_af_elements`"
    with pytest.raises(PiflowError, match=r"PARSE_SYNTAX_ERROR.*\n.*pi_af_elements"):
        unity.register(unity.workspace(host=host, token=TOKEN), registration(), warehouse_id="wh")
    assert sorted(creates(ws)) == ["pi_af_elements", "pi_points", "pi_values"]


def test_comments_cover_the_contract() -> None:
    for table in unity.TABLES:
        statements = unity.table_statements(registration(), table)
        assert statements[0].startswith("CREATE TABLE IF NOT EXISTS")
    with pytest.raises(ConfigError, match="unknown table"):
        unity.register(object(), registration(tables=("pi_nope",)), warehouse_id="wh")


def test_register_from_piflow_settings_uses_the_databricks_environment(
        workspace_server: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, host = workspace_server
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    settings = PiflowSettings(url="https://pi.plant.example/piwebapi", points="BRK.*")
    result = unity.register_from_settings(settings, catalog="main", schema="plant1", warehouse_id="wh",
                                          tables=("pi_values",))
    assert result.tables == ["main.plant1.pi_values"]
    assert ws.sql()[-1] == ("ALTER TABLE `main`.`plant1`.`pi_values` SET TAGS ('piflow_table' = 'pi_values', "
                            "'piflow_source_server' = 'pi.plant.example', 'piflow_point_filter' = 'BRK.*')")


def test_no_databricks_credentials_is_a_config_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    for name in [k for k in os.environ if k.startswith("DATABRICKS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.databrickscfg
    with pytest.raises(ConfigError, match="cannot sign in to the Databricks workspace") as info:
        unity.workspace()
    assert info.value.setting == "databricks"
