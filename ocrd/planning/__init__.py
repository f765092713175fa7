"""Pure planning: which engine, device and quantization a model gets and why, from the model's
size, the GPUs (NVML) and what this host can run."""
