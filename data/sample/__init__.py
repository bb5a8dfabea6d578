"""The bundled sample corpus (raw/pile, raw/wudao; see LICENSE.md), shipped as package data: flm.sample."""
