// Follows an export while it runs: asks for its status, announces it, reloads the page once it has finished.
(function () {
  "use strict";
  const region = document.getElementById("export-progress");
  if (!region || region.dataset.finished === "yes") return;
  async function check() {
    const response = await fetch(region.dataset.statusUrl, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) return;
    const job = await response.json();
    if (region.textContent !== job.words) region.textContent = job.words;
    if (job.finished) window.location.reload();
    else window.setTimeout(check, 2000);
  }
  window.setTimeout(check, 2000);
})();
