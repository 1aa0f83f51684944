// Warden console: live SLA countdowns, the queue's live updates and keyboard shortcuts.
// Every page works without this file; it only saves reloads and keystrokes.
(function () {
  "use strict";

  function left(deadline) {
    var s = Math.round((Date.parse(deadline) - Date.now()) / 1000);
    var sign = s < 0 ? "overdue " : "";
    s = Math.abs(s);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return sign + (h ? h + "h " + pad(m) + "m" : m + "m " + pad(r) + "s");
  }

  function tick() {
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var text = left(el.getAttribute("data-deadline"));
      if (el.textContent !== text) { el.textContent = text; }
      el.classList.toggle("overdue", text.indexOf("overdue") === 0);
    });
  }

  function live() {
    var queue = document.querySelector("[data-live]");
    if (!queue || !window.EventSource) { return; }
    var source = new EventSource(queue.getAttribute("data-live"));
    source.addEventListener("queue", function () {
      // Keep what the approver selected across the swap.
      var picked = Array.prototype.map.call(
        queue.querySelectorAll("input[name=ids]:checked"), function (i) { return i.value; });
      queue.setAttribute("data-picked", picked.join(" "));
      document.body.dispatchEvent(new CustomEvent("queue-changed"));
    });
    document.body.addEventListener("htmx:afterSwap", function (e) {
      if (e.target !== queue) { return; }
      (queue.getAttribute("data-picked") || "").split(" ").forEach(function (id) {
        var box = id && document.getElementById("sel-" + id);
        if (box) { box.checked = true; }
      });
      tick();
    });
  }

  var current = -1, pendingG = false;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll(".queue tr.item")); }
  function select(i) {
    var all = rows();
    if (!all.length) { return; }
    current = Math.max(0, Math.min(all.length - 1, i));
    all.forEach(function (r, n) { r.classList.toggle("current", n === current); });
    all[current].querySelector("a.open").focus();
  }

  function keys(e) {
    var t = e.target;
    var form = document.getElementById("decide");
    if (form && t && t.id === "rationale" && e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      // Ctrl+Enter in the rationale: the decision chosen with a / r / e.
      var button = { a: "approve", r: "reject", e: "approve-edited" }[form.getAttribute("data-intent")];
      if (button) { document.getElementById(button).click(); e.preventDefault(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) { return; }
    var k = e.key;
    if (pendingG) {
      pendingG = false;
      if (k === "q") { window.location.href = "/ui/approvals"; e.preventDefault(); }
      return;
    }
    if (k === "g") { pendingG = true; return; }
    if (rows().length) {
      if (k === "j") { select(current + 1); e.preventDefault(); return; }
      if (k === "k") { select(current - 1); e.preventDefault(); return; }
      if ((k === "o" || k === "Enter") && current >= 0) {
        window.location.href = rows()[current].querySelector("a.open").href; e.preventDefault(); return;
      }
      if (k === "x" && current >= 0) {
        var box = rows()[current].querySelector("input[name=ids]");
        if (box) { box.checked = !box.checked; }
        e.preventDefault(); return;
      }
    }
    if (form && (k === "a" || k === "r" || k === "e")) {
      var why = document.getElementById("rationale");
      if (k === "e") { document.getElementById("edit").open = true; }
      form.setAttribute("data-intent", k);
      why.focus();
      e.preventDefault();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    window.setInterval(tick, 1000);
    live();
    document.addEventListener("keydown", keys);
  });
})();
