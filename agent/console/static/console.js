// All of the console's script (the Content-Security-Policy allows no inline script).

// Click a turn's play button: load that turn's audio into the one player and play it.
document.addEventListener("click", (ev) => {
  const btn = ev.target.closest("button.play");
  if (!btn) return;
  const player = document.getElementById("player");
  document.querySelectorAll("li.turn.playing").forEach((li) => li.classList.remove("playing"));
  btn.closest("li.turn")?.classList.add("playing");
  document.getElementById("now-playing").textContent = btn.dataset.label;
  player.src = btn.dataset.src;
  player.play().catch((err) => { document.getElementById("now-playing").textContent = "cannot play: " + err; });
});

// Whole-call waveform: caller above the line, bot below, each turn's span marked; click to seek.
const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}
async function drawWaveform(box) {
  const data = await (await fetch(box.dataset.peaks, { credentials: "same-origin" })).json();
  const W = 1000, H = 120, mid = H / 2, dur = data.duration_s || 1;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "wave", preserveAspectRatio: "none", role: "img",
    "aria-label": `waveform of the whole call, ${dur.toFixed(1)} s` });
  for (const m of data.turns) {
    const x = (m.start_s / dur) * W, w = Math.max(2, ((m.end_s - m.start_s) / dur) * W);
    const r = svgEl("rect", { x, y: m.who === "caller" ? 0 : mid, width: w, height: mid, class: `mark ${m.who}` }, svg);
    r.dataset.start = m.start_s;
    svgEl("title", {}, r).textContent = `turn ${m.turn} · ${m.who} · ${m.start_s.toFixed(1)}–${m.end_s.toFixed(1)} s`;
    svgEl("text", { x: x + 2, y: m.who === "caller" ? 11 : H - 3, class: `turnlabel ${m.who}` }, svg).textContent = `${m.turn}`;
  }
  for (const [who, sign] of [["caller", -1], ["bot", 1]]) {
    const peaks = data[who], n = peaks.length;
    if (!n) continue;
    const top = Math.max(0.02, ...peaks);  // each channel to its own loudest: a quiet line stays visible
    let d = "";
    peaks.forEach((p, i) => { const x = (i / n) * W; d += `M${x.toFixed(1)},${mid} v${(sign * (p / top) * (mid - 2)).toFixed(1)} `; });
    svgEl("path", { d, class: `peaks ${who}` }, svg);
  }
  svgEl("line", { x1: 0, x2: W, y1: mid, y2: mid, class: "axis" }, svg);
  const head = svgEl("line", { x1: 0, x2: 0, y1: 0, y2: H, class: "playhead" }, svg);
  box.replaceChildren(svg);
  const player = document.getElementById("callplayer");
  svg.addEventListener("click", (ev) => {
    const box_ = svg.getBoundingClientRect();
    player.currentTime = ((ev.clientX - box_.left) / box_.width) * dur;
    player.play().catch(() => {});
  });
  player.addEventListener("timeupdate", () => {
    const x = (player.currentTime / dur) * W;
    head.setAttribute("x1", x); head.setAttribute("x2", x);
  });
  box.dataset.ready = "1";
}
document.querySelectorAll("#waveform[data-peaks]").forEach((box) => {
  drawWaveform(box).catch((err) => { box.textContent = "no waveform: " + err; });
});

// Review queue keys: j/k move, 1-9 toggle an intent, s save, a accept, Enter open the call.
const queue = document.getElementById("queue");
if (queue) {
  const items = [...queue.querySelectorAll("li.qitem")];
  let at = 0;
  const select = (i) => {
    if (!items.length) return;
    at = Math.max(0, Math.min(items.length - 1, i));
    items.forEach((li, j) => li.classList.toggle("current", j === at));
    items[at].scrollIntoView({ block: "nearest" });
  };
  select(0);
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.closest("input, textarea")) return;
    const li = items[at];
    if (!li) return;
    if (ev.key === "j") select(at + 1);
    else if (ev.key === "k") select(at - 1);
    else if (/^[1-9]$/.test(ev.key)) {
      const opt = li.querySelectorAll("select.intents-pick option")[Number(ev.key) - 1];
      if (opt) opt.selected = !opt.selected;
    } else if (ev.key === "s") li.querySelector("form.qlabel")?.requestSubmit();
    else if (ev.key === "a") li.querySelector("form.qaccept")?.requestSubmit();
    else if (ev.key === "Enter" && !ev.target.closest("select, button, a")) window.location.href = li.dataset.href;
    else return;
    ev.preventDefault();
  });
}
