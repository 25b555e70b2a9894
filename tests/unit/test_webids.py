import uuid

import pytest

from piflow import webids


def test_real_full_point_webid_decodes() -> None:
    # A Full WebID as a real PI Web API serves it (PI point, server GUID, point id 17552, path).
    parsed = webids.parse("F1DPHCUkIuz-VUGmPsx8gYVengkEQAAAUFRJLVBJXFUtTEdTMS1HQi1YLVBLLVBLLTcwLUFJ")
    assert parsed.kind == "point"
    assert parsed.point_id == 17552
    assert parsed.path == "PTI-PI\\U-LGS1-GB-X-PK-PK-70-AI"


def test_path_only_is_computable_offline() -> None:
    # P1DP + base64url(upper("SRV\TAG")) without padding.
    assert webids.point_path_only("srv", "tag") == "P1DPU1JWXFRBRw"
    parsed = webids.parse("P1DPU1JWXFRBRw")
    assert (parsed.kind_code, parsed.kind, parsed.path) == ("P", "point", "SRV\\TAG")


def test_full_round_trip_for_owned_objects() -> None:
    db, el = uuid.uuid4(), uuid.uuid4()
    w = webids.full_object("Em", el, "\\\\AF\\DB\\Site", owner=db)
    parsed = webids.parse(w)
    assert (parsed.owner, parsed.guid, parsed.path, parsed.kind) == (db, el, "AF\\DB\\SITE", "element")


@pytest.mark.parametrize("bad", ["", "X", "F2DPabc", "F1ZZabc", "P1DP!!!"])
def test_malformed_webids_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="WebID"):
        webids.parse(bad)


def test_parse_marked_keeps_only_wellformed_webids_of_the_asked_marker() -> None:
    element = webids.path_only("Em", r"\\AF\DB\PLANT")
    parsed = webids.parse_marked(element, "Em")
    assert parsed is not None
    assert parsed.path == r"AF\DB\PLANT"
    assert webids.parse_marked(element, "RD") is None  # another kind of object
    assert webids.parse_marked("P1Em!!not-base64", "Em") is None  # malformed
    assert webids.parse_marked("", "Em") is None
