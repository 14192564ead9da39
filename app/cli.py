"""The ``gatekeeper`` command: check a policy, explain a decision.

Exit codes: 0 success (or allowed), 1 a failed check (or refused), 2 misuse (an
invalid iD, an unknown dataset, a broken policy), always one line, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

import click

from app.decision import decide, refuse_unreadable
from app.errors import (
    ConfigError,
    GatekeeperError,
    InvalidOrcidId,
    OrcidError,
    PolicyError,
    UnknownDataset,
)
from app.explain import explain_lines
from app.orcid_id import parse_orcid_id
from app.policy import Problem, load_policy
from app.printable import printable
from app.saved_record import SavedRecord, SavedRecordError
from app.settings import Settings


def echo_lines(lines, err: bool = False) -> None:
    """Print each line escaped, so no string inside a line can start another."""
    click.echo("\n".join(printable(line) for line in lines), err=err)


class Misuse(click.ClickException):
    """A user error that exits 2 with one line (click's UsageError adds a usage block)."""

    exit_code = 2

    def __init__(self, message: str):
        # A message may quote a saved record or a policy file: one escaped line.
        super().__init__(printable(message))


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise Misuse(exc.message) from None


def _policy(path):
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise Misuse(
            f"the policy at {path} is broken: {exc.message}; run 'gatekeeper policy check'"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-V", "--version", package_name="orcid-gatekeeper")
def main():
    """Gate restricted datasets on qualifications in researchers' ORCID records."""


@main.group()
def policy():
    """Work with trust policies."""


@policy.command("check")
@click.argument("paths", nargs=-1)
def policy_check(paths):
    """Validate the policy at each of PATHS (default: POLICY_PATH, else policies/).

    Each path is one policy (a file, or a directory whose *.yaml files are merged).
    Prints every problem as FILE:LINE: key: message and exits 1 when there are any;
    risky but legal choices are printed as "warning: FILE:LINE: key: message" (exit 0).
    """
    broken = False
    for path in paths or (_settings().policy_path,):
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            echo_lines(str(problem) for problem in exc.problems)
            count = len(exc.problems)
            echo_lines([f"{count} problem{'s' if count != 1 else ''} in {path}"], err=True)
            broken = True
            continue
        if loaded.warnings:
            echo_lines(f"warning: {warning}" for warning in loaded.warnings)
        echo_lines(
            [
                f"{path}: OK, {len(loaded.datasets)} datasets, {len(loaded.qualifications)} "
                f"qualifications, {len(loaded.sources)} trusted sources (version {loaded.version})"
            ]
        )
    if broken:
        sys.exit(1)


@policy.command("test")
@click.argument("paths", nargs=-1)
@click.option(
    "--tests",
    "test_paths",
    multiple=True,
    help="A test file, or a directory of *.test.yaml files, instead of those beside each "
    "policy (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print every case's result as JSON.")
def policy_test(paths, test_paths, as_json):
    """Run the policy tests of each policy in PATHS (default: POLICY_PATH, else policies/).

    A policy's tests are the *.test.yaml files in its directory (NAME.test.yaml beside a
    file NAME.yaml), or those --tests names. Prints each failing case with the decision's
    explanation and ends with "N passed, M failed". Exits 0 when every case passes, 1 when
    any fails, 2 for a broken policy or test file (every problem as FILE:LINE: key: message).
    """
    from pathlib import Path

    from app.policy.testing import files_beside, files_in, load_tests, run_tests

    today = dt.datetime.now(dt.UTC).date()
    problems, runs = [], []
    for path in paths or (_settings().policy_path,):
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        files = [f for t in test_paths for f in files_in(t)] if test_paths else files_beside(path)
        if not files:
            where = ", ".join(test_paths) if test_paths else path
            problems.append(
                Problem(
                    str(where), 1, "(tests)", "no *.test.yaml files: write one beside the policy"
                )
            )
            continue
        try:
            runs.append((loaded, load_tests([Path(f) for f in files], loaded, today)))
        except PolicyError as exc:
            problems.extend(exc.problems)
    if problems:
        echo_lines(str(problem) for problem in problems)
        count = len(problems)
        echo_lines([f"{count} problem{'s' if count != 1 else ''}: no test was run"], err=True)
        sys.exit(2)
    results = [(loaded, result) for loaded, files in runs for result in run_tests(loaded, files)]
    failed = [(loaded, r) for loaded, r in results if not r.passed]
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    if as_json:
        report = {
            "passed": len(results) - len(failed),
            "failed": len(failed),
            "cases": [r.to_dict() for _, r in results],
        }
        click.echo(json.dumps(report, indent=2, ensure_ascii=True))
        echo_lines([summary], err=True)
    else:
        for loaded, result in failed:
            case = result.case
            echo_lines([f"FAILED {case.file}:{case.line}: {case.label}: {result.why()}"])
            echo_lines(f"    {line}" for line in explain_lines(loaded, result.decision, "steward"))
        echo_lines([summary])
    sys.exit(1 if failed else 0)


def _record_reader(settings: Settings, record: str | None):
    """A saved record (``--record``), or ORCID read as the service reads it.

    :raises Misuse: for a saved record that cannot be read.
    """
    if record:
        try:
            return SavedRecord.from_file(record)
        except (SavedRecordError, InvalidOrcidId) as exc:
            raise Misuse(exc.message) from None
    from app.orcid_client import OrcidClient  # only the live path needs requests

    return OrcidClient.from_settings(settings)


def _decide_each(loaded, targets, reader, orcid: str, settings: Settings) -> list:
    """A decision for each dataset in ``targets``, from one read of the record (one that
    cannot be read refuses each, saying why).

    :raises Misuse: for a saved record that cannot be used.
    """
    now = dt.datetime.now(dt.UTC)
    try:
        items = reader.read_qualifications(
            orcid, lambda q: any(loaded.is_candidate(t, q) for t in targets)
        )
        return [
            decide(loaded, t, items, orcid=orcid, now=now, own_client_id=settings.orcid_client_id)
            for t in targets
        ]
    except SavedRecordError as exc:
        raise Misuse(exc.message) from None
    except OrcidError as exc:
        return [refuse_unreadable(loaded, t, orcid=orcid, error=exc, now=now) for t in targets]


@main.command()
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD or its URI.")
@click.option("--dataset", required=True, help="The dataset's name in the policy.")
@click.option(
    "--record",
    type=click.Path(dir_okay=False),
    help="A saved record (JSON) to read instead of the live ORCID API.",
)
@click.option("--policy", "policy_path", help="Policy file or directory (default: POLICY_PATH).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def explain(orcid, dataset, record, policy_path, as_json):
    """Decide whether ORCID iD may open DATASET, and say why.

    Exits 0 when access would be allowed, 1 when refused (also when the record could
    not be read), 2 for an invalid iD, an unknown dataset or a broken policy.
    """
    settings = _settings()
    loaded = _policy(policy_path or settings.policy_path)
    try:
        orcid = parse_orcid_id(orcid)
        target = loaded.dataset(dataset)
    except (InvalidOrcidId, UnknownDataset) as exc:
        raise Misuse(exc.message) from None
    reader = _record_reader(settings, record)
    [decision] = _decide_each(loaded, [target], reader, orcid, settings)
    if as_json:
        # ensure_ascii writes everything outside printable ASCII (C0, DEL, C1, bidi and
        # every other control) as a \u escape, so JSON needs no escaping of its own.
        click.echo(json.dumps(decision.to_dict(), indent=2, ensure_ascii=True))
    else:
        echo_lines(explain_lines(loaded, decision, audience="steward"))
    sys.exit(0 if decision.allowed else 1)


@main.command()
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD or its URI.")
@click.option(
    "--record",
    type=click.Path(dir_okay=False),
    help="A saved record (JSON) to read instead of the live ORCID API.",
)
@click.option("--policy", "policy_path", help="Policy file or directory (default: POLICY_PATH).")
@click.option("--json", "as_json", is_flag=True, help="One visa's claims per line, as JSON.")
def visas(orcid, record, policy_path, as_json):
    """The GA4GH visas a researcher would get now, decoded (nothing is signed).

    Decided afresh from ORCID (or --record), as the service would decide. Exits 0, 2 for
    misuse (an invalid iD, a broken policy, no PUBLIC_URL to name as the issuer).
    """
    from app.access import AccessChecker
    from app.cache import MemoryStore
    from app.passports import VisaSettings, visa_claims

    settings = _settings()
    loaded = _policy(policy_path or settings.policy_path)
    orcid = _orcid_or_misuse(orcid)
    if not settings.public_url:
        raise Misuse("PUBLIC_URL is not set: visas name it as their issuer")
    reader = _record_reader(settings, record)
    decisions = _decide_each(loaded, list(loaded.datasets.values()), reader, orcid, settings)
    now = decisions[0].decided_at if decisions else dt.datetime.now(dt.UTC)
    # The service's cache bounds, which cap each visa's expiry.
    bounds = AccessChecker(
        None,
        reader,
        MemoryStore(),
        refusal_ttl=settings.refusal_ttl,
        max_ttl=settings.decision_ttl,
        clock=lambda: now,
    )
    claims = visa_claims(
        loaded,
        decisions,
        orcid=orcid,
        settings=VisaSettings(
            settings.public_url.rstrip("/"), settings.orcid_base_url, settings.visa_lifetime
        ),
        cache_until=bounds.cache_until,
        now=now,
    )
    if not claims and not as_json:
        echo_lines([f"{orcid} would get no visa now"])
    for claim in claims:
        if as_json:
            click.echo(json.dumps(claim, ensure_ascii=True, sort_keys=True))
            continue
        visa = claim["ga4gh_visa_v1"]
        ends = dt.datetime.fromtimestamp(claim["exp"], dt.UTC)
        echo_lines(
            [
                f"{visa['type']} {visa['value']} (source {visa['source']}, by {visa['by']}) "
                f"until {_when(ends)}"
            ]
        )


@main.group()
def record():
    """Work with saved ORCID records (the files explain --record reads)."""


@record.command("save")
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD or its URI.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the record here (default: standard output).",
)
def record_save(orcid, output):
    """Save a researcher's live ORCID record: the summary and every qualification item.

    Reads ORCID_API_URL as explain does, and writes the saved-record format that
    `gatekeeper explain --record FILE` reads, so a policy can be tried on a real record.
    Exits 0 when saved, 1 when the record could not be read, 2 for an invalid iD.
    """
    from app.orcid_client import OrcidClient

    settings = _settings()
    try:
        orcid = parse_orcid_id(orcid)
    except InvalidOrcidId as exc:
        raise Misuse(exc.message) from None
    client = OrcidClient(
        settings.orcid_api_url,
        base_url=settings.orcid_base_url,
        client_id=settings.orcid_client_id,
        client_secret=settings.orcid_client_secret,
        # One read per item, one after another: more time than a decision's read.
        total_timeout=max(settings.orcid_timeout, 60.0),
        check_record_status=settings.orcid_check_record_status,
    )
    try:
        saved = _read_record(client, orcid)
    except OrcidError as exc:
        message = printable(f"could not read the ORCID record of {orcid}: {exc.message}")
        raise click.ClickException(message) from None
    finally:
        client.close()
    text = json.dumps(saved, indent=2, ensure_ascii=True) + "\n"
    if output:
        try:
            with open(output, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    else:
        click.echo(text, nl=False)
    count = len(saved["items"])
    echo_lines([f"saved {count} qualification{'s' if count != 1 else ''} of {orcid}"], err=True)


def _read_record(client, orcid: str) -> dict:
    """The raw summary and items of a record, through the client's bounded, retried reads.

    NOTE: the saved-record format keeps ORCID's JSON as it came, which the client's public
    read parses away, so this uses its request layer (deadline, retries, typed errors).

    :raises OrcidError: a typed subclass for each way the record can't be read.
    """
    import time

    from app.errors import AccessForbidden, RecordNotFound
    from app.qualifications import parse_summaries

    deadline = time.monotonic() + client.total_timeout
    bearer = client._client_token(deadline)
    if client.check_record_status:
        client._get_json(f"/{orcid}/person", bearer, deadline)  # a locked record raises
    summary = client._get_json(f"/{orcid}/qualifications", bearer, deadline)
    items = {}
    for entry in parse_summaries(summary):
        if entry.put_code is None or str(entry.put_code) in items:
            continue
        try:
            items[str(entry.put_code)] = client._get_json(
                f"/{orcid}/qualification/{entry.put_code}", bearer, deadline
            )
        except (RecordNotFound, AccessForbidden):
            continue  # deleted, or made non-public, between the two reads
    return {"orcid": orcid, "qualifications": summary, "items": items}


@main.group()
def decisions():
    """Cached decisions and the decision log (need REDIS_URL)."""


@decisions.command("revoke")
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD.")
def decisions_revoke(orcid):
    """Forget every cached decision about a researcher, in every worker within a second.

    Their next request is decided afresh from ORCID.
    """
    settings = _settings()
    try:
        orcid = parse_orcid_id(orcid)
    except InvalidOrcidId as exc:
        raise Misuse(exc.message) from None
    if not settings.redis_url:
        raise Misuse("REDIS_URL is not set: decisions live inside the service's own process")
    import redis

    from app.cache import NotReplicated, RedisStore

    try:
        count = RedisStore.from_url(settings.redis_url).forget_orcid(orcid)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis did not answer: {exc}") from None
    except NotReplicated as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {count} cached decision{'s' if count != 1 else ''} for {orcid}")


@decisions.command("writes")
@click.option("--orcid", "orcid", default=None, help="Only this researcher's.")
@click.option("--since", default="90d", show_default=True, help="How far back: 7d, 12h, a date.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def decisions_writes(orcid, since, as_json):
    """This service's writes to ORCID records (issued, renewed, withdrawn), newest first.

    Exits 0, 1 when Redis did not answer, 2 for misuse.
    """
    settings = _settings()
    orcid = _orcid_or_misuse(orcid) if orcid else None
    log = _decision_log(settings)
    from app.decision_log import DecisionLogUnavailable

    try:
        entries = log.writes(orcid=orcid, since=_since(since, "--since", dt.datetime.now(dt.UTC)))
    except DecisionLogUnavailable as exc:
        raise click.ClickException(exc.message) from None
    for entry in entries:
        if as_json:
            click.echo(json.dumps(entry.summary(), ensure_ascii=True))
            continue
        line = (
            f"{entry.at.isoformat(timespec='seconds')} {entry.kind} {entry.qualification} "
            f"{entry.orcid} put-code {entry.put_code} by {entry.by}"
        )
        if entry.visibility:
            line += f", visibility {entry.visibility}"
        if entry.valid_until:
            line += f", valid until {entry.valid_until}"
        echo_lines([line])


@main.group()
def sessions():
    """Researchers' sign-in sessions (need REDIS_URL)."""


@sessions.command("revoke")
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD.")
def sessions_revoke(orcid):
    """End every session of a researcher, in every worker within a second.

    Each browser they signed in with gets 401 from /auth and must sign in again. Their
    personal access tokens go on (``tokens revoke`` ends them), and their ORCID tokens
    are not revoked at ORCID (the researcher's Disconnect does that).
    """
    settings = _settings()
    try:
        orcid = parse_orcid_id(orcid)
    except InvalidOrcidId as exc:
        raise Misuse(exc.message) from None
    if not settings.redis_url:
        raise Misuse("REDIS_URL is not set: sessions live inside the service's own process")
    from app.cache import NotReplicated, RedisStore

    store = RedisStore.from_url(settings.redis_url)
    try:
        ended = store.take_sessions_of(orcid)
    except NotReplicated as exc:
        raise click.ClickException(f"ended {len(exc.taken)} session(s), but {exc}") from None
    if ended is None:
        raise click.ClickException("Redis did not answer: no session was ended")
    click.echo(f"ended {len(ended)} session{'s' if len(ended) != 1 else ''} of {orcid}")
    live = store.tokens_of(orcid)
    if live:
        # Said, not done: a steward who ends sessions may mean to leave scripts running.
        click.echo(
            f"{len(live)} personal access token{'s' if len(live) != 1 else ''} still "
            f"work{'' if len(live) != 1 else 's'}: gatekeeper tokens revoke --orcid {orcid}"
        )


@main.group()
def tokens():
    """Researchers' personal access tokens for scripts (need REDIS_URL)."""


def _access_tokens(settings: Settings):
    if not settings.redis_url:
        raise Misuse("REDIS_URL is not set: tokens live inside the service's own process")
    from app.access_tokens import AccessTokens
    from app.cache import RedisStore

    return AccessTokens(RedisStore.from_url(settings.redis_url))


@tokens.command("list")
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def tokens_list(orcid, as_json):
    """A researcher's live tokens: id, name, datasets, created, expires, last used.

    Never the tokens themselves: only their digests are kept. Exits 0, 1 when Redis did
    not answer, 2 for misuse.
    """
    settings = _settings()
    orcid = _orcid_or_misuse(orcid)
    listed = _access_tokens(settings).list(orcid)
    if listed is None:
        raise click.ClickException("Redis did not answer")
    for info in listed:
        datasets = list(info.record.datasets) if info.record.datasets is not None else None
        if as_json:
            entry = {
                "id": info.id,
                "name": info.record.name,
                "datasets": datasets,
                "created": info.created.isoformat(timespec="seconds"),
                "expires": info.expires.isoformat(timespec="seconds"),
                "last_used": info.used.isoformat(timespec="seconds") if info.used else None,
            }
            click.echo(json.dumps(entry, ensure_ascii=True))
            continue
        used = _when(info.used) if info.used else "never used"
        opens = ", ".join(datasets) if datasets is not None else "every dataset"
        echo_lines(
            [f"{info.id} {info.record.name!r} opens {opens}; expires {_when(info.expires)}; {used}"]
        )


@tokens.command("revoke")
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD.")
@click.option("--name", default=None, help="Only the tokens with this name (default: all).")
def tokens_revoke(orcid, name):
    """Revoke a researcher's personal access tokens: refused by every worker within a second.

    Exits 0 (also when none matched), 1 when Redis did not confirm it (it did not answer,
    or no replica confirmed it in time), 2 for misuse.
    """
    settings = _settings()
    orcid = _orcid_or_misuse(orcid)
    revoked = _access_tokens(settings).revoke(orcid, name=name)
    if revoked is None:
        raise click.ClickException(
            "Redis did not confirm it (it did not answer, or no replica confirmed it in "
            "time): try again"
        )
    which = f" named {name!r}" if name is not None else ""
    echo_lines([f"revoked {_plural(revoked, 'token')}{which} of {orcid}"])


# --- issuing: this service's own qualifications on researchers' records --------------


def _issuer(settings: Settings):
    """The Issuer a steward's command uses: tokens and the log in Redis, ORCID per settings."""
    if not settings.redis_url:
        raise Misuse(
            "REDIS_URL is not set: researchers' write permissions live inside the service's "
            "own process"
        )
    if not settings.write_token_keys:
        raise Misuse("WRITE_TOKEN_KEY is not set: no researcher's write permission can be read")
    if not settings.orcid_client_id:
        raise Misuse("ORCID_CLIENT_ID is not set: whose items count as ours is not known")
    from app.cache import RedisStore
    from app.decision_log import RedisDecisionLog
    from app.issuing import Issuer
    from app.orcid_client import OrcidClient
    from app.orcid_writer import OrcidWriter
    from app.write_tokens import WriteTokens

    store = RedisStore.from_url(settings.redis_url)
    return Issuer(
        reader=OrcidClient.from_settings(settings),
        writer=OrcidWriter(settings.orcid_api_url),
        tokens=WriteTokens(store, settings.write_token_keys),
        client_id=settings.orcid_client_id,
        decision_log=RedisDecisionLog.from_url(
            settings.redis_url, retention_days=settings.decision_log_retention
        ),
        forget_decisions=store.forget_decisions,  # False, not an exception, when unconfirmed
    )


def _issued_rule(settings: Settings, name: str):
    policy = _policy(settings.policy_path)
    rule = policy.qualifications.get(name)
    if rule is None:
        raise Misuse(f"the policy has no qualification {name!r}")
    if rule.issue is None:
        raise Misuse(f"the policy does not issue {name!r}: it has no issue: section")
    return rule


def _write_failed(exc: Exception) -> click.ClickException:
    if isinstance(exc, GatekeeperError):
        return click.ClickException(exc.message)
    return click.ClickException(f"Redis did not answer: {exc}")


@main.command("issue")
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD.")
@click.option("--qualification", "name", required=True, help="The policy's name for it.")
@click.option("--by", default="command line", show_default=True, help="Who grants it (logged).")
def issue_command(orcid, name, by):
    """Write a qualification a steward grants to a researcher's ORCID record (or renew it).

    Uses the permission the researcher gave on the dataset page. Exits 0 when written,
    1 when no such permission is kept or ORCID refuses, 2 for misuse.
    """
    settings = _settings()
    orcid = _orcid_or_misuse(orcid)
    rule = _issued_rule(settings, name)
    if rule.issue.accept_terms is not None:
        raise Misuse(
            f"{name!r} is earned by accepting terms on the dataset page; a steward cannot "
            "accept them for a researcher"
        )
    import redis

    from app.issuing import NoWriteToken

    try:
        result = _issuer(settings).issue(orcid, rule, by=f"steward {by}")
    except NoWriteToken:
        raise click.ClickException(
            f"{orcid} has not allowed this service to add to their ORCID record (no token "
            "with /activities/update is kept, or ORCID revoked it): ask them to open the "
            "dataset page and allow it"
        ) from None
    except (GatekeeperError, redis.RedisError) as exc:
        raise _write_failed(exc) from None
    click.echo(
        f"{result.kind} {name} for {orcid}: put-code {result.put_code}, visibility "
        f"{result.visibility or 'unknown'}, valid until {result.valid_until}"
    )
    if not result.decisions_dropped:
        click.echo(
            "note: cached decisions could not be dropped (Redis did not answer); the new "
            "item counts once they expire",
            err=True,
        )


@main.command("withdraw")
@click.option("--orcid", "orcid", required=True, help="The researcher's ORCID iD.")
@click.option("--qualification", "name", required=True, help="The policy's name for it.")
@click.option(
    "--put-code", type=click.IntRange(min=1), default=None, help="Only this item of ours."
)
@click.option("--by", default="command line", show_default=True, help="Who withdraws it (logged).")
def withdraw_command(orcid, name, put_code, by):
    """Delete this service's item for a qualification from a researcher's ORCID record.

    The researcher's cached decisions go too, so access ends at their next request.
    Exits 0 when deleted (or there was none), 1 when no permission is kept or ORCID
    refuses (9010: the item is not ours), or when the item is deleted but Redis could not
    drop the cached decisions (access may go on: run ``decisions revoke``), 2 for misuse.
    """
    settings = _settings()
    orcid = _orcid_or_misuse(orcid)
    rule = _issued_rule(settings, name)
    import redis

    from app.issuing import NoWriteToken

    try:
        withdrawn = _issuer(settings).withdraw(orcid, rule, by=f"steward {by}", put_code=put_code)
    except NoWriteToken:
        raise click.ClickException(
            f"{orcid} has not allowed this service to change their ORCID record (no token "
            "with /activities/update is kept, or ORCID revoked it); they can delete the "
            "item on their ORCID record themselves"
        ) from None
    except (GatekeeperError, redis.RedisError) as exc:
        raise _write_failed(exc) from None
    if not withdrawn.put_codes:
        click.echo(f"no {name} of ours on {orcid}'s record")
    for deleted in withdrawn.put_codes:
        click.echo(f"withdrew {name} (put-code {deleted}) from {orcid}")
    if not withdrawn.decisions_dropped:
        raise click.ClickException(
            f"{orcid}'s cached decisions could not be dropped (Redis did not answer): access "
            f"may go on for up to {settings.decision_ttl // 60} minutes; run `gatekeeper "
            "decisions revoke` once Redis answers"
        )


def _orcid_or_misuse(value: str) -> str:
    try:
        return parse_orcid_id(value)
    except InvalidOrcidId as exc:
        raise Misuse(exc.message) from None


# --- the decision log, and what a policy change would do ------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(value: str, option: str) -> dt.timedelta:
    """``7d``, ``12h``, ``30m``, ``2w`` or ``90s`` as a timedelta; Misuse for anything else."""
    text = value.strip().lower()
    if len(text) >= 2 and text[-1] in _UNITS and text[:-1].isascii() and text[:-1].isdigit():
        amount = int(text[:-1])
        if amount <= 36_500 * 86400 // _UNITS[text[-1]]:
            return dt.timedelta(seconds=amount * _UNITS[text[-1]])
    raise Misuse(f"{option}: {value!r} is not a duration such as 7d, 12h, 30m or 2w")


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _since(value: str, option: str, now: dt.datetime) -> dt.datetime:
    """A window back from ``now`` (``7d``) or a date or time (``2026-11-01``), in UTC."""
    if value[:1].isdigit() and "-" in value:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise Misuse(
                f"{option}: {value!r} is neither a duration such as 7d nor a date such as "
                "2026-11-01"
            ) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        # The log's IDs count milliseconds from 1970 (Redis refuses a negative one), and
        # a time near year 9999 overflows once moved to UTC.
        if not EPOCH <= moment <= now + dt.timedelta(days=1):
            raise Misuse(f"{option}: {value!r} is not between 1970 and now")
        return moment
    return now - _duration(value, option)


def _decision_log(settings: Settings):
    if not settings.redis_url:
        raise Misuse(
            "REDIS_URL is not set: the decision log lives inside the service's own process"
        )
    from app.decision_log import RedisDecisionLog

    return RedisDecisionLog.from_url(
        settings.redis_url, retention_days=settings.decision_log_retention
    )


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@decisions.command("list")
@click.option("--orcid", "orcid", help="Only this researcher's decisions (iD or its URI).")
@click.option("--dataset", help="Only decisions about this dataset.")
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="How far back: 7d, 12h, 2w, or a date such as 2026-11-01.",
)
@click.option("--outcome", help="Only allow, deny or error (the record could not be read).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def decisions_list(orcid, dataset, since, outcome, limit, as_json):
    """Who was granted or refused, when, under which policy version and why, newest first.

    Reads the decision log in Redis (REDIS_URL). Exits 0, 1 when Redis did not answer,
    2 for a usage error.
    """
    from app.decision_log import OUTCOMES, DecisionLogUnavailable

    settings = _settings()
    now = dt.datetime.now(dt.UTC)
    start = _since(since, "--since", now)
    if orcid is not None:
        try:
            orcid = parse_orcid_id(orcid)
        except InvalidOrcidId as exc:
            raise Misuse(exc.message) from None
    if outcome is not None and outcome not in OUTCOMES:
        raise Misuse(f"--outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")
    log = _decision_log(settings)
    try:
        found = log.entries(
            since=start, orcid=orcid, dataset=dataset, outcome=outcome, limit=limit, cap=None
        )
    except DecisionLogUnavailable as exc:
        raise click.ClickException(exc.message) from None
    for entry in found:
        if as_json:
            click.echo(json.dumps(entry.summary(), ensure_ascii=True))
            continue
        line = (
            f"{_when(entry.decided_at)}  {entry.outcome:<5}  {entry.orcid}  {entry.dataset}  "
            f"policy {entry.policy_version}"
        )
        echo_lines([f"{line}  {', '.join(entry.reasons)}" if entry.reasons else line])
    echo_lines([f"{_plural(len(found), 'decision')} since {_when(start)}"], err=True)


@decisions.command("expiring")
@click.option(
    "--within",
    default="30d",
    show_default=True,
    help="How far ahead: 30d, 2w, ...",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def decisions_expiring(within, as_json):
    """Researchers allowed in whose qualification ends within the window, and the date.

    From each researcher's latest decision per dataset in the decision log (REDIS_URL),
    soonest first. Exits 0, 1 when Redis did not answer, 2 for a usage error.
    """
    from app.decision_log import DecisionLogUnavailable

    settings = _settings()
    today = dt.datetime.now(dt.UTC).date()
    horizon = today + _duration(within, "--within")
    log = _decision_log(settings)
    try:
        latest = log.latest(readable=True, cap=None)
    except DecisionLogUnavailable as exc:
        raise click.ClickException(exc.message) from None
    rows = sorted(
        (
            (ends, entry, requirement, put_code, name)
            for entry in latest
            for ends, requirement, put_code, name in entry.expiring()
            if today <= ends <= horizon
        ),
        key=lambda row: (row[0], row[1].orcid, row[1].dataset),
    )
    for ends, entry, requirement, put_code, name in rows:
        if as_json:
            row = {
                "orcid": entry.orcid,
                "dataset": entry.dataset,
                "ends_on": ends.isoformat(),
                "requirement": requirement,
                "qualification": name,
                "put_code": put_code,
                "decided_at": entry.decided_at.isoformat(),
            }
            click.echo(json.dumps(row, ensure_ascii=True))
        else:
            line = f'{ends.isoformat()}  {entry.orcid}  {entry.dataset}  "{name}"'
            echo_lines([f"{line} (put-code {put_code})"])
    echo_lines(
        [f"{_plural(len(rows), 'qualification')} of allowed researchers end by {horizon}"],
        err=True,
    )


@policy.command("impact")
@click.argument("new_policy")
@click.option(
    "--since",
    default="30d",
    show_default=True,
    help="Replay decisions made since: 30d, 2w, or a date such as 2026-11-01.",
)
@click.option("--current", "current_path", help="The policy in force (default: POLICY_PATH).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per changed outcome.")
def policy_impact(new_policy, since, current_path, as_json):
    """What NEW_POLICY would change: every researcher and dataset whose outcome differs.

    Replays the latest logged decision of each researcher and dataset seen since then
    (REDIS_URL) under the policy in force and under NEW_POLICY, today, from the
    qualifications that were read: ORCID is not called. Exits 0 when nothing changes,
    1 when something does, 2 for misuse, a broken policy or a log Redis cannot serve.
    """
    from app.decision_log import DecisionLogUnavailable
    from app.impact import preview

    settings = _settings()
    now = dt.datetime.now(dt.UTC)
    start = _since(since, "--since", now)
    current = _policy(current_path or settings.policy_path)
    candidate = _policy(new_policy)
    log = _decision_log(settings)
    try:
        # One at a time: the preview keeps one per researcher and dataset, not the window.
        impact = preview(log.scan(since=start), current, candidate, now)
    except DecisionLogUnavailable as exc:
        raise Misuse(exc.message) from None
    outcome = {None: "(no such dataset)"}
    for change in impact.changes:
        if as_json:
            click.echo(json.dumps(change.to_dict(), ensure_ascii=True))
            continue
        before = outcome.get(change.before, change.before)
        after = outcome.get(change.after, change.after)
        echo_lines([f"{change.orcid}  {change.dataset}  {before} -> {after}"])
        echo_lines(
            f"    {r.requirement}: {r.before} -> {r.after}: {r.detail}" for r in change.requirements
        )
    summary = (
        f"{len(impact.changes)} of {_plural(impact.replayed, 'researcher-dataset pair')} "
        f"would change ({impact.lost} losing access, {impact.gained} gaining it), "
        f"replaying decisions since {_when(start)} without ORCID"
    )
    lines = [summary]
    if impact.unreplayable:
        lines.append(
            f"{_plural(len(impact.unreplayable), 'pair')} could not be replayed: their ORCID "
            "record could not be read when they were last checked"
        )
    echo_lines(lines, err=as_json)
    sys.exit(1 if impact.changes else 0)


@policy.command("diff")
@click.argument("old")
@click.argument("new")
def policy_diff(old, new):
    """Say in words what changed from the policy OLD to NEW.

    Datasets added or removed, paths, requirements, trusted sources and client IDs,
    qualification rules. Exits 0 when nothing changed, 1 when something did, 2 for a
    broken policy.
    """
    from app.policy.diff import diff_policies

    before, after = _policy(old), _policy(new)
    lines = diff_policies(before, after)
    if not lines:
        echo_lines([f"no changes (version {before.version})"])
        sys.exit(0)
    echo_lines([f"policy {before.version} -> {after.version}:"])
    echo_lines(f"  {line}" for line in lines)
    sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address.")
@click.option("--port", default=8001, show_default=True, envvar="EMULATOR_PORT")
@click.option("--fixtures", type=click.Path(dir_okay=False), help="Personas YAML file.")
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    help="Also accept this redirect URI for every client (repeatable).",
)
def emulator(host, port, fixtures, redirect_uris):
    """Run the local ORCID emulator (OAuth and the v3.0 record API) for tests and demos."""
    from app.emulator.personas import FixtureError
    from app.emulator.server import run as run_emulator

    try:
        run_emulator(host, port, fixtures, redirect_uris)
    except (ValueError, FixtureError, OSError) as exc:
        raise Misuse(str(exc)) from None


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address.")
@click.option("--port", default=8000, show_default=True, envvar="DEMO_PORT")
@click.option("--orcid-port", default=8001, show_default=True, envvar="DEMO_ORCID_PORT")
@click.option("--policy", "policy_path", help="Policy file or directory (default: POLICY_PATH).")
def demo(host, port, orcid_port, policy_path):
    """Run the gatekeeper with the ORCID emulator and sample datasets: no account needed."""
    from app.demo import run_demo

    settings = _settings()
    try:
        run_demo(host, port, orcid_port, policy_path or settings.policy_path)
    except (ConfigError, ValueError, OSError) as exc:
        raise Misuse(getattr(exc, "message", None) or str(exc)) from None


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["-h"]})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve(gunicorn_args):
    """Run the service under gunicorn with the packaged configuration.

    Settings come from the environment (see the README); GUNICORN_ARGS go to gunicorn as
    they are, for example `gatekeeper serve -b 0.0.0.0:8000 -w 4`. Needs no checkout.
    """
    command = [sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_config"]
    # exec: gunicorn becomes this process, so signals and the exit code are its own.
    os.execv(sys.executable, [*command, *gunicorn_args, "app:create_app()"])


def run():
    """Entry point that keeps even unexpected errors to one line."""
    try:
        main(standalone_mode=True)
    except GatekeeperError as exc:  # pragma: no cover - a safety net
        echo_lines([f"Error: {exc.message}"], err=True)
        sys.exit(2)
