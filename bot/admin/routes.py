"""The admin page at /admin: spend this month (a server-made SVG chart), jobs, quotas (editable
with /conjure quota's rules and audited as `admin-page`), the audit trail (and its CSV).

Off (404) unless CONJURE_ADMIN_TOKEN is set; every page needs a session or a Bearer token
(bot.admin.auth); every POST made with the cookie carries the session's CSRF token. Logging out
ends the session on every instance; a cookie that cannot be checked against the ended sessions
(the database unreachable) gets 503, for a GET as for a POST: every page reads that database
anyway, and a copied cookie should not read prompts and spend when the check is down.
Server-rendered with Jinja2 (autoescaped), no script, nothing from another origin.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from bot.admin.auth import COOKIE, AdminAuth, Session, SessionsUnreachable
from bot.admin.throttle import WINDOW, SignInThrottle
from bot.commands.names import name_problem, user_id_of
from bot.http_limits import LimitedRoute
from bot.money import format_usd
from bot.quotas.limits import USER, WORKSPACE
from bot.quotas.words import LimitError, parse_limit
from bot.rejections import Rejections
from bot.runtime import Runtime
from bot.safety import RuleError, parse_rule_id
from storage.admin_sessions import EndedSessions
from storage.jobs import user_subject, workspace_subject
from storage.limit_change import LimitChange
from storage.models import JobStatus, utcnow
from storage.usage import load_limit

if TYPE_CHECKING:
    from jinja2 import Environment

PREFIX = "/admin"
ACTOR = "admin-page"
MAX_FORM = 16 * 1024  # a sign-in or a quota form is a few hundred bytes
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_QUOTA_FIELDS = (
    ("jobs", "jobs_per_day"),
    ("usd", "usd_per_month_micros"),
    ("inflight", "max_in_flight"),
)

log = logging.getLogger(__name__)


@functools.cache
def _templates() -> Environment:
    """The page's templates, loaded at the first page shown: Jinja2 is a tenth of what a serving
    process imports, and most never show the page (no CONJURE_ADMIN_TOKEN, or not yet)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("bot.admin", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )


Page = Callable[[Request, Session], Awaitable[Response]]


def admin_routes(runtime: Runtime) -> list[BaseRoute]:
    """The admin page's routes, or none (so /admin is 404) without CONJURE_ADMIN_TOKEN."""
    token = runtime.settings.conjure_admin_token
    if token is None:
        return []
    public = runtime.settings.public_url or ""
    auth = AdminAuth(
        token.get_secret_value(),
        secure_cookie=public.startswith("https://"),
        ended=EndedSessions(runtime.engine),
    )
    quotas = runtime.service.quotas
    throttle = SignInThrottle()
    rejections = Rejections(log)

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "?"

    def too_many(request: Request) -> bool:
        """Whether this client has offered too many wrong tokens of late (and is refused)."""
        if throttle.blocked(client_of(request)):
            rejections.note("admin sign-in: too many wrong tokens from one client")
            return True
        return False

    def wrong_token(request: Request) -> None:
        throttle.failed(client_of(request))
        rejections.note("admin sign-in with a wrong token")

    def render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = _templates().get_template(name).render(prefix=PREFIX, **values)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def guarded(page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            bearer = "authorization" in request.headers
            if bearer and too_many(request):
                return _too_many()
            try:
                session = await auth.session(request)
            except SessionsUnreachable:
                return _unavailable("the session cannot be checked now; try again\n")
            if session is None and bearer:
                wrong_token(request)
            if session is None:
                if request.method == "GET" and "authorization" not in request.headers:
                    return RedirectResponse(f"{PREFIX}/login", 303, headers=_HEADERS)
                return Response("sign in first\n", 401, headers=_HEADERS, media_type="text/plain")
            if request.method == "POST":
                form = await _form(request)
                if form is None:
                    return _bad_form()
                if not auth.csrf_ok(session, form.get("csrf", "")):
                    return Response(
                        "missing or wrong CSRF token\n",
                        403,
                        headers=_HEADERS,
                        media_type="text/plain",
                    )
                request.state.form = form
            return await page(request, session)

        return endpoint

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return render("login.html")
        if too_many(request):
            error = "Too many wrong tokens from here: try again in a minute."
            return render("login.html", 429, error=error)
        form = await _form(request)
        if form is None:
            return _bad_form()
        offered = form.get("token", "")
        if not auth.token_matches(offered):
            wrong_token(request)
            return render("login.html", 401, error="That is not the admin token.")
        response = RedirectResponse(PREFIX, 303, headers=_HEADERS)
        response.set_cookie(value=auth.new_cookie(), **auth.cookie_options())  # type: ignore[arg-type]
        return response

    async def logout(_: Request, session: Session) -> Response:
        try:
            await auth.end(session)
        except SessionsUnreachable:  # the cookie is kept: the person can try again with it
            return _unavailable("not signed out: the session cannot be ended now; try again\n")
        response = RedirectResponse(f"{PREFIX}/login", 303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path=PREFIX, secure=auth.secure_cookie, httponly=True)
        return response

    async def spend(_: Request, session: Session) -> Response:
        now = utcnow()
        _, month = quotas.windows(now)
        zone = quotas.zone
        rows = await quotas.store.spend_rows(month.start, month.end)
        first = month.start.astimezone(zone).date()
        last = (month.end - timedelta(seconds=1)).astimezone(zone).date()
        days: dict[date, int] = {first + timedelta(n): 0 for n in range((last - first).days + 1)}
        users: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        models: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        workspaces: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in rows:
            created = (
                row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
            )
            day = created.astimezone(zone).date()
            days[day] = days.get(day, 0) + row.spent_micros
            for table, name in (
                (users, user_subject(row.platform, row.workspace, row.user_id)),
                (models, row.model),
                (workspaces, workspace_subject(row.platform, row.workspace)),
            ):
                table[name][0] += 1
                table[name][1] += row.spent_micros
        return render(
            "spend.html",
            session=session,
            month=month.key.removeprefix("month:"),
            timezone=runtime.settings.conjure_timezone,
            total=format_usd(sum(days.values())),
            chart=_chart(days),
            tables=[
                ("User", _ranked(users)),
                ("Model", _ranked(models)),
                ("Workspace", _ranked(workspaces)),
            ],
        )

    async def jobs(request: Request, session: Session) -> Response:
        query = request.query_params
        filters = {
            name: query.get(name, "").strip() or None for name in ("user", "status", "model")
        }
        found = await runtime.store.search(
            user_id=filters["user"], status=filters["status"], model=filters["model"], limit=200
        )
        zone = quotas.zone
        shown = [
            {
                "id": job.id,
                "when": _aware(job.created_at).astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                "who": job.user_name or job.user_id,
                "user_id": job.user_id,
                "where": workspace_subject(job.platform, job.workspace),
                "model": job.model,
                "prompt": job.prompt if len(job.prompt) <= 80 else job.prompt[:79] + "…",
                "status": job.status,
                "cost": format_usd(job.actual_micros) if job.actual_micros is not None else "",
                "duration": _duration(job.started_at, job.completed_at),
                "link": _message_link(job.platform, job.workspace, job.channel, job.destination),
            }
            for job in found
        ]
        return render(
            "jobs.html",
            session=session,
            jobs=shown,
            filters={k: v or "" for k, v in filters.items()},
            statuses=[status.value for status in JobStatus],
        )

    async def quota_page(request: Request, session: Session) -> Response:
        message, error, status = None, None, 200
        if request.method == "POST":
            try:
                scope, subject, changes = _quota_change(request.state.form)
            except LimitError as exc:
                error, status = str(exc), 400
            else:
                limits = await quotas.override(scope, subject, changes, ACTOR)
                message = f"{subject} now has limits: {limits.describe()}."
        overrides = [
            {
                "scope": row.scope,
                "subject": row.subject,
                "jobs": _shown(row.jobs_per_day, str),
                "usd": _shown(row.usd_per_month_micros, format_usd),
                "inflight": _shown(row.max_in_flight, str),
                "now": (await quotas.limits(row.scope, row.subject)).describe(),
                "by": row.updated_by or "",
            }
            for row in await quotas.store.overrides()
        ]
        defaults = {scope: quotas.defaults[scope].describe() for scope in (USER, WORKSPACE)}
        return render(
            "quotas.html",
            status,
            session=session,
            overrides=overrides,
            defaults=defaults,
            message=message,
            error=error,
        )

    async def audit(_: Request, session: Session) -> Response:
        entries = await quotas.store.audit(limit=200)
        zone = quotas.zone
        shown = [
            {
                "at": _aware(entry.at).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                "actor": entry.actor,
                "action": entry.action,
                "detail": json.dumps(entry.detail, sort_keys=True),
            }
            for entry in entries
        ]
        return render("audit.html", session=session, entries=shown)

    async def audit_csv(_: Request, __: Session) -> Response:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "at", "actor", "action", "detail"])
        for entry in await quotas.store.audit(limit=None):
            writer.writerow(
                [entry.id, _aware(entry.at).isoformat(), *_cells(entry.actor, entry.action),
                 _cell(json.dumps(entry.detail, sort_keys=True))]
            )  # fmt: skip
        headers = {**_HEADERS, "Content-Disposition": 'attachment; filename="conjure-audit.csv"'}
        return Response(out.getvalue(), media_type="text/csv", headers=headers)

    async def safety_page(request: Request, session: Session) -> Response:
        """A workspace's banned words and patterns: listed, added, removed (bot.safety, the same
        rules and audit rows as `/conjure safety`)."""
        rules = runtime.service.safety
        source = request.state.form if request.method == "POST" else request.query_params
        platform = str(source.get("platform", "")).strip()
        workspace = str(source.get("workspace", "")).strip()
        message, error, status = None, None, 200
        if request.method == "POST":
            form = request.state.form
            try:
                if not platform or not workspace:
                    raise RuleError("Name the platform and the workspace.")
                problem = name_problem(platform, workspace)
                if problem:
                    raise RuleError(problem[0].upper() + problem[1:])
                if form.get("remove"):
                    rule_id = parse_rule_id(form["remove"])
                    if rule_id is None:
                        raise RuleError(f"{form['remove'][:40]!r} is not a rule id.")
                    if not await rules.remove(platform, workspace, rule_id, ACTOR):
                        raise RuleError(f"No rule {rule_id} in this workspace.")
                    message = f"Rule {rule_id} removed."
                else:
                    rule = await rules.add(
                        platform, workspace, form.get("kind", ""), form.get("value", ""), ACTOR
                    )
                    message = f"Rule {rule.id} added."
            except RuleError as exc:
                error, status = str(exc), 400
        listed = await rules.list(platform, workspace) if platform and workspace else []
        return render(
            "safety.html",
            status,
            session=session,
            platform=platform,
            workspace=workspace,
            rules=listed,
            message=message,
            error=error,
        )

    def route(path: str, page: Page, methods: list[str]) -> LimitedRoute:
        return LimitedRoute(PREFIX + path, guarded(page), methods=methods, max_body=MAX_FORM)

    return [
        LimitedRoute(f"{PREFIX}/login", login, methods=["GET", "POST"], max_body=MAX_FORM),
        route("/logout", logout, ["POST"]),
        route("", spend, ["GET"]),
        route("/", spend, ["GET"]),
        route("/jobs", jobs, ["GET"]),
        route("/quotas", quota_page, ["GET", "POST"]),
        route("/safety", safety_page, ["GET", "POST"]),
        route("/audit", audit, ["GET"]),
        route("/audit.csv", audit_csv, ["GET"]),
    ]


async def _form(request: Request) -> dict[str, str] | None:
    """An urlencoded form (the only kind these pages send): the first value of each field;
    None for one with more fields than any of these pages has (parse_qs refuses it)."""
    body = (await request.body()).decode("utf-8", "replace")
    try:
        fields = parse_qs(body, max_num_fields=20)
    except ValueError:
        return None
    return {name: values[0] for name, values in fields.items()}


def _bad_form() -> Response:
    return Response("too many fields in the form\n", 400, headers=_HEADERS, media_type="text/plain")


def _unavailable(message: str) -> Response:
    return Response(message, 503, headers=_HEADERS, media_type="text/plain")


def _too_many() -> Response:
    return Response(
        "too many wrong tokens from here; try again in a minute\n",
        429,
        headers={**_HEADERS, "Retry-After": str(int(WINDOW))},
        media_type="text/plain",
    )


def _quota_change(form: dict[str, str]) -> tuple[str, str, dict[str, LimitChange]]:
    """The quota form → scope, subject and changes, by /conjure quota's rules: a number,
    `unlimited`, `0` or `default`; a blank field is left as it is."""
    platform, workspace = form.get("platform", "").strip(), form.get("workspace", "").strip()
    if not platform or not workspace:
        raise LimitError("platform and workspace", "both are needed.")
    if form.get("scope") == WORKSPACE:
        user = None
        scope, subject = WORKSPACE, workspace_subject(platform, workspace)
    else:
        user = user_id_of(form.get("user", ""))
        if not user:
            raise LimitError("user", "a user's id is needed (or choose the workspace).")
        scope, subject = USER, user_subject(platform, workspace, user)
    problem = name_problem(platform, workspace, user)
    if problem:
        raise LimitError("the form", problem)
    changes: dict[str, LimitChange] = {}
    for name, field in _QUOTA_FIELDS:
        raw = form.get(name, "").strip()
        if raw:
            try:
                changes[field] = parse_limit(name, raw)
            except LimitError as exc:
                raise LimitError(f"{name}={raw}", exc.reason) from None
    if not changes:
        raise LimitError("the form", "change at least one limit.")
    return scope, subject, changes


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _shown(stored: int | None, fmt: Callable[[int], str]) -> str:
    if stored is None:
        return "default"
    limit = load_limit(stored)
    return "unlimited" if limit is None else fmt(limit)


def _ranked(table: dict[str, list[int]]) -> list[tuple[str, int, str]]:
    ordered = sorted(table.items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))
    return [(name, jobs, format_usd(spent)) for name, (jobs, spent) in ordered]


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = max(0.0, (end - start).total_seconds())
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _message_link(platform: str, workspace: str, channel: str, where: dict[str, Any]) -> str:
    """The job's message in its chat, where Conjure knows it."""
    if platform == "slack":
        ts = where.get("thread_ts") or where.get("status_ts")
        channel = where.get("channel") or channel
        if isinstance(ts, str) and ts:
            return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"
    if platform == "discord":
        message = where.get("message_id")
        if message:
            return f"https://discord.com/channels/{workspace}/{channel}/{message}"
    return ""


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _cells(*values: str) -> list[str]:
    return [_cell(value) for value in values]


def _chart(days: dict[date, int]) -> dict[str, Any]:
    """Spend per day as SVG bars: one per day of the month, scaled to the costliest day."""
    width, height, top, bottom, left = 760, 220, 16, 28, 8
    slot = (width - left * 2) / max(1, len(days))
    peak = max(days.values(), default=0)
    bars = []
    for index, (day, micros) in enumerate(sorted(days.items())):
        tall = 0.0 if peak == 0 else (height - top - bottom) * micros / peak
        x = left + index * slot
        bars.append(
            {
                "x": round(x + slot * 0.15, 1),
                "y": round(height - bottom - tall, 1),
                "width": round(slot * 0.7, 1),
                "height": round(tall, 1),
                "day": day.isoformat(),
                "label": day.day,
                "label_x": round(x + slot / 2, 1),
                "usd": format_usd(micros),
                "micros": micros,
            }
        )
    return {
        "width": width,
        "height": height,
        "baseline": height - bottom,
        "label_y": height - bottom + 16,
        "peak": format_usd(peak),
        "bars": bars,
    }
