"""The vLLM engine: one container (docker launcher) or subprocess (process launcher) per model,
its readiness, the containers a previous run left (adoption), and image pulls."""
