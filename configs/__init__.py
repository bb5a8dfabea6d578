"""The bundled configs (stages/, pipelines/, mixtures/, recipes/), shipped as package data: flm.configs."""
