// Follows a running job's log on its page over server-sent events (core/logstream.py):
// each event is a line, already rendered to safe HTML by the server the way the page
// renders it. EventSource reconnects by itself and sends the last line's id, so nothing is
// lost or shown twice. Lines are added once a frame, and only the newest KEEP lines stay
// on the page (the earlier ones are on the log's other pages). No framework, no build step.
(function () {
  "use strict";
  var log = document.getElementById("job-log");
  if (!log || !log.dataset.events || !window.EventSource) return;
  var KEEP = 5000;
  var state = document.getElementById("job-state");
  var note = document.getElementById("job-follow-note");
  var range = document.getElementById("log-range");
  var earlier = document.getElementById("log-earlier");
  var following = note ? note.textContent : "";
  var pending = [];
  var url = log.dataset.events + "?after=" + encodeURIComponent(log.dataset.after || "0");
  var source = new EventSource(url);

  function atBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 4;
  }

  function line(data) {
    var span = document.createElement("span");
    span.className = "line";
    span.id = "L" + data.n;
    span.dataset.n = data.n;
    span.innerHTML = data.html; // escaped and coloured by the server (onwatch/core/ansi.py)
    return span;
  }

  function trim() {
    var lines = log.getElementsByClassName("line");
    var extra = lines.length - KEEP;
    for (var i = 0; i < extra; i++) {
      log.removeChild(lines[0].nextSibling); // its newline
      log.removeChild(lines[0]);
    }
    if (extra > 0 && earlier) earlier.hidden = false;
  }

  function flush() {
    if (!pending.length) return;
    var follow = atBottom();
    var part = document.createDocumentFragment();
    pending.forEach(function (data) {
      part.appendChild(line(data));
      part.appendChild(document.createTextNode("\n"));
    });
    var last = pending[pending.length - 1].n;
    pending = [];
    log.appendChild(part);
    trim();
    var first = log.getElementsByClassName("line")[0];
    if (range && first) range.textContent = "Lines " + first.dataset.n + "–" + last + " of " + last + ".";
    if (note && note.textContent !== following) note.textContent = following;
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  }

  function ended(name) {
    if (state) {
      state.textContent = name;
      state.className = "state-" + name;
    }
    if (log.dataset.reloadWhenEnded) {
      // The steps, their states and the test results above the log changed too: show
      // them, rather than a page that still says "running".
      if (note) note.textContent = "It has ended (" + name + "); showing the result…";
      window.setTimeout(function () { window.location.reload(); }, 300);
      return;
    }
    if (note) note.textContent = "The job has ended (" + name + "). Reload the page for its result.";
  }

  source.onmessage = function (e) {
    pending.push(JSON.parse(e.data));
    if (pending.length === 1) window.requestAnimationFrame(flush);
  };
  source.addEventListener("end", function (e) {
    source.close();
    flush();
    ended(JSON.parse(e.data).state);
  });
  source.addEventListener("closed", function (e) {
    // The server stopped: this viewer may no longer see the job (signed out, removed).
    source.close();
    flush();
    if (note) note.textContent = JSON.parse(e.data).reason;
  });
  source.onopen = function () {
    if (note) note.textContent = following;
  };
  source.onerror = function () {
    if (!note) return;
    note.textContent = source.readyState === EventSource.CLOSED
      ? "Following the log stopped: the server refused. Reload the page to try again."
      : "The connection to the server was lost; trying again…";
  };
})();
