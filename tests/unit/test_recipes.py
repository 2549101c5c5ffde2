"""Every shipped recipe parses strictly and builds its stages on a tiny stand-in dataset."""

from __future__ import annotations

import pytest

from afa.errors import ConfigError
from afa.recipes import recipe_names, resolve_recipe
from afa.runs import adversarial_epochs, load_run_config, parse_run_config


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_parses(name: str) -> None:
    cfg = load_run_config(resolve_recipe(name))
    assert cfg.method_name in name
    assert cfg.threat.eps > 0


def test_cifar_threat_model_is_exactly_8_over_255() -> None:
    cfg = load_run_config(resolve_recipe("cifar10-pgd-at"))
    assert cfg.threat.eps == 8 / 255 and cfg.threat.step_size == 2 / 255


def test_quickstart_recipes_share_one_threat_model_and_budget() -> None:
    cfgs = [load_run_config(resolve_recipe(n)) for n in recipe_names() if n.startswith("digits-")]
    assert len({c.threat for c in cfgs}) == 1
    budgets = {c.method_name: adversarial_epochs(c) for c in cfgs}
    adversarial = {m: b for m, b in budgets.items() if m not in ("standard", "supcon")}
    assert len(set(adversarial.values())) == 1, budgets


def test_unknown_recipe_and_method_option_are_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'cifar10-pgdat' \(did you mean"):
        resolve_recipe("cifar10-pgdat")
    with pytest.raises(ConfigError, match=r"unknown key 'method.betta'.*'method.beta'"):
        parse_run_config({"method": {"name": "trades", "betta": 3}})
    with pytest.raises(ConfigError, match=r"unknown method 'trade'.*'trades'"):
        parse_run_config({"method": {"name": "trade"}})
    with pytest.raises(ConfigError, match="classifier"):
        parse_run_config({"method": {"name": "trades"}, "classifier": {"protocol": "linear"}})


def test_resolved_method_options_are_written_out() -> None:
    cfg = parse_run_config({"method": {"name": "trades"}})
    assert cfg.method == {"name": "trades", "beta": 6.0, "split_bn": True}
