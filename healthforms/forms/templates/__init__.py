"""The template gallery (docs/templates.md): ready-made form definitions staff start from.

Templates are data: each module holds one `TEMPLATE`, a title, a description and a
list of Field objects exactly as POST /api/forms takes them, valid under
forms/validation.py (tests/forms/test_templates.py checks every one). Creating a form
from a template copies its fields into a new draft: the clinic edits its own copy, and
changing a template here never changes a form made from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthforms.forms.templates import consent, gad7, hipaa, history, intake, phq9


@dataclass(frozen=True, slots=True)
class FormTemplate:
    id: str
    title: str
    description: str
    # What the gallery says the template is for (staff read it; never shown to patients).
    summary: str
    fields: tuple[dict[str, Any], ...]

    def summary_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.summary,
            "fieldCount": len(self.fields),
        }

    def json(self) -> dict[str, Any]:
        return {
            **self.summary_json(),
            "formDescription": self.description,
            "fields": [dict(f) for f in self.fields],
        }


def _template(module_data: dict[str, Any]) -> FormTemplate:
    return FormTemplate(
        id=module_data["id"],
        title=module_data["title"],
        description=module_data["description"],
        summary=module_data["summary"],
        fields=tuple(module_data["fields"]),
    )


# In the order the gallery shows them.
TEMPLATES: dict[str, FormTemplate] = {
    t.id: t
    for t in (
        _template(intake.TEMPLATE),
        _template(history.TEMPLATE),
        _template(consent.TEMPLATE),
        _template(hipaa.TEMPLATE),
        _template(phq9.TEMPLATE),
        _template(gad7.TEMPLATE),
    )
}


def find_template(template_id: object) -> FormTemplate | None:
    """The template with this id, or None (any other value a client sends included)."""
    if not isinstance(template_id, str):
        return None
    return TEMPLATES.get(template_id)
