"""Documents: PDFs and images in, pages of markdown and blocks out (``POST /v1/ocr``, chat's file
parts). ``pdf`` renders with pypdfium2, ``pipeline`` sends pages through the same lease and runner
path as chat requests, ``formats`` turns each model's output into markdown and blocks, and
``service`` speaks Mistral's OCR API."""
