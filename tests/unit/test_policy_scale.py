"""Policies with many paths or many mistakes load in time linear in their size: the
checks look names and prefixes up rather than compare each with every other, and the
results are the ones the plain pairwise comparison gives."""

import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from app.errors import PolicyError
from app.policy import load_policy
from app.policy.loading import MAX_LISTED, MAX_SUGGESTIONS
from app.request_path import path_has_prefix

SEGMENTS = st.sampled_from(["a", "b", "ab"])
PATHS = (
    st.lists(SEGMENTS, min_size=0, max_size=3)
    .flatmap(lambda parts: st.sampled_from(["/" + "/".join(parts), "/" + "/".join(parts) + "/"]))
    .map(lambda path: path.replace("//", "/"))
)


def policy_yaml(datasets: dict[str, tuple[list[str], list[str]]]) -> str:
    quals = {q: {"title": q.upper(), "sources": ["self-asserted"]} for q in ("q1", "q2")}
    return yaml.safe_dump(
        {
            "version": 1,
            "qualifications": quals,
            "datasets": {
                name: {"paths": paths, "require": require}
                for name, (paths, require) in datasets.items()
            },
        }
    )


@given(
    st.lists(
        st.tuples(
            st.lists(PATHS, min_size=1, max_size=3, unique=True),
            st.sampled_from([["q1"], ["q2"], ["q1", "q2"]]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_nesting_warnings_are_those_of_the_pairwise_comparison(tmp_path_factory, spec):
    datasets = {f"d{i}": (paths, require) for i, (paths, require) in enumerate(spec)}
    if len({p for paths, _ in datasets.values() for p in paths}) < sum(
        len(paths) for paths, _ in datasets.values()
    ):
        return  # a prefix in two datasets is a problem, not a warning
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(policy_yaml(datasets))
    policy = load_policy(path)
    found = set()
    for warning in policy.warnings:
        match = re.match(r"'([^']*)' lies inside '([^']*)'", warning.message)
        if match:
            found.add(match.groups())
    expected = set()
    for name, (paths, require) in datasets.items():
        for prefix in paths:
            for other, (outers, other_require) in datasets.items():
                for outer in outers:
                    if (
                        other != name
                        and outer != prefix
                        and path_has_prefix(prefix, outer)
                        and set(require) - set(other_require)
                    ):
                        expected.add((prefix, outer))
    assert found == expected


def test_many_unknown_names_get_a_few_suggestions_and_a_short_list(write_policy):
    known = {f"qual{i}": {"title": f"T{i}", "sources": ["self-asserted"]} for i in range(200)}
    datasets = {f"d{i}": {"paths": [f"/d{i}/"], "require": [f"qaul{i}"]} for i in range(100)}
    text = yaml.safe_dump({"version": 1, "qualifications": known, "datasets": datasets})
    with pytest.raises(PolicyError) as raised:
        load_policy(write_policy(text))
    problems = [p.message for p in raised.value.problems if "unknown qualification" in p.message]
    assert len(problems) == 100
    assert sum("did you mean" in message for message in problems) == MAX_SUGGESTIONS
    assert all(f"and {200 - MAX_LISTED} more" in message for message in problems)


def test_a_nested_prefix_is_found_among_thousands(write_policy):
    quals = {q: {"title": q.upper(), "sources": ["self-asserted"]} for q in ("q1", "q2")}
    datasets = {f"d{i}": {"paths": [f"/data/{i}/"], "require": ["q1"]} for i in range(3000)}
    datasets["inner"] = {"paths": ["/data/7/inner/"], "require": ["q1", "q2"]}
    text = yaml.safe_dump({"version": 1, "qualifications": quals, "datasets": datasets})
    policy = load_policy(write_policy(text))
    nesting = [w.message for w in policy.warnings if "lies inside" in w.message]
    assert nesting == [
        "'/data/7/inner/' lies inside '/data/7/' (dataset 'd7'), which does not require q2: "
        "a request judged under the shorter prefix needs less"
    ]
