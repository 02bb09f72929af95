"""PHQ-9, the Patient Health Questionnaire depression module, with its published scoring.

Kroenke K, Spitzer RL, Williams JBW. The PHQ-9: validity of a brief depression severity
measure. J Gen Intern Med 2001;16:606-613. Developed by Drs. Robert L. Spitzer, Janet
B.W. Williams, Kurt Kroenke and colleagues, with an educational grant from Pfizer Inc.
No permission required to reproduce, translate, display or distribute.

Items 1-9 score 0-3 (Not at all, Several days, More than half the days, Nearly every
day); the total is 0-27: 0-4 minimal, 5-9 mild, 10-14 moderate, 15-19 moderately
severe, 20-27 severe. The closing difficulty question is not scored. Every item is
required: the published total is only valid with all nine answered.
"""

from __future__ import annotations

from typing import Any

FREQUENCY = ["Not at all", "Several days", "More than half the days", "Nearly every day"]
FREQUENCY_SCORES = [0, 1, 2, 3]
DIFFICULTY = ["Not difficult at all", "Somewhat difficult", "Very difficult", "Extremely difficult"]

ITEMS = [
    "Little interest or pleasure in doing things",
    "Feeling down, depressed, or hopeless",
    "Trouble falling or staying asleep, or sleeping too much",
    "Feeling tired or having little energy",
    "Poor appetite or overeating",
    "Feeling bad about yourself — or that you are a failure or have let yourself or your "
    "family down",
    "Trouble concentrating on things, such as reading the newspaper or watching television",
    "Moving or speaking so slowly that other people could have noticed? Or the opposite — "
    "being so fidgety or restless that you have been moving around a lot more than usual",
    "Thoughts that you would be better off dead or of hurting yourself in some way",
]

BANDS = [
    {"min": 0, "max": 4, "label": "Minimal"},
    {"min": 5, "max": 9, "label": "Mild"},
    {"min": 10, "max": 14, "label": "Moderate"},
    {"min": 15, "max": 19, "label": "Moderately severe"},
    {"min": 20, "max": 27, "label": "Severe"},
]

STEM = "Over the last 2 weeks, how often have you been bothered by any of the following problems?"

TEMPLATE: dict[str, Any] = {
    "id": "phq9",
    "title": "Patient Health Questionnaire (PHQ-9)",
    "summary": "Depression screening: 9 items scored 0–3, total 0–27 with severity bands "
    "(staff only), and the unscored difficulty question.",
    "description": "PHQ-9 developed by Drs. Robert L. Spitzer, Janet B.W. Williams, "
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
            "label": "If you checked off any problems, how difficult have these problems made "
            "it for you to do your work, take care of things at home, or get along with other "
            "people?",
            "required": False,
            "options": DIFFICULTY,
        },
        {
            "id": "phq9_total",
            "type": "score",
            "label": "PHQ-9 total",
            "helpText": "Item 9 (thoughts of self-harm) needs a clinician's follow-up whatever "
            "the total.",
            "score": {
                "sum": [{"field": f"q{number}", "weight": 1} for number in range(1, 10)],
                "bands": BANDS,
                "showPatient": False,
            },
        },
    ],
}
