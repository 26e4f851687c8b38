"""Console benchmark: server time of the calls list and the call page with 10 000 calls in the log.

The log is filled with calls whose events come from really running the text pipeline's stages
(nlu, dst, policy) on a handful of caller scripts once, then cloned per call with fresh ids,
call ids, campaigns, start times spread over two weeks and jittered stage latencies (so the
calls list has realistic filters and the dashboard real distributions).

Server time = the app's own handling time, read from the Server-Timing header the console sets
on every response (so HTTP client overhead is not counted); the client-side time is printed too.

Prints one JSON line per figure:
  {"bench": "console", "metric": "list_page_p95", "value": 42.1, "unit": "ms", "calls": 10000}

Usage:  python bench/bench_console.py [--calls 10000] [--requests 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from agent import events as ev  # noqa: E402
from agent import topics  # noqa: E402
from agent.bus.base import partition_for  # noqa: E402
from agent.bus.embedded import open_log_db  # noqa: E402
from agent.observability import configure_logging  # noqa: E402
from agent.percentiles import percentile  # noqa: E402
from agent.pipeline import build_stage  # noqa: E402
from agent.settings import Settings  # noqa: E402
from agent.stages.base import CallContext  # noqa: E402

SCRIPTS = [
    ["喂，你好", "我想要一个性价比高的云服务器，大概1000并发，还要支持异地备份", "那这个的年费是多少？", "有点贵啊，能便宜点吗", "行吧，那先帮我约个演示，明天下午三点"],
    ["你好", "你们是机器人吗", "不需要，别再打了"],
    ["喂", "我们公司想上一套CRM，大概两百人用", "价格怎么算", "好的，发个报价给我"],
    ["你好", "现在在用阿里云，你们比他们好在哪", "那2000并发多少钱", "我再考虑一下"],
    ["喂你好", "有什么事", "没兴趣"],
    ["您好", "我想了解一下你们的SaaS产品", "支持私有化部署吗", "多少钱一年", "有点贵", "那先这样吧"],
]
CAMPAIGNS = ["spring-promo", "renewal", "demo", "cold-list-7", "webinar-followup"]
DIALECTS = ["zh", "zh", "zh", "yue"]
TOPIC_OF = {
    ev.CallStarted: topics.CONTROL, ev.CallEnded: topics.CONTROL, ev.TranscriptFinal: topics.TRANSCRIPTS,
    ev.NluResult: topics.NLU, ev.DialogueStateUpdated: topics.DIALOGUE, ev.BotReply: topics.REPLIES,
}


def emit(metric: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"bench": "console", "metric": metric, "value": round(value, 2), "unit": unit, **extra}), flush=True)


def template_calls(settings: Settings) -> list[list[Any]]:
    """Each script run once through the real nlu -> dst -> policy stages, in process."""
    stages = [build_stage(n, settings) for n in ("nlu", "dst", "policy")]
    out = []
    for i, script in enumerate(SCRIPTS):
        call_id = f"template-{i}"
        ctxs = {s.name: CallContext(call_id=call_id, state=s.new_state(call_id)) for s in stages}
        events: list[Any] = [ev.CallStarted(call_id=call_id, stage="caller")]
        cause = events[0].event_id
        for turn, text in enumerate(script, start=1):
            current = [ev.TranscriptFinal(call_id=call_id, turn=turn, stage="caller", text=text, caused_by=cause, confidence=0.9)]
            events += current
            for stage in stages:
                produced = []
                for e in current:
                    produced += [emit_.event for emit_ in stage.handle(e, ctxs[stage.name])]
                events += produced
                current = produced
            replies = [e for e in events if isinstance(e, ev.BotReply) and e.turn == turn]
            cause = replies[-1].event_id if replies else cause
        events.append(ev.CallEnded(call_id=call_id, turn=len(script), stage="caller", reason="hangup"))
        out.append(events)
    return out


def fill_log(path: Path, n_calls: int, templates: list[list[Any]], partitions: int = 4) -> None:
    rng = random.Random(7)
    db = open_log_db(path)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('partitions', ?)", (str(partitions),))
    offsets: dict[tuple[str, int], int] = {}
    t0 = time.time() - 14 * 86400
    rows = []
    for n in range(n_calls):
        tpl = templates[n % len(templates)]
        call_id = f"call-{n:06d}"
        start = t0 + n * (14 * 86400 / n_calls) + rng.random() * 30
        ids = {e.event_id: uuid.uuid4().hex for e in tpl}
        outcome = rng.choice(["demo_booked", "callback", "not_interested", "quote_sent", None])
        end_reason = rng.choice(["hangup"] * 8 + ["dropped", "timeout"])
        clock = start
        part = partition_for(call_id, partitions)
        for e in tpl:
            clock += 0.002 + rng.random() * (0.02 if e.stage in ("nlu", "policy") else 0.005)
            if isinstance(e, ev.TranscriptFinal):
                clock += 2 + rng.random() * 4  # the caller talks between turns
            update: dict[str, Any] = {
                "event_id": ids[e.event_id], "call_id": call_id, "ts_wall": clock,
                "caused_by": ids.get(e.caused_by) if e.caused_by else None,
            }
            if isinstance(e, ev.CallStarted):
                update |= {"campaign": rng.choice(CAMPAIGNS), "caller": f"13{rng.randrange(10**9):09d}"}
            elif isinstance(e, ev.CallEnded):
                update |= {"outcome": outcome, "reason": end_reason}
            elif isinstance(e, ev.TranscriptFinal):
                update |= {"language": DIALECTS[n % len(DIALECTS)]}
            copy = e.model_copy(update=update)
            topic = TOPIC_OF[type(e)]
            off = offsets.get((topic, part), -1) + 1
            offsets[(topic, part)] = off
            rows.append((topic, part, off, call_id, ev.encode(copy), clock))
        if len(rows) > 20000:
            _insert(db, rows)
            rows = []
    _insert(db, rows)
    db.close()


def _insert(db: Any, rows: list[tuple[Any, ...]]) -> None:
    db.execute("BEGIN")
    db.executemany("INSERT INTO log VALUES (?,?,?,?,?,?)", rows)
    db.execute("COMMIT")


def pct(values: list[float], p: int) -> float:
    return percentile(values, p / 100) or 0.0


def timed(client: Any, url: str) -> tuple[float, float]:
    t = time.perf_counter()
    r = client.get(url)
    wall = (time.perf_counter() - t) * 1000
    assert r.status_code == 200, (url, r.status_code)
    server = float(re.search(r"dur=([\d.]+)", r.headers["server-timing"]).group(1))
    return server, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--keep", type=Path, help="build the log in this folder and keep it (reused when it exists)")
    args = ap.parse_args()
    configure_logging("WARNING")
    from fastapi.testclient import TestClient

    from agent.console.app import create_app, open_console

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-console-"))
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=folder)
    if not settings.log_path.exists():
        t = time.perf_counter()
        fill_log(settings.log_path, args.calls, template_calls(settings))
        emit("fill_log", time.perf_counter() - t, "s", calls=args.calls)

    con = open_console(settings)
    con.store.set_user("bench", "bench password", "reviewer")
    t = time.perf_counter()
    con.sync()
    emit("index_build", time.perf_counter() - t, "s", calls=con.index.count())
    client = TestClient(create_app(con))
    token = re.search(r'name="token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "bench", "password": "bench password", "token": token})

    rng = random.Random(11)
    list_urls = [
        "/calls", "/calls?page=37", "/calls?campaign=renewal", "/calls?intent=price_inquiry",
        "/calls?text=%E5%B9%B4%E8%B4%B9", "/calls?stage=nlu&over_ms=15", "/calls?sort=turns&dir=asc",
        "/calls?dialect=yue&outcome=callback", "/calls?since=2020-01-01&sort=duration",
        "/calls?flagged=1",
    ]
    server, wall = [], []
    for i in range(args.requests):
        s, w = timed(client, list_urls[i % len(list_urls)])
        server.append(s)
        wall.append(w)
    emit("list_page_p50", pct(server, 50), "ms", calls=args.calls, bar_ms=300)
    emit("list_page_p95", pct(server, 95), "ms", calls=args.calls, bar_ms=300)
    emit("list_page_client_p95", pct(wall, 95), "ms", calls=args.calls)

    server, wall = [], []
    for _ in range(args.requests):
        s, w = timed(client, f"/calls/call-{rng.randrange(args.calls):06d}")
        server.append(s)
        wall.append(w)
    emit("call_page_p50", pct(server, 50), "ms", calls=args.calls, bar_ms=200)
    emit("call_page_p95", pct(server, 95), "ms", calls=args.calls, bar_ms=200)
    emit("call_page_client_p95", pct(wall, 95), "ms", calls=args.calls)

    # the review queue over every turn (unreviewed first, by priority), first page and a deep one
    server = [timed(client, url)[0] for url in ("/queue", "/queue?page=20", "/queue?all=1") * 20]
    emit("queue_page_p50", pct(server, 50), "ms", calls=args.calls)
    emit("queue_page_p95", pct(server, 95), "ms", calls=args.calls)

    server = [timed(client, "/dashboard")[0] for _ in range(5)]
    emit("dashboard_median", statistics.median(server), "ms", calls=args.calls)
    con.log.close()
    con.store.close()


if __name__ == "__main__":
    main()
