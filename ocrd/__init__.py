"""ocrd: serves OCR and vision-language models through an OpenAI-compatible API."""

__version__ = "0.1.0"
