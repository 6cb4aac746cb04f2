// Live progress on the campaign page: an enhancement only. Without JavaScript the page's
// refresh link shows the same counts. The server sends the counts every 2 s (SSE) and closes
// the stream once the campaign is no longer under way.
"use strict";
(function () {
  var table = document.getElementById("counts");
  if (!table || !window.EventSource) { return; }
  var source = new EventSource(table.getAttribute("data-events"));
  source.onmessage = function (event) {
    var data = JSON.parse(event.data);
    var total = data.total;
    Object.keys(data.counts).forEach(function (state) {
      var row = table.querySelector('tr[data-state="' + state + '"]');
      if (!row) { return; }
      var count = data.counts[state];
      row.querySelector(".count").textContent = count + " / " + total;
      var bar = row.querySelector("progress");
      bar.max = total || 1;
      bar.value = count;
      bar.textContent = String(count);
    });
    var shown = document.getElementById("campaign-state");
    if (shown) { shown.textContent = data.state; }
    if (data.done) { source.close(); }
  };
})();
