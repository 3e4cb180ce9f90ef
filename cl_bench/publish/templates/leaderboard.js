"use strict";
(function () {
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.stream"));
  var protocolFilter = document.getElementById("protocol-filter");
  var backboneFilter = document.getElementById("backbone-filter");

  function headers(table) { return Array.prototype.slice.call(table.tHead.rows[0].cells); }
  function column(table, name) { return headers(table).findIndex(function (th) { return th.textContent.trim() === name; }); }
  function value(row, index) {
    var text = row.cells[index].textContent.trim();
    return /^-?[0-9][0-9,]*([.][0-9]+)?(\s|$)/.test(text) ? parseFloat(text.replace(/,/g, "")) : text.toLowerCase();
  }
  function sortBy(table, index, th) {
    var body = table.tBodies[0];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) {
      var a = value(r, index), b = value(s, index);
      if (typeof a !== typeof b) { return typeof a === "number" ? -1 : 1; }  /* "-" (undefined) stays last */
      var order = a < b ? -1 : a > b ? 1 : 0;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    headers(table).forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  function addOption(select, text) {
    if (Array.prototype.some.call(select.options, function (o) { return o.value === text; })) { return; }
    var option = document.createElement("option");
    option.value = text;
    option.textContent = text;
    select.appendChild(option);
  }
  function applyFilter() {
    sections.forEach(function (section) {
      var table = section.querySelector("table.board");
      var index = column(table, "backbone");
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var keep = !backboneFilter.value || row.cells[index].textContent.trim() === backboneFilter.value;
        row.hidden = !keep;
        shown += keep ? 1 : 0;
      });
      section.hidden = shown === 0 || (protocolFilter.value !== "" && section.dataset.protocol !== protocolFilter.value);
    });
  }
  sections.forEach(function (section) {
    var table = section.querySelector("table.board");
    addOption(protocolFilter, section.dataset.protocol);
    var index = column(table, "backbone");
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) { addOption(backboneFilter, row.cells[index].textContent.trim()); });
    headers(table).forEach(function (th, position) {
      if (th.textContent.trim() === "files") { return; }
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent.trim();
      th.addEventListener("click", function () { sortBy(table, position, th); });
      th.addEventListener("keydown", function (event) { if (event.key === "Enter") { sortBy(table, position, th); } });
    });
  });
  protocolFilter.addEventListener("change", applyFilter);
  backboneFilter.addEventListener("change", applyFilter);
  document.getElementById("filters").hidden = false;
})();
