"""The shared Hugging Face cache: inventory, verification, downloads, and the service the
control plane calls."""
