"""Saved drafts of a patient's form: save a partly filled form, resume it by link or code."""
