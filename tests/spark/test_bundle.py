"""``piflow bundle --shards N``: the YAML a Databricks bundle needs, shards that cover every point exactly once
and stay put when points are added, and the generated shard jobs run for real on local Spark."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession

from piflow import schema
from piflow.config import PiflowSettings
from piflow.emulator.model import Model, ModelConfig
from piflow.emulator.server import EmulatorServer
from piflow.errors import ConfigError
from piflow.spark import jobs
from piflow.spark.bundle import BundleConfig, config_from_settings, documents, job_key, write_bundle
from piflow.spark.options import SourceOptions
from piflow.spark.plan import Shard, jump_hash
from tests.rows import assert_same_rows

from .conftest import T0, arrow_of, specs, truth

pytestmark = pytest.mark.slow

URL = "https://pi.example.com/piwebapi"


def webids(points: int, seed: int = 7) -> list[str]:
    model = Model(ModelConfig(seed=seed, point_count=points))
    return [model.point(0, i).webid for i in range(points)]


def parameters(job: dict[str, Any]) -> list[str]:
    params: list[str] = job["tasks"][0]["spark_python_task"]["parameters"]
    return params


def flag(params: list[str], name: str) -> str:
    return params[params.index(name) + 1]


def test_bundle_files_are_valid_bundle_yaml(tmp_path: Path) -> None:
    cfg = BundleConfig(shards=5, url=URL, auth="basic", username="PIDEMO\\piuser", spark_version="17.0.x-test")
    paths = write_bundle(cfg, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "databricks.yml", "resources/piflow_catalog.yml", "resources/piflow_values.yml", "src/piflow_job.py"]
    root = yaml.safe_load((tmp_path / "databricks.yml").read_text())
    assert root["bundle"]["name"] == "piflow"
    assert root["include"] == ["resources/*.yml"]
    assert root["targets"]["dev"]["default"] is True
    assert root["variables"]["spark_version"]["default"] == "17.0.x-test"
    values = yaml.safe_load((tmp_path / "resources/piflow_values.yml").read_text())["resources"]["jobs"]
    assert list(values) == [job_key(i, 5) for i in range(5)]
    for job in values.values():
        assert job["schedule"]["quartz_cron_expression"] == "${var.values_schedule}"
        task = job["tasks"][0]
        assert task["job_cluster_key"] == job["job_clusters"][0]["job_cluster_key"]
        script = (tmp_path / "resources" / task["spark_python_task"]["python_file"]).resolve()
        assert script == (tmp_path / "src/piflow_job.py").resolve()
        assert script.is_file()
        env = job["job_clusters"][0]["new_cluster"]["spark_env_vars"]
        assert env == {"PIFLOW_PASSWORD": "{{secrets/${var.secret_scope}/pi-password}}"}
        assert flag(parameters(job), "--password-env") == "PIFLOW_PASSWORD"
    catalog = yaml.safe_load((tmp_path / "resources/piflow_catalog.yml").read_text())["resources"]["jobs"]
    tables = [flag(t["spark_python_task"]["parameters"], "--tables") for t in catalog["piflow_catalog"]["tasks"]]
    assert ",".join(tables).split(",") == ["pi_points", "pi_af_elements", "pi_af_attributes", "pi_event_frames"]
    # every ${var.x} used is declared
    used = {m.split("}")[0] for text in (p.read_text() for p in paths) for m in text.split("${var.")[1:]}
    assert used <= set(root["variables"])
    with pytest.raises(ConfigError, match="exists"):
        write_bundle(cfg, tmp_path)
    assert write_bundle(cfg, tmp_path, overwrite=True) == paths


def test_secrets_only_by_reference_and_continuous_mode() -> None:
    cfg = BundleConfig(shards=2, url=URL, auth="oidc", oidc_client_id="piflow", mode="continuous")
    docs = documents(cfg)
    jobs_ = yaml.safe_load(docs["resources/piflow_values.yml"])["resources"]["jobs"]
    catalog = yaml.safe_load(docs["resources/piflow_catalog.yml"])["resources"]["jobs"]["piflow_catalog"]
    for job in [*jobs_.values(), catalog]:
        env = job["job_clusters"][0]["new_cluster"]["spark_env_vars"]
        assert env == {"PIFLOW_OIDC_CLIENT_SECRET": "{{secrets/${var.secret_scope}/pi-oidc-client-secret}}"}
        for task in job["tasks"]:
            params = task["spark_python_task"]["parameters"]
            assert flag(params, "--oidc-client-secret-env") == "PIFLOW_OIDC_CLIENT_SECRET"
            assert not {"--password", "--token", "--oidc-client-secret"} & set(params)
    for job in jobs_.values():
        assert job["continuous"] == {"pause_status": "UNPAUSED"}
        assert "schedule" not in job
        assert flag(parameters(job), "--trigger") == "continuous"


@pytest.mark.parametrize("n", [1, 2, 3, 8, 16])
def test_shards_cover_every_point_exactly_once(n: int) -> None:
    points = webids(2000)
    cfg = BundleConfig(shards=n, url=URL)
    jobs_ = yaml.safe_load(documents(cfg)["resources/piflow_values.yml"])["resources"]["jobs"]
    shards = [Shard.parse(flag(parameters(j), "--shard")) for j in jobs_.values()]
    assert sorted((s.index, s.count) for s in shards) == [(i, n) for i in range(n)]
    owners = {w: [s.index for s in shards if s.owns(w)] for w in points}
    assert all(len(o) == 1 for o in owners.values()), "a point in no shard or in two"
    sizes = [sum(1 for o in owners.values() if o == [i]) for i in range(n)]
    assert min(sizes) > 0.6 * len(points) / n  # balanced (each within 40 % of the mean)


def assign(points: list[str], n: int) -> dict[str, int]:
    return {w: next(i for i in range(n) if Shard(i, n).owns(w)) for w in points}


def test_adding_points_moves_none_and_adding_a_shard_moves_few() -> None:
    before, after = webids(1000), webids(1500)
    assert after[:1000] == before  # the emulator grows its catalog by appending points
    old, new = assign(before, 8), assign(after, 8)
    assert all(new[w] == shard for w, shard in old.items())
    grown = assign(after, 9)
    moved = [w for w in after if grown[w] != new[w]]
    assert 0.05 * len(after) < len(moved) < 0.17 * len(after)  # about 1/9 move, all into the new shard
    assert {grown[w] for w in moved} == {8}
    assert [jump_hash(k, 1) for k in range(100)] == [0] * 100


def test_generated_shard_jobs_read_every_point_once(spark: SparkSession, emulator: EmulatorServer,
                                                    tmp_path: Path) -> None:
    """Run each shard's job exactly as the bundle says (only the destination moved to a local folder)."""
    start = T0 - timedelta(hours=1)
    cfg = BundleConfig(shards=2, url=emulator.url, start=start.isoformat())
    jobs_ = yaml.safe_load(documents(cfg)["resources/piflow_values.yml"])["resources"]["jobs"]
    out = tmp_path / "lake"
    for i, job in enumerate(jobs_.values()):
        params = parameters(job)
        schema_at = params.index("--schema-name")
        params = params[:schema_at] + params[schema_at + 2:]
        params[params.index("--checkpoint") + 1] = str(tmp_path / f"checkpoint{i}")
        jobs.main([*params, "--path", str(out), "--format", "parquet", "--safety-lag", "0",
                   "--end", T0.isoformat()], spark=spark)
    got = arrow_of(spark.read.parquet(str(out / "pi_values")).select(*schema.PI_VALUES.names))
    assert_same_rows(got, truth(emulator, start, T0 - timedelta(microseconds=1)))
    streams = {p.name for p in (out / "pi_values").iterdir() if p.name.startswith("stream=")}
    assert len(streams) == 2  # each shard wrote its own batches through the exactly-once writer
    assert len({w for w in got.column("webid").to_pylist()}) == len(specs(emulator))


def test_catalog_job_writes_snapshots(spark: SparkSession, emulator: EmulatorServer, tmp_path: Path) -> None:
    jobs.main(["catalog", "--url", emulator.url, "--tables", "pi_points,pi_af_elements", "--path", str(tmp_path),
               "--format", "parquet"], spark=spark)
    points = spark.read.parquet(str(tmp_path / "pi_points"))
    assert sorted(r["webid"] for r in points.select("webid").collect()) == sorted(p.webid for p in specs(emulator))
    elements = spark.read.parquet(str(tmp_path / "pi_af_elements")).count()
    assert elements == sum(len(emulator.state.af.all_elements(db.name)) for db in emulator.state.af.databases())


def test_merge_sql_keeps_first_seen_and_tombstones_only_complete_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    sql = jobs.merge_sql("cat.sch.pi_points", "src", ["webid", "name", "first_seen", "last_seen", "is_deleted"],
                         complete=True)
    assert "t.`first_seen`" not in sql
    assert "t.`name` = s.`name`" in sql
    assert "WHEN NOT MATCHED BY SOURCE AND NOT t.is_deleted THEN UPDATE SET t.is_deleted = true" in sql
    partial = jobs.merge_sql("t", "s", ["webid", "name"], complete=False)
    assert "NOT MATCHED BY SOURCE" not in partial
    opts = jobs.source_options(jobs.parser().parse_args(
        ["catalog", "--url", URL, "--path", "/x", "--password-env", "PW", "--auth", "basic", "--username", "u"]))
    parsed = SourceOptions.parse(opts)
    assert parsed.url == URL
    assert parsed.auth == {"auth": "basic", "username": "u"}
    monkeypatch.setenv("PW", "from-the-environment")
    assert parsed.secret("password") == "from-the-environment"
    monkeypatch.delenv("PW")
    with pytest.raises(ConfigError, match="password_env") as info:
        parsed.secret("password")
    assert "from-the-environment" not in str(info.value)


def test_bundle_from_piflow_settings_copies_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_PASSWORD", "never-in-a-bundle")
    settings = PiflowSettings(url="https://pi.example.com", auth="basic", username="PIDEMO\\piuser", points="PLANT1*",
                              server="PISRV01")
    cfg = config_from_settings(settings, shards=3, catalog="ops", schema="plant1")
    paths = write_bundle(cfg, tmp_path)
    text = "".join(p.read_text() for p in paths)
    assert "never-in-a-bundle" not in text
    job = yaml.safe_load((tmp_path / "resources/piflow_values.yml").read_text())["resources"]["jobs"][job_key(0, 3)]
    params = parameters(job)
    assert flag(params, "--url") == "https://pi.example.com/piwebapi"
    assert flag(params, "--points") == "PLANT1*"
    assert flag(params, "--server") == "PISRV01"
    assert flag(params, "--username") == "PIDEMO\\piuser"
    root = yaml.safe_load((tmp_path / "databricks.yml").read_text())
    assert root["variables"]["catalog"]["default"] == "ops"
    with pytest.raises(ConfigError, match="kerberos"):
        config_from_settings(PiflowSettings(url="https://pi.example.com", auth="kerberos"), shards=2)
