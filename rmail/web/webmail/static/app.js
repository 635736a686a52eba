// rmail webmail: small enhancements only; every page works without this file.
(function () {
  "use strict";
  var root = document.documentElement;

  // Theme: follows the system; the switch stores a choice in this browser.
  var saved = localStorage.getItem("rmail-theme");
  if (saved === "light" || saved === "dark") root.setAttribute("data-theme", saved);
  document.querySelectorAll("[data-theme-switch]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var dark = root.getAttribute("data-theme") === "dark" ||
        (root.getAttribute("data-theme") !== "light" && matchMedia("(prefers-color-scheme: dark)").matches);
      var next = dark ? "light" : "dark";
      root.setAttribute("data-theme", next);
      localStorage.setItem("rmail-theme", next);
    });
  });

  // Confirm destructive forms.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // Select all.
  document.querySelectorAll("[data-select-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      document.querySelectorAll("tr.message-row input[name=uid]").forEach(function (item) {
        item.checked = box.checked;
      });
    });
  });

  // Keyboard shortcuts.
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.message-row"));
  var current = -1;
  function select(index) {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach(function (row, i) { row.classList.toggle("selected", i === current); });
    rows[current].scrollIntoView({ block: "nearest" });
  }
  function submitAction(action, uid) {
    var form = document.querySelector("form.bulk") || document.querySelector(".msg-actions form");
    if (!form) return;
    // On a message, "unread" and "delete" go back to the list: coming back to the message
    // would mark it read again, or find it gone.
    var list = document.querySelector("[data-back]");
    var back = list && action !== "star" && action !== "unstar" ? list.href : location.href;
    var data = document.createElement("form");
    data.method = "post";
    // getAttribute: the form's buttons are named "action", which shadows form.action.
    data.action = form.getAttribute("action");
    [["csrf", form.querySelector("[name=csrf]").value], ["action", action], ["uid", uid],
     ["back", back]].forEach(function (pair) {
      var input = document.createElement("input");
      input.type = "hidden"; input.name = pair[0]; input.value = pair[1];
      data.appendChild(input);
    });
    document.body.appendChild(data);
    data.submit();
  }
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.ctrlKey || event.metaKey || event.altKey) return;
    var detail = document.querySelector("article.msg-detail");
    var row = current >= 0 ? rows[current] : null;
    var uid = row ? row.dataset.uid : (detail ? detail.dataset.uid : null);
    var flags = row ? row.dataset.flags : (detail ? detail.dataset.flags || "" : "");
    switch (event.key) {
      case "j": select(current + 1); break;
      case "k": select(current - 1); break;
      case "Enter": if (row) location.href = row.querySelector("a.message-link").href; break;
      case "s": if (uid) submitAction(flags.indexOf("\\Flagged") >= 0 ? "unstar" : "star", uid); break;
      case "u": if (uid) submitAction(row && flags.indexOf("\\Seen") < 0 ? "read" : "unread", uid); break;
      case "#": if (uid) submitAction("delete", uid); break;
      case "c": var c = document.querySelector("a.compose"); if (c) location.href = c.href; break;
      case "/": var s = document.querySelector("[data-search]"); if (s) { event.preventDefault(); s.focus(); } break;
      case "Escape": var back = document.querySelector("[data-back]"); if (back) location.href = back.href; break;
      case "?": var help = document.getElementById("shortcuts"); if (help && help.showModal) help.showModal(); break;
      default: return;
    }
  });
})();
