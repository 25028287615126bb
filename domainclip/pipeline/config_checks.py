"""The config checks a run makes before any data is read: values users most often set (type and
range), the selected method's, loss's and trainer's values, and that the tower, method and loss
have no key their code does not take. Each failure is one ``ConfigError`` line naming the key,
the value and what is allowed. Light on imports: the command line runs them before loading
Lightning."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from domainclip.core.errors import ConfigError
from domainclip.evaluation.aggregate import GROUP_LABEL_RULES, any_rule_class
from domainclip.methods import METHODS
from domainclip.towers.base import tower_class
from domainclip.training.losses import LOSSES
from domainclip.training.reliability.run_lock import hold_run_dir

EVAL_SPLITS = ("val", "test")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key -> (test, what is allowed)
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "data.card": (lambda v: isinstance(v, str) and bool(v.strip()),
                  "a data card: recipe=pathology|radiology|satellite|slides picks a demo, data.card=PATH your own"),
    "trainer.max_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.on_error": (lambda v: v in ("fail", "skip"), "fail or skip"),
    "data.shots": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "eval.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "eval.bootstrap": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = no CIs)"),
    "eval.operating_point": (lambda v: v in ("youden", "sensitivity"), "youden or sensitivity"),
    "eval.target_sensitivity": (lambda v: isinstance(v, (int, float)) and 0 < v < 1, "a number in (0, 1)"),
    "eval.aggregate": (lambda v: v in ("mean", "topk"), "mean or topk"),
    "eval.topk": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "eval.group_label": (lambda v: v == "unanimous" or any_rule_class(v) is not None, GROUP_LABEL_RULES),
    "eval.splits": (lambda v: isinstance(v, list) and set(v) <= set(EVAL_SPLITS), f"a list from {list(EVAL_SPLITS)}"),
    "eval.conformal_alpha": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
                             "a number in (0, 1), e.g. 0.1 for 90% coverage"),
    "eval.external_cards": (lambda v: v is None or (isinstance(v, list) and all(isinstance(c, str) and c for c in v)),
                            "a list of data card names or paths, e.g. [demo_radiology_site_b], or []"),
    "seed": (_is_int, "an integer"),
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _positive(v) -> bool:
    return _number(v) and v > 0


def _count(minimum: int) -> Callable[[object], bool]:
    return lambda v: _is_int(v) and v >= minimum


# keys of the selected method / loss / trainer: checked when the chosen option has them
WHEN_PRESENT: dict[str, tuple[Callable[[object], bool], str]] = {
    "method.r": (_count(1), "an integer >= 1 (the LoRA rank)"),
    "method.alpha": (_positive, "a number > 0 (the LoRA scaling numerator)"),
    "method.dropout": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "method.lr": (_positive, "a number > 0"),
    "method.head_lr": (_positive, "a number > 0"),
    "method.weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "method.n_ctx": (_count(1), "an integer >= 1 (context vectors)"),
    "method.n_tokens": (_count(1), "an integer >= 1 (visual prompt tokens)"),
    "method.max_iter": (_count(1), "an integer >= 1"),
    "method.unlocked_layers": (lambda v: v is None or (_is_int(v) and v >= 0), "null or an integer >= 0"),
    "method.alphas": (lambda v: isinstance(v, list) and bool(v) and all(_number(a) and 0 <= a <= 1 for a in v),
                      "a non-empty list of numbers in [0, 1]"),
    "method.Cs": (lambda v: isinstance(v, list) and bool(v) and all(_positive(c) for c in v), "a non-empty list of numbers > 0"),
    "loss.grad_cache": (lambda v: v is None or (_is_int(v) and v >= 0), "null or an integer >= 0 (chunk size; 0 = off)"),
    "trainer.accumulate_grad_batches": (_count(1), "an integer >= 1"),
}


def _value(cfg: DictConfig, key: str):
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        allowed = RULES.get(key, (None, "a value"))[1]
        raise ConfigError(f"{key} is not set: expected {allowed}") from None
    except Exception as exc:  # noqa: BLE001 - missing mandatory value, bad interpolation
        raise ConfigError(f"{key}: {exc}; set it on the command line ({key}=...)") from None
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_run_config(cfg: DictConfig) -> None:
    """Before any data is read: the tower, method and loss exist and have no key their code does
    not take; then every key in ``RULES`` (``data.card`` first: others interpolate it) and each key in ``WHEN_PRESENT``
    that the selected method, loss and trainer have."""
    check_option_keys(cfg)
    for key, (test, allowed) in RULES.items():
        value = _value(cfg, key)
        if not test(value):
            raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")
    for key, (test, allowed) in WHEN_PRESENT.items():
        group, name = key.split(".", 1)
        node = cfg.get(group)
        if node is None or name not in node:
            continue
        value = _value(cfg, key)
        if not test(value):
            chosen = f" for {group} '{node.get('name')}'" if "name" in node else ""
            raise ConfigError(f"{key}={value!r} is not allowed{chosen}: expected {allowed}")


PASSED_BY_THE_RUN = {  # arguments the run fills in itself, never config keys
    "loss": {"img", "txt", "logit_scale", "labels", "logit_bias", "valid"},
}
HANDLED_BY_THE_RUN = {"tower": {"name", "activation_checkpointing"}, "method": {"name"}, "loss": {"name", "grad_cache"}}


def accepted_arguments(obj) -> set[str] | None:
    """Keyword arguments a class (through its whole ``__init__`` chain) or a function accepts;
    ``None`` when it takes arbitrary keywords at the end of the chain."""
    import inspect

    chain = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c) and c is not object] if inspect.isclass(obj) else [obj]
    names: set[str] = set()
    for fn in chain:
        params = inspect.signature(fn).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


def option_code(group: str, name: str):
    """The registered class or function a config group's ``name`` selects."""
    if group == "method":
        return METHODS.get(name)
    if group == "tower":
        return tower_class(name)

    return LOSSES.get(name)


def check_option_keys(cfg: DictConfig) -> None:
    """Every key of the selected tower, method and loss is one its code accepts: a misspelt or
    added key (``+method.rr=4``) is refused before any data is read, naming the allowed keys."""
    for group in ("tower", "method", "loss"):
        node = cfg.get(group)
        if node is None or "name" not in node:
            continue
        accepted = accepted_arguments(option_code(group, node.name))
        if accepted is None:
            continue
        allowed = (accepted | HANDLED_BY_THE_RUN[group]) - PASSED_BY_THE_RUN.get(group, set())
        unknown = sorted(set(node.keys()) - allowed)
        if unknown:
            raise ConfigError(f"{group}.{unknown[0]}: not a key of {group} '{node.name}'; allowed keys: "
                              f"{', '.join(sorted(allowed - {'name'}))}")


def check_run_dir(cfg: DictConfig) -> None:
    """A ``run_dir=...`` given on the command line that cannot be written, or that another live
    run holds, fails here in one line, before Lightning is imported (the run takes the lock again
    for its whole length). Hydra's own per-launch directory is fresh and is not probed, nor is it
    from a rank other than 0 (a DDP launcher's other processes start while rank 0 holds the lock)."""
    if any(os.environ.get(k, "0") != "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")):
        return
    try:
        run_dir = cfg.run_dir
    except OmegaConfBaseException:  # ${hydra:runtime.output_dir} resolves only inside the Hydra app
        return
    with hold_run_dir(Path(run_dir)):
        pass
