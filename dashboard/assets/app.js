// meshwatch dashboard: copy buttons and auto-refresh. Served by the binary; no inline script
// (the Content-Security-Policy allows scripts from this server only). Text only: nothing read
// from the page is ever written back as HTML.
"use strict";

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    // plain HTTP to another host is not a secure context: fall back to a selection
    const ta = document.createElement("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.style.position = "fixed";
    ta.style.opacity = "0";
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    ta.remove();
    return ok;
  }
}

document.addEventListener("click", async (ev) => {
  const button = ev.target instanceof Element ? ev.target.closest("button[data-copy]") : null;
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const ok = await copyText(source.textContent);
  button.textContent = ok ? "Copied" : "Copy failed: select the text";
  button.dataset.copied = ok ? "yes" : "no";
  setTimeout(() => { button.textContent = button.dataset.label || "Copy"; }, 2000);
});

(function autoRefresh() {
  const seconds = Number(document.body.dataset.refresh || 0);
  const box = document.getElementById("auto-refresh");
  if (!(seconds > 0) || !box) return;
  const key = "meshwatch-auto-refresh";
  box.checked = sessionStorage.getItem(key) !== "off";
  box.addEventListener("change", () => sessionStorage.setItem(key, box.checked ? "on" : "off"));
  setInterval(() => {
    // not while the page is hidden or text is being selected (someone is copying)
    const selecting = String(window.getSelection() || "").length > 0;
    if (box.checked && !document.hidden && !selecting) location.reload();
  }, seconds * 1000);
})();
