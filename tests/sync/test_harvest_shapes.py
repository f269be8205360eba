"""A peer record whose nested values have the wrong JSON shape (a string where the feed has an object or a list)
is quarantined naming the field; the page's other records land."""

from __future__ import annotations

from tests.sync.test_harvest_institutions import PEERS_OWN, change, harvest, quarantined

from cellcommons.sync.models import RunStatus


def dataset(record_id: str, **record) -> dict:
    return {"record_id": record_id, "record_type": "Dataset", "institution": PEERS_OWN,
            "record": {"accession": f"CC-{record_id}", **record}}  # fmt: skip


async def test_records_of_the_wrong_shape_are_held_naming_the_field_and_the_rest_lands(env):
    spec_as_text = change("Batch_0002", PEERS_OWN, "LOT-8")
    spec_as_text["record"]["specification"] = "Specification_x"
    run = await harvest(env, [
        change("Batch_0001", PEERS_OWN, "LOT-7"),
        spec_as_text,
        dataset("Dataset_0001", versions="abc"),
        dataset("Dataset_0002", versions=[1]),
        dataset("Dataset_0003", versions=[{"status": "published", "conditions": "x"}]),
        dataset("Dataset_0004", versions=[{"status": "published", "conditions": [{"term": "DUO:0000042",
                                                                                    "parameter": 7}]}]),
    ])  # fmt: skip
    assert (run.status, run.upserted_count, run.quarantined_count) == (RunStatus.partial, 1, 5)
    assert await env.lots() == ["LOT-7"]
    expected = {
        "Batch_0002": "specification", "Dataset_0001": "versions", "Dataset_0002": "versions[0]",
        "Dataset_0003": "versions[0].conditions", "Dataset_0004": "versions[0].conditions[0].parameter",
    }  # fmt: skip
    for key, field in expected.items():
        [finding] = await quarantined(env, key)
        assert (finding["code"], finding["field"]) == ("invalid_shape", field), key
