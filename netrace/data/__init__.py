"""Leak-free data: sources, recipes, windows, splits in time with embargo, and preprocessing
fitted on training parts only. The test part is held apart in a :class:`Holdout`."""

from __future__ import annotations

from netrace.data._checks import data_warnings
from netrace.data._dataset import (
    MIN_EVAL,
    MIN_TRAIN,
    DevData,
    Fold,
    FoldData,
    FoldScaling,
    Holdout,
    Prepared,
    Rows,
    SeriesScaling,
    TestData,
    load_rows,
    prepare,
)
from netrace.data._inspect import plan_rows, plan_text, summary_text
from netrace.data._preprocess import FittedPreprocessor, Preprocessor, SeriesFittedPreprocessor
from netrace.data._recipes import FEATURE_RECIPES, TARGET_RECIPES
from netrace.data._settings import DataSettings
from netrace.data._sources import load_source, read_table
from netrace.data._splits import (
    DateSplit,
    HoldoutSplit,
    KFold,
    PurgedKFold,
    Splitter,
    WalkForward,
    min_embargo,
    poisson_weights,
    split_test,
    split_test_dates,
)

__all__ = [
    "FEATURE_RECIPES",
    "MIN_EVAL",
    "MIN_TRAIN",
    "TARGET_RECIPES",
    "DataSettings",
    "DateSplit",
    "DevData",
    "FittedPreprocessor",
    "Fold",
    "FoldData",
    "FoldScaling",
    "Holdout",
    "HoldoutSplit",
    "KFold",
    "Prepared",
    "Preprocessor",
    "PurgedKFold",
    "SeriesFittedPreprocessor",
    "SeriesScaling",
    "Splitter",
    "TestData",
    "WalkForward",
    "data_warnings",
    "load_source",
    "min_embargo",
    "plan_rows",
    "plan_text",
    "poisson_weights",
    "prepare",
    "read_table",
    "Rows",
    "load_rows",
    "split_test",
    "split_test_dates",
    "summary_text",
]
