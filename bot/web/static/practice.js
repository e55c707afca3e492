// The practice page. Enter sends (Shift+Enter starts a new line). With a live connection
// (a WebSocket) a reply goes out without reloading the page and the customer's answer comes
// back into the chat; the reply waits in localStorage until the server says it is answered,
// so a connection lost mid-reply is reopened and the same reply (same reference) is sent
// again, which the server answers once. Without one, the form posts as a normal page.
"use strict";
const compose = document.querySelector("form.compose");
if (compose) {
  const box = compose.querySelector("textarea");
  const button = compose.querySelector("button");
  const ref = compose.querySelector("input[name=ref]");
  const chat = document.querySelector(".chat");
  const typing = document.querySelector(".typing");
  const offline = document.querySelector(".offline");
  const problem = document.querySelector(".problem");
  const clock = document.querySelector(".timer span");
  const key = "trainer-pending:" + compose.dataset.live;
  let socket = null;
  let retries = 0;
  let shownAt = Date.now();

  const lastShown = () => {
    const shown = chat.querySelectorAll("[data-idx]");
    return shown.length ? Number(shown[shown.length - 1].dataset.idx) : -1;
  };
  const pending = () => {
    try {
      return JSON.parse(localStorage.getItem(key));
    } catch {
      return null;
    }
  };
  const busy = (on) => {
    button.disabled = on;
    typing.hidden = !on;
  };
  const send = (message) => {
    if (socket === null || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify({ ...message, after: lastShown() }));
    return true;
  };

  const show = (html) => {
    const holder = document.createElement("div");
    holder.innerHTML = html; // rendered and escaped by the server's templates
    let answered = false;
    for (const node of Array.from(holder.children)) {
      if (Number(node.dataset.idx) <= lastShown()) continue;
      chat.append(node);
      answered = answered || node.classList.contains("customer");
    }
    if (answered) {
      shownAt = Date.now();
      window.scrollTo(0, document.body.scrollHeight);
    }
  };

  const handle = (message) => {
    const waiting = pending();
    if (message.type === "ended") {
      localStorage.removeItem(key);
      window.location.reload(); // the scorecard
    } else if (message.type === "turns") {
      show(message.html);
      if (waiting && message.done === waiting.ref) {
        localStorage.removeItem(key);
        ref.value = message.next;
        const hint = document.querySelector(".hint");
        if (hint) hint.remove();
        busy(false);
        box.focus();
      }
    } else if (message.type === "rejected" || message.type === "error") {
      localStorage.removeItem(key);
      if (waiting && !box.value) box.value = waiting.text;
      busy(false);
      problem.textContent = message.text;
      problem.hidden = false;
    }
  };

  const connect = () => {
    const url = new URL(compose.dataset.live, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      retries = 0;
      offline.hidden = true;
      const waiting = pending();
      if (waiting) {
        busy(true);
        send({ type: "reply", ref: waiting.ref, text: waiting.text });
      } else {
        send({ type: "sync" });
      }
    });
    socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      socket = null;
      if (event.code === 4401) {
        window.location.reload(); // signed out elsewhere: the page says how to sign in
        return;
      }
      offline.hidden = false;
      window.setTimeout(connect, Math.min(10000, 500 * 2 ** retries++));
    });
  };

  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (box.value.trim() && !button.disabled) compose.requestSubmit();
    }
  });
  compose.addEventListener("submit", (event) => {
    busy(true);
    problem.hidden = true;
    if (socket === null || socket.readyState !== WebSocket.OPEN) return; // a normal post
    event.preventDefault();
    localStorage.setItem(key, JSON.stringify({ ref: ref.value, text: box.value }));
    send({ type: "reply", ref: ref.value, text: box.value });
    box.value = "";
  });
  window.setInterval(() => {
    const seconds = Math.floor((Date.now() - shownAt) / 1000);
    clock.textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
    clock.classList.toggle("over", seconds > Number(clock.dataset.limit));
  }, 1000);
  box.focus();
  window.scrollTo(0, document.body.scrollHeight);
  connect();
}
