// Follows a running job's log on its page: asks for the lines after the last one shown,
// appends them, and stops once the job has ended. No framework, no build step.
(function () {
  "use strict";
  var log = document.getElementById("job-log");
  if (!log) return;
  var state = document.getElementById("job-state");
  var note = document.getElementById("job-follow-note");
  var after = log.dataset.after || "0";
  var url = log.dataset.follow;

  function show(answer) {
    if (answer.lines.length) {
      log.textContent += (log.textContent ? "\n" : "") + answer.lines.join("\n");
    }
    after = String(answer.after);
    if (state) {
      state.textContent = answer.state;
      state.className = "state-" + answer.state;
    }
    if (answer.ended) {
      if (note) note.textContent = "The job has ended (" + answer.state + "). Reload the page for its result.";
      return;
    }
    setTimeout(poll, answer.lines.length ? 200 : 1000);
  }

  function poll() {
    fetch(url + "?after=" + encodeURIComponent(after), {credentials: "same-origin"})
      .then(function (r) {
        if (!r.ok) throw new Error("the server answered " + r.status);
        return r.json();
      })
      .then(show)
      .catch(function (e) {
        if (note) note.textContent = "Following the log stopped: " + e.message + ". Reload the page to try again.";
      });
  }

  setTimeout(poll, 1000);
})();
