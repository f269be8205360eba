// Uploads a file straight to object storage: SHA-256 in the browser, a presigned PUT, then the platform checks it.
(function () {
  "use strict";
  const MAX_BYTES = 1024 * 1024 * 1024;
  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  async function post(url, fields) {
    const body = new FormData();
    for (const [name, value] of Object.entries(fields)) body.append(name, value);
    const response = await fetch(url, { method: "POST", body, credentials: "same-origin" });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.message || "HTTP " + response.status);
    return answer;
  }
  async function upload(form, say) {
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) throw new Error("choose a file first");
    // The browser hashes the file in memory (Web Crypto has no streaming digest): larger files go by script.
    if (file.size > MAX_BYTES) throw new Error("files over 1 GB are uploaded by script (GraphQL requestMultipartUpload)");
    const csrf = form.dataset.csrf;
    say("Computing the SHA-256 checksum…");
    const sha256 = hex(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
    const ticket = await post(form.action, { csrf, sha256, size_bytes: String(file.size) });
    say("Uploading " + file.size + " bytes…");
    const put = await fetch(ticket.url, { method: ticket.method, body: file });
    if (!put.ok) throw new Error("object storage refused the upload (HTTP " + put.status + ")");
    say("Verifying…");
    return post(ticket.complete, { csrf });
  }
  document.querySelectorAll("form.upload").forEach((form) => {
    const status = form.querySelector("[role=status]");
    const say = (text) => { status.textContent = text; };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      upload(form, say).then(
        (done) => { say("Uploaded and verified (SHA-256 " + done.sha256 + ")."); window.location.reload(); },
        (error) => { say("Upload failed: " + error.message); },
      );
    });
  });
})();
