/* The single-file exports (flame graph and diff): the data sits in the page's
 * "pyrometer-data" script element; the components come from flame.js, inlined before
 * this file. The collector's own page uses the same components (app.js). */
"use strict";
(function () {
  const F = PyrometerFlame;
  const $ = (id) => document.getElementById(id);
  const doc = JSON.parse($("pyrometer-data").textContent);
  const search = $("search");
  const graph = new F.FlameGraph($("chart"), $("tip"));
  const pick = (name) => { search.value = name; $("matched").textContent = graph.search(name); };

  $("title").textContent = doc.title;
  $("summary").textContent = F.describe(doc);
  const lines = F.notices(doc);
  if (lines.length) { $("notice").textContent = lines.join(" "); $("notice").style.display = "block"; }
  if (F.isDiff(doc)) {
    new F.ChangesTable($("top"), pick).show(doc);
    $("width").addEventListener("change", () => graph.setWidth($("width").value));
    $("colour").addEventListener("change", () => graph.setColour($("colour").value));
    $("colour").options[1].textContent = "change per " + doc.normalisation.per;
  } else {
    new F.TopTable($("top"), pick).show(doc);
  }
  graph.setDocument(doc);
  search.addEventListener("input", () => { $("matched").textContent = graph.search(search.value); });
  $("reset").addEventListener("click", () => {
    search.value = ""; $("matched").textContent = ""; graph.reset();
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") graph.zoom(null); });
  window.addEventListener("resize", () => graph.draw());
})();
