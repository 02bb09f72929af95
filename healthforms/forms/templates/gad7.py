"""GAD-7, the Generalized Anxiety Disorder scale, with its published scoring.

Spitzer RL, Kroenke K, Williams JBW, Löwe B. A brief measure for assessing generalized
anxiety disorder: the GAD-7. Arch Intern Med 2006;166:1092-1097. Developed by Drs.
Robert L. Spitzer, Janet B.W. Williams, Kurt Kroenke and colleagues, with an
educational grant from Pfizer Inc. No permission required to reproduce, translate,
display or distribute.

Items 1-7 score 0-3; the total is 0-21: 0-4 minimal, 5-9 mild, 10-14 moderate, 15-21
severe. The closing difficulty question is not scored.
"""

from __future__ import annotations

from typing import Any

from healthforms.forms.templates.phq9 import DIFFICULTY, FREQUENCY, FREQUENCY_SCORES

ITEMS = [
    "Feeling nervous, anxious, or on edge",
    "Not being able to stop or control worrying",
    "Worrying too much about different things",
    "Trouble relaxing",
    "Being so restless that it is hard to sit still",
    "Becoming easily annoyed or irritable",
    "Feeling afraid, as if something awful might happen",
]

BANDS = [
    {"min": 0, "max": 4, "label": "Minimal"},
    {"min": 5, "max": 9, "label": "Mild"},
    {"min": 10, "max": 14, "label": "Moderate"},
    {"min": 15, "max": 21, "label": "Severe"},
]

STEM = "Over the last 2 weeks, how often have you been bothered by the following problems?"

TEMPLATE: dict[str, Any] = {
    "id": "gad7",
    "title": "Generalized Anxiety Disorder scale (GAD-7)",
    "summary": "Anxiety screening: 7 items scored 0–3, total 0–21 with severity bands "
    "(staff only), and the unscored difficulty question.",
    "description": "GAD-7 developed by Drs. Robert L. Spitzer, Janet B.W. Williams, "
    "Kurt Kroenke and colleagues, with an educational grant from Pfizer Inc. No permission "
    "required to reproduce, translate, display or distribute.",
    "fields": [
        # The instrument's instruction, once, above its items (a layout block).
        {"id": "instructions", "type": "paragraph", "label": STEM},
        *(
            {
                "id": f"q{number}",
                "type": "radio",
                "label": f"{number}. {item}",
                "required": True,
                "options": FREQUENCY,
                "optionScores": FREQUENCY_SCORES,
            }
            for number, item in enumerate(ITEMS, start=1)
        ),
        {
            "id": "difficulty",
            "type": "radio",
            "label": "If you checked any problems, how difficult have they made it for you to "
            "do your work, take care of things at home, or get along with other people?",
            "required": False,
            "options": DIFFICULTY,
        },
        {
            "id": "gad7_total",
            "type": "score",
            "label": "GAD-7 total",
            "score": {
                "sum": [{"field": f"q{number}", "weight": 1} for number in range(1, 8)],
                "bands": BANDS,
                "showPatient": False,
            },
        },
    ],
}
