"""Training: the FLM model on megatron-core, stage configs, mixture loader, loop, growth."""
