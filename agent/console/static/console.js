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
