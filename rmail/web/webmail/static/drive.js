// rmail webmail drive: enhancements only (drag and drop upload, confirmations, select all,
// copy link). Every action also works without this file through the page's forms.
(function () {
  "use strict";

  // Confirm destructive buttons; a confirmed delete skips the server's confirmation page.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var button = event.submitter;
      if (!button || !button.hasAttribute("data-drive-confirm")) return;
      if (!confirm(button.getAttribute("data-drive-confirm"))) {
        event.preventDefault();
        return;
      }
      var flag = form.querySelector("input[name=confirmed]");
      if (!flag) {
        flag = document.createElement("input");
        flag.type = "hidden";
        flag.name = "confirmed";
        form.appendChild(flag);
      }
      flag.value = "1";
    });
  });

  // Select all tiles.
  document.querySelectorAll("[data-drive-select-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      document.querySelectorAll(".tile-wrap input.tile-select").forEach(function (item) {
        item.checked = box.checked;
      });
    });
  });

  // Copy a share link.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var input = button.parentNode.querySelector("[data-copy-source]");
    if (!input) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      function done() { button.textContent = "Copied"; }
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(input.value).then(done, function () {
          input.select(); document.execCommand("copy"); done();
        });
      } else {
        input.select(); document.execCommand("copy"); done();
      }
    });
  });

  // Drag and drop: files and folders dropped on the grid are posted as the upload form
  // would post them (the CSRF token first, then each file named by its relative path).
  var grid = document.querySelector("[data-drop-target]");
  var form = document.querySelector("form[data-upload-form]");
  if (!grid || !form) return;
  function entryFiles(entry, prefix) {
    return new Promise(function (resolve) {
      if (entry.isFile) {
        entry.file(function (file) { resolve([[file, prefix + file.name]]); }, function () { resolve([]); });
        return;
      }
      var reader = entry.createReader();
      var all = [];
      (function more() {
        reader.readEntries(function (batch) {
          if (!batch.length) {
            Promise.all(all.map(function (child) {
              return entryFiles(child, prefix + entry.name + "/");
            })).then(function (lists) { resolve([].concat.apply([], lists)); });
            return;
          }
          all = all.concat(Array.prototype.slice.call(batch));
          more();
        }, function () { resolve([]); });
      })();
    });
  }
  grid.addEventListener("dragover", function (event) {
    if (!event.dataTransfer || Array.prototype.indexOf.call(event.dataTransfer.types, "Files") < 0) return;
    event.preventDefault();
    grid.classList.add("dropping");
  });
  grid.addEventListener("dragleave", function (event) {
    if (event.target === grid) grid.classList.remove("dropping");
  });
  grid.addEventListener("drop", function (event) {
    if (!event.dataTransfer) return;
    event.preventDefault();
    grid.classList.remove("dropping");
    var items = Array.prototype.slice.call(event.dataTransfer.items || []);
    var entries = items.map(function (item) {
      return item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    }).filter(Boolean);
    var pending = entries.length
      ? Promise.all(entries.map(function (entry) { return entryFiles(entry, ""); }))
          .then(function (lists) { return [].concat.apply([], lists); })
      : Promise.resolve(Array.prototype.map.call(event.dataTransfer.files, function (file) {
          return [file, file.name];
        }));
    pending.then(function (files) {
      if (!files.length) return;
      var data = new FormData();
      data.append("csrf", form.querySelector("[name=csrf]").value);
      files.forEach(function (pair) { data.append("file", pair[0], pair[1]); });
      grid.classList.add("uploading");
      fetch(form.action, { method: "POST", body: data, credentials: "same-origin" })
        .then(function (response) { location.href = response.redirected ? response.url : form.action; })
        .catch(function () { grid.classList.remove("uploading"); alert("The upload failed."); });
    });
  });
})();
