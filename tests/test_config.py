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


def test_a_users_own_stage_can_start_from_a_bundled_one(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: tiny\nname: mine\nmodel:\n  layers: 3\n")
    stage = load_config(StageConfig, tmp_path / "mine.yaml")
    assert (stage.name, stage.model.layers, stage.model.hidden) == ("mine", 3, 64)  # tiny's hidden


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


def test_a_base_cycle_is_one_clear_error(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("base: b\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a\nname: b\n")
    with pytest.raises(ConfigError, match=r"makes a cycle: a.yaml -> b.yaml -> a.yaml"):
        load_config(StageConfig, tmp_path / "a.yaml")


def test_a_yaml_alias_bomb_is_refused(tmp_path) -> None:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(12)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_config(StageConfig, tmp_path / "bomb.yaml")


@pytest.mark.parametrize("override", ["train.max_bad_steps=0", "train.save_every=-1", "train.keep_last=-1",
                                      "train.eval_every=-1", "optim.clip_grad=-1", "optim.lr=.inf",
                                      "train.steps=-5"])
def test_senseless_training_values_are_refused(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[0]):
        load_config(StageConfig, find_config("tiny", "stages"), [override])


def test_overlapping_the_weight_gather_needs_the_distributed_optimizer() -> None:
    with pytest.raises(ConfigError, match="overlap_param_gather needs distributed_optimizer"):
        load_config(StageConfig, find_config("tiny", "stages"),
                    ["parallel.overlap_param_gather=true", "parallel.distributed_optimizer=false"])
    both = load_config(StageConfig, find_config("tiny", "stages"),
                       ["parallel.overlap_param_gather=true", "parallel.overlap_grad_reduce=true"])
    assert both.parallel.overlap_param_gather and both.parallel.overlap_grad_reduce


def test_an_error_keeps_its_brackets(tmp_path) -> None:
    from typer.testing import CliRunner

    from flm.cli.main import app

    result = CliRunner().invoke(app, ["config", "show", str(tmp_path / "data[bold]" / "x.yaml")])
    assert result.exit_code == 1 and "data[bold]" in result.stderr
