"""Hugging Face transformers source for exported FLM models (`flm export --format flm`).

configuration_flm.py and modeling_flm.py are copied verbatim into every export, where transformers
loads them with `trust_remote_code=True`. They import only torch and transformers, never flm, so an
export runs wherever transformers does. Nothing in flm imports them.
"""
