// tw console: small enhancements; every page works without this file.
// - <time datetime> elements are shown in the viewer's time zone (UTC stays in the title).
// - elements marked data-copy get a "Copy" button.
(function () {
  "use strict";
  var fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d.getTime())) { t.textContent = fmt.format(d); }
  });
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
