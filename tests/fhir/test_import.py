"""POST /api/forms/import-fhir: round trip, the PHQ-9 from LOINC, unsupported items listed,
hostile bodies answered (never a 500), roles and the audit event."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from healthforms.db.engine import Database
from healthforms.fhir.codes import SDC_ENABLE_WHEN_EXPRESSION
from healthforms.forms.schema import FieldDef, fields_from_json
from healthforms.forms.scores import calculate
from healthforms.forms.templates import TEMPLATES, find_template
from healthforms.security.principal import Role
from tests.fhir.helpers import (
    EVERY_FIELD,
    TRANSLATIONS,
    all_items,
    audit_rows,
    phq9_fixture,
    publish_form,
    valid_questionnaire,
)
from tests.support.response_factory import PublishedForm
from tests.support.response_fixtures import StaffFactory

IMPORT = "/api/forms/import-fhir"


async def import_ok(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = await http.post(IMPORT, json=body)
    assert reply.status_code == 201, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


async def export(http: httpx.AsyncClient, form_id: str) -> dict[str, Any]:
    assert (await http.post(f"/api/forms/{form_id}/publish")).status_code == 200
    reply = await http.get(f"/api/forms/{form_id}/fhir")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    valid_questionnaire(body)
    return body


async def test_export_import_export_gives_the_same_items(admin: httpx.AsyncClient) -> None:
    form_id = await publish_form(admin, EVERY_FIELD, translations=TRANSLATIONS)
    first = (await admin.get(f"/api/forms/{form_id}/fhir")).json()

    imported = await import_ok(admin, first)
    second = await export(admin, imported["form"]["id"])

    assert imported["unsupported"] == []
    assert second["item"] == first["item"]
    assert (second["title"], second["_title"]) == (first["title"], first["_title"])
    assert second["description"] == first["description"]
    form = imported["form"]
    assert form["status"] == "draft" and form["version"] == 0
    assert form["fields"] == [FieldDef.model_validate(f).to_json() for f in EVERY_FIELD]
    assert form["translations"] == TRANSLATIONS


async def test_the_loinc_phq9_imports_with_its_scoring(admin: httpx.AsyncClient) -> None:
    answer = await import_ok(admin, phq9_fixture())
    template = find_template("phq9")
    assert template is not None
    mine = fields_from_json(list(template.fields))
    theirs = fields_from_json(answer["form"]["fields"])

    items = [f for f in theirs if f.type.value == "radio"]
    template_items = [f for f in mine if f.type.value == "radio"]
    assert len(items) == len(template_items) == 10
    for got, want in zip(items, template_items, strict=True):
        assert got.options == want.options
        assert got.option_scores == want.option_scores  # [0, 1, 2, 3], None for difficulty
        assert got.required == want.required
    assert (
        items[0].label
        == template_items[0].label
        == ("1. Little interest or pleasure in doing things")
    )
    assert items[0].id == "q_44250-9"  # "/44250-9" is no field id: renamed, and said so
    score = next(f for f in theirs if f.type.value == "score")
    assert score.score is not None
    assert [t.field for t in score.score.sum] == [f.id for f in items[:9]]
    assert all(t.weight == 1 for t in score.score.sum)
    # The same answers score the same under the template and the imported form.
    template_score = next(f for f in mine if f.type.value == "score")
    for picks in ([0] * 9, [3] * 9, [0, 1, 2, 3, 0, 1, 2, 3, 1]):
        ours = {f.id: f.options[n] for f, n in zip(items, picks, strict=False) if f.options}
        model = {f.id: f.options[n] for f, n in zip(template_items, picks, strict=False)
                 if f.options}  # fmt: skip
        got_score = calculate(score, {f.id: f for f in theirs}, ours, set(ours))
        want_score = calculate(template_score, {f.id: f for f in mine}, model, set(model))
        assert got_score.value == want_score.value == sum(picks)
    # What did not come across is listed, never dropped silently.
    notes = {(n["linkId"], n["what"]) for n in answer["notes"]}
    assert ("/44250-9", "linkId") in notes
    assert ("/44250-9", "code") in notes  # LOINC item codes are not kept
    assert ("/44250-9", "answerOption") in notes  # LA6568-5 ... kept as display texts
    assert ("/44261-6", "score") in notes  # the total assumed to be the ordinal sum
    unsupported = {(u["linkId"], u["what"]) for u in answer["unsupported"]}
    assert (
        "/44261-6",
        "extension http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression",
    ) in unsupported
    # And it exports again: ordinal values 0-3 and a read-only integer total.
    again = all_items((await export(admin, answer["form"]["id"]))["item"])
    ordinals = [
        o["valueCoding"]["extension"][0]["valueDecimal"] for o in again["q_44250-9"]["answerOption"]
    ]
    assert ordinals == [0, 1, 2, 3]
    assert again["q_44261-6"]["readOnly"] is True
    assert again["q_44261-6"]["type"] == "integer"


async def test_unsupported_items_and_features_are_listed(admin: httpx.AsyncClient) -> None:
    body = {
        "resourceType": "Questionnaire",
        "status": "draft",
        "title": "Mixed",
        "item": [
            {"linkId": "height", "text": "Height", "type": "quantity"},
            {
                "linkId": "state",
                "text": "State",
                "type": "choice",
                "answerValueSet": "http://example.org/ValueSet/states",
            },  # fmt: skip
            {"linkId": "age", "text": "Age", "type": "integer", "initial": [{"valueInteger": 3}]},
            {
                "linkId": "older",
                "text": "Since when",
                "type": "date",
                "enableWhen": [{"question": "age", "operator": ">", "answerInteger": 65}],
            },  # fmt: skip
            {
                "linkId": "mood",
                "text": "Mood",
                "type": "choice",
                "answerOption": [
                    {
                        "valueString": "Fine",
                        "extension": [
                            {
                                "url": "http://hl7.org/fhir/StructureDefinition/ordinalValue",
                                "valueDecimal": 0,
                            }
                        ],
                    },
                    {
                        "valueString": "Low",
                        "extension": [
                            {
                                "url": "http://hl7.org/fhir/StructureDefinition/ordinalValue",
                                "valueDecimal": 1,
                            }
                        ],
                    },
                ],
            },  # fmt: skip
            {
                "linkId": "why",
                "text": "Why",
                "type": "string",
                "enableWhen": [{"question": "mood", "operator": "!=", "answerString": "Fine"}],
            },  # fmt: skip
            {
                "linkId": "expr",
                "text": "Expr",
                "type": "string",
                "extension": [
                    {
                        "url": SDC_ENABLE_WHEN_EXPRESSION,
                        "valueExpression": {"language": "text/fhirpath", "expression": "true"},
                    }
                ],
            },
        ],
    }

    answer = await import_ok(admin, body)

    unsupported = {(u["linkId"], u["what"]): u["why"] for u in answer["unsupported"]}
    assert ("height", "type quantity") in unsupported
    assert ("state", "choice") in unsupported
    assert ("age", "initial") in unsupported
    assert ("older", "enableWhen") in unsupported
    fields = {f["id"]: f for f in answer["form"]["fields"]}
    assert ("expr", "enableWhenExpression") in unsupported
    assert set(fields) == {"age", "older", "mood", "why", "expr"}
    assert "showWhen" not in fields["older"]  # listed above: the item is always shown
    assert fields["mood"]["optionScores"] == [0, 1]  # ordinalValue on the answerOption
    assert fields["why"]["showWhen"] == {"field": "mood", "notEquals": "Fine"}
    notes = {(n["linkId"], n["what"]) for n in answer["notes"]}
    assert ("why", "enableWhen") in notes  # != read as "not equal" (also when unanswered)
    assert ("age", "integer") in notes


async def test_a_page_group_condition_and_nested_groups(admin: httpx.AsyncClient) -> None:
    body = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [
            {"linkId": "smoker", "text": "Smoke?", "type": "boolean"},
            {
                "linkId": "habits",
                "text": "Habits",
                "type": "group",
                "enableWhen": [{"question": "smoker", "operator": "=", "answerBoolean": True}],
                "item": [
                    {"linkId": "packs", "text": "Packs", "type": "decimal"},
                    {
                        "linkId": "inner",
                        "text": "Details",
                        "type": "group",
                        "item": [{"linkId": "brand", "text": "Brand", "type": "string"}],
                    },
                ],
            },  # fmt: skip
            {"linkId": "after", "text": "After", "type": "string"},
            {"linkId": "after2", "text": "After too", "type": "string"},
        ],
    }

    answer = await import_ok(admin, body)

    fields = answer["form"]["fields"]
    assert [(f["id"], f["type"]) for f in fields] == [
        ("smoker", "checkbox"),
        ("habits", "pageBreak"),
        ("packs", "number"),
        ("inner", "heading"),
        ("brand", "text"),
        ("page-6", "pageBreak"),  # "after" is not on the conditional page
        ("after", "text"),
        ("after2", "text"),  # on that same new page
    ]
    assert fields[1]["showWhen"] == {"field": "smoker", "equals": True}
    assert answer["form"]["title"] == "Imported questionnaire"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "bad_request"),
        (b"[1, 2]", 422, "validation_error"),
        (b'"Questionnaire"', 422, "validation_error"),
        (b'{"resourceType": "Patient"}', 422, "validation_error"),
        (b'{"resourceType": "Questionnaire"}', 422, "validation_error"),
        (
            b'{"resourceType": "Questionnaire", "status": "active", "item": "x"}',
            422,
            "validation_error",
        ),  # fmt: skip
        (
            b'{"resourceType": "Questionnaire", "status": "active", "item": [{"linkId": 5}]}',
            422,
            "validation_error",
        ),  # fmt: skip
        (
            b'{"resourceType": "Questionnaire", "status": "active", "bogus": 1}',
            422,
            "validation_error",
        ),  # fmt: skip
        (b"[" * 100_000 + b"]" * 100_000, 400, "bad_request"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, "bad_request"),
        (
            b'{"resourceType":"Questionnaire","x":' + b"[" * 200 + b"]" * 200 + b"}",
            422,
            "validation_error",
        ),  # fmt: skip
        (b"\xff\xfe", 400, "bad_request"),
        (
            b'{"resourceType": "Questionnaire", "status": "active", '
            b'"contained": [{"resourceType": "Foo"}]}',
            422,
            "validation_error",
        ),  # fmt: skip
        (b'{"resourceType": "Questionnaire", "status": ["active"]}', 422, "validation_error"),
    ],
)
async def test_hostile_bodies_get_a_clear_error_never_a_500(
    admin: httpx.AsyncClient, content: bytes, status: int, code: str
) -> None:
    reply = await admin.post(IMPORT, content=content, headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["code"] == code and body["error"]
    if status == 422:
        assert body["fields"]["questionnaire"]


async def test_deeply_nested_groups_and_too_many_items_are_refused(
    admin: httpx.AsyncClient,
) -> None:
    item: dict[str, Any] = {"linkId": "leaf", "text": "Leaf", "type": "string"}
    for depth in range(40):
        item = {"linkId": f"g{depth}", "text": "G", "type": "group", "item": [item]}
    deep = {"resourceType": "Questionnaire", "status": "active", "item": [item]}
    reply = await admin.post(IMPORT, json=deep)
    assert (
        reply.status_code == 422 and "nested too deeply" in reply.json()["fields"]["questionnaire"]
    )

    many = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": f"i{n}", "text": "Q", "type": "string"} for n in range(1200)],
    }
    reply = await admin.post(IMPORT, json=many)
    assert reply.status_code == 422 and "too many items" in reply.json()["fields"]["questionnaire"]

    huge = {"resourceType": "Questionnaire", "status": "active", "title": "x" * (2 * 1024 * 1024)}
    reply = await admin.post(IMPORT, json=huge)
    assert reply.status_code == 413 and reply.json()["code"] == "payload_too_large"


async def test_a_large_valid_questionnaire_keeps_the_first_fields_and_lists_the_rest(
    admin: httpx.AsyncClient,
) -> None:
    body = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": f"i{n}", "text": "Q", "type": "string"} for n in range(230)],
    }
    answer = await import_ok(admin, body)
    assert len(answer["form"]["fields"]) == 200
    cut = [u["linkId"] for u in answer["unsupported"] if u["what"] == "item"]
    assert cut == [f"i{n}" for n in range(200, 230)]


async def test_import_is_for_editors_and_audited(
    db: Database, staff: StaffFactory, clinic: PublishedForm, admin: httpx.AsyncClient
) -> None:
    async with staff(clinic.organization_id, Role.VIEWER) as viewer:
        refused = await viewer.post(IMPORT, json=phq9_fixture())
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    async with staff(clinic.organization_id, Role.EDITOR) as editor:
        answer = await import_ok(editor, phq9_fixture())

    events = await audit_rows(db, "form.created", answer["form"]["id"])
    assert len(events) == 1
    assert json.loads(events[0].detail or "{}") == {
        "importedFrom": "fhir",
        "unsupported": len(answer["unsupported"]),
    }


@pytest.mark.parametrize("template", list(TEMPLATES))
async def test_every_gallery_template_exports_validly_and_round_trips(
    admin: httpx.AsyncClient, template: str
) -> None:
    created = await admin.post("/api/forms", json={"template": template})
    assert created.status_code == 201, created.text
    first = await export(admin, created.json()["id"])

    imported = await import_ok(admin, first)
    second = await export(admin, imported["form"]["id"])

    assert imported["unsupported"] == []
    assert second["item"] == first["item"]
    assert imported["form"]["fields"] == created.json()["fields"]
