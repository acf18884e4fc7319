"""A rules file of one's own: its format, its errors, and how profiles share the series."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.signals import MetricKind, RulesError, SignalRules, SignalStage

T0 = 1_700_000_000_000
MINE = """
profiles:
  - name: shop
    match: '{__name__=~"shop_.+|node_load1"}'
    signals:
      - record: basket_conversion
        expr: sum(shop_orders_total) / sum(shop_baskets_total)
      - record: stock_used_fraction
        expr: 1 - shop_stock_free / shop_stock_capacity
        capacity: 1
    relabel:
      - source_labels: [__name__]
        regex: shop_queue_.+|node_load1
        action: keep
      - source_labels: [__name__]
        regex: shop_queue_(.+)
        target_label: __name__
        replacement: queue_$1
      - source_labels: [__name__]
        regex: queue_depth
        target_label: __capacity__
        replacement: "500"
shipped: [generic]
"""


def _rules(tmp_path: Path, text: str) -> SignalRules:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return SignalRules.load(path)


def _run(rules: SignalRules, *scrapes: dict[str, float]) -> dict[str, tuple[float, float]]:
    stage = SignalStage(rules)
    for k, samples in enumerate(scrapes):
        kinds = [MetricKind.UNKNOWN] * len(samples)
        stage.observe(T0 + k * 10_000, list(samples), np.array(list(samples.values())), kinds)
    (signals,) = stage.close().signals
    return {
        n: (v, c)
        for n, v, c in zip(
            signals.names, signals.values.tolist(), signals.capacities.tolist(), strict=True
        )
    }


def test_own_profiles_come_first_and_pick_the_shipped_ones_that_follow(tmp_path: Path) -> None:
    rules = _rules(tmp_path, MINE)
    assert [p.name for p in rules.profiles] == ["shop", "generic"]
    scrape = {
        "shop_orders_total": 10.0,
        "shop_baskets_total": 100.0,
        "shop_stock_free": 25.0,
        "shop_stock_capacity": 100.0,
        "shop_queue_depth": 120.0,
        "shop_cache_hits_total": 5.0,
        "node_load1": 0.5,
        "node_load5": 0.4,
        "temperature": 20.0,
    }
    later = {**scrape, "shop_orders_total": 12.0, "shop_baskets_total": 110.0}
    signals = _run(rules, scrape, later)
    nan = pytest.approx(math.nan, nan_ok=True)
    assert signals == {
        "basket_conversion": (pytest.approx(0.2), nan),
        "stock_used_fraction": (0.75, 1.0),
        "queue_depth": (120.0, 500.0),  # renamed and capacity-marked by relabelling
        "node_load1": (0.5, nan),
        # Not shop's: node_exporter is not in force, so generic keeps what is left.
        "node_load5": (0.4, nan),
        "temperature": (20.0, nan),
    }


def test_no_file_means_the_shipped_profiles() -> None:
    assert [p.name for p in SignalRules.load("").profiles] == [
        "node_exporter",
        "cadvisor",
        "red",
        "simulator",
        "generic",
    ]


def test_a_rule_that_cannot_be_evaluated_is_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    rules = _rules(
        tmp_path,
        """
profiles:
  - name: broken
    match: '{__name__=~"a|b"}'
    signals:
      - record: ratio
        expr: a / on() b
""",
    )
    stage = SignalStage(rules)
    names = ['a{x="1"}', 'a{x="2"}', "b"]
    stage.observe(T0, names, np.array([1.0, 2.0, 4.0]), [MetricKind.GAUGE] * 3)
    (signals,) = stage.close().signals
    assert signals.names == ['a{x="1"}', 'a{x="2"}', "b"]  # no relabel: its series, as they are
    ((profile, rule, why),) = signals.errors
    assert (profile, rule) == ("broken", "ratio") and "many-to-one" in why


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("profiles: [{name: x, colour: red}]", "unknown field(s) ['colour']"),
        ("profiles: [{match: up}]", "a profile needs a name"),
        ("profiles: [{name: x, match: 'sum(up)'}]", "match must be a selector"),
        ("profiles: [{name: x, signals: [{record: y, expr: 'rate(up[5m])'}]}]", "rate() is not"),
        ("profiles: [{name: x, signals: [{record: y, expr: '1 + 1'}]}]", "expr is a number"),
        ("profiles: [{name: x, signals: [{record: 'a b', expr: up}]}]", "must be a metric name"),
        ("profiles: [{name: x, signals: [{record: y, expr: up, capacity: lots}]}]", "number"),
        ("profiles: [{name: x, signals: [{record: y, expr: up, capacity: 0}]}]", "above 0"),
        (
            "profiles: [{name: x, relabel: [{target_label: __capacity__, replacement: big}]}]",
            "replacement: capacity must be a number",
        ),
        ("profiles: [{name: x, relabel: [{action: keep}]}]", "keep needs source_labels"),
        ("profiles: [{name: x}, {name: x}]", "repeated: ['x']"),
        ("profiles: [{name: generic}]", "repeated: ['generic']"),
        ("shipped: [node_exporter, windows]", "shipped must be a list drawn from"),
        ("rules: []", "a rules file is a mapping with 'profiles'"),
        ("profiles: {name: x}", "profiles must be a list"),
        ("profiles: [ {", "is not YAML at line 1, column 14: expected the node content"),
    ],
)
def test_a_bad_rules_file_is_refused_with_the_place_and_reason(
    tmp_path: Path, text: str, words: str
) -> None:
    with pytest.raises(RulesError) as error:
        _rules(tmp_path, text)
    assert words in str(error.value)
    assert "rules.yaml" in str(error.value) or "repeated" in words


def test_a_missing_rules_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the signal rules file"):
        SignalRules.load(tmp_path / "nowhere.yaml")


def test_the_readme_example_is_a_working_rules_file(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Real telemetry") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    rules = _rules(tmp_path, section[start : section.index("```", start)])
    scrape = {
        "shop_stock_free": 20.0,
        "shop_stock_capacity": 80.0,
        'shop_checkouts_total{result="ok"}': 100.0,
        'shop_checkouts_total{result="error"}': 10.0,
        "shop_queue_depth": 3.0,
        "shop_workers_busy": 12.0,
        "shop_logins": 5.0,
    }
    later = {**scrape, 'shop_checkouts_total{result="ok"}': 118.0}
    later['shop_checkouts_total{result="error"}'] = 12.0
    nan = pytest.approx(math.nan, nan_ok=True)
    assert _run(rules, scrape, later) == {
        "stock_used_fraction": (0.75, 1.0),
        "checkout_error_ratio": (pytest.approx(0.1), nan),
        "shop_queue_depth": (3.0, nan),
        "shop_workers_busy": (12.0, 32.0),
    }
