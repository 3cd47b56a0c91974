// soilsource report: overlay chooser, opacity slider and layer toggles of each map.
// Plain DOM, no library; every map works on its own.
"use strict";
document.querySelectorAll("article.map").forEach(function (map) {
  function update() {
    var chosen = map.querySelector("input[data-control=overlay]:checked");
    var name = chosen ? chosen.value : "none";
    var slider = map.querySelector("input[data-control=opacity]");
    var opacity = slider ? slider.value / 100 : 1;
    map.querySelectorAll("img[data-overlay]").forEach(function (img) {
      img.style.display = img.dataset.overlay === name ? "" : "none";
      img.style.opacity = opacity;
    });
    map.querySelectorAll("[data-legend]").forEach(function (item) {
      item.style.display = item.dataset.legend === name ? "" : "none";
    });
    var stack = map.querySelector(".stack");
    if (stack) { stack.classList.toggle("overlaid", name !== "none"); }
    map.querySelectorAll("input[data-toggle]").forEach(function (box) {
      var layer = map.querySelector("[data-layer=" + box.dataset.toggle + "]");
      if (layer) { layer.style.display = box.checked ? "" : "none"; }
    });
  }
  map.addEventListener("input", update);
  map.addEventListener("change", update);
  update();
});
