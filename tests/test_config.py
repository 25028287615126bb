"""Every config group option and every recipe composes; recipes change only what they list."""
from __future__ import annotations

import pytest
from hydra.errors import MissingConfigException

from domainclip.core.paths import config_dir

GROUPS = ["tower", "method", "loss", "data", "trainer", "logger", "captions", "eval", "export"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(make_cfg, group):
    assert options(group), f"config group {group} is empty"
    for opt in options(group):
        cfg = make_cfg(f"{group}={opt}")
        assert group in cfg


@pytest.mark.parametrize("recipe", ["pathology", "radiology", "satellite"])
def test_recipes_select_their_card(make_cfg, recipe):
    cfg = make_cfg(f"recipe={recipe}")
    assert cfg.data.card == f"demo_{recipe}"
    assert cfg.tower.name == "two_tower" and cfg.method.name == "lora"


def test_recipe_dir_is_the_recipe_group():
    assert sorted(p.stem for p in (config_dir() / "recipe").glob("*.yaml")) == ["pathology", "radiology", "satellite", "slides"]


def test_unknown_recipe_names_the_group(make_cfg):
    with pytest.raises(MissingConfigException) as err:
        make_cfg("recipe=nope")
    assert "recipe/nope" in str(err.value)


def test_command_line_overrides_win_over_recipe(make_cfg):
    cfg = make_cfg("recipe=radiology", "trainer.max_epochs=2")
    assert cfg.trainer.max_epochs == 2


@pytest.mark.parametrize("recipe", ["pathology", "radiology", "satellite"])
def test_recipes_add_their_demo_site_b_only_for_the_demo_card(make_cfg, recipe, tmp_path):
    from omegaconf import OmegaConf

    def sites(*overrides):
        return OmegaConf.to_container(make_cfg(f"recipe={recipe}", *overrides).eval, resolve=True)["external_cards"]

    assert sites() == [f"demo_{recipe}_site_b"]
    assert sites(f"data.card={tmp_path / 'card.yaml'}") == []  # a user's own card: no demo site
    assert sites("eval.external_cards=[site_c]") == ["site_c"]
