"""The review console: a FastAPI app with server-rendered pages over the call log.

Every route but /login and /static needs a session (an HttpOnly, SameSite=Lax cookie holding
a random token whose hash is in the console store); every form carries a CSRF token.  Handlers
are `async def` on purpose: they run one at a time on the event loop, so the two SQLite
connections are never used from two threads at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import re
import secrets
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import structlog
from pydantic import BeforeValidator, Field
from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent import topics
from agent.calllog import CallLog
from agent.console import audio, charts
from agent.console.callview import build_call_view
from agent.console.diffview import changed_outputs
from agent.console.index import REASONS, CallFilter, CallIndex
from agent.console.latency import ORDER as STAGE_ORDER
from agent.console.privacy import mask_caller, mask_text
from agent.console.store import ROLES, ConsoleStore, Session, StoreError, User
from agent.console.throttle import LoginThrottle
from agent.console.vocab import VocabError, Vocabulary, vocabulary
from agent.labels import FLAGS, EntityLabel, LabelStore, TurnLabel, export_asr, nlu_lines
from agent.outcomes import outcomes_of
from agent.settings import Settings

log = structlog.get_logger("console")
HERE = Path(__file__).parent
COOKIE = "dx_session"
LOGIN_COOKIE = "dx_login"
PUBLIC = ("/login", "/static/")
PAGE_SIZE = 50
MAX_PAGE = 100_000
STAGE_PATTERN = r"^[a-z_]{1,32}$"
QUEUE_SIZE = 30
# No inline script or style anywhere (the JS is static/console.js, colours are classes or SVG
# attributes), so the policy can be strict: an injected <script> or onclick= does not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass
class Console:
    settings: Settings
    log: CallLog
    store: ConsoleStore
    labels: LabelStore
    index: CallIndex
    throttle: LoginThrottle
    secure_cookies: bool = False

    def sync(self) -> None:
        n = self.index.sync(self.log)
        if n:
            log.info("console.indexed", calls=n)


def open_console(settings: Settings, log_path: Path | None = None, store_path: Path | None = None) -> Console:
    store = ConsoleStore(store_path or settings.data_dir / "console.sqlite")
    labels = LabelStore(store.db)
    return Console(
        settings, CallLog(log_path or default_log_path(settings)), store, labels, CallIndex(store.db), LoginThrottle(store.db)
    )


def default_log_path(settings: Settings) -> Path:
    """The embedded bus's own log, or on Kafka the file `dianxiao record` keeps."""
    return settings.log_path if settings.bus == "embedded" else settings.data_dir / "calls.sqlite"


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def create_app(console: Console) -> FastAPI:
    app = FastAPI(title="dianxiao console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = console
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    templates.env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": True}
    templates.env.filters["pct"] = lambda v: "–" if v is None else f"{v * 100:.1f}%"
    signer = URLSafeTimedSerializer(console.store.secret(), salt="login-csrf")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
        sess: Session | None = getattr(request.state, "session", None)
        ctx.setdefault("user", sess.user if sess else None)
        ctx.setdefault("csrf", sess.csrf if sess else "")
        return templates.TemplateResponse(request, name, ctx, status_code=code)

    # --- middleware: server timing and the login wall ---------------------------------

    @app.middleware("http")
    async def login_wall(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        response = await _behind_login(request, call_next)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}"
        response.headers.update(SECURITY_HEADERS)  # on every reply, the login redirect and 401 too
        return response

    async def _behind_login(request: Request, call_next: Any) -> Response:
        if not request.url.path.startswith(PUBLIC):
            sess = console.store.session(request.cookies.get(COOKIE))
            if sess is None:
                wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
                if wants_page:
                    return RedirectResponse(f"/login?next={quote(str(request.url.path))}", status_code=303)
                return Response("login required", status_code=401, headers={"WWW-Authenticate": "Cookie"})
            request.state.session = sess
        return await call_next(request)  # type: ignore[no-any-return]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return page(request, "error.html", exc.status_code, status=exc.status_code, message=exc.detail)

    @app.exception_handler(HttpError)
    async def own_error(request: Request, exc: HttpError) -> Response:
        return page(request, "error.html", exc.status, status=exc.status, message=exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        # `?page=1e20` was a 500; a bad parameter is the caller's mistake: 422 and one line
        # that names it, on the usual error page.
        return page(request, "error.html", 422, status=422, message=_validation_message(exc))

    def session(request: Request) -> Session:
        return request.state.session  # type: ignore[no-any-return]

    def need(request: Request, role: str) -> User:
        user = session(request).user
        if not user.can(role):  # type: ignore[arg-type]
            raise HttpError(403, f"this needs the {role} role (you are {user.role})")
        return user

    async def checked_form(request: Request) -> Any:
        form = await request.form()
        token = form.get("csrf") or request.headers.get("x-csrf-token", "")
        if not secrets.compare_digest(str(token), session(request).csrf):
            raise HttpError(403, "the form's CSRF token is missing or wrong; reload the page and try again")
        return form

    # --- login ---------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/calls", error: str = "") -> Response:
        nonce = secrets.token_urlsafe(16)
        resp = page(request, "login.html", token=signer.dumps(nonce), next=_safe_next(next), error=error)
        resp.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=console.secure_cookies, max_age=3600)
        return resp

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        try:
            nonce = signer.loads(str(form.get("token", "")), max_age=3600)
        except BadSignature:
            nonce = None
        if nonce is None or not secrets.compare_digest(str(nonce), request.cookies.get(LOGIN_COOKIE, "")):
            return RedirectResponse("/login?error=expired", status_code=303)
        username = str(form.get("username", ""))[:128]
        address = request.client.host if request.client else "?"
        nxt = _safe_next(str(form.get("next", "/calls")))
        verdict = console.throttle.check(username, address)
        if not verdict.allowed:
            # Refused before the password is looked at: waiting out the delay is the only way on.
            console.store.audit(username or "?", "login_throttled", None, f"{address}: {verdict.reason}, wait {verdict.wait_s:.0f} s")
            return _throttled(request, verdict.wait_s, verdict.locked, nxt)
        user = console.store.check_password(username, str(form.get("password", "")))
        if user is None:
            after = console.throttle.failed(username, address)
            console.store.audit(username or "?", "login_failed", None, address)
            if after.locked:
                console.store.audit(username or "?", "login_locked", None, f"{address}: {after.reason}, locked {after.wait_s:.0f} s")
            return RedirectResponse(f"/login?error=bad&next={quote(nxt)}", status_code=303)
        console.throttle.succeeded(username)
        token, _ = console.store.new_session(user)
        console.store.audit(user.username, "login")
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=console.secure_cookies, max_age=12 * 3600)
        resp.delete_cookie(LOGIN_COOKIE)
        return resp

    def _throttled(request: Request, wait_s: float, locked: bool, nxt: str) -> Response:
        nonce = secrets.token_urlsafe(16)
        wait = max(1, int(wait_s + 0.999))
        resp = page(request, "login.html", 429, token=signer.dumps(nonce), next=nxt, error="locked" if locked else "wait", wait=wait)
        resp.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=console.secure_cookies, max_age=3600)
        resp.headers["Retry-After"] = str(wait)
        return resp

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await checked_form(request)
        console.store.end_session(request.cookies.get(COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    # --- calls ---------------------------------------------------------------------------

    @app.get("/")
    async def home(request: Request) -> Response:
        return RedirectResponse("/calls", status_code=303)

    @app.get("/calls", response_class=HTMLResponse)
    async def calls(
        request: Request,
        page_no: Annotated[_PageNo | None, _Blank, Query(alias="page")] = None,
        per_page: Annotated[_PerPage | None, _Blank, Query()] = None,
        stage: Annotated[_StageName | None, _Blank, Query()] = None,
        over_ms: Annotated[_Ms | None, _Blank, Query()] = None,
    ) -> Response:
        console.sync()
        q = request.query_params
        f = _filter(q, stage, over_ms)
        pg, per_page = page_no or 1, per_page or PAGE_SIZE
        rows, total = console.index.page(f, per_page, (pg - 1) * per_page)
        viewer = not session(request).user.can("reviewer")
        if viewer:
            for c in rows:
                c.caller = mask_caller(c.caller)
        base = {k: v for k, v in q.items() if k != "page" and v}
        return page(
            request,
            "calls.html",
            calls=rows,
            total=total,
            page=pg,
            pages=max(1, -(-total // per_page)),
            q=q,
            qs=lambda **kw: "?" + urlencode({**base, **{k: v for k, v in kw.items() if v is not None}}),
            choices=console.index.choices(),
            stage_choices=sorted(set(STAGE_ORDER) | set(console.index.choices()["stage"]), key=_stage_rank),
            stage_color=charts.stage_color,
            handle_known=console.index.handle_known(),
        )

    # --- the review queue --------------------------------------------------------------------

    @app.get("/queue", response_class=HTMLResponse)
    async def queue(
        request: Request,
        page_no: Annotated[_PageNo | None, _Blank, Query(alias="page")] = None,
        all_turns: Annotated[bool, Query(alias="all")] = False,
    ) -> Response:
        console.sync()
        page_no = page_no or 1
        rows, total = console.index.queue(QUEUE_SIZE, (page_no - 1) * QUEUE_SIZE, include_reviewed=all_turns)
        if not session(request).user.can("reviewer"):
            for r in rows:
                r.text = mask_text(r.text)
        return page(
            request, "queue.html", rows=rows, total=total, page=page_no, pages=max(1, -(-total // QUEUE_SIZE)),
            all_turns=all_turns, vocab=console_vocab(), reasons=REASONS,
        )

    @app.get("/calls/{call_id}", response_class=HTMLResponse)
    async def call_page(request: Request, call_id: str) -> Response:
        user = session(request).user
        view = build_call_view(console.log, call_id, console.labels.latest_for_call(call_id), mask=not user.can("reviewer"))
        if view is None:
            raise HttpError(404, f"no call {call_id!r} in the log")
        console.store.audit(user.username, "open_call", call_id)
        return page(
            request,
            "call.html",
            call=view,
            flags=FLAGS,
            stage_bar=charts.stage_bar,
            stage_color=charts.stage_color,
            audit=console.store.audit_log(20, call_id) if user.can("admin") else [],
            # the call's own outcome and the CRM's deal outcomes joined to it (agent/outcomes.py)
            outcomes=outcomes_of(console.log.events(call_id, only=(topics.CONTROL,))),
            stages=("nlu", "dst", "policy"),
            settings=console.settings,
            vocab=console_vocab(),
        )

    @app.get("/calls/{call_id}/audio/call.wav")
    async def call_audio(request: Request, call_id: str) -> Response:
        user = session(request).user
        mix = audio.call_mix(console.log, call_id)
        if mix is None:
            raise HttpError(404, f"no audio recorded for call {call_id!r}")
        console.store.audit(user.username, "play", call_id, "whole call")
        return Response(mix.wav(), media_type="audio/wav", headers={"Cache-Control": "private, no-store"})

    @app.get("/calls/{call_id}/audio/peaks.json")
    async def call_peaks(request: Request, call_id: str) -> Response:
        mix = audio.call_mix(console.log, call_id)
        if mix is None:
            raise HttpError(404, f"no audio recorded for call {call_id!r}")
        return Response(json.dumps(mix.peaks()), media_type="application/json", headers={"Cache-Control": "private, no-store"})

    @app.get("/calls/{call_id}/turns/{turn}/{who}.wav")
    async def turn_audio(request: Request, call_id: str, turn: _TURN, who: str) -> Response:
        user = session(request).user
        if who == "caller":
            wav = audio.caller_wav(console.log, call_id, turn)
        elif who == "bot":
            wav = audio.bot_wav(console.log, call_id, turn)
        else:
            raise HttpError(404, "audio is 'caller' or 'bot'")
        if wav is None:
            raise HttpError(404, f"no {who} audio for turn {turn} of call {call_id!r}")
        console.store.audit(user.username, "play", call_id, f"turn {turn} {who}")
        return Response(wav, media_type="audio/wav", headers={"Cache-Control": "private, no-store"})

    @app.post("/calls/{call_id}/turns/{turn}/label")
    async def label_turn(request: Request, call_id: str, turn: _TURN) -> Response:
        form = await checked_form(request)
        user = need(request, "reviewer")
        if console.index.get(call_id) is None and build_call_view(console.log, call_id, {}, False) is None:
            raise HttpError(404, f"no call {call_id!r} in the log")
        try:
            label = _label_from_form(form, call_id, turn, user.username, console_vocab())
        except VocabError as exc:
            # a name outside the taxonomy would become training data: refuse it, say which
            raise HttpError(422, f"the label was not saved: {exc}") from exc
        except ValueError as exc:
            raise HttpError(400, f"the label was not saved: {exc}") from exc
        console.labels.add(label)
        console.store.audit(user.username, "label", call_id, f"turn {turn}" + (" (accepted)" if label.confirmed else ""))
        back = str(form.get("back") or "")
        if back:
            return RedirectResponse(_safe_next(back), status_code=303)
        return RedirectResponse(f"/calls/{quote(call_id)}#turn-{turn}", status_code=303)

    @app.post("/calls/{call_id}/replay", response_class=HTMLResponse)
    async def replay(request: Request, call_id: str) -> Response:
        form = await checked_form(request)
        user = need(request, "reviewer")
        chosen = [s for s in ("nlu", "dst", "policy") if form.get(f"stage_{s}")]
        overrides = {k: str(form.get(k)).strip() for k in ("playbook", "nlu_model") if str(form.get(k) or "").strip()}
        console.store.audit(user.username, "replay", call_id, json.dumps({"stages": chosen, **overrides}))
        result, error = None, None
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, _run_replay, console, call_id, chosen, overrides)
        except LookupError as exc:
            raise HttpError(404, str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - any failure of a user-chosen model/playbook is shown, not raised
            error = f"{type(exc).__name__}: {exc}"
        changed = changed_outputs(result.diffs) if result is not None else []
        return page(request, "replay.html", call_id=call_id, result=result, changed=changed, error=error, stages=chosen,
                    overrides=overrides)

    # --- dashboard -------------------------------------------------------------------------

    @app.get("/dashboard", response_class=HTMLResponse)
    async def dashboard(request: Request) -> Response:
        console.sync()
        f = _filter(request.query_params, None, None)
        st = console.index.stats(f)
        series_p50: dict[str, list[tuple[float, float]]] = {}
        series_p95: dict[str, list[tuple[float, float]]] = {}
        for row in st["latency"]:
            series_p50.setdefault(row["stage"] + _BUS, []).append((row["bucket"], row["p50"]))
            series_p95.setdefault(row["stage"] + _BUS, []).append((row["bucket"], row["p95"]))
        quality = _label_quality(console)
        return page(
            request,
            "dashboard.html",
            st=st,
            q=request.query_params,
            choices=console.index.choices(),
            outcome_chart=charts.hbar(st["outcomes"], title="outcomes"),
            intent_chart=charts.hbar(st["intents"], title="intents"),
            p50_chart=charts.lines(series_p50, unit=" ms", title="latency p50"),
            p95_chart=charts.lines(series_p95, unit=" ms", title="latency p95"),
            dead_chart=charts.lines({"dead letters": [(b, float(n)) for b, n in st["dead_over_time"]]}, title="dead letters"),
            quality=quality,
        )

    # --- labels ----------------------------------------------------------------------------

    @app.get("/labels", response_class=HTMLResponse)
    async def labels_page(request: Request) -> Response:
        latest = sorted(console.labels.latest().values(), key=lambda l: -l.created_at)
        if not session(request).user.can("reviewer"):
            latest = [l.model_copy(update={"transcript": mask_text(l.transcript)}) for l in latest]
        vocab = console_vocab()
        unknown = sum(1 for l in latest if not _label_known(l, vocab))
        return page(request, "labels.html", labels=latest[:500], count=len(latest), report=None, unknown=unknown)

    @app.post("/labels/import", response_class=HTMLResponse)
    async def labels_import(request: Request) -> Response:
        form = await checked_form(request)
        user = need(request, "reviewer")
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise HttpError(400, "choose a JSONL file of labels (one {call_id, turn, intents, entities, …} per line)")
        lines = (await upload.read()).decode("utf-8", errors="replace").splitlines()
        imported, errors = _import_labels(lines, user.username, console_vocab(), console.labels)
        console.store.audit(user.username, "import_labels", None, f"{imported} labels, {len(errors)} bad lines")
        latest = sorted(console.labels.latest().values(), key=lambda l: -l.created_at)
        return page(request, "labels.html", labels=latest[:500], count=len(latest),
                    report={"imported": imported, "errors": errors, "filename": getattr(upload, "filename", "")})

    @app.get("/labels/export")
    async def labels_export(request: Request, kind: str = "nlu") -> Response:
        user = need(request, "reviewer")
        console.store.audit(user.username, "export_labels", None, kind)
        if kind == "nlu":
            vocab = console_vocab()
            # labels saved before names were checked may hold names outside the taxonomy: they
            # are not training data (the page counts them; `labels export` on the CLI does not
            # filter them yet, see docs/console.md)
            body = "".join(l for l in nlu_lines(console.labels, console.log) if _line_known(l, vocab))
            return Response(
                body.encode(), media_type="application/x-ndjson",
                headers={"Content-Disposition": 'attachment; filename="nlu-labels.jsonl"'},
            )
        if kind == "asr":
            buf = io.BytesIO()
            with tempfile.TemporaryDirectory() as tmp:
                export_asr(console.labels, console.log, Path(tmp))
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                    for p in sorted(Path(tmp).iterdir()):
                        zf.write(p, f"asr-labels/{p.name}")
            return Response(
                buf.getvalue(), media_type="application/zip",
                headers={"Content-Disposition": 'attachment; filename="asr-labels.zip"'},
            )
        raise HttpError(400, "export kind is 'nlu' or 'asr'")

    # --- admin: import, audit, users ---------------------------------------------------------

    @app.get("/import", response_class=HTMLResponse)
    async def import_page(request: Request) -> Response:
        need(request, "admin")
        return page(request, "import.html", report=None)

    @app.post("/import", response_class=HTMLResponse)
    async def import_calls(request: Request) -> Response:
        form = await checked_form(request)
        user = need(request, "admin")
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise HttpError(400, "choose a JSONL file written by `dianxiao calls export`")
        raw = await upload.read()
        lines = raw.decode("utf-8", errors="replace").splitlines()
        report = console.log.import_jsonl(lines, partitions=console.settings.partitions)
        console.store.audit(user.username, "import", None, f"{report.imported} events, {len(report.errors)} bad lines")
        console.sync()
        return page(request, "import.html", report=report, filename=getattr(upload, "filename", ""))

    @app.get("/audit", response_class=HTMLResponse)
    async def audit_page(request: Request) -> Response:
        need(request, "admin")
        return page(request, "audit.html", entries=console.store.audit_log(500))

    @app.get("/users", response_class=HTMLResponse)
    async def users_page(request: Request, error: str = "") -> Response:
        need(request, "admin")
        return page(request, "users.html", users=console.store.users(), roles=ROLES, error=error)

    @app.post("/users")
    async def set_user(request: Request) -> Response:
        form = await checked_form(request)
        admin = need(request, "admin")
        try:
            console.store.set_user(str(form.get("username", "")), str(form.get("password", "")), str(form.get("role", "")))  # type: ignore[arg-type]
        except StoreError as exc:
            return RedirectResponse(f"/users?error={quote(str(exc))}", status_code=303)
        console.store.audit(admin.username, "set_user", None, f"{form.get('username')} as {form.get('role')}")
        return RedirectResponse("/users", status_code=303)

    return app


def _blank_is_none(v: Any) -> Any:
    # an empty form field (`over_ms=` from the filter form) means "not given", not "invalid"
    return None if v == "" else v


_TURN = Annotated[int, PathParam(ge=0, le=1_000_000)]
_Blank = BeforeValidator(_blank_is_none)
_PageNo = Annotated[int, Field(ge=1, le=MAX_PAGE)]
_PerPage = Annotated[int, Field(ge=1, le=500)]
_StageName = Annotated[str, Field(pattern=STAGE_PATTERN)]
_Ms = Annotated[float, Field(ge=0, le=86_400_000, allow_inf_nan=False)]
_BUS = " (incl. bus wait)"


def _stage_rank(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def console_vocab() -> Vocabulary:
    return vocabulary()


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')} (got {str(err.get('input'))[:40]!r})")
    return "; ".join(parts) or "invalid request"


def _label_known(label: TurnLabel, vocab: Vocabulary) -> bool:
    ents = None if label.entities is None else [(e.type, e.value) for e in label.entities]
    return vocab.is_known(label.intents, ents)


def _line_known(line: str, vocab: Vocabulary) -> bool:
    d = json.loads(line)
    return vocab.is_known(d.get("intents"), [(e["type"], e["value"]) for e in d.get("entities", [])])


def _import_labels(lines: list[str], author: str, vocab: Vocabulary, store: LabelStore) -> tuple[int, list[tuple[int, str]]]:
    """Each good line becomes a label (author: the importer); each bad one is reported by number
    with what is wrong, and the rest are still imported."""
    from pydantic import ValidationError

    good: list[TurnLabel] = []
    errors: list[tuple[int, str]] = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            ents = d.get("entities")
            intents, checked = vocab.check_label(
                d.get("intents"), None if ents is None else [(e["type"], e["value"]) for e in ents]
            )
            d.update(
                intents=intents, entities=None if checked is None else [EntityLabel(type=t, value=v) for t, v in checked],
                author=author,
            )
            d.pop("created_at", None)
            good.append(TurnLabel.model_validate(d))
        except VocabError as exc:
            errors.append((n, str(exc)))
        except ValidationError as exc:
            first = exc.errors()[0]
            errors.append((n, f"{'.'.join(map(str, first['loc']))}: {first['msg']}"))
        except (ValueError, KeyError, TypeError) as exc:
            errors.append((n, f"not a label: {exc}"))
    for label in good:
        store.add(label)
    return len(good), errors


# --- helpers -------------------------------------------------------------------------------


def _run_replay(console: Console, call_id: str, chosen: list[str], overrides: dict[str, str]) -> Any:
    from agent.pipeline import build_stage
    from agent.replay import replay_call

    settings = console.settings.model_copy(update=overrides)
    stages = [build_stage(name, settings) for name in chosen]
    # A replay reads the log on its own connection: it runs in a worker thread.
    log = CallLog(console.log.path)
    try:
        return replay_call(log, call_id, stages)
    finally:
        log.close()


def _label_quality(console: Console) -> dict[str, Any]:
    """ASR CER and intent accuracy of what was recorded, measured against reviewers' labels."""
    from agent.labels import labelled_turns

    edits = chars = 0
    right = judged = 0
    n_labels = unknown = 0
    # CER means something only where a recogniser wrote the transcript: turns with caller speech.
    # A text call's transcript is what the caller typed (CER 0 by construction).
    spoken = console.index.speech_turns()
    vocab = console_vocab()
    for item in labelled_turns(console.labels, console.log):
        n_labels += 1
        label, rec = item.label, item.recorded
        if rec is None:
            continue
        truth = label.transcript or (rec.caller_text if label.confirmed else None)
        if truth and rec.caller_text is not None and (label.call_id, label.turn) in spoken:
            edits += _edit_distance(_cer_norm(rec.caller_text), _cer_norm(truth))
            chars += len(_cer_norm(truth))
        if not _label_known(label, vocab):
            unknown += 1  # a name outside the taxonomy is no yardstick
            continue
        truth_intents = label.intents if label.intents is not None else ([n for n, _ in rec.intents] if label.confirmed else None)
        if truth_intents is not None:
            judged += 1
            right += int(sorted(truth_intents) == sorted(n for n, _ in rec.intents))
    return {
        "labels": n_labels,
        "cer": edits / chars if chars else None,
        "cer_chars": chars,
        "intent_accuracy": right / judged if judged else None,
        "intent_judged": judged,
        "unknown_names": unknown,
    }


def _cer_norm(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _label_from_form(form: Any, call_id: str, turn: int, author: str, vocab: Vocabulary) -> TurnLabel:
    """The label a form posts.  Intents: the multi-select's values (several `intents` fields; a
    single comma-separated one is also read, for scripts).  Slots: `entity_type`/`entity_value`
    rows (blank rows skipped; `slots_set=1` says the rows were shown, so none left = no slots),
    or one `entities` text field `type=value; …`.  Every name is checked against the taxonomy."""
    transcript = str(form.get("transcript") or "").strip() or None
    picked = [str(x).strip() for x in form.getlist("intents") if str(x).strip()]
    if len(picked) == 1 and re.search(r"[,，\s]", picked[0]):
        picked = [x for x in re.split(r"[,，\s]+", picked[0]) if x]
    intents = picked or None  # nothing picked: not corrected (the taxonomy's `other` says "none of these")
    pairs: list[tuple[str, Any]] | None = None
    types, values = form.getlist("entity_type"), form.getlist("entity_value")
    if types or form.get("slots_set"):
        pairs = [(str(t), str(v)) for t, v in zip(types, values) if str(t).strip() or str(v).strip()]
    slots_raw = str(form.get("entities") or "").strip()
    if slots_raw:
        pairs = pairs or []
        for line in re.split(r"[\n;；]+", slots_raw):
            if not line.strip():
                continue
            if "=" not in line:
                raise ValueError(f"slot {line.strip()!r} is not TYPE=VALUE")
            k, v = line.split("=", 1)
            pairs.append((k.strip(), v.strip()))
    intents, checked = vocab.check_label(intents, pairs)
    entities = None if checked is None else [EntityLabel(type=t, value=v) for t, v in checked]
    return TurnLabel(
        call_id=call_id,
        turn=turn,
        transcript=transcript,
        intents=intents,
        entities=entities,
        flags=[f for f in form.getlist("flags")],
        confirmed=bool(form.get("confirmed")),
        note=str(form.get("note") or "").strip(),
        author=author,
    )


def _filter(q: Any, stage: str | None, over_ms: float | None) -> CallFilter:
    return CallFilter(
        since=_date(q.get("since")),
        until=_date(q.get("until"), end=True),
        campaign=q.get("campaign") or None,
        outcome=q.get("outcome") or None,
        intent=q.get("intent") or None,
        dialect=q.get("dialect") or None,
        flagged=bool(q.get("flagged")),
        compliance=bool(q.get("compliance")),
        latency_stage=stage or None,
        latency_over_ms=over_ms,
        text=(q.get("text") or "").strip() or None,
        sort=q.get("sort") or "started",
        descending=q.get("dir", "desc") != "asc",
    )


def _date(v: str | None, end: bool = False) -> float | None:
    if not v:
        return None
    try:
        d = dt.datetime.fromisoformat(v)
    except ValueError:
        return None
    if end and len(v) <= 10:
        d += dt.timedelta(days=1)
    return d.timestamp()


def _safe_next(nxt: str) -> str:
    # Only same-site paths: an open redirect after login would help phishing.
    return nxt if nxt.startswith("/") and not nxt.startswith("//") else "/calls"


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "–"
