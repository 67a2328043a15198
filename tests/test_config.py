"""The TOML config: every key checked, errors name the key, section and closest known key."""

from __future__ import annotations

from pathlib import Path

import pytest

from netrace.config import Config, config_from_dict, load_config
from netrace.errors import UserError

BASE = {"data": {"source": "sp500"}, "task": {"target": "vol_next", "window": 20}}


def cfg(**sections: dict) -> Config:
    merged = {k: dict(v) for k, v in BASE.items()}
    for k, v in sections.items():
        merged.setdefault(k, {}).update(v)
    return config_from_dict(merged, origin="c.toml")


def test_valid_config_is_frozen() -> None:
    c = cfg(split={"scheme": "purged_kfold", "folds": 4, "embargo": 30},
            race={"target": 0.1, "budget": 1000, "rule": "median"})
    assert c.split.scheme == "purged_kfold" and c.split.embargo == 30
    assert c.race.rule == "median" and c.race.target == 0.1 and c.is_time_series
    with pytest.raises(AttributeError):
        c.task.window = 3  # type: ignore[misc]


@pytest.mark.parametrize("sections, message", [
    ({"task": {"windw": 5}},
     r"c.toml: unknown key 'windw' in \[task\]; did you mean 'window'\? \(known keys: "),
    ({"split": {"schem": "holdout"}}, r"unknown key 'schem' in \[split\]; did you mean 'scheme'"),
    ({"rac": {"rule": "lc"}},
     r"unknown section \[rac\]; known sections are data, evaluate, race, search, split, task; did you "
     r"mean 'race'\?"),
    ({"split": {"scheme": "walkforward"}},
     r"\[split\] scheme = 'walkforward' is not allowed; choose one of holdout, walk_forward, "
     r"purged_kfold, kfold; did you mean 'walk_forward'\?"),
    ({"task": {"window": "20"}},
     r"\[task\] window must be a whole number, got '20' \(a string\); write window = 20"),
    ({"task": {"window": 0}}, r"\[task\] window must be >= 1, got 0"),
    ({"split": {"test": 1.5}}, r"\[split\] test must be > 0 and < 1, got 1.5"),
    ({"task": {"type": "classification"}},
     r"\[task\] type = 'classification' is not allowed; choose one of regression, binary, "
     r"multiclass"),
    ({"race": {"rule": "asha"}}, r"\[race\] rule = 'asha' is not allowed; choose one of lc, "
                                 r"median, hyperband, topk, none"),
    ({"data": {"source": "sp5000"}}, r"did you mean 'sp500'\?"),
    ({"data": {"path": "x.csv"}}, r"\[data\] needs exactly one of 'path' .* got both"),
    ({"split": {"scheme": "kfold"}}, r"scheme = \"kfold\" shuffles rows and would train on the "
                                     r"future"),
    ({"split": {"train_size": 100}}, r"train_size only applies to mode = \"rolling\""),
    ({"split": {"test": 0.5, "validation": 0.45}}, r"test \+ validation = 0.95 leaves almost"),
    ({"task": {"features": ["a", "a"]}}, r"\[task\] features names 'a' twice"),
    ({"race": {"target": float("nan")}}, r"\[race\] target must be a finite number, got nan"),
    ({"evaluate": {"baselines": "vol"}}, r"\[evaluate\] baselines = 'vol' is not allowed; "
                                         r"choose one of auto, volatility, returns, level"),
    ({"task": {"type": "binary", "target": "direction_next"},
      "evaluate": {"baselines": "volatility"}},
     r"\[evaluate\] baselines = 'volatility' names the baselines of a time-series regression, "
     r"but this task is binary; remove it"),
])
def test_bad_values(sections: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        cfg(**sections)


def test_rule_options_reach_the_race_rule() -> None:
    from netrace.curves import HyperbandRule, LCRule, MedianRule
    from netrace.race import race_rule

    c = cfg(race={"rule": "median", "median": {"percentile": 25, "min_observed": 3}})
    assert c.race.median == {"percentile": 25.0, "min_observed": 3}
    rule = race_rule(c, "r2")
    assert isinstance(rule, MedianRule) and (rule.percentile, rule.min_observed) == (25.0, 3)
    rule = race_rule(cfg(race={"rule": "hyperband", "hyperband": {"rungs": [2, 6], "keep": 0.5}}),
                     "r2")
    assert isinstance(rule, HyperbandRule) and (rule.rungs, rule.keep) == ((2, 6), 0.5)
    # lc: its options, and the metric's range from the race
    rule = race_rule(cfg(race={"lc": {"epsilon": 0.1, "prior_weight": float("inf")}}), "mse")
    assert isinstance(rule, LCRule) and rule.epsilon == 0.1 and rule.prior_weight == float("inf")
    assert rule.bounds == (-float("inf"), 0.0)
    assert race_rule(cfg(), "r2") == LCRule(bounds=(-float("inf"), 1.0))  # the defaults


def test_rule_patience_makes_the_race_rule_patient() -> None:
    from netrace.curves import MedianRule, PatientRule, patient
    from netrace.race import race_rule

    rule = race_rule(cfg(race={"rule": "median", "rule_patience": 3}), "r2")
    assert rule == patient(MedianRule(), 3) and isinstance(rule, PatientRule)
    assert rule.name == "median"  # its decisions are stored as the median rule's
    with pytest.raises(UserError, match=r"\[race\] rule_patience must be >= 0, got -1"):
        cfg(race={"rule_patience": -1})
    with pytest.raises(UserError, match=r'rule = "none" stops none; remove rule_patience'):
        cfg(race={"rule": "none", "rule_patience": 2})


def test_rule_options_from_a_toml_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[data]\nsource = "sp500"\n[task]\ntarget = "vol_next"\n'
                 '[race]\nrule = "lc"\n[race.lc]\nepsilon = 0.2\nprior_weight = inf\n'
                 'method = "sampler"\n')
    assert load_config(p).race.lc == {"epsilon": 0.2, "prior_weight": float("inf"),
                                      "method": "sampler"}


@pytest.mark.parametrize("race, message", [
    ({"lc": {"epsilon": 1.5}}, r"c.toml: \[race.lc\] lc epsilon must lie in \(0, 1\); got 1.5"),
    ({"lc": {"epsilo": 0.1}}, r"\[race.lc\] rule 'lc' has no option 'epsilo'; did you mean "
                              r"'epsilon'\?; its options: epsilon, min_observed, growth, "
                              r"prior_weight, method, criterion, delta"),
    ({"lc": {"method": "mcmc"}}, r"lc method must be one of sampler, amortized; got 'mcmc'"),
    ({"lc": {"criterion": "gain"}},
     r"lc criterion must be one of probability, improvement; got 'gain'"),
    ({"lc": {"criterion": "improvement", "delta": 0}}, r"lc delta must lie in \(0, 1\); got 0"),
    ({"lc": {"delta": 0.01}}, r'lc delta applies only with criterion = "improvement", and '
                              r'criterion is "probability"; remove delta or set criterion = '
                              r'"improvement"'),
    ({"lc": {"criterion": "improvement", "epsilon": 0.1}},
     r'lc epsilon applies only with criterion = "probability"'),
    ({"lc": {"min_observed": 2.5}}, r"lc min_observed must be a whole number, got 2.5; e.g. "
                                    r"min_observed = 3"),
    ({"lc": {"growth": float("nan")}}, r"lc growth must be a number, got nan"),
    ({"lc": 0.1}, r"'lc' in \[race\] must be a table of the lc rule's options, \[race.lc\]"),
    ({"rule": "median", "median": {"percentile": 120}},
     r"median percentile must lie in \[0, 100\]; got 120.0"),
    ({"rule": "median", "median": {"finished_only": 1}},
     r"median finished_only must be true or false, got 1"),
    ({"rule": "hyperband", "hyperband": {"rungs": [9, 3]}},
     r"hyperband rungs must be increasing evaluation counts >= 1"),
    ({"rule": "hyperband", "hyperband": {"rungs": "3, 9"}},
     r"hyperband rungs must be a list of whole numbers, got '3, 9'; e.g. rungs = \[3, 9, 27, "),
    ({"rule": "topk", "topk": {"keep": 0}}, r"topk keep must lie in \(0, 1\]"),
    ({"median": {"percentile": 25}},
     r"\[race.median\] sets options of the median rule, but the race uses rule = \"lc\"; set "
     r"\[race\] rule = \"median\" or remove \[race.median\]"),
])
def test_bad_rule_options(race: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        cfg(race=race)


def test_iid_rows_refuse_time_things() -> None:
    with pytest.raises(UserError, match=r"window = 5 needs rows ordered in time; set \[data\] "
                                        r"time"):
        config_from_dict({"data": {"source": "iris"}, "task": {"target": "target",
                                                                "window": 5}})
    with pytest.raises(UserError, match=r"scheme = 'walk_forward' needs rows ordered in time"):
        config_from_dict({"data": {"source": "iris"}, "task": {"target": "target"},
                          "split": {"scheme": "walk_forward"}})


def test_missing_target() -> None:
    with pytest.raises(UserError, match=r"\[task\] target is missing"):
        config_from_dict({"data": {"source": "sp500"}})


def test_invalid_toml(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[data\nsource = 'sp500'\n")
    with pytest.raises(UserError, match=r"is not valid TOML: .*line 1"):
        load_config(p)


def test_section_must_be_table(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('data = "sp500"\n')
    with pytest.raises(UserError, match=r"'data' must be a section \[data\] with keys, got a "
                                        r"string"):
        load_config(p)


def test_relative_path_starts_at_config(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.toml"
    p.write_text('[data]\npath = "d.csv"\n[task]\ntarget = "y"\n')
    assert load_config(p).base_dir == (tmp_path / "sub").resolve()


def test_examples_all_load_and_inspect(capsys: pytest.CaptureFixture[str]) -> None:
    from netrace.cli import main

    examples = sorted(Path(__file__).resolve().parents[1].glob("examples/*.toml"))
    assert len(examples) >= 4
    for ex in examples:
        assert main(["data", "inspect", str(ex)]) == 0, (ex, capsys.readouterr().err)
        out = capsys.readouterr().out
        assert "split plan:" in out and "held apart" in out


def test_search_space() -> None:
    c = cfg(search={"sampler": "gp", "seed": 3, "space": {
        "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "model": ["mlp", "lstm"],
        "norm": "layer", "layers": {"low": 1, "high": 3}, "bagging": [True, False]}})
    sp = c.search.space
    assert c.search.sampler == "gp" and sp is not None
    assert (sp["lr"].kind, sp["lr"].log, sp["lr"].role) == ("float", True, "member")
    assert sp["model"].choices == ("mlp", "lstm") and sp["model"].role == "population"
    assert sp["norm"].kind == "fixed" and sp["layers"].kind == "int"
    import optuna.distributions as d

    dist = sp.distributions()
    assert dist["lr"] == d.FloatDistribution(1e-4, 1e-1, log=True)
    assert dist["layers"] == d.IntDistribution(1, 3)
    assert dist["norm"] == d.CategoricalDistribution(["layer"])


@pytest.mark.parametrize("space, message", [
    ({"lrr": 0.1}, r"c.toml: unknown key 'lrr' in \[search.space\]; did you mean 'lr'\?"),
    ({"model": ["mlp", "transformer"]}, r"model: 'transformer' is not allowed; choose from "
                                        r"mlp, cnn, lstm, gru"),
    ({"lr": {"low": 0.1, "high": 0.01}}, r"lr: low must be below high, got low = 0.1"),
    ({"weight_decay": {"low": 0, "high": 0.1, "log": True}}, r"a log range needs low > 0"),
    ({"dropout": 1.0}, r"dropout must be >= 0 and < 1, got 1.0"),
    ({"width": {"low": 8, "hihg": 64}}, r"unknown range key 'hihg'; did you mean 'high'\?"),
    ({"layers": 1.5}, r"layers must be a whole number, got 1.5"),
    ({"optimizer": []}, r"optimizer = \[\] has no choices"),
    ({"norm": {"low": 1, "high": 2}}, r"norm takes a value or a list of choices, not a range"),
    ({"model": ["mlp", "cnn"], "hidden_size": 8},
     r"\[search.space\] hidden_size applies only to model = lstm or gru, which this space never "
     r"proposes \(model: mlp, cnn\); remove hidden_size or add one of those to model"),
    ({"momentum": 0.9}, r"momentum applies only to optimizer = sgd, momentum, nesterov or "
                        r"rmsprop, which this space never proposes \(optimizer: not searched, "
                        r"so adam\)"),
])
def test_bad_search_space(space: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        cfg(search={"space": space})
