// tw console: small enhancements; every page works without this file.
// - <time datetime> elements are shown in the viewer's time zone (UTC stays in the title).
// - elements marked data-copy get a "Copy" button.
// - a table body with data-stream follows that server-sent-events URL: each `delivery` event's
//   data is a row rendered by the server, put on top; an `end` event (or an error) stops it, and
//   the page's refresh link remains.
(function () {
  "use strict";
  var fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d.getTime())) { t.textContent = fmt.format(d); }
    });
  }
  localTimes(document);
  var live = document.querySelector("tbody[data-stream]");
  if (live && window.EventSource) {
    var status = document.getElementById("live-status");
    var say = function (text) { if (status) { status.textContent = text; } };
    var es = new EventSource(live.getAttribute("data-stream"));
    es.addEventListener("open", function () { say("Live: new deliveries appear at the top."); });
    es.addEventListener("delivery", function (e) {
      var empty = live.querySelector("tr.empty");
      if (empty) { empty.remove(); }
      var holder = document.createElement("tbody");
      holder.innerHTML = e.data;
      var row = holder.firstElementChild;
      if (!row) { return; }
      localTimes(row);
      row.classList.add("new");
      live.insertBefore(row, live.firstChild);
      while (live.rows.length > 200) { live.deleteRow(-1); }
    });
    es.addEventListener("end", function () { es.close(); say("Live updates paused: refresh to resume."); });
    es.addEventListener("error", function () { es.close(); say("Live updates stopped: refresh to resume."); });
  }
  if (!navigator.clipboard) { return; }
  document.querySelectorAll("[data-copy]").forEach(function (el) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = "Copy";
    b.setAttribute("aria-label", "Copy " + (el.getAttribute("data-copy") || "value"));
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(el.textContent).then(function () {
        b.textContent = "Copied";
        setTimeout(function () { b.textContent = "Copy"; }, 2000);
      });
    });
    el.insertAdjacentElement("afterend", b);
  });
})();
