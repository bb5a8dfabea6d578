"""The generic config loader: YAML -> dataclass, dotted overrides, errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from flm.config import ConfigError, config_to_dict, find_config, load_config, parse_overrides
from flm.train.config import StageConfig


@dataclass
class Inner:
    lr: float = 1e-3
    mode: Literal["a", "b"] = "a"
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    weights: dict[str, float] = field(default_factory=dict)
    path: Path | None = None

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    inner: Inner = field(default_factory=Inner)


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ninner:\n  lr: 0.5\n  sizes: [3, 4]\n")
    cfg = load_config(Outer, path, ["inner.lr=3e-4", "steps=20", "inner.mode=b", "inner.weights={a: 1}"])
    assert cfg.name == "run" and cfg.steps == 20
    assert cfg.inner.lr == pytest.approx(3e-4) and cfg.inner.mode == "b"
    assert cfg.inner.sizes == [3, 4] and cfg.inner.weights == {"a": 1.0}
    assert config_to_dict(cfg)["inner"]["sizes"] == [3, 4]


def test_int_promotes_to_float_and_str_to_path() -> None:
    cfg = load_config(Outer, {"inner": {"lr": 1, "path": "some/where"}})
    assert isinstance(cfg.inner.lr, float) and cfg.inner.path == Path("some/where")


@pytest.mark.parametrize(("overrides", "message"), [
    (["inner.lrr=1"], "unknown key 'inner.lrr' (did you mean 'lr'?); allowed: lr, mode, sizes, weights, path"),
    (["inner.mode=c"], "inner.mode: 'c' is not allowed; allowed values: 'a', 'b'"),
    (["steps=abc"], "steps: expected an integer, got 'abc'"),
    (["inner.lr=-1"], "inner: lr must be positive, got -1.0"),
    (["inner.sizes=[1, x]"], "inner.sizes[1]: expected an integer, got 'x'"),
    (["nokey"], "override 'nokey' must look like key.sub=value"),
])
def test_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(Outer, None, overrides)
    assert message in str(err.value)


def test_base_inheritance(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text("name: parent\nsteps: 5\ninner:\n  lr: 0.1\n  mode: b\n")
    (tmp_path / "child.yaml").write_text("base: parent\nname: child\ninner:\n  lr: 0.2\n")
    cfg = load_config(Outer, tmp_path / "child.yaml")
    assert (cfg.name, cfg.steps, cfg.inner.lr, cfg.inner.mode) == ("child", 5, 0.2, "b")


def test_invalid_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(Outer, path)


def test_parse_overrides_nests() -> None:
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e=true"]) == {"a": {"b": {"c": 1, "d": "x"}}, "e": True}


def test_every_bundled_stage_loads(repo_root: Path) -> None:
    stages = sorted((repo_root / "configs" / "stages").glob("*.yaml"))
    assert stages, "no stage configs bundled"
    for path in stages:
        cfg = load_config(StageConfig, path)
        assert cfg.name == path.stem


def test_find_config_lists_available() -> None:
    with pytest.raises(ConfigError, match="available: .*tiny"):
        find_config("no-such-stage", "stages")
