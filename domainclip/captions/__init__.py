"""Captions from labels: template sets (shared with zero-shot prompts) and sampling."""
from domainclip.captions.templates import Caption, class_captions, template_set_for, template_sets

__all__ = ["Caption", "class_captions", "template_set_for", "template_sets"]
