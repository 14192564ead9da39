"""Property: whatever JSON ORCID's schema lets through, we never allow on doubt.

Hypothesis writes qualification items in the shape of qualification-3.0.xsd and
common-3.0.xsd, every optional member absent, null, well formed or subtly wrong, and
the invariant is checked against an oracle written from ORCID's JSON directly (not from
our parser's model): a decision is "allowed" only when, for every requirement, one item
parsed in full, came from a trusted source, matched the rule and is valid today.
"""

from __future__ import annotations

import datetime as dt
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.decision import decide
from app.orcid_id import is_valid_orcid_id
from app.policy import load_policy
from app.qualifications import Qualification, read_item

RESEARCHER = "0000-0002-1825-0097"
OTHER = "0000-0001-5109-3700"
UKDS = "APP-UKDS000000000001"
OWN = "APP-GATEKEEPER000001"
UNTRUSTED = "APP-UNTRUSTED0000001"
TODAY = dt.date(2026, 6, 15)

POLICY = f"""
version: 1
sources:
  ukds: {{name: UK Data Service, client_ids: [{UKDS}]}}
qualifications:
  srt:
    title: Safe Researcher Training
    organization: https://ror.org/05x6aa123
    sources: [ukds, self-issued]
  hsr:
    external_id: {{type: other-id, value: HSR-1}}
    sources: [self-asserted]
datasets:
  a: {{paths: [/a/], require: [srt]}}
  b: {{paths: [/b/], require: [hsr]}}
  ab: {{paths: [/ab/], require: [srt, hsr]}}
"""

# --- generating ORCID JSON ---------------------------------------------------------

ABSENT = object()  # the member is left out of the object altogether


def obj(**members):
    return st.fixed_dictionaries(
        {}, optional={k.replace("_", "-"): v for k, v in members.items()}
    ).map(lambda d: {k: v for k, v in d.items() if v is not ABSENT})


def wrapped(values):
    return st.one_of(st.none(), st.builds(lambda v: {"value": v}, values), values)


identifiers = st.sampled_from(
    [UKDS, OWN, UNTRUSTED, RESEARCHER, OTHER, "APP-UKDS", "0000-0002-1825-0098", "", None, 7]
)


@st.composite
def references(draw):
    """``{"uri", "path", "host"}``, each member optional (common-3.0.xsd orcid-id, client-id)."""
    if draw(st.booleans()):
        return None
    ref = {}
    path = draw(identifiers)
    if draw(st.booleans()):
        ref["path"] = path
    if draw(st.booleans()):
        same = draw(st.booleans())
        segment = path if same else draw(identifiers)
        kind = "client/" if isinstance(segment, str) and segment.startswith("APP-") else ""
        scheme = draw(
            st.sampled_from(
                [
                    "https://orcid.org/",
                    "https://sandbox.orcid.org/",
                    "http://orcid.org/",
                    "urn:",
                    "https://evil.example/",
                    "https://notorcid.org/",
                ]
            )
        )
        ref["uri"] = None if segment is None else f"{scheme}{kind}{segment}"
    if draw(st.booleans()):
        ref["host"] = draw(
            st.sampled_from(["orcid.org", "sandbox.orcid.org", None, "evil.example"])
        )
    return ref


sources = st.one_of(
    st.none(),
    st.builds(
        lambda so, sc, ao, ac, name: {
            k: v
            for k, v in {
                "source-orcid": so,
                "source-client-id": sc,
                "source-name": name,
                "assertion-origin-orcid": ao,
                "assertion-origin-client-id": ac,
            }.items()
            if v is not ABSENT
        },
        st.one_of(st.just(ABSENT), references()),
        st.one_of(st.just(ABSENT), references()),
        st.one_of(st.just(ABSENT), st.just(None), references()),
        st.one_of(st.just(ABSENT), st.just(None), references()),
        st.sampled_from([ABSENT, None, {"value": "UK Data Service"}]),
    ),
)

date_parts = st.sampled_from(
    [
        "2020",
        "2026",
        "2030",
        "1899",
        "2101",
        "06",
        "6",
        "13",
        "00",
        "15",
        "31",
        "٢٠٢٥",
        " 2026",
        2026,
    ]
)
fuzzy_dates = st.one_of(
    st.none(),
    st.just(ABSENT),
    obj(
        year=st.one_of(st.just(ABSENT), wrapped(date_parts)),
        month=st.one_of(st.just(ABSENT), wrapped(date_parts)),
        day=st.one_of(st.just(ABSENT), wrapped(date_parts)),
    ),
)

organizations = st.one_of(
    st.none(),
    st.just(ABSENT),
    obj(
        name=st.sampled_from(["UK Data Service", None]),
        address=st.sampled_from([None, {"city": None, "region": None, "country": None}]),
        disambiguated_organization=st.one_of(
            st.none(),
            obj(
                disambiguated_organization_identifier=st.sampled_from(
                    [
                        "https://ror.org/05x6aa123",
                        "05x6aa123",
                        " https://ror.org/05X6AA123/ ",
                        "https://ror.org/05x6aa999",
                        "grid.05x6aa123",
                        None,
                    ]
                ),
                disambiguation_source=st.sampled_from(["ROR", " ror ", "GRID", "RINGGOLD", None]),
            ),
        ),
    ),
)

external_ids = st.one_of(
    st.none(),
    st.just(ABSENT),
    st.builds(
        lambda items: {"external-id": items},
        st.lists(
            obj(
                external_id_type=st.sampled_from(["other-id", "OTHER-ID", "uri", None]),
                external_id_value=st.sampled_from(["HSR-1", " HSR-1 ", "hsr-1", None]),
                external_id_relationship=st.sampled_from(
                    ["self", "part-of", "version-of", "SELF", None]
                ),
            ),
            max_size=2,
        ),
    ),
)


def ref(identifier):
    kind = "client/" if identifier.startswith("APP-") else ""
    return {"uri": f"https://orcid.org/{kind}{identifier}", "path": identifier, "host": "orcid.org"}


def good_item(kind: str, put_code: int) -> dict:
    """A qualification that counts: a trusted Safe Researcher Training, or a self-asserted HSR."""
    writer = {"source-client-id": ref(UKDS)} if kind == "srt" else {"source-orcid": ref(RESEARCHER)}
    return {
        "put-code": put_code,
        "role-title": "Safe Researcher Training" if kind == "srt" else "Health research",
        "source": {
            "source-orcid": None,
            "source-client-id": None,
            "source-name": {"value": "UK Data Service"},
            "assertion-origin-orcid": None,
            "assertion-origin-client-id": None,
            "assertion-origin-name": None,
            **writer,
        },
        "start-date": {"year": {"value": "2025"}, "month": {"value": "01"}, "day": None},
        "end-date": {"year": {"value": "2027"}, "month": None, "day": None},
        "organization": {
            "name": "UK Data Service",
            "address": {"city": "Colchester", "region": None, "country": "GB"},
            "disambiguated-organization": {
                "disambiguated-organization-identifier": "https://ror.org/05x6aa123",
                "disambiguation-source": "ROR",
            },
        },
        "external-ids": {
            "external-id": [
                {
                    "external-id-type": "other-id",
                    "external-id-value": "HSR-1",
                    "external-id-relationship": "self",
                }
            ]
        }
        if kind == "hsr"
        else None,
        "created-date": {"value": 1735689600000},
        "visibility": "public",
    }


@st.composite
def items(draw, put_code):
    """A good item with a few members (about one in four) swapped for anything the schema
    shape allows or a subtle break of it."""
    item = good_item(draw(st.sampled_from(["srt", "hsr"])), put_code)
    hostile = {
        "put-code": st.sampled_from([None, str(put_code), "٣", True, -1, ABSENT]),
        "role-title": st.sampled_from(
            ["  safe researcher  TRAINING", "Other", None, ABSENT, ["Safe Researcher Training"]]
        ),
        "start-date": fuzzy_dates,
        "end-date": fuzzy_dates,
        "organization": organizations,
        "external-ids": external_ids,
        "created-date": st.sampled_from([None, ABSENT, {"value": "yesterday"}]),
    }
    for key, strategy in hostile.items():
        if draw(st.integers(0, 3)) == 0:
            item[key] = draw(strategy)
    if draw(st.integers(0, 2)) == 0:
        item["source"] = draw(sources)
    elif isinstance(item["source"], dict):
        for key in (
            "source-orcid",
            "source-client-id",
            "assertion-origin-orcid",
            "assertion-origin-client-id",
        ):
            if draw(st.integers(0, 5)) == 0:
                item["source"][key] = draw(st.one_of(st.just(ABSENT), references()))
    if isinstance(item.get("source"), dict):
        item["source"] = {k: v for k, v in item["source"].items() if v is not ABSENT}
    return {k: v for k, v in item.items() if v is not ABSENT}


# --- the oracle, from the JSON -----------------------------------------------------


def ref_identifier(ref, pattern):
    """'none', or the identifier, or 'bad': the rule written in the issue, not our parser."""
    if ref is None:
        return "none"
    path, uri, host = ref.get("path"), ref.get("uri"), ref.get("host")
    last = uri.rstrip("/").rsplit("/", 1)[-1] if isinstance(uri, str) else None
    # The XSD's orcid-uri and client-uri: https on an ORCID host.
    if uri is not None and not (
        isinstance(uri, str) and re.match(r"https://([^/]*\.)?orcid\.org/", uri, re.IGNORECASE)
    ):
        return "bad"
    if host is not None and not (
        isinstance(host, str) and re.fullmatch(r"([^/]*\.)?orcid\.org", host, re.IGNORECASE)
    ):
        return "bad"
    value = path if path is not None else last
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        return "bad"
    if last is not None and last != value:
        return "bad"
    if re.fullmatch(ORCID_FORM, value) and not is_valid_orcid_id(value):
        return "bad"
    return value


ORCID_FORM = r"[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X]"
# common-3.0.xsd client-path: a legacy client's ID has the iD's shape (and check digit).
CLIENT_FORM = rf"APP-[0-9A-Za-z]{{16}}|{ORCID_FORM}"


def source_of(item):
    source = item.get("source")
    if not isinstance(source, dict):
        return None
    refs = {
        key: ref_identifier(source.get(key), form)
        for key, form in (
            ("source-orcid", ORCID_FORM),
            ("source-client-id", CLIENT_FORM),
            ("assertion-origin-orcid", ORCID_FORM),
            ("assertion-origin-client-id", CLIENT_FORM),
        )
    }
    if "bad" in refs.values():
        return None
    # Each pair is an XSD choice: both at once names nobody for sure.
    for pair in (
        ("source-orcid", "source-client-id"),
        ("assertion-origin-orcid", "assertion-origin-client-id"),
    ):
        if "none" not in (refs[pair[0]], refs[pair[1]]):
            return None
    if refs["source-orcid"] == refs["source-client-id"] == "none":
        return None
    return refs


def trusted_for_srt(item) -> bool:
    refs = source_of(item)
    if refs is None or refs["source-orcid"] != "none":
        return False
    writer = refs["source-client-id"]
    if refs["assertion-origin-orcid"] != "none":
        return False
    origin = refs["assertion-origin-client-id"]
    if writer == OWN:
        return origin == "none"
    return writer == UKDS and origin in ("none", UKDS)


def identified(item) -> bool:
    """``self-asserted`` takes an item from any source ORCID identifies, never an unknown one."""
    return source_of(item) is not None


def srt_matches(item) -> bool:
    title = item.get("role-title")
    if (
        not isinstance(title, str)
        or " ".join(title.split()).casefold() != "safe researcher training"
    ):
        return False
    org = item.get("organization") or {}
    dis = org.get("disambiguated-organization") or {}
    ident, source = (
        dis.get("disambiguated-organization-identifier"),
        dis.get("disambiguation-source"),
    )
    if not (isinstance(ident, str) and isinstance(source, str)) or source.strip().upper() != "ROR":
        return False
    ident = ident.strip().lower().removeprefix("https://ror.org/").rstrip("/")
    return ident == "05x6aa123"


def hsr_matches(item) -> bool:
    ext = (item.get("external-ids") or {}).get("external-id") or []
    return any(
        (e.get("external-id-type") or "").casefold() == "other-id"
        and (e.get("external-id-value") or "").strip() == "HSR-1"
        and e.get("external-id-relationship") == "self"
        for e in ext
    )


def date_bounds(date):
    """(first day, last day) a date covers, None for no date, or 'bad'."""
    if date is None:
        return None
    if not date:
        return "bad"  # ORCID writes a date's members, null or not
    parts = {}
    for name in ("year", "month", "day"):
        part = date.get(name)
        if part is None:
            parts[name] = None
            continue
        text = part.get("value") if isinstance(part, dict) else None
        if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,4}", text):
            return "bad"
        parts[name] = int(text)
    year, month, day = parts["year"], parts["month"], parts["day"]
    if year is None:
        return None if month is None and day is None else "bad"
    if not 1900 <= year <= 2100 or (day is not None and month is None):
        return "bad"
    try:
        if day is not None:
            return dt.date(year, month, day), dt.date(year, month, day)
        if month is not None:
            first = dt.date(year, month, 1)
            return first, (first.replace(day=28) + dt.timedelta(days=4)).replace(
                day=1
            ) - dt.timedelta(days=1)
        return dt.date(year, 1, 1), dt.date(year, 12, 31)
    except ValueError:
        return "bad"


def valid_today(item) -> bool:
    start, end = date_bounds(item.get("start-date")), date_bounds(item.get("end-date"))
    if "bad" in (start, end):
        return False
    return (start is None or start[0] <= TODAY) and (end is None or TODAY <= end[1])


def counts(item, rule) -> bool:
    if not isinstance(read_item(item), Qualification):
        return False  # never fully parsed
    if not valid_today(item):
        return False
    if rule == "srt":
        return srt_matches(item) and trusted_for_srt(item)
    return hsr_matches(item) and identified(item)


# --- the property --------------------------------------------------------------------

POLICY_CACHE: dict = {}


def policy(tmp_path_factory):
    if "policy" not in POLICY_CACHE:
        path = tmp_path_factory.mktemp("policy") / "policy.yaml"
        path.write_text(POLICY)
        POLICY_CACHE["policy"] = load_policy(path)
    return POLICY_CACHE["policy"]


@st.composite
def records(draw):
    count = draw(st.integers(1, 4))
    return [draw(items(put_code)) for put_code in range(1, count + 1)]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records())
def test_no_decision_allows_without_a_trusted_valid_fully_parsed_item_per_requirement(
    tmp_path_factory, record
):
    loaded = policy(tmp_path_factory)
    read = [read_item(item) for item in record]
    now = dt.datetime.combine(TODAY, dt.time(12), tzinfo=dt.UTC)
    for name, rules in (("a", ["srt"]), ("b", ["hsr"]), ("ab", ["srt", "hsr"])):
        decision = decide(
            loaded, loaded.dataset(name), read, orcid=RESEARCHER, now=now, own_client_id=OWN
        )
        expected = all(any(counts(item, rule) for item in record) for rule in rules)
        assert decision.allowed == expected, (name, record)
