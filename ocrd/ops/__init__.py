"""Operations on the host: cleanup of what is left over, and diagnostics (``ocrctl doctor``)."""
