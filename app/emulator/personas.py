"""The emulator's fixtures: registered OAuth clients and researcher personas, from YAML.

Dates in a fixture may be relative (``today``, ``+1y``, ``-30d``, ``-2m``, ``+2w``),
resolved against today's UTC date when the file is loaded, so fixtures never rot;
literal ``2025``, ``2025-06`` and ``2025-06-30`` are kept at their precision.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import yaml

DEFAULT_FIXTURES = Path(__file__).parent / "fixtures" / "personas.yaml"

STATUSES = ("active", "unclaimed", "locked", "deactivated", "deprecated")
VISIBILITIES = ("public", "limited", "private")
RELATIONSHIPS = ("self", "part-of", "version-of", "funded-by")
ANY_LOOPBACK = "any-loopback"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_ORCID_ID = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]\Z")
_CLIENT_ID = re.compile(r"^APP-[0-9A-Za-z]{16}\Z")  # common-3.0.xsd client-path
_RELATIVE = re.compile(r"^(?:today|([+-])(\d+)([dwmy]))\Z")
_LITERAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?\Z")


class FixtureError(ValueError):
    """A fixture file is unusable; ``problems`` lists every problem found, each located."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# --- ORCID iDs ----------------------------------------------------------------------------


def orcid_check_digit(first15: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 15 digits of an ORCID iD."""
    total = 0
    for digit in first15:
        total = (total + int(digit)) * 2
    result = (12 - total % 11) % 11
    return "X" if result == 10 else str(result)


def is_orcid_id(value: str) -> bool:
    """Whether ``value`` is a bare ORCID iD with a correct check digit."""
    if not isinstance(value, str) or not _ORCID_ID.match(value):
        return False
    digits = value.replace("-", "")
    return orcid_check_digit(digits[:15]) == digits[15]


# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartialDate:
    """An ORCID fuzzy date: a year, a year and month, or a full date."""

    year: int
    month: int | None = None
    day: int | None = None

    @classmethod
    def of(cls, day: dt.date) -> PartialDate:
        return cls(day.year, day.month, day.day)

    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month or 1, self.day or 1)


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_secret: str
    name: str
    member: bool
    redirect_uris: tuple[str, ...] | None  # None: any loopback URI
    # Given on the command line (--redirect-uri), accepted besides the registered ones.
    extra_redirect_uris: tuple[str, ...] = ()

    def accepts_redirect(self, uri: str) -> bool:
        if uri in self.extra_redirect_uris:
            return True
        if self.redirect_uris is None:
            return is_loopback_url(uri)
        return uri in self.redirect_uris


@dataclass(frozen=True, slots=True)
class Name:
    given: str
    family: str | None = None
    credit: str | None = None
    visibility: str = "public"

    @property
    def display(self) -> str:
        """The name ORCID shows: the credit name if there is one, else given and family."""
        return self.credit or " ".join(p for p in (self.given, self.family) if p)


@dataclass(frozen=True, slots=True)
class Organization:
    name: str
    id: str | None = None
    source: str | None = None  # ROR, GRID, RINGGOLD, FUNDREF or LEI
    city: str | None = None
    region: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class ExternalId:
    type: str
    value: str
    url: str | None = None
    relationship: str = "self"


@dataclass(frozen=True, slots=True)
class Source:
    """Who added an item, already resolved to iDs and names (see orcid-api.md §6)."""

    orcid: str | None = None
    client_id: str | None = None
    name: str | None = None
    origin_orcid: str | None = None
    origin_client_id: str | None = None
    origin_name: str | None = None


@dataclass(frozen=True, slots=True)
class Qualification:
    put_code: int
    title: str | None
    organization: Organization | None
    start: PartialDate | None
    end: PartialDate | None
    url: str | None
    external_ids: tuple[ExternalId, ...]
    source: Source
    visibility: str
    created: dt.date | dt.datetime
    department: str | None = None
    # When it last changed (an update through the API); None: when it was created.
    modified: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Persona:
    key: str
    orcid: str
    name: Name
    status: str
    qualifications: tuple[Qualification, ...]
    primary: str | None = None  # the iD a deprecated record was merged into
    mfa: bool = False  # signs in with two-factor authentication: ID tokens say amr "mfa"
    # The researcher's default visibility for activities: what an item added through the
    # API gets, whatever it asked for (AffiliationsManagerImpl.setIncomingWorkPrivacy).
    default_visibility: str = "public"

    def qualification(self, put_code: int) -> Qualification | None:
        return next((q for q in self.qualifications if q.put_code == put_code), None)


@dataclass(frozen=True, slots=True)
class Fixtures:
    clients: dict[str, Client]
    personas: tuple[Persona, ...]
    # Clients ORCID flags isUserOBOEnabled (search-and-link wizards): every item one of
    # them wrote reads with the record holder as assertion-origin-orcid.
    user_obo_clients: frozenset[str] = frozenset()

    def persona(self, key_or_orcid: str) -> Persona | None:
        """The persona with this key or iD."""
        return next(
            (p for p in self.personas if key_or_orcid in (p.key, p.orcid)),
            None,
        )


# --- loading ------------------------------------------------------------------------------


def load_fixtures(path: str | Path | None = None, *, today: dt.date | None = None) -> Fixtures:
    """Read clients and personas from a YAML file (the shipped default when ``path`` is None).

    :raises FixtureError: listing every problem in the file.
    """
    path = Path(path) if path is not None else DEFAULT_FIXTURES
    today = today or dt.datetime.now(dt.UTC).date()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FixtureError([f"{path}: {exc}"]) from None
    if not isinstance(data, dict):
        raise FixtureError([f"{path}: expected a mapping with 'clients' and 'personas'"])
    problems: list[str] = []
    unknown = sorted(data.keys() - {"clients", "personas", "user_obo_clients"})
    problems += [f"unknown key '{k}'" for k in unknown]
    clients = parse_clients(data.get("clients") or [], problems)
    personas = _personas(data.get("personas") or [], today, problems)
    user_obo = _client_ids(data.get("user_obo_clients") or [], "user_obo_clients", problems)
    if problems:
        raise FixtureError([f"{path}: {p}" for p in problems])
    return Fixtures(clients=clients, personas=personas, user_obo_clients=user_obo)


def _client_ids(entries, where: str, problems: list[str]) -> frozenset[str]:
    if not isinstance(entries, list) or not all(
        isinstance(e, str) and _CLIENT_ID.match(e) for e in entries
    ):
        problems.append(f"{where}: expected a list of client ids (APP- and 16 letters or digits)")
        return frozenset()
    return frozenset(entries)


def parse_clients(entries, problems: list[str]) -> dict[str, Client]:
    """Parse client entries (as in the fixture file), appending problems to ``problems``."""
    clients: dict[str, Client] = {}
    if not isinstance(entries, list):
        problems.append("clients: expected a list")
        return clients
    for index, entry in enumerate(entries):
        where = f"clients[{index}]"
        try:
            client = _client(entry, where)
        except FixtureError as exc:
            problems.extend(exc.problems)
            continue
        if client.client_id in clients:
            problems.append(f"{where}: client_id {client.client_id} is listed twice")
        clients[client.client_id] = client
    return clients


def _client(entry, where: str) -> Client:
    entry = _mapping(
        entry,
        where,
        required={"client_id", "client_secret", "redirect_uris"},
        optional={"name", "member"},
    )
    member = entry.get("member", True)
    if not isinstance(member, bool):
        raise FixtureError([f"{where}.member: expected true or false"])
    uris = entry["redirect_uris"]
    if uris == ANY_LOOPBACK:
        redirect_uris = None
    elif isinstance(uris, list) and uris and all(isinstance(u, str) for u in uris):
        redirect_uris = tuple(uris)
    else:
        raise FixtureError([f"{where}.redirect_uris: expected a list of URIs or '{ANY_LOOPBACK}'"])
    return Client(
        client_id=_string(entry["client_id"], f"{where}.client_id"),
        client_secret=_string(entry["client_secret"], f"{where}.client_secret"),
        name=_string(entry.get("name", entry["client_id"]), f"{where}.name"),
        member=member,
        redirect_uris=redirect_uris,
    )


def _personas(entries, today: dt.date, problems: list[str]) -> tuple[Persona, ...]:
    if not isinstance(entries, list):
        problems.append("personas: expected a list")
        return ()
    personas: list[Persona] = []
    for index, entry in enumerate(entries):
        where = f"personas[{index}]"
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            where = f"personas[{entry['key']}]"
        try:
            personas.append(_persona(entry, where, today, problems))
        except FixtureError as exc:
            problems.extend(exc.problems)
    _check_unique(personas, problems)
    return tuple(_resolve_primary(p, personas, problems) for p in personas)


def _persona(entry, where: str, today: dt.date, problems: list[str]) -> Persona:
    entry = _mapping(
        entry,
        where,
        required={"key", "orcid", "name"},
        optional={"status", "primary", "qualifications", "mfa", "default_visibility"},
    )
    mfa = entry.get("mfa", False)
    if not isinstance(mfa, bool):
        raise FixtureError([f"{where}.mfa: expected true or false"])
    orcid = _string(entry["orcid"], f"{where}.orcid")
    if not is_orcid_id(orcid):
        raise FixtureError(
            [f"{where}.orcid: {orcid!r} is not an ORCID iD with a valid check digit"]
        )
    name = _name(entry["name"], f"{where}.name")
    status = _choice(entry.get("status", "active"), STATUSES, f"{where}.status")
    primary = entry.get("primary")
    if (status == "deprecated") != (primary is not None):
        raise FixtureError(
            [f"{where}.primary: give the primary iD or key for a deprecated record, and only then"]
        )
    items = entry.get("qualifications") or []
    if not isinstance(items, list):
        raise FixtureError([f"{where}.qualifications: expected a list"])
    qualifications = []
    for index, item in enumerate(items):
        try:
            qualifications.append(
                _qualification(item, f"{where}.qualifications[{index}]", orcid, name, today)
            )
        except FixtureError as exc:
            problems.extend(exc.problems)
    return Persona(
        key=_string(entry["key"], f"{where}.key"),
        orcid=orcid,
        name=name,
        status=status,
        qualifications=tuple(qualifications),
        primary=primary,
        mfa=mfa,
        default_visibility=_choice(
            entry.get("default_visibility", "public"), VISIBILITIES, f"{where}.default_visibility"
        ),
    )


def _check_unique(personas: list[Persona], problems: list[str]) -> None:
    seen: dict[object, str] = {}
    for persona in personas:
        labels = [("key", persona.key), ("orcid", persona.orcid)]
        labels += [("put_code", q.put_code) for q in persona.qualifications]
        for label in labels:
            if label in seen:
                problems.append(
                    f"personas[{persona.key}]: {label[0]} {label[1]} is also used "
                    f"by personas[{seen[label]}]"
                )
            seen[label] = persona.key


def _resolve_primary(persona: Persona, personas: list[Persona], problems: list[str]) -> Persona:
    if persona.primary is None:
        return persona
    target = next((p for p in personas if persona.primary in (p.key, p.orcid)), None)
    if target is not None:
        primary = target.orcid
    elif is_orcid_id(str(persona.primary)):
        primary = persona.primary
    else:
        problems.append(
            f"personas[{persona.key}].primary: {persona.primary!r} is neither a "
            "persona nor an ORCID iD"
        )
        return persona
    return replace(persona, primary=primary)


def _name(value, where: str) -> Name:
    entry = _mapping(value, where, required={"given"}, optional={"family", "credit", "visibility"})
    return Name(
        given=_string(entry["given"], f"{where}.given"),
        family=_optional_string(entry.get("family"), f"{where}.family"),
        credit=_optional_string(entry.get("credit"), f"{where}.credit"),
        visibility=_choice(entry.get("visibility", "public"), VISIBILITIES, f"{where}.visibility"),
    )


def _qualification(value, where: str, owner: str, name: Name, today: dt.date) -> Qualification:
    entry = _mapping(
        value,
        where,
        required={"put_code", "source"},
        optional={
            "title",
            "organization",
            "department",
            "start",
            "end",
            "url",
            "external_ids",
            "visibility",
            "created",
        },
    )
    put_code = entry["put_code"]
    if isinstance(put_code, bool) or not isinstance(put_code, int) or put_code <= 0:
        raise FixtureError([f"{where}.put_code: expected a positive integer"])
    start = _optional_date(entry.get("start"), f"{where}.start", today)
    end = _optional_date(entry.get("end"), f"{where}.end", today)
    # ORCID refuses an end without a start (9050) and an end before the start (9055).
    if end is not None and start is None:
        raise FixtureError([f"{where}.end: an end date needs a start date"])
    if start and end and end.first_day() < start.first_day():
        raise FixtureError([f"{where}.end: the end date is before the start date"])
    created = entry.get("created")
    if created is None:
        created_day = start.first_day() if start else today
    else:
        created_day = resolve_date(created, today, f"{where}.created").first_day()
    external_ids = entry.get("external_ids") or []
    if not isinstance(external_ids, list):
        raise FixtureError([f"{where}.external_ids: expected a list"])
    return Qualification(
        put_code=put_code,
        title=_optional_string(entry.get("title"), f"{where}.title"),
        department=_optional_string(entry.get("department"), f"{where}.department"),
        organization=_organization(entry.get("organization"), f"{where}.organization"),
        start=start,
        end=end,
        url=_optional_string(entry.get("url"), f"{where}.url"),
        external_ids=tuple(
            _external_id(e, f"{where}.external_ids[{i}]") for i, e in enumerate(external_ids)
        ),
        source=_source(entry["source"], f"{where}.source", owner, name),
        visibility=_choice(entry.get("visibility", "public"), VISIBILITIES, f"{where}.visibility"),
        created=created_day,
    )


def _organization(value, where: str) -> Organization | None:
    # Since ORCID's 2025-08 schema change an item may have no organisation at all.
    if value is None:
        return None
    entry = _mapping(
        value, where, required={"name"}, optional={"id", "source", "city", "region", "country"}
    )
    org_id = _optional_string(entry.get("id"), f"{where}.id")
    source = entry.get("source")
    if source is None and org_id and org_id.startswith("https://ror.org/"):
        source = "ROR"
    return Organization(
        name=_string(entry["name"], f"{where}.name"),
        id=org_id,
        source=_optional_string(source, f"{where}.source"),
        city=_optional_string(entry.get("city"), f"{where}.city"),
        region=_optional_string(entry.get("region"), f"{where}.region"),
        country=_optional_string(entry.get("country"), f"{where}.country"),
    )


def _external_id(value, where: str) -> ExternalId:
    entry = _mapping(value, where, required={"type", "value"}, optional={"url", "relationship"})
    return ExternalId(
        type=_string(entry["type"], f"{where}.type"),
        value=_string(entry["value"], f"{where}.value"),
        url=_optional_string(entry.get("url"), f"{where}.url"),
        relationship=_choice(
            entry.get("relationship", "self"), RELATIONSHIPS, f"{where}.relationship"
        ),
    )


def _source(value, where: str, owner: str, name: Name) -> Source:
    """Resolve ``{self: true}``, ``{client_id, name}`` (plus ``origin_orcid``: an iD or
    ``self``) or ``{client_id, origin_client_id}`` into iDs and names."""
    entry = _mapping(
        value,
        where,
        required=set(),
        optional={"self", "client_id", "name", "origin_orcid", "origin_client_id", "origin_name"},
    )
    if entry.get("self") is True:
        if len(entry) > 1:
            raise FixtureError([f"{where}: 'self: true' takes no other keys"])
        return Source(orcid=owner, name=name.display)
    if "client_id" not in entry:
        raise FixtureError([f"{where}: give 'self: true' or a 'client_id'"])
    client_id = _string(entry["client_id"], f"{where}.client_id")
    origin_orcid = entry.get("origin_orcid")
    origin_name = _optional_string(entry.get("origin_name"), f"{where}.origin_name")
    if origin_orcid == "self":
        origin_orcid, origin_name = owner, origin_name or name.display
    elif origin_orcid is not None and not is_orcid_id(origin_orcid):
        raise FixtureError([f"{where}.origin_orcid: expected an ORCID iD or 'self'"])
    if origin_orcid and entry.get("origin_client_id"):
        raise FixtureError([f"{where}: give origin_orcid or origin_client_id, not both"])
    return Source(
        client_id=client_id,
        name=_optional_string(entry.get("name", client_id), f"{where}.name"),
        origin_orcid=origin_orcid,
        origin_client_id=_optional_string(
            entry.get("origin_client_id"), f"{where}.origin_client_id"
        ),
        origin_name=origin_name,
    )


# --- dates --------------------------------------------------------------------------------


def resolve_date(value, today: dt.date, where: str = "date") -> PartialDate:
    """A fixture date: relative (``today``, ``+1y``, ``-30d``, ``-2m``, ``+2w``) or literal.

    Relative dates become full dates; adding months keeps the day, or takes the month's
    last day when it is shorter (Jan 31 + 1m = Feb 28).

    :raises FixtureError: for anything else, or a year outside ORCID's 1900-2100.
    """
    # YAML reads 2025 as an int and 2025-06-30 as a date; 2025-06 stays a string.
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        result = PartialDate.of(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        result = PartialDate(value)
    elif isinstance(value, str) and (match := _RELATIVE.match(value.strip())):
        result = PartialDate.of(_shift(today, match))
    elif isinstance(value, str) and (match := _LITERAL.match(value.strip())):
        year, month, day = (int(g) if g else None for g in match.groups())
        try:
            dt.date(year, month or 1, day or 1)
        except ValueError:
            raise FixtureError([f"{where}: {value!r} is not a real date"]) from None
        result = PartialDate(year, month, day)
    else:
        hint = "try 2025-06-30, 2025-06, 2025, today, +1y, -30d, -2m or +2w"
        raise FixtureError([f"{where}: {value!r} is not a date ({hint})"])
    if not 1900 <= result.year <= 2100:
        raise FixtureError([f"{where}: ORCID only accepts years 1900 to 2100"])
    return result


def _shift(today: dt.date, match: re.Match) -> dt.date:
    if match.group(1) is None:
        return today
    amount = int(match.group(2)) * (1 if match.group(1) == "+" else -1)
    unit = match.group(3)
    if unit in "dw":
        return today + dt.timedelta(days=amount * (7 if unit == "w" else 1))
    months = today.year * 12 + today.month - 1 + amount * (12 if unit == "y" else 1)
    year, month = divmod(months, 12)
    month += 1
    return dt.date(year, month, min(today.day, calendar.monthrange(year, month)[1]))


def _optional_date(value, where: str, today: dt.date) -> PartialDate | None:
    return None if value is None else resolve_date(value, today, where)


# --- small checks -------------------------------------------------------------------------


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be a redirect URI (absolute http(s), no fragment), or None."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{uri!r} is not an absolute http(s) URL"
    if parts.fragment or uri.endswith("#"):
        return f"{uri!r} has a fragment, which a redirect URI may not have"
    return None


def is_loopback_url(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname in LOOPBACK_HOSTS


def _mapping(value, where: str, *, required: set[str], optional: set[str]) -> dict:
    if not isinstance(value, dict):
        raise FixtureError([f"{where}: expected a mapping"])
    problems = [f"{where}: '{k}' is missing" for k in sorted(required - value.keys())]
    problems += [f"{where}: unknown key '{k}'" for k in sorted(value.keys() - required - optional)]
    if problems:
        raise FixtureError(problems)
    return value


def _string(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FixtureError([f"{where}: expected a non-empty string"])
    return value


def _optional_string(value, where: str) -> str | None:
    return None if value is None else _string(value, where)


def _choice(value, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise FixtureError([f"{where}: expected one of {', '.join(choices)}, not {value!r}"])
    return value
