"""The emulator's AF asset model and its endpoints, checked against the point names and the PI shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tests.emulator_af_helpers import af_of, get, plant_webid

from piflow import webids
from piflow.emulator import EmulatorSettings, create_app
from piflow.emulator.af.catalog import PLANT, SANDBOX
from piflow.emulator.app import state_of
from piflow.emulator.model import Model

# The spec's mapping of equipment kinds to templates and categories.
TEMPLATE_OF = {"PMP": "Pump", "CMP": "Compressor", "HX": "HeatExchanger", "TK": "Tank", "BLR": "Boiler",
               "FAN": "Fan", "VLV": "Valve", "MTR": "Motor"}
ROTATING = {"PMP", "CMP", "FAN", "MTR"}
ATTR_TYPE_OF = {"Float32": "Single", "Float64": "Double", "Int32": "Int32", "Digital": "EnumerationValue",
                "String": "String", "Timestamp": "DateTime"}


def make_client(**settings: Any) -> TestClient:
    return TestClient(create_app(EmulatorSettings(frozen=True, **settings)))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client(points=1000) as c:
        yield c


def model_of(client: TestClient) -> Model:
    return state_of(client.app).model  # type: ignore[arg-type]


def element_at(client: TestClient, path: str) -> dict[str, Any]:
    body: dict[str, Any] = get(client, "/elements", path=path)
    return body


def equipment_path(model: Model, e: int) -> str:
    """Where equipment e must sit, derived from the name of its first PI point."""
    site, area, code, _ = model.point(0, 5 * e).name.split(".")
    return f"\\\\PIEMU-AF\\Plant\\Enterprise\\{site}\\{area}\\{code}"


# ---- servers and databases -----------------------------------------------------------------------------
def test_one_asset_server_with_plant_and_sandbox(client: TestClient) -> None:
    servers = get(client, "/assetservers")["Items"]
    assert [s["Name"] for s in servers] == ["PIEMU-AF"]
    server = servers[0]
    assert server["Path"] == "\\\\PIEMU-AF"
    assert webids.parse(server["WebId"]).marker == "RS"
    assert get(client, "/assetservers", path="\\\\PIEMU-AF")["WebId"] == server["WebId"]
    assert get(client, f"/assetservers/{server['WebId']}")["Name"] == "PIEMU-AF"
    missing = get(client, "/assetservers", 404, path="\\\\NOPE")
    assert missing["Errors"]
    dbs = get(client, f"/assetservers/{server['WebId']}/assetdatabases")["Items"]
    assert [d["Name"] for d in dbs] == [PLANT, SANDBOX]
    assert [d["Path"] for d in dbs] == ["\\\\PIEMU-AF\\Plant", "\\\\PIEMU-AF\\Sandbox"]
    plant = dbs[0]
    assert get(client, f"/assetdatabases/{plant['WebId']}")["Id"] == plant["Id"]
    assert plant["Links"]["Elements"].startswith("http://testserver/piwebapi/assetdatabases/")
    assert get(client, "/assetdatabases", path="\\\\PIEMU-AF\\Sandbox")["Name"] == SANDBOX


# ---- the element tree ----------------------------------------------------------------------------------
def test_full_hierarchy_mirrors_point_names_depth_first(client: TestClient) -> None:
    model = model_of(client)
    items = get(client, f"/assetdatabases/{plant_webid(client)}/elements", searchFullHierarchy="true")["Items"]
    # 1000 points -> 200 equipment, all at site BRK in areas A0..A4 (40 equipment each).
    assert len(items) == 1 + 1 + 5 + 200
    paths = [e["Path"] for e in items]
    equipment_paths = {equipment_path(model, e) for e in range(200)}
    assert {p for p in paths if p.count("\\") == 7} == equipment_paths
    assert paths[:3] == ["\\\\PIEMU-AF\\Plant\\Enterprise", "\\\\PIEMU-AF\\Plant\\Enterprise\\BRK",
                         "\\\\PIEMU-AF\\Plant\\Enterprise\\BRK\\A0"]
    # Depth first: every element comes right after its parent's subtree started, and subtrees are contiguous.
    stack: list[str] = []
    for p in paths:
        while stack and not p.startswith(stack[-1] + "\\"):
            stack.pop()
        parent = p.rsplit("\\", 1)[0]
        assert not stack or stack[-1] == parent
        stack.append(p)
    assert all(webids.parse(e["WebId"]).marker == "Em" for e in items)
    assert len({e["WebId"] for e in items}) == len(items)


def test_children_templates_and_categories(client: TestClient) -> None:
    model = model_of(client)
    roots = get(client, f"/assetdatabases/{plant_webid(client)}/elements")["Items"]
    assert [r["Name"] for r in roots] == ["Enterprise"]
    sites = get(client, f"/elements/{roots[0]['WebId']}/elements")["Items"]
    assert [s["Name"] for s in sites] == ["BRK"]
    assert sites[0]["TemplateName"] == "Site"
    assert sites[0]["HasChildren"] is True
    areas = get(client, f"/elements/{sites[0]['WebId']}/elements")["Items"]
    assert [a["Name"] for a in areas] == ["A0", "A1", "A2", "A3", "A4"]
    a1 = get(client, f"/elements/{areas[1]['WebId']}/elements")["Items"]
    assert [e["Path"] for e in a1] == [equipment_path(model, e) for e in range(40, 80)]
    for e in a1:
        kind = e["Name"].rstrip("0123456789")
        assert e["TemplateName"] == TEMPLATE_OF[kind]
        assert ("Rotating" in e["CategoryNames"]) == (kind in ROTATING)
        assert e["HasChildren"] is False
        assert e["Links"]["Parent"] == f"http://testserver/piwebapi/elements/{areas[1]['WebId']}"
        assert e["ExtendedProperties"] == {}


def test_filters_on_element_lists(client: TestClient) -> None:
    model = model_of(client)
    db = plant_webid(client)
    kinds = {e: model.point(0, 5 * e).name.split(".")[2].rstrip("0123456789") for e in range(200)}
    pumps = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true", templateName="pump")["Items"]
    assert sorted(p["Path"] for p in pumps) == sorted(equipment_path(model, e) for e, k in kinds.items()
                                                       if k == "PMP")
    rotating = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true",
                   categoryName="Rotating")["Items"]
    assert len(rotating) == sum(1 for k in kinds.values() if k in ROTATING)
    named = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true", nameFilter="*00001?")["Items"]
    assert sorted(e["Path"] for e in named) == sorted(equipment_path(model, e) for e in range(10, 20))
    # Without searchFullHierarchy only direct children are searched.
    assert get(client, f"/assetdatabases/{db}/elements", templateName="Pump")["Items"] == []


def test_paging_and_silent_truncation() -> None:
    with make_client(points=6000) as client:
        db = plant_webid(client)
        # 1200 equipment over 3 sites of 10 areas: 1 + 3 + 30 + 1200 elements.
        first = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true")["Items"]
        assert len(first) == 1000
        rest = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true", startIndex=1000)["Items"]
        assert len(rest) == 234
        pages = []
        for start in range(0, 1234, 300):
            pages += get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true", startIndex=start,
                         maxCount=300)["Items"]
        assert [e["WebId"] for e in pages] == [e["WebId"] for e in first + rest]
        assert get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true",
                   startIndex=5000)["Items"] == []
        get(client, f"/assetdatabases/{db}/elements", 400, maxCount="many")


# ---- attributes ----------------------------------------------------------------------------------------
def test_equipment_attributes_reference_their_points(client: TestClient) -> None:
    model = model_of(client)
    elem = element_at(client, equipment_path(model, 0))
    attrs = get(client, f"/elements/{elem['WebId']}/attributes")["Items"]
    points = [model.point(0, i) for i in range(5)]
    assert [a["Name"] for a in attrs[:5]] == [p.name.rsplit(".", 1)[1] for p in points]
    for a, p in zip(attrs[:5], points, strict=True):
        assert a["DataReferencePlugIn"] == "PI Point"
        assert a["ConfigString"] == p.path
        assert a["Type"] == ATTR_TYPE_OF[p.point_type]
        assert a["DefaultUnitsNameAbbreviation"] == p.units
        assert a["Links"]["Point"] == f"http://testserver/piwebapi/points/{p.webid}"
        assert a["Path"] == f"{elem['Path']}|{a['Name']}"
        assert a["Step"] == (p.point_type not in ("Float32", "Float64"))
        assert a["Links"]["Element"].endswith(elem["WebId"])
        assert webids.parse(a["WebId"]).marker == "Ab"
    statics = {a["Name"]: a for a in attrs[5:]}
    assert list(statics) == ["Manufacturer", "Model", "SerialNumber", "InstallDate", "RatedPower"]
    assert all(a["DataReferencePlugIn"] == "" and "Point" not in a["Links"] for a in statics.values())
    assert statics["InstallDate"]["Type"] == "DateTime"
    rated = statics["RatedPower"]
    assert rated["HasChildren"] is True
    assert rated["DefaultUnitsNameAbbreviation"] == "kW"
    children = get(client, f"/attributes/{rated['WebId']}/attributes")["Items"]
    assert [c["Name"] for c in children] == ["Minimum", "Maximum"]
    assert [c["Path"] for c in children] == [rated["Path"] + "|Minimum", rated["Path"] + "|Maximum"]
    assert all(c["Links"]["Parent"].endswith(rated["WebId"]) for c in children)
    full = get(client, f"/elements/{elem['WebId']}/attributes", searchFullHierarchy="true")["Items"]
    assert [a["WebId"] for a in full] == [a["WebId"] for a in attrs] + [c["WebId"] for c in children]
    # Static values through the model interface the data routes use.
    af = af_of(client)
    values = {r.name: r.static_value for r in af.element_attributes(elem["WebId"], full_hierarchy=True) or []}
    assert values["Minimum"] < values["RatedPower"] < values["Maximum"]  # type: ignore[operator]
    assert str(values["InstallDate"]).endswith("Z")


def test_attribute_lookup_by_path_and_webid(client: TestClient) -> None:
    model = model_of(client)
    path = equipment_path(model, 3) + "|RatedPower|Maximum"
    by_path = get(client, "/attributes", path=path)
    assert by_path["Name"] == "Maximum"
    assert by_path["Path"] == path
    assert get(client, f"/attributes/{by_path['WebId']}")["Path"] == path
    get(client, "/attributes", 404, path=equipment_path(model, 3) + "|NoSuchAttribute")
    elem = element_at(client, equipment_path(model, 3))
    assert get(client, f"/attributes/{elem['WebId']}", 404)["Errors"]
    get(client, "/attributes/not-a-webid", 404)
    get(client, "/elements/not-a-webid", 404)
    get(client, "/elements/" + webids.path_only("Em", "\\\\PIEMU-AF\\Plant\\Enterprise\\NOPE"), 404)


def test_resolve_attribute_interface(client: TestClient) -> None:
    model, af = model_of(client), af_of(client)
    elem = element_at(client, equipment_path(model, 7))
    refs = af.element_attributes(elem["WebId"])
    assert refs is not None
    listed = get(client, f"/elements/{elem['WebId']}/attributes")["Items"]
    assert [r.webid for r in refs] == [a["WebId"] for a in listed]
    for r, a in zip(refs, listed, strict=True):
        again = af.resolve_attribute(r.webid)
        assert again == r
        assert r.path == a["Path"]
        assert r.name == a["Name"]
        if a["DataReferencePlugIn"] == "PI Point":
            assert r.point is not None
            assert r.point.path == a["ConfigString"]
            assert r.units == r.point.units
            assert r.static_value is None
        else:
            assert r.point is None
            assert r.static_value is not None
    assert af.resolve_attribute(elem["WebId"]) is None
    assert af.resolve_attribute("garbage") is None
    assert af.element_attributes("garbage") is None
    # A point deleted at run time leaves a dangling reference.
    flow = refs[0]
    assert flow.point is not None
    assert "Point" in get(client, f"/attributes/{flow.webid}")["Links"]  # served (and kept) before the delete
    state_of(client.app).deleted_points.add((0, flow.point.index))  # type: ignore[arg-type]
    dangling = af.resolve_attribute(flow.webid)
    assert dangling is not None
    assert dangling.point is None
    assert "Point" not in get(client, f"/attributes/{flow.webid}")["Links"]


def test_about_one_in_200_equipment_references_a_missing_point() -> None:
    with make_client(points=10_000) as client:
        model, af = model_of(client), af_of(client)
        broken = [a for a in af.all_attributes() if a.data_reference == "PI Point" and a.point_webid is None]
        assert 2 <= len(broken) <= 30  # 2000 equipment
        for a in broken:
            assert model.point_by_path(a.config_string) is None
            ref = af.resolve_attribute(a.webid)
            assert ref is not None
            assert ref.point is None
            assert ref.static_value is None
        listed = get(client, f"/attributes/{broken[0].webid}")
        assert listed["DataReferencePlugIn"] == "PI Point"
        assert "Point" not in listed["Links"]


def test_af_elements_setting_decouples_the_tree_from_the_points() -> None:
    with make_client(points=100, af_elements=10_000) as client:
        model, af = model_of(client), af_of(client)
        elements = af.all_elements()
        # 10,000 equipment spread over 8 sites x 10 areas, plus the root.
        assert len(elements) == 10_000 + 1 + 8 + 80
        e = 4321
        assert max(int(x.name[-6:]) for x in elements if x.name[-6:].isdigit()) == 9999
        leaf = next(x for x in elements if x.name.endswith(f"{e:06d}"))
        attrs = get(client, f"/elements/{leaf.webid}/attributes")["Items"]
        configs = [a["ConfigString"] for a in attrs if a["DataReferencePlugIn"] == "PI Point"]
        expected = [model.point(0, (5 * e + s) % 100).path for s in range(5)]
        assert configs[:5] == expected
        assert len(attrs) in (10, 11)
        assert len({a["Name"] for a in attrs}) == len(attrs)


# ---- templates and search ------------------------------------------------------------------------------
def test_templates_and_attribute_templates(client: TestClient) -> None:
    model = model_of(client)
    templates = get(client, f"/assetdatabases/{plant_webid(client)}/elementtemplates")["Items"]
    by_name = {t["Name"]: t for t in templates}
    assert set(TEMPLATE_OF.values()) | {"Site", "Area", "Enterprise"} <= set(by_name)
    assert {n for n, t in by_name.items() if t["InstanceType"] == "EventFrame"} == {"Batch", "Downtime", "Alarm"}
    assert by_name["Pump"]["CategoryNames"] == ["Rotating"]
    pump_attrs = get(client, f"/elementtemplates/{by_name['Pump']['WebId']}/attributetemplates")["Items"]
    assert [a["Name"] for a in pump_attrs] == ["Manufacturer", "Model", "SerialNumber", "InstallDate", "RatedPower"]
    rated = pump_attrs[-1]
    kids = get(client, f"/attributetemplates/{rated['WebId']}/attributetemplates")["Items"]
    assert [k["Name"] for k in kids] == ["Minimum", "Maximum"]
    assert get(client, f"/attributetemplates/{rated['WebId']}")["Path"].endswith("ElementTemplates[Pump]|RatedPower")
    pump = element_at(client, equipment_path(model, 0))
    assert pump["Links"]["Template"].endswith(by_name["Pump"]["WebId"])
    attrs = get(client, f"/elements/{pump['WebId']}/attributes", nameFilter="Manufacturer")["Items"]
    assert len(attrs) == 1
    template_of_attr = attrs[0]["Links"]["Template"].rsplit("/", 1)[1]
    assert get(client, f"/attributetemplates/{template_of_attr}")["Name"] == "Manufacturer"
    get(client, f"/elementtemplates/{pump['WebId']}", 404)
    sandbox = get(client, "/assetdatabases", path="\\\\PIEMU-AF\\Sandbox")
    assert [t["Name"] for t in get(client, f"/assetdatabases/{sandbox['WebId']}/elementtemplates")["Items"]] == [
        "Bench"]


def test_element_search_query_subset(client: TestClient) -> None:
    model = model_of(client)
    db = plant_webid(client)
    found = get(client, "/elements/search", databaseWebId=db, query="name:=*00001?")["Items"]
    assert sorted(e["Path"] for e in found) == sorted(equipment_path(model, e) for e in range(10, 20))
    pumps = get(client, "/elements/search", databaseWebId=db, query="template:=Pump")["Items"]
    filtered = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true", templateName="Pump")
    assert [e["WebId"] for e in pumps] == [e["WebId"] for e in filtered["Items"]]
    both = get(client, "/elements/search", databaseWebId=db, query="template:=Pump name:='PMP00006*'")["Items"]
    assert {e["Name"] for e in both} == {e["Name"] for e in pumps if e["Name"].startswith("PMP00006")}
    assert both
    static = get(client, "/elements/search", databaseWebId=db, query="category:=Static")["Items"]
    assert static
    assert all("Static" in e["CategoryNames"] for e in static)
    assert get(client, "/elements/search", 400, databaseWebId=db, query="colour:=red")["Errors"]
    get(client, "/elements/search", 404, databaseWebId="F1RDnope", query="name:=*")


def test_selected_fields(client: TestClient) -> None:
    db = plant_webid(client)
    body = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true", maxCount=3,
               selectedFields="Items.Name;Items.WebId")
    assert list(body) == ["Items"]
    assert [sorted(e) for e in body["Items"]] == [["Name", "WebId"]] * 3


# ---- identity and WebID forms --------------------------------------------------------------------------
def test_id_only_and_path_only_webids_resolve(client: TestClient) -> None:
    model = model_of(client)
    elem = element_at(client, equipment_path(model, 5))
    guid = webids.parse(elem["WebId"]).guid
    assert guid is not None
    assert str(guid) == elem["Id"]
    id_only = "I1Em" + webids.encode_guid(guid)
    assert get(client, f"/elements/{id_only}")["WebId"] == elem["WebId"]
    assert get(client, f"/elements/{webids.path_only('Em', elem['Path'])}")["WebId"] == elem["WebId"]
    attr = get(client, f"/elements/{elem['WebId']}/attributes")["Items"][0]
    attr_guid = webids.parse(attr["WebId"]).guid
    assert attr_guid is not None
    assert get(client, f"/attributes/I1Ab{webids.encode_guid(attr_guid)}")["Path"] == attr["Path"]
    assert get(client, f"/attributes/{webids.path_only('Ab', attr['Path'])}")["WebId"] == attr["WebId"]
    # A Full WebID whose GUID is unknown does not resolve, whatever path it carries.
    owner = webids.parse(elem["WebId"]).owner
    forged = webids.full_object("Em", webids.decode_guid("A" * 22), elem["Path"], owner=owner)
    get(client, f"/elements/{forged}", 404)


def test_same_settings_same_model_and_seed_changes_it() -> None:
    with make_client(points=500) as a, make_client(points=500) as b, make_client(points=500, seed=8) as c:
        ea, eb, ec = af_of(a).all_elements(), af_of(b).all_elements(), af_of(c).all_elements()
        assert ea == eb
        assert [e.path for e in ea] == [e.path for e in ec]
        assert {e.id for e in ea}.isdisjoint({e.id for e in ec})
        assert af_of(a).all_attributes() == af_of(b).all_attributes()


def test_ground_truth_matches_the_endpoints(client: TestClient) -> None:
    af = af_of(client)
    items = get(client, f"/assetdatabases/{plant_webid(client)}/elements", searchFullHierarchy="true")["Items"]
    truth = af.all_elements(PLANT)
    assert [(e.webid, e.id, e.name, e.path, e.template_name, list(e.category_names), e.has_children,
             e.description) for e in truth] == [
        (i["WebId"], i["Id"], i["Name"], i["Path"], i["TemplateName"], i["CategoryNames"], i["HasChildren"],
         i["Description"]) for i in items]
    attrs = af.all_attributes(PLANT)
    for leaf in items[3:6]:
        served = get(client, f"/elements/{leaf['WebId']}/attributes", searchFullHierarchy="true")["Items"]
        mine = [a for a in attrs if a.element_webid == leaf["WebId"]]
        assert [(a.webid, a.name, a.path, a.type, a.config_string, a.data_reference, a.default_units_name,
                 a.has_children, list(a.category_names), a.is_excluded) for a in mine] == [
            (s["WebId"], s["Name"], s["Path"], s["Type"], s["ConfigString"], s["DataReferencePlugIn"],
             s["DefaultUnitsName"], s["HasChildren"], s["CategoryNames"], s["IsExcluded"]) for s in served]


# ---- run-time changes ----------------------------------------------------------------------------------
def test_rename_keeps_the_id_and_old_webids_resolve(client: TestClient) -> None:
    model, af = model_of(client), af_of(client)
    old_path = equipment_path(model, 2)
    elem = element_at(client, old_path)
    attr = get(client, f"/elements/{elem['WebId']}/attributes")["Items"][0]
    renamed = af.rename_element(elem["WebId"], "Renamed")
    assert renamed.id == elem["Id"]
    assert renamed.webid != elem["WebId"]
    via_old = get(client, f"/elements/{elem['WebId']}")
    assert via_old["Name"] == "Renamed"
    assert via_old["Path"] == old_path.rsplit("\\", 1)[0] + "\\Renamed"
    get(client, "/elements", 404, path=old_path)
    assert get(client, "/elements", path=via_old["Path"])["Id"] == elem["Id"]
    moved_attr = get(client, f"/attributes/{attr['WebId']}")
    assert moved_attr["Path"] == via_old["Path"] + "|" + attr["Name"]
    with pytest.raises(ValueError, match="invalid"):
        af.rename_element(elem["WebId"], "a|b")


def test_move_set_template_and_remove(client: TestClient) -> None:
    model, af = model_of(client), af_of(client)
    db = plant_webid(client)
    elem = element_at(client, equipment_path(model, 0))
    a1 = element_at(client, "\\\\PIEMU-AF\\Plant\\Enterprise\\BRK\\A1")
    a0 = element_at(client, "\\\\PIEMU-AF\\Plant\\Enterprise\\BRK\\A0")
    af.move_element(elem["WebId"], a1["WebId"])
    assert elem["Name"] in [e["Name"] for e in get(client, f"/elements/{a1['WebId']}/elements")["Items"]]
    assert elem["Name"] not in [e["Name"] for e in get(client, f"/elements/{a0['WebId']}/elements")["Items"]]
    assert get(client, f"/elements/{elem['WebId']}")["Path"] == a1["Path"] + "\\" + elem["Name"]
    with pytest.raises(ValueError, match="below itself"):
        af.move_element(a1["WebId"], elem["WebId"])

    af.set_template(elem["WebId"], "Motor")
    motors = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true", templateName="Motor")
    assert elem["Id"] in {e["Id"] for e in motors["Items"]}
    assert get(client, f"/elements/{elem['WebId']}")["CategoryNames"] == ["Rotating"]

    before = len(af.all_elements())
    a0_children = get(client, f"/elements/{a0['WebId']}/elements")["Items"]
    af.remove_element(a0["WebId"])
    get(client, f"/elements/{a0['WebId']}", 404)
    get(client, f"/elements/{a0_children[0]['WebId']}", 404)
    get(client, f"/elements/{a0_children[0]['WebId']}/attributes", 404)
    assert len(af.all_elements()) == before - 1 - len(a0_children)
    full = get(client, f"/assetdatabases/{db}/elements", searchFullHierarchy="true")["Items"]
    assert len(full) == before - 1 - len(a0_children)


def test_remove_database(client: TestClient) -> None:
    af = af_of(client)
    sandbox = get(client, "/assetdatabases", path="\\\\PIEMU-AF\\Sandbox")
    bench = get(client, f"/assetdatabases/{sandbox['WebId']}/elements", searchFullHierarchy="true")["Items"][-1]
    assert bench["TemplateName"] == "Bench"
    af.remove_database(SANDBOX)
    get(client, f"/assetdatabases/{sandbox['WebId']}", 404)
    get(client, f"/assetdatabases/{sandbox['WebId']}/elements", 404)
    get(client, f"/elements/{bench['WebId']}", 404)
    assert [d["Name"] for d in get(client, f"/assetservers/{af.server.webid}/assetdatabases")["Items"]] == [PLANT]
    assert af.all_elements(SANDBOX) == []
