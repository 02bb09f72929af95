"""GET /api/forms/{id}/fhir: every field type, condition and score as a valid Questionnaire."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from healthforms.db.engine import Database
from healthforms.fhir.codes import (
    HF_FIELD_TYPE,
    HF_NOT_EXPRESSIBLE,
    HF_SCORE,
    HF_SHOW_WHEN,
    ITEM_CONTROL,
    MAX_OCCURS,
    MAX_SIZE,
    MAX_VALUE,
    MIME_TYPE,
    MIN_LENGTH,
    MIN_VALUE,
    ORDINAL_VALUE,
    REGEX,
    TRANSLATION,
)
from healthforms.fhir.questionnaire import questionnaire
from healthforms.forms.models import FormVersion
from healthforms.security.principal import Role
from tests.fhir.helpers import (
    EVERY_FIELD,
    NOT_EXPRESSIBLE,
    TRANSLATIONS,
    all_items,
    extension_urls,
    publish_form,
    valid_questionnaire,
)
from tests.support.response_factory import PublishedForm, create_organization
from tests.support.response_fixtures import StaffFactory


def ext(item: dict[str, Any], url: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [e for e in item.get("extension") or [] if e["url"] == url]
    assert len(found) >= 1, f"{item['linkId']} has no {url}"
    return found[0]


async def test_every_field_type_exports_as_a_valid_r4_questionnaire(
    admin: httpx.AsyncClient,
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD, translations=TRANSLATIONS)

    reply = await admin.get(f"/api/forms/{form_id}/fhir")

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/fhir+json")
    body = reply.json()
    valid_questionnaire(body)
    assert body["url"] == f"http://testserver/fhir/Questionnaire/{form_id}"
    assert body["version"] == "1" and body["status"] == "active"
    assert body["title"] == "Every field"
    assert body["_title"]["extension"][0]["url"] == TRANSLATION
    items = all_items(body["item"])
    # linkId = field id; every field is an item (help texts are items of their own).
    assert {f["id"] for f in EVERY_FIELD} <= set(items)
    types = {link: item["type"] for link, item in items.items()}
    assert types["name"] == types["email"] == types["phone"] == types["c_eq"] == "string"
    assert types["story"] == "text"
    assert types["dob"] == types["c_all"] == "date"
    assert types["age"] == types["weight"] == "decimal"
    assert types["color"] == types["smoker"] == types["allergies"] == "choice"
    assert types["consent"] == "boolean"
    assert types["sig"] == types["photo"] == types["doc"] == "attachment"
    assert types["intro"] == types["notice"] == types["name.help"] == "display"
    assert types["page2"] == types["page3"] == "group"
    assert types["total"] == "decimal"  # 1.5 x 2 is not a whole number
    assert types["whole"] == "integer"
    for field in EVERY_FIELD:
        assert ext(items[field["id"]], HF_FIELD_TYPE)["valueCode"] == field["type"]


async def test_constraints_map_to_standard_elements_and_extensions(
    admin: httpx.AsyncClient,
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD, translations=TRANSLATIONS)
    items = all_items((await admin.get(f"/api/forms/{form_id}/fhir")).json()["item"])

    name = items["name"]
    assert name["required"] is True and name["maxLength"] == 80
    assert ext(name, MIN_LENGTH)["valueInteger"] == 2
    assert ext(name, REGEX)["valueString"] == "^[^0-9]+$"
    assert name["item"] == [
        {
            "linkId": "name.help",
            "text": "As on your insurance card",
            "_text": {
                "extension": [
                    {
                        "url": TRANSLATION,
                        "extension": [
                            {"url": "lang", "valueCode": "es"},
                            {"url": "content", "valueString": "Como en su tarjeta"},
                        ],
                    }
                ]
            },
            "type": "display",
            "extension": [
                {
                    "url": ITEM_CONTROL,
                    "valueCodeableConcept": {
                        "coding": [
                            {
                                "system": "http://hl7.org/fhir/questionnaire-item-control",
                                "code": "help",
                            }
                        ]
                    },
                }
            ],
        }
    ]
    assert items["story"]["maxLength"] == 10_000  # the default bound, stated
    assert ext(items["age"], MIN_VALUE)["valueDecimal"] == 0
    assert ext(items["age"], MAX_VALUE)["valueDecimal"] == 120
    assert "required" not in items["intro"] and "required" not in items["total"]
    # Choices: codes are the option texts (or the position when a text is no FHIR code).
    assert [o["valueCoding"]["code"] for o in items["color"]["answerOption"]] == [
        "Red",
        "option-2",
    ]
    assert items["allergies"]["repeats"] is True and "repeats" not in items["smoker"]
    smoker_yes = items["smoker"]["answerOption"][0]["valueCoding"]
    assert smoker_yes["display"] == "Yes"
    assert smoker_yes["_display"]["extension"][0]["extension"][1]["valueString"] == "Sí"
    # Files: type, size and count.
    photo = items["photo"]
    assert [e["valueCode"] for e in photo["extension"] if e["url"] == MIME_TYPE] == [
        "image/jpeg",
        "image/png",
        "image/webp",
    ]
    assert ext(photo, MAX_SIZE)["valueDecimal"] == 5 * 1024 * 1024
    assert ext(photo, MAX_OCCURS)["valueInteger"] == 3 and photo["repeats"] is True
    assert "repeats" not in items["doc"]
    # Pages: a page break is a group of what follows it, up to the next one.
    assert [i["linkId"] for i in items["page2"]["item"]] == ["q1", "q2", "total"]
    assert [i["linkId"] for i in items["page3"]["item"]] == ["q3", "whole"]
    page_control = ext(items["page3"], ITEM_CONTROL)["valueCodeableConcept"]["coding"][0]
    assert page_control["code"] == "page"


async def test_scores_are_ordinal_values_and_a_read_only_weighted_sum(
    admin: httpx.AsyncClient,
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    items = all_items((await admin.get(f"/api/forms/{form_id}/fhir")).json()["item"])

    ordinals = [o["valueCoding"]["extension"][0] for o in items["q2"]["answerOption"]]
    assert ordinals == [
        {"url": ORDINAL_VALUE, "valueDecimal": 1.5},
        {"url": ORDINAL_VALUE, "valueDecimal": 2},
    ]
    assert "extension" not in items["smoker"]["answerOption"][0]["valueCoding"]
    total = items["total"]
    assert total["readOnly"] is True
    assert "calculatedExpression" not in json.dumps(total)
    parts = ext(total, HF_SCORE)["extension"]
    terms = [p for p in parts if p["url"] == "term"]
    assert [[x["url"] for x in t["extension"]] for t in terms] == [["linkId", "weight"]] * 2
    assert terms[1]["extension"] == [
        {"url": "linkId", "valueString": "q2"},
        {"url": "weight", "valueDecimal": 2},
    ]
    assert len([p for p in parts if p["url"] == "band"]) == 2


async def test_conditions_become_enable_when_only_where_the_meaning_is_exact(
    admin: httpx.AsyncClient,
) -> None:
    form_id = await publish_form(admin, EVERY_FIELD)
    items = all_items((await admin.get(f"/api/forms/{form_id}/fhir")).json()["item"])

    assert items["c_eq"]["enableWhen"] == [
        {"question": "smoker", "operator": "=", "answerCoding": {"code": "Yes", "display": "Yes"}}
    ]
    assert "enableBehavior" not in items["c_eq"]
    # Not equal holds when unanswered too: (exists false) OR (!= No).
    assert items["c_ne"]["enableWhen"] == [
        {"question": "smoker", "operator": "exists", "answerBoolean": False},
        {"question": "smoker", "operator": "!=", "answerCoding": {"code": "No", "display": "No"}},
    ]
    assert items["c_ne"]["enableBehavior"] == "any"
    assert items["c_multi"]["enableWhen"][0]["operator"] == "="
    assert items["c_all"]["enableBehavior"] == "all"
    assert items["c_all"]["enableWhen"][1] == {
        "question": "age",
        "operator": "=",
        "answerDecimal": 30,
    }
    assert items["c_any"]["enableBehavior"] == "any"
    assert items["c_any"]["enableWhen"] == [
        {"question": "consent", "operator": "=", "answerBoolean": True},
        {"question": "dob", "operator": "=", "answerDate": "2000-01-01"},
    ]
    assert items["page2"]["enableWhen"][0]["question"] == "smoker"
    for link_id, item in items.items():
        if link_id in NOT_EXPRESSIBLE:
            # Never a nearby condition that means something else: none, and the reason.
            assert "enableWhen" not in item, link_id
            assert ext(item, HF_NOT_EXPRESSIBLE)["valueString"]
        else:
            assert HF_NOT_EXPRESSIBLE not in extension_urls(item), link_id
        if "showWhen" in next((f for f in EVERY_FIELD if f["id"] == link_id), {}):
            assert HF_SHOW_WHEN in extension_urls(item)


async def test_versions_are_frozen_and_pinned(admin: httpx.AsyncClient) -> None:
    fields = [{"id": "a", "type": "text", "label": "First wording"}]
    form_id = await publish_form(admin, fields)
    current = (await admin.get(f"/api/forms/{form_id}")).json()
    saved = await admin.put(
        f"/api/forms/{form_id}",
        json={
            "fields": [{"id": "a", "type": "text", "label": "Second wording"}],
            "revision": current["revision"],
        },  # fmt: skip
    )
    assert saved.status_code == 200, saved.text
    assert (await admin.post(f"/api/forms/{form_id}/publish")).status_code == 200

    latest = (await admin.get(f"/api/forms/{form_id}/fhir")).json()
    first = (await admin.get(f"/api/forms/{form_id}/fhir?version=1")).json()

    assert (latest["version"], latest["status"]) == ("2", "active")
    assert (first["version"], first["status"]) == ("1", "retired")
    assert first["url"] == latest["url"]
    assert first["item"][0]["text"] == "First wording"
    assert latest["item"][0]["text"] == "Second wording"
    assert (await admin.get(f"/api/forms/{form_id}/fhir?version=3")).status_code == 404
    assert (await admin.get(f"/api/forms/{form_id}/fhir?version=x")).status_code == 422


async def test_a_form_never_published_has_no_questionnaire(admin: httpx.AsyncClient) -> None:
    created = await admin.post(
        "/api/forms", json={"title": "Draft", "fields": [{"id": "a", "type": "text", "label": "A"}]}
    )
    reply = await admin.get(f"/api/forms/{created.json()['id']}/fhir")
    assert reply.status_code == 409
    assert reply.json()["code"] == "not_published"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR])
async def test_any_staff_role_reads_a_questionnaire_of_its_own_clinic_only(
    role: Role, staff: StaffFactory, clinic: PublishedForm, db: Database
) -> None:
    other = await create_organization(db)
    async with staff(clinic.organization_id, role) as http:
        assert (await http.get(f"/api/forms/{clinic.form_id}/fhir")).status_code == 200
    async with staff(other, Role.ADMIN) as http:
        reply = await http.get(f"/api/forms/{clinic.form_id}/fhir")
        assert reply.status_code == 404 and reply.json()["code"] == "not_found"


def test_stale_translations_are_left_out_as_the_patient_page_leaves_them() -> None:
    fields = [
        {"id": "smoker", "type": "radio", "label": "Smoke?", "options": ["Yes", "No", "Quit"]},
        {"id": "why", "type": "text", "label": "Why?"},
    ]
    translations = {
        # Saved when smoker had two options; a later edit added "Quit".
        "es": {
            "title": " ",
            "fields": {
                "smoker": {"label": "¿Fuma?", "options": ["Sí", "No"]},
                "why": {"label": "  "},
            },
        },  # fmt: skip
        "fr": "not an object",
    }
    version = FormVersion(form_id="frm_t", version=1, title="T", description="", fields=fields,
                          translations=translations,
                          published_at=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip

    body = questionnaire(version, base_url="http://x", status="active")

    valid_questionnaire(body)
    smoker, why = body["item"]
    assert smoker["_text"]["extension"][0]["extension"][1]["valueString"] == "¿Fuma?"
    assert all("_display" not in o["valueCoding"] for o in smoker["answerOption"])
    assert "_text" not in why and "_title" not in body
