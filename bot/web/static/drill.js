// The drill workspace: the queue of customers (unread counts, how long each has waited)
// and the open conversation. Over a WebSocket the server sends them whenever a customer
// writes, arrives or leaves, and a reply goes out on the socket; without one (a proxy
// that drops WebSockets) the page asks every second and a half and posts replies. A reply
// never reloads the page, so what is being typed stays. Without scripts the page still
// works: the form posts and the page comes back.
"use strict";
const desk = document.querySelector(".desk");
if (desk) {
  const queue = desk.querySelector(".queue");
  const chat = desk.querySelector(".chat");
  const compose = desk.querySelector("form.compose");
  const left = document.querySelector(".left");
  const base = `/drills/${desk.dataset.drill}`;
  let label = desk.dataset.label;
  let socket = null;
  let polling = null;

  const show = (data) => {
    if (!data.running) {
      window.location.assign(base);
      return;
    }
    queue.innerHTML = data.queue; // rendered and escaped by the server's templates
    if (data.label !== label) {
      window.location.assign(`${base}/desk?c=${encodeURIComponent(data.label)}`);
      return;
    }
    const before = chat.querySelectorAll("[data-idx]").length;
    chat.innerHTML = data.chat;
    if (chat.querySelectorAll("[data-idx]").length !== before) chat.scrollTop = chat.scrollHeight;
    left.dataset.left = data.left;
  };

  const refresh = async () => {
    try {
      const answer = await fetch(`${base}/desk.json?c=${encodeURIComponent(label)}`, {
        headers: { Accept: "application/json" },
      });
      if (answer.ok) show(await answer.json());
    } catch {
      // offline for a moment: the next refresh tries again
    }
  };

  const poll = () => {
    if (polling === null) polling = setInterval(refresh, 1500);
  };

  const connect = () => {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${window.location.host}${base}/desk/live`);
    socket.addEventListener("open", () => {
      clearInterval(polling);
      polling = null;
      socket.send(JSON.stringify({ type: "show", c: label }));
    });
    socket.addEventListener("message", (event) => {
      const data = JSON.parse(event.data);
      if (data.type === "desk") show(data);
      else if (data.type === "done" || data.type === "rejected" || data.type === "error") {
        compose?.dispatchEvent(new CustomEvent("answered", { detail: data }));
      }
    });
    socket.addEventListener("close", () => {
      socket = null;
      if (compose?.querySelector("button").disabled) {
        // a reply in flight: send it again (same reference, answered once)
        compose.dispatchEvent(new CustomEvent("answered", { detail: { type: "error", text: "⚠" } }));
      }
      poll(); // until the socket is back
      setTimeout(connect, 3000);
    });
  };

  if (compose) {
    const box = compose.querySelector("textarea");
    const problem = compose.querySelector(".problem");
    const ref = compose.querySelector("input[name=ref]");
    const button = compose.querySelector("button");
    const answered = (ok, text) => {
      problem.hidden = ok;
      if (ok) {
        box.value = "";
        ref.value = `${ref.value.split(".")[0]}.${Date.now()}`;
      } else {
        problem.textContent = text;
      }
      button.disabled = false;
    };
    compose.addEventListener("answered", (event) => {
      const data = event.detail;
      if (data.ref === undefined || data.ref === ref.value) answered(data.type === "done", data.text);
    });
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        compose.requestSubmit();
      }
    });
    compose.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      const fields = new FormData(compose);
      if (socket !== null && socket.readyState === WebSocket.OPEN) {
        socket.send(
          JSON.stringify({
            type: "reply",
            label: fields.get("label"),
            text: fields.get("text"),
            ref: fields.get("ref"),
          }),
        );
        return; // "done" or "rejected" comes back on the socket
      }
      try {
        const answer = await fetch(compose.action, {
          method: "POST",
          headers: { Accept: "application/json" },
          body: new URLSearchParams(fields),
        });
        const data = await answer.json();
        answered(answer.ok, data.error);
      } catch {
        answered(false, "⚠"); // the same reference is sent again next time: answered once
      }
      await refresh();
    });
  }
  poll();
  connect();
  setInterval(() => {
    const seconds = Math.max(0, Number(left.dataset.left) - 1);
    left.dataset.left = seconds;
    left.textContent = left.textContent.replace(/\d+:\d\d/, `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`);
    for (const waited of queue.querySelectorAll(".waited[data-waited]")) {
      const count = Number(waited.dataset.waited) + 1;
      waited.dataset.waited = count;
      waited.textContent = waited.textContent.replace(/\d+/, String(count));
    }
  }, 1000);
}
