"""FHIR R4 (SDC) Questionnaire and QuestionnaireResponse, out and in (docs/fhir.md)."""
